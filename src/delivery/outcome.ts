/**
 * Per-recipient outcomes of a delivery attempt: the SMTP client's verdicts (smtpClient.ts
 * `RecipientVerdict`, already classified by step and reply class) mapped to what the queue
 * records, and the invariant every attempt must keep — exactly one outcome per recipient of
 * the job (issue 13). Pure.
 */
import { printable } from '../text/printable.js';
import type { RecipientVerdict } from './smtpClient.js';

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
  /** the server advertised DSN, so the NOTIFY/ORCPT parameters went along (RFC 3461 §5.2.1) */
  nextHopDsn?: boolean;
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

/** RFC 3463 §3.6 X.5.0 "other or undefined protocol status": the peer broke the protocol; temporary. */
export const PROTOCOL_ERROR = '4.5.0';
/** RFC 3463 §3.4 X.3.0: our own fault (an attempt that gave no outcome); temporary. */
export const INTERNAL_ERROR = '4.3.0';

/** The queue outcome of one client verdict: only `delivered` is `sent`; a protocol error defers. */
export function outcomeOf(v: RecipientVerdict, relay: string, remoteMta?: string): RecipientOutcome {
  const reply = replyLine(v.reply);
  const base = { address: v.address, relay, ...(remoteMta !== undefined ? { remoteMta } : {}), reply };
  switch (v.kind) {
    case 'delivered':
      return { ...base, result: 'sent', code: enhancedOf(v.reply.code, v.reply.enhanced), reason: reply };
    case 'refused':
      // A 5xx the client took as temporary (552 to RCPT, RFC 5321 §4.5.3.1.10) keeps its detail, class 4.
      return {
        ...base,
        result: v.permanent ? 'bounced' : 'deferred',
        code: v.permanent ? enhancedOf(v.reply.code, v.reply.enhanced) : enhancedOf(v.reply.code, v.reply.enhanced).replace(/^5/, '4'),
        reason: `host ${relay} said: ${reply} (in reply to ${v.step})`,
      };
    case 'protocol-error':
      return { ...base, result: 'deferred', code: PROTOCOL_ERROR, reason: `host ${relay}: protocol error: ${v.detail}` };
  }
}

/**
 * Exactly one outcome per recipient of the job, whatever produced `outcomes` (issue 13): a
 * missing outcome becomes a deferral (an unsettled recipient would stay due and be retried at
 * every queue run without backoff), conflicting duplicates a deferral, an outcome for an
 * address outside the job is dropped. Each repair is an internal invariant breach: `breaches`
 * says what was repaired, for the error log.
 */
export function oneOutcomeEach(recipients: readonly string[], outcomes: readonly RecipientOutcome[]): { outcomes: RecipientOutcome[]; breaches: string[] } {
  const byAddress = new Map<string, RecipientOutcome[]>();
  for (const o of outcomes) byAddress.set(o.address, [...(byAddress.get(o.address) ?? []), o]);
  const breaches: string[] = [];
  const wanted = new Set(recipients);
  for (const a of byAddress.keys()) if (!wanted.has(a)) breaches.push(`outcome for ${a}, not a recipient of this attempt, ignored`);
  const out: RecipientOutcome[] = [];
  for (const address of wanted) {
    const got = byAddress.get(address) ?? [];
    if (got.length === 1) {
      out.push(got[0]!);
      continue;
    }
    if (got.length > 1 && got.every((o) => o.result === got[0]!.result)) {
      breaches.push(`${got.length} outcomes for ${address}, all ${got[0]!.result}: the first kept`);
      out.push(got[0]!);
      continue;
    }
    const why = got.length === 0 ? 'the delivery attempt gave no outcome' : `conflicting outcomes (${got.map((o) => o.result).join(', ')})`;
    breaches.push(`${why} for ${address}: deferred`);
    const relayed = got.find((o) => o.relay);
    out.push({
      address,
      result: 'deferred',
      code: INTERNAL_ERROR,
      reason: `internal error: ${why}; deferred`,
      ...(relayed?.relay ? { relay: relayed.relay } : {}),
      ...(relayed?.remoteMta ? { remoteMta: relayed.remoteMta } : {}),
    });
  }
  return { outcomes: out, breaches };
}
