/**
 * Rollover risk (pure): which record sets are one certificate renewal away from failing DANE.
 */
import { describe, expect, it } from 'vitest';
import { assessRollover, type RolloverKind } from '../../src/policy/rollover.js';
import { MxFactsStore } from '../../src/policy/mxFacts.js';
import type { DaneFacts } from '../../src/dane/types.js';

const NOW = Date.parse('2026-06-01T00:00:00Z');
const DAY = 86_400_000;
const WARN = 14 * DAY;
const at = (days: number) => new Date(NOW + days * DAY).toISOString();

/** chain: expiry in days per depth; records: [usage, selector, matchDepth | null, usable?] */
function facts(chainDays: number[], records: [number, number, number | null, boolean?][]): DaneFacts {
  return {
    records: records.map(([usage, selector, matchDepth, usable], index) => ({ index, usage, selector, matchingType: 1, usable: usable ?? true, matchDepth })),
    chain: chainDays.map((d, depth) => ({
      depth,
      subject: `CN=c${depth}`,
      issuer: depth === chainDays.length - 1 ? `CN=c${depth}` : `CN=c${depth + 1}`,
      notBefore: at(-60),
      notAfter: at(d),
      spkiSha256: 'AB',
      ca: depth > 0,
    })),
  };
}

type Row = [string, DaneFacts, RolloverKind[], ('warning' | 'advice')[]];
const rows: Row[] = [
  // DANE-EE only
  ['single 3 1 1, leaf expires in 5 days', facts([5], [[3, 1, 0]]), ['ee-key-expiring'], ['warning']],
  ['single 3 1 1, leaf expires in 14 days (edge, inclusive)', facts([14], [[3, 1, 0]]), ['ee-key-expiring'], ['warning']],
  ['single 3 1 1, leaf expires in 60 days', facts([60], [[3, 1, 0]]), ['ee-no-next-key'], ['advice']],
  ['single 3 0 1, leaf expires in 5 days', facts([5], [[3, 0, 0]]), ['ee-cert-expiring'], ['warning']],
  [
    '3 0 1 and 3 1 1 both on the leaf, expiring',
    facts(
      [5],
      [
        [3, 0, 0],
        [3, 1, 0],
      ],
    ),
    ['ee-key-expiring'],
    ['warning'],
  ],
  [
    'two 3 1 1 on the same leaf (duplicate), expiring',
    facts(
      [3],
      [
        [3, 1, 0],
        [3, 1, 0],
      ],
    ),
    ['ee-key-expiring'],
    ['warning'],
  ],
  [
    '3 1 1 current + 3 1 1 next key, expiring',
    facts(
      [5],
      [
        [3, 1, 0],
        [3, 1, null],
      ],
    ),
    [],
    [],
  ],
  [
    '3 1 1 current + 2 1 1 issuer (not expiring), leaf expiring',
    facts(
      [5, 400],
      [
        [3, 1, 0],
        [2, 1, 1],
      ],
    ),
    [],
    [],
  ],
  [
    '3 1 1 current + 2 1 1 issuer, both expiring',
    facts(
      [5, 10],
      [
        [3, 1, 0],
        [2, 1, 1],
      ],
    ),
    ['ee-key-expiring', 'ta-expiring'],
    ['warning', 'warning'],
  ],
  ['already expired leaf under 3 1 1 (DANE-EE ignores dates)', facts([-3], [[3, 1, 0]]), ['ee-key-expiring'], ['warning']],
  [
    'unusable second record does not count as the next key',
    facts(
      [5],
      [
        [3, 1, 0],
        [1, 1, null, false],
      ],
    ),
    ['ee-key-expiring'],
    ['warning'],
  ],
  // DANE-TA
  ['2 1 1 on the intermediate, intermediate expires in 7 days', facts([60, 7, 900], [[2, 1, 1]]), ['ta-expiring'], ['warning']],
  ['2 1 1 on the intermediate, intermediate far away', facts([60, 300, 900], [[2, 1, 1]]), ['ta-no-successor'], ['advice']],
  [
    '2 1 1 on intermediate + 2 1 1 on root',
    facts(
      [60, 7, 900],
      [
        [2, 1, 1],
        [2, 1, 2],
      ],
    ),
    [],
    [],
  ],
  [
    '2 1 1 on intermediate + 2 1 1 next intermediate (not presented)',
    facts(
      [60, 7, 900],
      [
        [2, 1, 1],
        [2, 1, null],
      ],
    ),
    [],
    [],
  ],
  ['2 1 1 on the root only (self-signed top): no advice', facts([60, 300, 900], [[2, 1, 2]]), [], []],
  // the CA change is survived by keeping the EE key; the later leaf renewal then has only the 3 1 1 left
  [
    '2 1 1 on intermediate + 3 1 1 leaf key, intermediate expiring (keep EE key)',
    facts(
      [60, 7],
      [
        [2, 1, 1],
        [3, 1, 0],
      ],
    ),
    ['ee-no-next-key'],
    ['advice'],
  ],
  [
    '2 0 1 on intermediate + 3 0 1 leaf cert, intermediate expiring',
    facts(
      [60, 7],
      [
        [2, 0, 1],
        [3, 0, 0],
      ],
    ),
    ['ee-no-next-key', 'ta-expiring'],
    ['advice', 'warning'],
  ],
  ['2 1 1 matching the leaf itself, leaf expiring', facts([5], [[2, 1, 0]]), ['ee-key-expiring'], ['warning']],
  ['2 1 1 matching the leaf itself, leaf far: no EE advice (not DANE-EE)', facts([90], [[2, 1, 0]]), [], []],
  // a DANE-EE record authenticates the leaf only: one equal to an intermediate is non-matching, and no next key either
  ['DANE-52 3 1 1 matching the intermediate (depth 1) only: not matching, no finding (a failure, not a rollover risk)', facts([5, 7], [[3, 1, 1]]), [], []],
  [
    'DANE-52 3 1 1 on the leaf + 3 1 1 equal to the intermediate: the second is neither a match nor a next key',
    facts(
      [5, 300],
      [
        [3, 1, 0],
        [3, 1, 1],
      ],
    ),
    ['ee-key-expiring'],
    ['warning'],
  ],
  // nothing matches: a failure, not a rollover risk
  ['no record matches', facts([5], [[3, 1, null]]), [], []],
  ['no usable record', facts([5], [[0, 1, 0, false]]), [], []],
];

describe('assessRollover table', () => {
  for (const [name, f, kinds, severities] of rows) {
    it(name.startsWith('DANE-') ? name : `issue7: ${name}`, () => {
      const out = assessRollover(f, NOW, WARN);
      expect(out.map((x) => x.kind)).toEqual(kinds);
      expect(out.map((x) => x.severity)).toEqual(severities);
      for (const x of out) {
        expect(x.expires).toBe(f.chain.find((c) => c.depth === x.depth)!.notAfter);
        expect(f.records[x.record]!.matchDepth).toBe(x.depth);
        expect(f.records[x.record]!.usage === 3 ? x.depth : 0).toBe(0);
        expect(x.detail.length).toBeGreaterThan(20);
      }
    });
  }
  it('issue7: the window is a parameter: 3 1 1 at 20 days warns with 30 days, advises with 14', () => {
    const f = facts([20], [[3, 1, 0]]);
    expect(assessRollover(f, NOW, 30 * DAY).map((x) => x.kind)).toEqual(['ee-key-expiring']);
    expect(assessRollover(f, NOW, 14 * DAY).map((x) => x.kind)).toEqual(['ee-no-next-key']);
  });
});

describe('DANE-52 stale records do not count as the next key', () => {
  const idf = (f: DaneFacts, ids: string[]): DaneFacts => ({ ...f, records: f.records.map((r, i) => ({ ...r, id: ids[i] })) });
  it('DANE-52 retired (an index the caller knows matched before) does not suppress the warning; a never-seen one does', () => {
    const f = facts(
      [5],
      [
        [3, 1, 0],
        [3, 1, null],
      ],
    );
    expect(assessRollover(f, NOW, WARN)).toEqual([]);
    expect(assessRollover(f, NOW, WARN, { retired: new Set([1]) }).map((x) => x.kind)).toEqual(['ee-key-expiring']);
  });
  it("DANE-52 MxFactsStore: after a key change, the old key's record left in the RRset is stale, so the new single key warns", () => {
    const store = new MxFactsStore(WARN);
    // session 1: record A authenticates (far from expiry), record B pre-published: nothing to warn
    expect(
      store.note(
        'd.test',
        'mx.d.test',
        {
          facts: idf(
            facts(
              [200],
              [
                [3, 1, 0],
                [3, 1, null],
              ],
            ),
            ['A', 'B'],
          ),
        },
        NOW,
      ),
    ).toEqual([]);
    // session 2: the server moved to key B (A left behind), and B's certificate expires soon
    const due = store.note(
      'd.test',
      'mx.d.test',
      {
        facts: idf(
          facts(
            [5],
            [
              [3, 1, null],
              [3, 1, 0],
            ],
          ),
          ['A', 'B'],
        ),
      },
      NOW + DAY,
    );
    expect(due.map((x) => [x.kind, x.record])).toEqual([['ee-key-expiring', 1]]);
    // another MX never saw A match: A still counts as a next key there
    expect(
      store.note(
        'd.test',
        'mx2.d.test',
        {
          facts: idf(
            facts(
              [5],
              [
                [3, 1, null],
                [3, 1, 0],
              ],
            ),
            ['A', 'B'],
          ),
        },
        NOW + DAY,
      ),
    ).toEqual([]);
  });
});
