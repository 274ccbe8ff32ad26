/**
 * Queue control commands (`dane-relay queue …`), the logic shared by the relay's control
 * socket (online) and the CLI working on a stopped relay's spool (offline), so both give
 * the same result. Semantics follow Postfix (postqueue(1), postsuper(1)):
 *   list           every queued message with each recipient's state (like `mailq`)
 *   show ID        one message; with `content` its header section (`headers`) or the whole message
 *                  (`message`), like `postcat -q ID` (`-h`, `-hb`)
 *   flush [DOMAIN] open recipients (all, or of one destination domain) of messages not on hold are due now (`postqueue -f/-s`)
 *   hold ID        no delivery attempts until `release` (`postsuper -h`); durable
 *   release ID     undo hold (`postsuper -H`)
 *   delete ID      remove the message, no DSN (`postsuper -d`); durable
 *   requeue ID     every deferred recipient due now (`postsuper -r`); routing is resolved
 *                  afresh at that attempt (MX/TLSA are looked up per attempt; DNS errors are
 *                  never cached). A message on hold stays on hold: `release` decides that.
 * The rules are pure functions here; `QueueBackend` does the I/O (scheduler or spool).
 */
import type { QueuedMessage, RecipientStatus } from '../spool/types.js';
import type { SpoolListing } from '../spool/inspect.js';
import { isQueueId } from '../spool/id.js';
import { lowerName } from '../dns/name.js';
import { recipientDomain as domainOf } from '../spool/shape.js';

export const COMMANDS = ['list', 'show', 'flush', 'hold', 'release', 'delete', 'requeue'] as const;
export type CommandName = (typeof COMMANDS)[number];

/** One request line on the control socket. */
export interface ControlRequest {
  cmd: CommandName;
  id?: string;
  domain?: string;
  /** show: also the message's header section, or the whole message */
  content?: 'headers' | 'message';
}

/** What `show` returns of the message's bytes (decoded as UTF-8 for display; the sinks make it printable). */
export interface MessageContent {
  /** the header section, up to and without the empty line that ends it */
  headers: string;
  /** the body after that line, when the whole message was asked for */
  body?: string;
  /** true when the header section went on past HEADER_LIMIT octets and was cut there */
  truncated?: true;
}

/** How much of a message `show` reads to find the end of its header section. */
export const HEADER_LIMIT = 256 * 1024;

export type ControlResult =
  | { cmd: 'list'; listing: SpoolListing }
  | { cmd: 'show'; message: QueuedMessage; content?: MessageContent }
  | { cmd: 'flush'; domain?: string; messages: number }
  | { cmd: 'hold' | 'release'; id: string; held: boolean }
  | { cmd: 'delete'; id: string; deleted: true }
  | { cmd: 'requeue'; id: string; recipients: number; held: boolean };

/** One response line: the result, or an error with a machine code (ENOENT: no such message, EINVAL: bad request). */
export type ControlResponse = { ok: true; result: ControlResult } | { ok: false; code: string; error: string };

export class ControlError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$|^\[[0-9a-f:.]+\]$/i;

/** Validates an untrusted request (a socket line or CLI arguments); throws ControlError EINVAL. */
export function parseRequest(v: unknown): ControlRequest {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ControlError('EINVAL', 'request is not a JSON object');
  const o = v as Record<string, unknown>;
  if (typeof o.cmd !== 'string' || !(COMMANDS as readonly string[]).includes(o.cmd)) {
    throw new ControlError('EINVAL', `unknown command ${JSON.stringify(o.cmd)}; expected one of ${COMMANDS.join(', ')}`);
  }
  const cmd = o.cmd as CommandName;
  for (const k of Object.keys(o))
    if (k !== 'cmd' && k !== 'id' && k !== 'domain' && k !== 'content') throw new ControlError('EINVAL', `unknown request field ${JSON.stringify(k)}`);
  const needsId = cmd !== 'list' && cmd !== 'flush';
  if (needsId) {
    if (typeof o.id !== 'string' || o.id === '') throw new ControlError('EINVAL', `${cmd} needs a queue id`);
    // Ids become file names offline: anything else could escape the spool directory.
    if (!isQueueId(o.id)) throw new ControlError('EINVAL', `${JSON.stringify(o.id)} is not a queue id`);
  } else if (o.id !== undefined) throw new ControlError('EINVAL', `${cmd} takes no queue id`);
  if (o.domain !== undefined) {
    if (cmd !== 'flush') throw new ControlError('EINVAL', `${cmd} takes no domain`);
    if (typeof o.domain !== 'string' || !DOMAIN_RE.test(o.domain)) throw new ControlError('EINVAL', `${JSON.stringify(o.domain)} is not a domain name`);
  }
  if (o.content !== undefined) {
    if (cmd !== 'show') throw new ControlError('EINVAL', `${cmd} takes no content`);
    if (o.content !== 'headers' && o.content !== 'message') throw new ControlError('EINVAL', 'content is "headers" or "message"');
  }
  const req: ControlRequest = { cmd };
  if (o.content === 'headers' || o.content === 'message') req.content = o.content;
  if (needsId) req.id = o.id as string;
  if (typeof o.domain === 'string') req.domain = lowerName(o.domain);
  return req;
}

const isOpen = (r: RecipientStatus) => r.state === 'pending' || r.state === 'deferred';

export { recipientDomain as domainOf } from '../spool/shape.js';

/**
 * `flush [DOMAIN]` for one message, the rule of Scheduler.flush: open recipients (of DOMAIN) that
 * wait for a later time become due at `now`. A held message is left alone. Returns the new
 * recipients, or undefined when nothing changes.
 */
export function flushRecipients(msg: QueuedMessage, domain: string | undefined, now: number): RecipientStatus[] | undefined {
  if (msg.held) return undefined;
  let touched = false;
  const out = msg.recipients.map((r) => {
    if (isOpen(r) && (!domain || domainOf(r.address) === domain.toLowerCase()) && r.nextAttempt > now) {
      touched = true;
      return { ...r, nextAttempt: now };
    }
    return r;
  });
  return touched ? out : undefined;
}

/** `requeue ID`: every deferred recipient is due at `now` (held or not). Returns the new recipients and how many changed. */
export function requeueRecipients(recipients: RecipientStatus[], now: number): { recipients: RecipientStatus[]; changed: number } {
  let changed = 0;
  const out = recipients.map((r) => {
    if (r.state !== 'deferred') return r;
    changed++;
    return { ...r, nextAttempt: Math.min(r.nextAttempt, now) };
  });
  return { recipients: out, changed };
}

/** The canonical shape of a message in results, so online and offline serialise identically. */
export function messageView(m: QueuedMessage): QueuedMessage {
  return { id: m.id, envelope: m.envelope, size: m.size, recipients: m.recipients.map((r) => ({ ...r })), held: m.held === true };
}

export function listingView(l: SpoolListing): SpoolListing {
  return {
    messages: [...l.messages].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map(messageView),
    unreadable: [...l.unreadable],
  };
}

/** What a command needs from the queue: the running scheduler online, the locked spool offline. */
export interface QueueBackend {
  list(): Promise<SpoolListing>;
  get(id: string): Promise<QueuedMessage | undefined>;
  /** false when there is no such message */
  setHeld(id: string, held: boolean): Promise<boolean>;
  /** false when there is no such message */
  remove(id: string): Promise<boolean>;
  /** applies flushRecipients to every message; returns how many messages changed */
  flush(domain: string | undefined, now: number): Promise<number>;
  /** applies requeueRecipients durably and makes the message due; undefined when there is no such message */
  requeue(id: string, now: number): Promise<{ changed: number; held: boolean } | undefined>;
  /** at most `max` octets from the start of the message as received (its header section first); undefined when there is no such message */
  content(id: string, max: number): Promise<Buffer | undefined>;
}

/** Splits a message's first octets into its header section and body (RFC 5322 §2.1: the first empty line). */
export function messageContent(bytes: Buffer, whole: boolean): MessageContent {
  let end = -1;
  let sep = 0;
  for (const [i, n] of [
    [bytes.indexOf('\r\n\r\n'), 4],
    [bytes.indexOf('\n\n'), 2],
  ] as const)
    if (i >= 0 && (end < 0 || i < end)) [end, sep] = [i, n];
  if (bytes.subarray(0, 2).toString() === '\r\n' || bytes.subarray(0, 1).toString() === '\n') [end, sep] = [0, bytes[0] === 0x0d ? 2 : 1]; // no header fields at all
  if (end < 0) {
    const out: MessageContent = { headers: bytes.toString('utf8').replace(/\r?\n$/, '') };
    if (!whole && bytes.length >= HEADER_LIMIT) out.truncated = true;
    if (whole) out.body = '';
    return out;
  }
  const out: MessageContent = { headers: bytes.subarray(0, end).toString('utf8') };
  if (whole) out.body = bytes.subarray(end + sep).toString('utf8');
  return out;
}

function notFound(id: string): never {
  throw new ControlError('ENOENT', `no message ${id} in the queue`);
}

export async function execute(req: ControlRequest, q: QueueBackend, now: number): Promise<ControlResult> {
  switch (req.cmd) {
    case 'list':
      return { cmd: 'list', listing: listingView(await q.list()) };
    case 'show': {
      const m = await q.get(req.id!);
      if (!m) notFound(req.id!);
      if (!req.content) return { cmd: 'show', message: messageView(m) };
      const whole = req.content === 'message';
      const bytes = await q.content(req.id!, whole ? m.size : Math.min(m.size, HEADER_LIMIT));
      if (!bytes) notFound(req.id!); // delivered or deleted between the two reads
      return { cmd: 'show', message: messageView(m), content: messageContent(bytes, whole) };
    }
    case 'flush': {
      const messages = await q.flush(req.domain, now);
      return req.domain ? { cmd: 'flush', domain: req.domain, messages } : { cmd: 'flush', messages };
    }
    case 'hold':
    case 'release':
      if (!(await q.setHeld(req.id!, req.cmd === 'hold'))) notFound(req.id!);
      return { cmd: req.cmd, id: req.id!, held: req.cmd === 'hold' };
    case 'delete':
      if (!(await q.remove(req.id!))) notFound(req.id!);
      return { cmd: 'delete', id: req.id!, deleted: true };
    case 'requeue': {
      const r = await q.requeue(req.id!, now);
      if (!r) notFound(req.id!);
      return { cmd: 'requeue', id: req.id!, recipients: r.changed, held: r.held };
    }
  }
}

/** execute() as a response line: errors become `{ok:false}` with their code (EIO when unknown). */
export async function respond(raw: unknown, q: QueueBackend, now: number): Promise<ControlResponse> {
  try {
    return { ok: true, result: await execute(parseRequest(raw), q, now) };
  } catch (e) {
    const code = typeof (e as { code?: unknown })?.code === 'string' ? (e as { code: string }).code : 'EIO';
    return { ok: false, code, error: (e as Error)?.message ?? String(e) };
  }
}

/** Human output of a result; list keeps the `formatListing` format of `queue list`. */
export function formatResult(r: ControlResult, now: number, formatListing: (l: SpoolListing, now: number) => string): string {
  switch (r.cmd) {
    case 'list':
      return formatListing(r.listing, now);
    case 'show': {
      const m = r.message;
      const text = formatListing({ messages: [m], unreadable: [] }, now).split('\n');
      const client = `${m.envelope.client.address}${m.envelope.client.name ? ` (${m.envelope.client.name})` : ''}${m.envelope.client.user ? ` user ${m.envelope.client.user}` : ''}`;
      // Drop the "-- n message(s)" summary: this is one message.
      const head = [...text.slice(0, -2), `    kind ${m.envelope.kind}  client ${client}${m.envelope.messageId ? `  message-id ${m.envelope.messageId}` : ''}`];
      const c = r.content;
      // postcat's section markers, so a reader (or a script) can tell envelope, header and body apart
      if (c) head.push('*** MESSAGE CONTENTS ***', c.headers + (c.truncated ? '\n[header section cut at 256 KiB]' : ''));
      if (c?.body !== undefined) head.push('', c.body.replace(/\r?\n$/, ''));
      if (c) head.push('*** END OF MESSAGE ***');
      return head.join('\n') + '\n';
    }
    case 'flush':
      return `flush${r.domain ? ` ${r.domain}` : ''}: ${r.messages} message(s) due now\n`;
    case 'hold':
      return `${r.id}: on hold\n`;
    case 'release':
      return `${r.id}: released\n`;
    case 'delete':
      return `${r.id}: deleted\n`;
    case 'requeue':
      return `${r.id}: ${r.recipients} deferred recipient(s) due now${r.held ? ' (message is on hold: release it to deliver)' : ''}\n`;
  }
}
