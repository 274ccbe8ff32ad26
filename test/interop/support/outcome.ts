/**
 * Reading a case's outcome where it happened: the receivers' Maildir (which listener, TLS or not),
 * the sender's mailbox (a DSN came back), or the relay's queue (still deferred). Nothing is read
 * from logs.
 */
import type { ReceivedMessage } from './postfix.js';
import type { InteropCase, Verdict } from './cases.js';

export type Queued = Map<string, 'pending' | 'active' | 'deferred' | 'failed'>;

/** Recipient address a relay's copy of a case is sent to: `<tag>.<case>@<domain>`. */
export const rcptOf = (tag: string, c: InteropCase) => `${tag}.${c.id}@${c.domain}`.toLowerCase();

/**
 * The verdict so far, or undefined while the message is still on its way (pending, being tried,
 * or failed with its DSN not yet arrived).
 */
export function verdictOf(rcpt: string, messages: ReceivedMessage[], queued: Queued, senderListener: string): Verdict | undefined {
  const got = messages.find((m) => m.to === rcpt);
  if (got) return { kind: 'delivered', via: got.by, tls: got.tls };
  const state = queued.get(rcpt);
  if (state === 'deferred') return { kind: 'deferred' };
  if (
    state === undefined &&
    messages.some((m) => m.by === senderListener && m.raw.toLowerCase().includes(rcpt) && /report-type="?delivery-status/i.test(m.raw))
  ) {
    return { kind: 'bounced' };
  }
  return undefined;
}

export async function settle(
  cases: InteropCase[],
  tag: string,
  read: () => Promise<{ messages: ReceivedMessage[]; queued: Queued }>,
  senderListener: string,
  ms = 90_000,
): Promise<Map<string, Verdict | undefined>> {
  const deadline = Date.now() + ms;
  let out = new Map<string, Verdict | undefined>();
  for (;;) {
    const { messages, queued } = await read();
    out = new Map(cases.map((c) => [c.id, verdictOf(rcptOf(tag, c), messages, queued, senderListener)]));
    if ([...out.values()].every((v) => v !== undefined) || Date.now() > deadline) return out;
    await new Promise((r) => setTimeout(r, 250));
  }
}

export const describeVerdict = (v: Verdict | undefined) =>
  v === undefined ? 'no outcome' : v.kind === 'delivered' ? `delivered via ${v.via} ${v.tls ? 'over TLS' : 'in cleartext'}` : v.kind;
