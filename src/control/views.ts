/**
 * Operator views of a queue listing (issue 21 item 8), pure: `queue list --domain D --state S` keeps
 * the recipients that match (and the messages that still have one), and `queue shape` counts waiting
 * recipients by destination domain and age like Postfix's qshape(1): one row per domain, one column per
 * age bucket (minutes since the message arrived, doubling: 0-5, 5-10, 10-20, … 1280+), the TOTAL row first.
 * The listing comes from whichever backend answered (control socket, spool files, database), so both
 * views work the same on every one of them.
 */
import type { SpoolListing } from '../spool/inspect.js';
import type { RecipientState, RecipientStatus } from '../spool/types.js';
import { domainOf } from './commands.js';

const RECIPIENT_STATES = ['pending', 'deferred', 'delivered', 'failed'] as const satisfies readonly RecipientState[];
// every recipient state is listed above (a state added to the spool's type fails to compile here until it is)
const _allStates: Exclude<RecipientState, (typeof RECIPIENT_STATES)[number]> extends never ? true : never = true;
void _allStates;

/** `--state` values: a recipient state, `waiting` (pending or deferred) or `held` (messages on hold). */
export const STATE_FILTERS = [...RECIPIENT_STATES, 'waiting', 'held'] as const;
export type StateFilter = (typeof STATE_FILTERS)[number];

export interface ListingFilter {
  domain?: string;
  state?: StateFilter;
}

const isWaiting = (r: RecipientStatus) => r.state === 'pending' || r.state === 'deferred';

/** An operator's `--state` word, or an error naming the choices. */
export function parseStateFilter(s: string): StateFilter {
  const v = s.toLowerCase();
  if (!(STATE_FILTERS as readonly string[]).includes(v)) throw new Error(`unknown state "${s}" (expected one of ${STATE_FILTERS.join(', ')})`);
  return v as StateFilter;
}

/** The messages with at least one recipient that matches, each with only its matching recipients. */
export function filterListing(l: SpoolListing, f: ListingFilter): SpoolListing {
  if (!f.domain && !f.state) return l;
  const domain = f.domain?.toLowerCase().replace(/\.$/, '');
  const messages = l.messages.flatMap((m) => {
    if (f.state === 'held' && !m.held) return [];
    const recipients = m.recipients.filter(
      (r) => (!domain || domainOf(r.address) === domain) && (!f.state || f.state === 'held' || (f.state === 'waiting' ? isWaiting(r) : r.state === f.state)),
    );
    return recipients.length ? [{ ...m, recipients }] : [];
  });
  return { messages, unreadable: l.unreadable };
}

/** Upper bounds of the age buckets, minutes (qshape's defaults); the last bucket is open-ended. */
export const SHAPE_BUCKETS = [5, 10, 20, 40, 80, 160, 320, 640, 1280] as const;

export interface QueueShape {
  /** column labels: "0-5m", "5-10m", …, "1280m+" */
  columns: string[];
  /** TOTAL first, then one row per destination domain, most recipients first */
  rows: { domain: string; total: number; counts: number[] }[];
}

/** Recipients by destination domain and age. Counts waiting recipients unless `f.state` says otherwise (qshape counts the queue it is given). */
export function queueShape(l: SpoolListing, now: number, f: ListingFilter = {}): QueueShape {
  const columns = SHAPE_BUCKETS.map((b, i) => `${i === 0 ? 0 : SHAPE_BUCKETS[i - 1]}-${b}m`).concat(`${SHAPE_BUCKETS.at(-1)}m+`);
  const byDomain = new Map<string, number[]>();
  const total = columns.map(() => 0);
  for (const m of filterListing(l, { ...f, state: f.state ?? 'waiting' }).messages) {
    const minutes = Math.max(0, now - m.envelope.received) / 60_000;
    let col = SHAPE_BUCKETS.findIndex((b) => minutes < b);
    if (col < 0) col = SHAPE_BUCKETS.length;
    for (const r of m.recipients) {
      const d = domainOf(r.address);
      const row = byDomain.get(d) ?? columns.map(() => 0);
      row[col]!++;
      total[col]!++;
      byDomain.set(d, row);
    }
  }
  const sum = (c: number[]) => c.reduce((a, b) => a + b, 0);
  const rows = [...byDomain]
    .map(([domain, counts]) => ({ domain, total: sum(counts), counts }))
    .sort((a, b) => b.total - a.total || (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0));
  return { columns, rows: [{ domain: 'TOTAL', total: sum(total), counts: total }, ...rows] };
}

/** The table as text, right-aligned numbers under each column label. */
export function formatShape(s: QueueShape): string {
  const head = ['', 'T', ...s.columns];
  const body = s.rows.map((r) => [r.domain, String(r.total), ...r.counts.map(String)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[0]!) : c.padStart(widths[i]!))).join(' ');
  return [line(head), ...body.map(line)].map((l) => l.trimEnd()).join('\n') + '\n';
}
