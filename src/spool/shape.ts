/**
 * The queue's shape (issue 21 item 8), like Postfix's qshape(1): recipients counted by destination
 * domain and by the age of their message, in doubling buckets of minutes. One rule for both readers:
 * `dane-relay queue shape` (control/views.ts) and the `dane_relay_queue_recipients_by_domain_age`
 * gauge (metrics/registry.ts).
 */
import type { QueuedMessage } from './types.js';

/** The destination domain of a recipient address, lowercase (the address literal too). */
export function recipientDomain(address: string): string {
  const at = address.lastIndexOf('@');
  return (at >= 0 ? address.slice(at + 1) : address).toLowerCase();
}

/** Upper bounds of the age buckets, minutes (qshape's defaults); the last column is open-ended. */
export const SHAPE_BUCKETS = [5, 10, 20, 40, 80, 160, 320, 640, 1280] as const;
/** Column labels: "0-5m", "5-10m", …, "1280m+" */
export const SHAPE_COLUMNS: readonly string[] = SHAPE_BUCKETS.map((b, i) => `${i === 0 ? 0 : SHAPE_BUCKETS[i - 1]}-${b}m`).concat(`${SHAPE_BUCKETS.at(-1)}m+`);

/** The column of a message `ageMs` old; an age on a bound goes to the bucket above it. */
export function ageColumn(ageMs: number): number {
  const minutes = Math.max(0, ageMs) / 60_000;
  const i = SHAPE_BUCKETS.findIndex((b) => minutes < b);
  return i < 0 ? SHAPE_BUCKETS.length : i;
}

export interface ShapeRow {
  domain: string;
  total: number;
  counts: number[];
}

/** Every recipient of `messages` (the caller picks them) by domain and age; rows most recipients first, then by name. */
export function shapeRows(messages: readonly QueuedMessage[], now: number): ShapeRow[] {
  const byDomain = new Map<string, number[]>();
  for (const m of messages) {
    const col = ageColumn(now - m.envelope.received);
    for (const r of m.recipients) {
      const d = recipientDomain(r.address);
      const row = byDomain.get(d) ?? SHAPE_COLUMNS.map(() => 0);
      row[col]!++;
      byDomain.set(d, row);
    }
  }
  return [...byDomain]
    .map(([domain, counts]) => ({ domain, total: counts.reduce((a, b) => a + b, 0), counts }))
    .sort((a, b) => b.total - a.total || (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0));
}
