/**
 * Classification of SMTP replies and connection failures into per-recipient outcomes. Pure.
 */
import { printable } from '../text/printable.js';

export type RecipientResult = 'sent' | 'deferred' | 'bounced';

export interface RecipientOutcome {
  address: string;
  result: RecipientResult;
  /** RFC 3463 enhanced code */
  code: string;
  /** one line for logs, DSNs and the queue listing */
  reason: string;
  /** "mx1.example.com[127.0.0.2]:25" when a server answered */
  relay?: string;
  remoteMta?: string;
  /** the remote reply as received */
  reply?: string;
}

/**
 * A reply as one line for reasons, logs and DSNs: the lines of a multi-line reply joined with
 * " / ", and the peer's text made printable (src/text/printable.ts) — the reply parser keeps
 * the text as received for protocol use; everything stored or shown comes from here.
 */
export function replyLine(r: { code: number; text: string }): string {
  return printable(`${r.code} ${r.text.replace(/\n/g, ' / ')}`);
}

/**
 * The outcome as the relay keeps it (recipient state, DSN, logs): every text field printable. The
 * boundary where outside text enters the queue's state; reasons also carry error messages of the
 * TLS stack and DNS names, which can hold a peer's bytes too.
 */
export function printableOutcome(o: RecipientOutcome): RecipientOutcome {
  const p: RecipientOutcome = { ...o, reason: printable(o.reason) };
  if (o.reply !== undefined) p.reply = printable(o.reply);
  if (o.relay !== undefined) p.relay = printable(o.relay);
  if (o.remoteMta !== undefined) p.remoteMta = printable(o.remoteMta);
  return p;
}

/** RFC 3463 code carried by a reply, or the default class code for its basic code. */
export function enhancedOf(code: number, enhanced?: string): string {
  if (enhanced && /^[245]\.\d{1,3}\.\d{1,3}$/.test(enhanced) && enhanced[0] === String(code)[0]) return enhanced;
  if (code >= 500) return '5.0.0';
  if (code >= 400) return '4.0.0';
  return '2.0.0';
}

export function resultOf(code: number): RecipientResult {
  if (code >= 200 && code < 300) return 'sent';
  if (code >= 500 && code < 600) return 'bounced';
  return 'deferred';
}
