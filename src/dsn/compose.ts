/**
 * Delivery Status Notifications, RFC 3464 (format) and RFC 6522 (multipart/report).
 *
 * A DSN is itself an ordinary message: the relay queues it in its own spool from
 * the null sender (RFC 5321 §4.5.5) so that it is never answered with another DSN.
 * Composition uses nodemailer's MIME composer (MimeNode); this module only decides
 * what goes into the report.
 */
import { isAscii } from 'node:buffer';
import MimeNode from 'nodemailer/lib/mime-node';
import type { MailDsn, RcptDsn } from './params.js';
import { clip, printable } from '../text/printable.js';

/**
 * RFC 3461 §4.3 RET=FULL returns the whole message in a failed DSN; above this size only its
 * header (RFC 3461 lets the MTA decide; Postfix's bounce_size_limit is 50,000 octets).
 */
export const DSN_RETURN_LIMIT = 1024 * 1024;

/**
 * RFC 3464 §2.3.6 diagnostic-type: `smtp` for a reply of the remote SMTP server (RFC 3464 §9.2), the
 * relay's own X- type for what it decided itself (DNS, DANE, TLS, a connection that failed, expiry), as
 * Postfix uses `X-Postfix`. Which one is a fact of the outcome (a reply was received or not), never
 * guessed from the wording.
 */
export type DiagnosticType = 'smtp' | 'X-Dane-Relay';
export const LOCAL_DIAGNOSTIC_TYPE: DiagnosticType = 'X-Dane-Relay';

export interface Diagnostic {
  type: DiagnosticType;
  text: string;
}

/** The diagnostic of an outcome: its remote reply when there was one, else the relay's reason. */
export function diagnosticOf(reply: string | undefined, reason: string | undefined): Diagnostic | undefined {
  if (reply) return { type: 'smtp', text: reply };
  return reason ? { type: LOCAL_DIAGNOSTIC_TYPE, text: reason } : undefined;
}

export interface DsnRecipient {
  address: string;
  /** RFC 3464 §2.3.3; `relayed`: passed on to a server without DSN, which will report nothing (RFC 3461 §5.2.2) */
  action: 'failed' | 'delayed' | 'relayed';
  /** RFC 3463 code, e.g. "5.1.1", "4.4.3" */
  status: string;
  /** host name of the MTA that gave the reply, if any */
  remoteMta?: string;
  /** the remote reply (`smtp`) or the relay's own reason (`X-Dane-Relay`); RFC 3464 §2.3.6 */
  diagnostic?: Diagnostic;
  lastAttempt?: number;
  /** for delayed: until when we keep trying (epoch ms) */
  willRetryUntil?: number;
}

/**
 * What a report reads of the original message's envelope. The spool's `Envelope` is one: dsn sits
 * below the spool (whose records carry the RFC 3461 parameters of params.ts), so it names the fields
 * it uses instead of importing the spool's type.
 */
export interface DsnOriginal {
  /** "" for the null sender */
  from: string;
  smtputf8: boolean;
  received: number;
  kind: 'normal' | 'dsn' | 'tlsrpt';
  dsn?: MailDsn;
  rcptDsn?: Record<string, RcptDsn>;
  /** RFC 8689: MAIL FROM carried REQUIRETLS (the report then returns the header only, RT-51) */
  requireTls?: true;
}

/** The report's own envelope, queued in the spool as an `Envelope` of kind 'dsn'. */
export interface DsnEnvelope {
  from: '';
  recipients: string[];
  smtputf8: boolean;
  eightBit: false;
  client: { address: string; name: string };
  received: number;
  kind: 'dsn';
  /**
   * RFC 8689 §5 (RT-50, RT-53): a report about a message that arrived with REQUIRETLS is itself sent with
   * REQUIRETLS (it returns the header only, RT-51); delivery may fall back for it as RT-52 allows.
   */
  requireTls?: true;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  original: DsnOriginal;
  /** the original message's header block (up to the first empty line) */
  originalHeaders: Buffer;
  /**
   * The whole original message, when RET=FULL asked for it and it is no larger than
   * DSN_RETURN_LIMIT; returned (as message/rfc822) in a DSN about failures only (RFC 3461 §4.3).
   */
  originalFull?: Buffer;
  recipients: DsnRecipient[];
  now: number;
}

/** Nothing is sent to the null sender, and never a DSN about a DSN or a TLSRPT report. */
export function dsnAllowed(env: Pick<DsnOriginal, 'from' | 'kind'>): boolean {
  return env.from !== '' && env.kind === 'normal';
}

export function headerBlock(message: Buffer, limit = 64 * 1024): Buffer {
  const head = message.subarray(0, limit);
  for (const sep of ['\r\n\r\n', '\n\n']) {
    const i = head.indexOf(sep);
    if (i >= 0) return head.subarray(0, i + sep.length / 2);
  }
  return head;
}

/**
 * RFC 6533 §3 utf-8-addr-xtext, the form a `utf-8` address takes in a (7-bit) message/delivery-status:
 * QCHAR as is, every other character (non-ASCII, "+", "=", "\\", controls, space) as `\x{HEX}` of its
 * code point.
 */
export function utf8AddrXtext(addr: string): string {
  let out = '';
  for (const ch of addr) {
    const c = ch.codePointAt(0)!;
    out += c >= 0x21 && c <= 0x7e && c !== 0x2b && c !== 0x3d && c !== 0x5c ? ch : `\\x{${c.toString(16).toUpperCase().padStart(2, '0')}}`;
  }
  return out;
}

function addressType(addr: string): string {
  // RFC 6533 §3: the utf-8 address type for an internationalised address, in its 7-bit xtext form.
  return /[^\x00-\x7f]/.test(addr) ? `utf-8; ${utf8AddrXtext(addr)}` : `rfc822; ${oneLine(addr)}`;
}

function rfc5322Date(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

/**
 * One line of possibly remote text (a reply, a reason): escaped by the relay's printable rule
 * (src/text/printable.ts), bounded. `ascii` for the delivery-status fields: RFC 3464 §2.1 makes
 * them RFC 822 header fields, 7-bit `text` without CR/LF (UTF-8 belongs only in RFC 6533's
 * message/global-delivery-status); the human-readable part is charset=utf-8.
 */
function oneLine(s: string, ascii = true): string {
  return clip(printable(s, { ascii }), 900);
}

/** RFC 3464 §2.3.6: `diagnostic-type ";" *text`, 7-bit, one line. */
function diagnosticCode(d: Diagnostic): string {
  return clip(`${d.type}; ${oneLine(d.text)}`, 900);
}

/** The human part, in UTF-8: a remote reply with the host that gave it (Postfix: "host … said:"), else the relay's reason. */
function diagnosticLine(r: DsnRecipient): string {
  const d = r.diagnostic;
  if (!d) return oneLine(r.status, false);
  return oneLine(d.type === 'smtp' && r.remoteMta ? `host ${r.remoteMta} said: ${d.text}` : d.text, false);
}

export function deliveryStatusBody(input: DsnInput): string {
  const envid = input.original.dsn?.envid;
  const lines: string[] = [
    // RFC 3464 §2.2.1, RFC 3461 §6.3 (a): the ENVID as given, xtext-decoded
    ...(envid !== undefined ? [`Original-Envelope-Id: ${oneLine(envid)}`] : []),
    `Reporting-MTA: dns; ${input.reportingMta}`,
    `X-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${rfc5322Date(input.original.received)}`,
    '',
  ];
  for (const r of input.recipients) {
    // RFC 3464 §2.3.1, RFC 3461 §6.3 (d): only when ORCPT was given, with its value
    const orcpt = input.original.rcptDsn?.[r.address]?.orcpt;
    if (orcpt)
      lines.push(`Original-Recipient: ${oneLine(orcpt.type)}; ${orcpt.type.toLowerCase() === 'utf-8' ? utf8AddrXtext(orcpt.address) : oneLine(orcpt.address)}`);
    lines.push(`Final-Recipient: ${addressType(r.address)}`);
    lines.push(`Action: ${r.action}`);
    lines.push(`Status: ${r.status}`);
    // RFC 3464 §2.3.5: mta-name-type ";" mta-name — a name that is empty once made one printable line is left out.
    const remoteMta = r.remoteMta ? oneLine(r.remoteMta).trim() : '';
    if (remoteMta) lines.push(`Remote-MTA: dns; ${remoteMta}`);
    if (r.diagnostic) lines.push(`Diagnostic-Code: ${diagnosticCode(r.diagnostic)}`);
    if (r.lastAttempt) lines.push(`Last-Attempt-Date: ${rfc5322Date(r.lastAttempt)}`);
    if (r.action === 'delayed' && r.willRetryUntil) lines.push(`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`);
    lines.push('');
  }
  return lines.join('\r\n');
}

function humanText(input: DsnInput, returned: 'full' | 'headers' | 'headers-too-large'): string {
  const failed = input.recipients.filter((r) => r.action === 'failed');
  const delayed = input.recipients.filter((r) => r.action === 'delayed');
  const relayed = input.recipients.filter((r) => r.action === 'relayed');
  const out: string[] = [`This is the mail system at host ${input.reportingMta}.`, ''];
  if (failed.length) {
    out.push('Your message could not be delivered to one or more recipients.', 'It has been returned with this report. The reason is given for each:', '');
    for (const r of failed) out.push(`<${oneLine(r.address, false)}>: ${diagnosticLine(r)}`);
    out.push('');
  }
  if (delayed.length) {
    out.push('Your message has not been delivered yet to the recipients below. The mail system will keep trying.', 'You do not need to send it again.', '');
    for (const r of delayed) {
      const until = r.willRetryUntil ? ` (will retry until ${rfc5322Date(r.willRetryUntil)})` : '';
      out.push(`<${oneLine(r.address, false)}>: ${diagnosticLine(r)}${until}`);
    }
    out.push('');
  }
  if (relayed.length) {
    out.push(
      'Your message was delivered to the mail system of the recipients below, as you asked to be told.',
      'That system does not support delivery status notifications, so you will hear no more of this message from there.',
      '',
    );
    for (const r of relayed) out.push(`<${oneLine(r.address, false)}>: relayed to ${oneLine(r.remoteMta ?? 'the next hop', false)}: ${diagnosticLine(r)}`);
    out.push('');
  }
  if (returned === 'full') out.push('The message is returned in full below.', '');
  if (returned === 'headers-too-large') out.push(`The message was larger than ${DSN_RETURN_LIMIT} octets; only its header is returned.`, '');
  out.push(`Queue ID: ${input.queueId}`);
  return out.join('\r\n') + '\r\n';
}

export interface ComposedDsn {
  envelope: DsnEnvelope;
  message: Buffer;
}

/**
 * Whether a DSN returns the whole message: RFC 3461 §4.3, RET=FULL and a DSN about failures only;
 * RET=HDRS, no RET, and delays/relays get the header. RFC 8689 §5 (RT-51): a REQUIRETLS message is
 * treated as RET=HDRS whatever it asked, so its content never travels in a bounce less protected.
 */
export function returnsFull(original: Pick<DsnOriginal, 'dsn' | 'requireTls'>, onlyFailed: boolean): boolean {
  return original.dsn?.ret === 'FULL' && onlyFailed && !original.requireTls;
}

/** Builds the DSN message and its envelope (from <>, to the original sender, kind 'dsn'). */
export async function composeDsn(input: DsnInput): Promise<ComposedDsn> {
  if (!dsnAllowed(input.original)) throw new Error('no DSN for the null sender or for relay-generated mail');
  const anyFailed = input.recipients.some((r) => r.action === 'failed');
  const onlyFailed = input.recipients.every((r) => r.action === 'failed');
  const full = returnsFull(input.original, onlyFailed);
  const returned = full && input.originalFull ? 'full' : full ? 'headers-too-large' : 'headers';
  const root = new MimeNode('multipart/report; report-type=delivery-status', { hostname: input.reportingMta });
  root.setHeader({
    From: `Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    To: `<${input.original.from}>`,
    Subject: anyFailed
      ? 'Undelivered Mail Returned to Sender'
      : input.recipients.some((r) => r.action === 'delayed')
        ? 'Delayed Mail (still being retried)'
        : 'Successful Mail Delivery Report',
    Date: new Date(input.now),
    'Auto-Submitted': 'auto-replied',
  });
  root.createChild('text/plain; charset=utf-8').setContent(humanText(input, returned));
  root.createChild('message/delivery-status').setContent(deliveryStatusBody(input));
  if (returned === 'full') {
    // RFC 2046 §5.2.1: message/rfc822 is 7bit, 8bit or binary, never encoded; the relay converts it
    // for a next hop without 8BITMIME like any other message (src/mime/downgrade.ts).
    const cte = isAscii(input.originalFull!) ? '7bit' : '8bit';
    root.createChild('message/rfc822').setHeader('Content-Transfer-Encoding', cte).setContent(input.originalFull!);
  } else {
    root.createChild('text/rfc822-headers').setContent(input.originalHeaders);
  }
  const message: Buffer = await root.build();
  return {
    envelope: {
      from: '',
      recipients: [input.original.from],
      smtputf8: input.original.smtputf8 && /[^\x00-\x7f]/.test(input.original.from),
      eightBit: false,
      client: { address: '127.0.0.1', name: 'localhost' },
      received: input.now,
      kind: 'dsn',
      ...(input.original.requireTls ? { requireTls: true as const } : {}),
    },
    message,
  };
}
