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
import { shownState } from '../vocabulary/words.js';
import { recipientDomain as domainOf, SHAPE_COLUMNS, shapeRows, type ShapeRow } from '../spool/shape.js';

const RECIPIENT_STATES = ['pending', 'deferred', 'delivered', 'failed'] as const satisfies readonly RecipientState[];
// every recipient state is listed above (a state added to the spool's type fails to compile here until it is)
const _allStates: Exclude<RecipientState, (typeof RECIPIENT_STATES)[number]> extends never ? true : never = true;
void _allStates;

/**
 * `--state` values: a recipient state in the words `queue list` shows (vocabulary/words.ts: `sent`, `bounced`),
 * `waiting` (pending or deferred) or `held` (messages on hold). The spool's own words (`delivered`, `failed`)
 * are accepted too.
 */
export const STATE_FILTERS = ['pending', 'deferred', 'sent', 'bounced', 'waiting', 'held'] as const;
export type StateFilter = (typeof STATE_FILTERS)[number];

export interface ListingFilter {
  domain?: string;
  state?: StateFilter;
}

const isWaiting = (r: RecipientStatus) => r.state === 'pending' || r.state === 'deferred';

/** An operator's `--state` word, or an error naming the choices. */
export function parseStateFilter(s: string): StateFilter {
  const lower = s.toLowerCase();
  const v = (RECIPIENT_STATES as readonly string[]).includes(lower) ? shownState(lower as RecipientState) : lower;
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
      (r) =>
        (!domain || domainOf(r.address) === domain) &&
        (!f.state || f.state === 'held' || (f.state === 'waiting' ? isWaiting(r) : shownState(r.state) === f.state)),
    );
    return recipients.length ? [{ ...m, recipients }] : [];
  });
  return { messages, unreadable: l.unreadable };
}

export interface QueueShape {
  /** column labels: "0-5m", "5-10m", …, "1280m+" */
  columns: string[];
  /** TOTAL first, then one row per destination domain, most recipients first */
  rows: ShapeRow[];
}

/** Recipients by destination domain and age. Counts waiting recipients unless `f.state` says otherwise (qshape counts the queue it is given). */
export function queueShape(l: SpoolListing, now: number, f: ListingFilter = {}): QueueShape {
  const rows = shapeRows(filterListing(l, { ...f, state: f.state ?? 'waiting' }).messages, now);
  const counts = SHAPE_COLUMNS.map((_, i) => rows.reduce((n, r) => n + r.counts[i]!, 0));
  return { columns: [...SHAPE_COLUMNS], rows: [{ domain: 'TOTAL', total: counts.reduce((a, b) => a + b, 0), counts }, ...rows] };
}

/** The table as text, right-aligned numbers under each column label. */
export function formatShape(s: QueueShape): string {
  const head = ['', 'T', ...s.columns];
  const body = s.rows.map((r) => [r.domain, String(r.total), ...r.counts.map(String)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[0]!) : c.padStart(widths[i]!))).join(' ');
  return [line(head), ...body.map(line)].map((l) => l.trimEnd()).join('\n') + '\n';
}
