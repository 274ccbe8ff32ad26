/**
 * What body goes to this next hop (RFC 6152 §3, RFC 5321 §4.5.3.1.6): decided per transaction
 * from the facts the spool kept (src/mime/scan.ts) and the server's EHLO.
 *
 * - Plain 7-bit mail with short lines (nearly all mail): the spool file as it is, no scan, no copy.
 * - 8-bit mail to a server with 8BITMIME, short lines, no NUL: as it is, with BODY=8BITMIME.
 * - Otherwise (8-bit to a server without 8BITMIME; a line over 998 octets or a NUL to anyone):
 *   with `delivery.mime_conversion: convert` the MIME conversion (src/mime/downgrade.ts) reads the
 *   file once to plan and refuses before anything is sent if it cannot convert; then streams the
 *   converted body, checked again on its way out (never more 8-bit or long lines than agreed);
 *   with `refuse` the message is bounced with 5.6.3 at once.
 * A message written by the v1 spool (no facts) is scanned first.
 *
 * SIZE is not declared for a converted body: its size is known only once it is sent (Postfix does
 * the same). A message that needs SMTPUTF8 the server lacks is left to SmtpSession.send (5.6.7).
 */
import { Readable } from 'node:stream';
import { BodyScanner, isPlain, scanStream, type BodyFacts } from '../mime/scan.js';
import { downgrade, planDowngrade, type DowngradeOptions } from '../mime/downgrade.js';
import type { Envelope } from '../spool/types.js';

export type MimeConversion = 'convert' | 'refuse';

export type OutboundBody =
  | { ok: true; body: () => Readable; eightBit: boolean; size?: number; converted?: DowngradeOptions['target'] }
  | { ok: false; code: '5.6.3'; reason: string };

export interface BodySource {
  envelope: Envelope;
  size: number;
  /** undefined: a v1 spool message, scanned here */
  facts?: BodyFacts;
  body: () => Readable;
}

function what(f: BodyFacts, peer8: boolean): string {
  return [f.eightBit && !peer8 && '8-bit octets', f.longLines && 'a line longer than 998 octets', f.nul && 'a NUL octet'].filter(Boolean).join(' and ');
}

export async function outboundBody(src: BodySource, ext: ReadonlyMap<string, string>, conversion: MimeConversion): Promise<OutboundBody> {
  const facts = src.facts ?? (await scanStream(src.body()));
  const peer8 = ext.has('8BITMIME');
  const as = { ok: true as const, body: src.body, eightBit: facts.eightBit, size: src.size };
  if (isPlain(facts)) return as;
  const needs = (facts.eightBit && !peer8) || facts.longLines || facts.nul;
  if (!needs) return as;
  if (src.envelope.smtputf8 && !ext.has('SMTPUTF8')) return as; // refused with 5.6.7 before MAIL
  const problem = `${what(facts, peer8)}${facts.eightBit && !peer8 ? ' (the next hop does not advertise 8BITMIME)' : ''}`;
  if (conversion === 'refuse') {
    return { ok: false, code: '5.6.3', reason: `the message has ${problem} and delivery.mime_conversion is refuse` };
  }
  const opts: DowngradeOptions = { target: peer8 ? '8bit' : '7bit', utf8Headers: src.envelope.smtputf8 && ext.has('SMTPUTF8') };
  const plan = await planDowngrade(src.body(), opts);
  if (plan.refusal) return { ok: false, code: '5.6.3', reason: `the message has ${problem} and cannot be converted: ${plan.refusal.reason}` };
  if (!plan.changed) return as;
  return {
    ok: true,
    body: () => Readable.from(guardedBody(downgrade(src.body(), plan, opts), opts.target)),
    eightBit: opts.target === '8bit' && facts.eightBit,
    converted: opts.target,
  };
}

/** The converted body, checked as it goes: a chunk that breaks the agreement is never handed on. */
export async function* guardedBody(chunks: AsyncIterable<Buffer>, target: DowngradeOptions['target']): AsyncGenerator<Buffer> {
  const s = new BodyScanner();
  for await (const c of chunks) {
    s.push(c);
    const f = s.facts;
    if ((target === '7bit' && f.eightBit) || f.longLines || f.nul) throw new Error(`converted body still has ${what(f, target === '8bit')}: not sent`);
    yield c;
  }
}
