/**
 * Delivery Status Notifications, RFC 3464 (format) and RFC 6522 (multipart/report).
 *
 * A DSN is itself an ordinary message: the relay queues it in its own spool from
 * the null sender (RFC 5321 §4.5.5) so that it is never answered with another DSN.
 * Composition uses nodemailer's MIME composer (MimeNode); this module only decides
 * what goes into the report.
 */
import MimeNode from 'nodemailer/lib/mime-node';
import type { Envelope } from '../spool/types.js';
import { clip, printable } from '../text/printable.js';

export interface DsnRecipient {
  address: string;
  action: 'failed' | 'delayed';
  /** RFC 3463 code, e.g. "5.1.1", "4.4.3" */
  status: string;
  /** host name of the MTA that gave the reply, if any */
  remoteMta?: string;
  /** "smtp; 550 5.1.1 no such user" or our own reason text */
  diagnostic?: string;
  lastAttempt?: number;
  /** for delayed: until when we keep trying (epoch ms) */
  willRetryUntil?: number;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  original: Envelope;
  /** the original message's header block (up to the first empty line) */
  originalHeaders: Buffer;
  recipients: DsnRecipient[];
  now: number;
}

/** Nothing is sent to the null sender, and never a DSN about a DSN or a TLSRPT report. */
export function dsnAllowed(env: Envelope): boolean {
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

function addressType(addr: string): string {
  // RFC 6533 §3: utf-8 address type for internationalised addresses.
  return /[^\x00-\x7f]/.test(addr) ? `utf-8; ${addr}` : `rfc822; ${addr}`;
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

/**
 * RFC 3464 §2.3.6: `diagnostic-type ";" *text`. A remote reply comes as "smtp; …"; the relay's
 * own reasons (DNS, TLS, DANE, expiry) get the X- type Postfix also uses for its own ("X-Postfix; …").
 */
function diagnosticCode(d: string): string {
  const line = oneLine(d);
  return /^[A-Za-z][A-Za-z0-9-]*; /.test(line) ? line : clip(`X-dane-relay; ${line}`, 900);
}

export function deliveryStatusBody(input: DsnInput): string {
  const lines: string[] = [
    `Reporting-MTA: dns; ${input.reportingMta}`,
    `X-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${rfc5322Date(input.original.received)}`,
    '',
  ];
  for (const r of input.recipients) {
    lines.push(`Final-Recipient: ${addressType(r.address)}`);
    lines.push(`Action: ${r.action}`);
    lines.push(`Status: ${r.status}`);
    if (r.remoteMta) lines.push(`Remote-MTA: dns; ${oneLine(r.remoteMta)}`);
    if (r.diagnostic) lines.push(`Diagnostic-Code: ${diagnosticCode(r.diagnostic)}`);
    if (r.lastAttempt) lines.push(`Last-Attempt-Date: ${rfc5322Date(r.lastAttempt)}`);
    if (r.action === 'delayed' && r.willRetryUntil) lines.push(`Will-Retry-Until: ${rfc5322Date(r.willRetryUntil)}`);
    lines.push('');
  }
  return lines.join('\r\n');
}

function humanText(input: DsnInput): string {
  const failed = input.recipients.filter((r) => r.action === 'failed');
  const delayed = input.recipients.filter((r) => r.action === 'delayed');
  const out: string[] = [`This is the mail system at host ${input.reportingMta}.`, ''];
  if (failed.length) {
    out.push('Your message could not be delivered to one or more recipients.', 'It has been returned with this report. The reason is given for each:', '');
    for (const r of failed) out.push(`<${oneLine(r.address, false)}>: ${oneLine(r.diagnostic ?? r.status, false)}`);
    out.push('');
  }
  if (delayed.length) {
    out.push('Your message has not been delivered yet to the recipients below. The mail system will keep trying.', 'You do not need to send it again.', '');
    for (const r of delayed) {
      const until = r.willRetryUntil ? ` (will retry until ${rfc5322Date(r.willRetryUntil)})` : '';
      out.push(`<${oneLine(r.address, false)}>: ${oneLine(r.diagnostic ?? r.status, false)}${until}`);
    }
    out.push('');
  }
  out.push(`Queue ID: ${input.queueId}`);
  return out.join('\r\n') + '\r\n';
}

export interface ComposedDsn { envelope: Envelope; message: Buffer }

/** Builds the DSN message and its envelope (from <>, to the original sender, kind 'dsn'). */
export async function composeDsn(input: DsnInput): Promise<ComposedDsn> {
  if (!dsnAllowed(input.original)) throw new Error('no DSN for the null sender or for relay-generated mail');
  const anyFailed = input.recipients.some((r) => r.action === 'failed');
  const root = new MimeNode('multipart/report; report-type=delivery-status', { hostname: input.reportingMta });
  root.setHeader({
    From: `Mail Delivery System <MAILER-DAEMON@${input.reportingMta}>`,
    To: `<${input.original.from}>`,
    Subject: anyFailed ? 'Undelivered Mail Returned to Sender' : 'Delayed Mail (still being retried)',
    Date: new Date(input.now),
    'Auto-Submitted': 'auto-replied',
  });
  root.createChild('text/plain; charset=utf-8').setContent(humanText(input));
  root.createChild('message/delivery-status').setContent(deliveryStatusBody(input));
  root.createChild('text/rfc822-headers').setContent(input.originalHeaders);
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
    },
    message,
  };
}
