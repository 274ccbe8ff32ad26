/**
 * On-disk formats.
 *
 * msg/<id>: one header line, then the message bytes exactly as received.
 *   v3 (issue 15, written for a message that carries REQUIRETLS): as v2, the envelope with
 *       `"requireTls":true` (RFC 8689 §4.1: the tag is kept with the message). A v2 reader would
 *       ignore the field and deliver without the protection the sender demanded, so such a file
 *       must be unreadable to it; every other message is still written as v2.
 *   v2 (written since issue 19): {"v":2,"size":<15 chars>,"body":<digit>,"envelope":{...}}\n<body>
 *   v1 (still read):             {"v":1,"size":<15 chars>,"envelope":{...}}\n<body>
 * The size field is fixed-width (right-aligned, space padded, which JSON allows) and `body` is
 * one digit (src/mime/scan.ts: 1 = 8-bit octets, 2 = a line over 998 octets, 4 = NUL), so both
 * are filled in at commit time with one positional write after the body was streamed; recovery
 * checks header length + size == file size, which catches a truncated file. JSON.stringify never
 * emits a raw newline, so the first "\n" always ends the header. A v1 message has no `body`
 * digit: delivery scans it (QueuedMessage.body undefined). v2 envelopes may carry the DSN
 * parameters (`dsn`, `rcptDsn`, RFC 3461); a v1 reader would ignore them, which is why the
 * version changed.
 *
 * state/<id>.json: {"v":1,"held":false,"recipients":[RecipientStatus...]}
 * Absent means every recipient is pending and the message is not held. (Unchanged, still v1.)
 */
import type { Envelope, RecipientStatus, RecipientState } from './types.js';
import { factsFlags, factsOf, type BodyFacts } from '../mime/scan.js';
import { mailDsnProblem, rcptDsnProblem } from '../dsn/params.js';

/** the message file format written now (v3 only for a message tagged REQUIRETLS, see above) */
export const FORMAT_VERSION = 2;
export const REQUIRETLS_FORMAT_VERSION = 3;
/** the state file format (unchanged by message format 2) */
export const STATE_FORMAT_VERSION = 1;
const HEADER_PREFIX = `{"v":${FORMAT_VERSION},"size":`;
const headerPrefix = (e: Envelope) => (e.requireTls ? `{"v":${REQUIRETLS_FORMAT_VERSION},"size":` : HEADER_PREFIX);
/** byte offset of the size field in the header (the same for v2 and v3: one version digit) */
export const SIZE_OFFSET = Buffer.byteLength(HEADER_PREFIX);
export const SIZE_WIDTH = 15;
const BODY_KEY = ',"body":';
/** refuse to believe a header longer than this (a runaway read of a corrupt file) */
export const MAX_HEADER = 16 * 1024 * 1024;

/** Something on disk that recovery cannot trust; `reason` goes to the log. */
export class CorruptError extends Error {
  override readonly name = 'CorruptError';
}

/** The bytes at SIZE_OFFSET that commit writes: the size, padded, and the body digit. */
export function sizeField(size: number, facts: BodyFacts): Buffer {
  return Buffer.from(`${String(size).padStart(SIZE_WIDTH, ' ')}${BODY_KEY}${factsFlags(facts)}`, 'latin1');
}

const BLANK_SIZE = ' '.repeat(SIZE_WIDTH);

/**
 * The header with a blank size field and body digit 0 (both filled in by `sizeField` at commit).
 * `json`: JSON.stringify(envelope), when the caller has it already.
 */
export function encodeHeader(envelope: Envelope, json = JSON.stringify(envelope)): Buffer {
  return Buffer.from(`${headerPrefix(envelope)}${BLANK_SIZE}${BODY_KEY}0,"envelope":${json}}\n`, 'utf8');
}

const isStr = (v: unknown): v is string => typeof v === 'string';
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const optStr = (v: unknown) => v === undefined || isStr(v);
const optNum = (v: unknown) => v === undefined || isNum(v);

/** Returns why `v` is not an Envelope, or undefined if it is one. */
export function envelopeProblem(v: unknown): string | undefined {
  if (!isObj(v)) return 'envelope is not an object';
  if (!isStr(v.from)) return 'envelope.from is not a string';
  if (!Array.isArray(v.recipients) || v.recipients.length === 0 || !v.recipients.every(isStr)) return 'envelope.recipients is not a non-empty string array';
  if (typeof v.smtputf8 !== 'boolean' || typeof v.eightBit !== 'boolean') return 'envelope.smtputf8/eightBit is not a boolean';
  const c = v.client;
  if (!isObj(c) || !isStr(c.address) || !optStr(c.name) || !optStr(c.user)) return 'envelope.client is malformed';
  if (!isNum(v.received)) return 'envelope.received is not a number';
  if (v.kind !== 'normal' && v.kind !== 'dsn' && v.kind !== 'tlsrpt') return 'envelope.kind is unknown';
  if (!optStr(v.messageId)) return 'envelope.messageId is not a string';
  if (v.requireTls !== undefined && v.requireTls !== true) return 'envelope.requireTls is not true';
  if (v.tlsRequiredNo !== undefined && v.tlsRequiredNo !== true) return 'envelope.tlsRequiredNo is not true';
  if (v.tlsRequiredNo && v.requireTls) return 'envelope has both requireTls and tlsRequiredNo';
  return mailDsnProblem(v.dsn) ?? rcptDsnProblem(v.rcptDsn);
}

/**
 * Recovery loads up to 100,000s of messages that the scheduler keeps in memory.
 * In a backlog most of them repeat the same strings (the client, the sender, the
 * deferral reason of a dead domain, "deferred"), so recovery shares one instance
 * of each instead of one per message. Only short strings: long ones rarely repeat.
 */
export class Interner {
  private readonly seen = new Map<string, string>();
  get<T extends string | undefined>(s: T): T {
    if (s === undefined || s.length > 200) return s;
    const known = this.seen.get(s);
    if (known !== undefined) return known as T;
    this.seen.set(s, s);
    return s;
  }
}

export interface ParsedHeader {
  envelope: Envelope;
  size: number;
  /** undefined for a v1 file */
  body?: BodyFacts;
  headerLength: number;
}

/** `head` holds at least the whole header line; `fileSize` is the size of the whole file. */
export function parseHeader(head: Buffer, fileSize: number, intern?: Interner): ParsedHeader {
  const nl = head.indexOf(0x0a);
  if (nl < 0) throw new CorruptError('no header line');
  let h: unknown;
  try {
    h = JSON.parse(head.toString('utf8', 0, nl));
  } catch (e) {
    throw new CorruptError(`header is not JSON: ${(e as Error).message}`);
  }
  if (!isObj(h) || (h.v !== REQUIRETLS_FORMAT_VERSION && h.v !== FORMAT_VERSION && h.v !== 1)) throw new CorruptError('header has an unknown format version');
  if (!isNum(h.size) || !Number.isInteger(h.size) || h.size < 0) throw new CorruptError('header has no valid size');
  const body = h.v === 1 ? undefined : factsOf(h.body as number);
  if (h.v !== 1 && !body) throw new CorruptError('header has no valid body digit');
  const problem = envelopeProblem(h.envelope);
  if (problem) throw new CorruptError(`header: ${problem}`);
  // The tag and the version go together: a v3 file without it, or the tag in an older format, was not written by us.
  if ((h.v === REQUIRETLS_FORMAT_VERSION) !== ((h.envelope as Envelope).requireTls === true))
    throw new CorruptError(`header: format ${h.v} ${h.v === REQUIRETLS_FORMAT_VERSION ? 'without' : 'with'} requireTls`);
  const headerLength = nl + 1;
  if (headerLength + h.size !== fileSize) {
    throw new CorruptError(`size mismatch: header says ${h.size} body bytes, file has ${fileSize - headerLength}`);
  }
  const envelope = h.envelope as Envelope;
  if (intern) {
    envelope.from = intern.get(envelope.from);
    envelope.kind = intern.get(envelope.kind);
    envelope.client.address = intern.get(envelope.client.address);
    if (envelope.client.name !== undefined) envelope.client.name = intern.get(envelope.client.name);
    if (envelope.client.user !== undefined) envelope.client.user = intern.get(envelope.client.user);
  }
  return { envelope, size: h.size, ...(body ? { body } : {}), headerLength };
}

const STATES: ReadonlySet<string> = new Set<RecipientState>(['pending', 'deferred', 'delivered', 'failed']);

export function recipientProblem(r: unknown): string | undefined {
  if (!isObj(r)) return 'recipient is not an object';
  if (!isStr(r.address)) return 'recipient.address is not a string';
  if (!isStr(r.state) || !STATES.has(r.state)) return `recipient ${r.address}: unknown state`;
  if (!isNum(r.attempts) || r.attempts < 0) return `recipient ${r.address}: bad attempts`;
  if (!isNum(r.nextAttempt)) return `recipient ${r.address}: bad nextAttempt`;
  if (!optStr(r.lastReason) || !optStr(r.dsnCode) || !optStr(r.remoteMta) || !optNum(r.delayNotified)) {
    return `recipient ${r.address}: malformed optional field`;
  }
  return undefined;
}

/** What is wrong with a recipient-state update of message `id` (none, or a malformed one), or undefined. */
export function recipientsProblem(id: string, recipients: unknown[]): string | undefined {
  if (recipients.length === 0) return `no recipients for ${id}`;
  for (const r of recipients) {
    const p = recipientProblem(r);
    if (p) return p;
  }
  return undefined;
}

export function isDone(r: RecipientStatus): boolean {
  return r.state === 'delivered' || r.state === 'failed';
}

/** All recipients pending: the state a message is committed in. */
export function initialRecipients(envelope: Envelope): RecipientStatus[] {
  return envelope.recipients.map((address) => ({ address, state: 'pending', attempts: 0, nextAttempt: envelope.received }));
}

export interface ParsedState {
  held: boolean;
  recipients: RecipientStatus[];
}

export function encodeState(held: boolean, recipients: RecipientStatus[]): Buffer {
  return Buffer.from(JSON.stringify({ v: STATE_FORMAT_VERSION, held, recipients }), 'utf8');
}

/**
 * Parses a state file for a message with `envelope`. An envelope recipient the
 * state does not mention comes back pending: a recipient may be repeated but
 * never lost.
 */
export function parseState(buf: Buffer, envelope: Envelope, intern?: Interner): ParsedState {
  let s: unknown;
  try {
    s = JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw new CorruptError(`state is not JSON: ${(e as Error).message}`);
  }
  if (!isObj(s) || s.v !== STATE_FORMAT_VERSION) throw new CorruptError('state has an unknown format version');
  if (typeof s.held !== 'boolean') throw new CorruptError('state.held is not a boolean');
  if (!Array.isArray(s.recipients)) throw new CorruptError('state.recipients is not an array');
  for (const r of s.recipients) {
    const p = recipientProblem(r);
    if (p) throw new CorruptError(`state: ${p}`);
  }
  const recipients = s.recipients as RecipientStatus[];
  if (intern) {
    // the envelope already holds each address: share that instance
    const own = new Map(envelope.recipients.map((a) => [a, a]));
    for (const r of recipients) {
      r.address = own.get(r.address) ?? r.address;
      r.state = intern.get(r.state);
      if (r.lastReason !== undefined) r.lastReason = intern.get(r.lastReason);
      if (r.dsnCode !== undefined) r.dsnCode = intern.get(r.dsnCode);
      if (r.remoteMta !== undefined) r.remoteMta = intern.get(r.remoteMta);
    }
  }
  const known = new Set(recipients.map((r) => r.address));
  for (const address of envelope.recipients) {
    if (!known.has(address)) {
      known.add(address);
      recipients.push({ address, state: 'pending', attempts: 0, nextAttempt: envelope.received });
    }
  }
  return { held: s.held, recipients };
}
