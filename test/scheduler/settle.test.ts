/**
 * Issue 13 defect 3: exactly one outcome per recipient of an attempt, and a deferral always moves
 * the next attempt into the future. Properties over generated outcome lists (fast-check).
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { oneOutcomeEach, type RecipientOutcome } from '../../src/delivery/outcome.js';
import { applyOutcome } from '../../src/scheduler/settle.js';
import type { RecipientStatus } from '../../src/spool/types.js';

const cfg = { min_backoff: 30 * 60_000, max_backoff: 4 * 3_600_000, lifetime: 5 * 86_400_000, delay_warning: 4 * 3_600_000 };
const result = fc.constantFrom('sent', 'deferred', 'bounced') as fc.Arbitrary<RecipientOutcome['result']>;
const outcome = (addresses: string[]) => fc.record({ address: fc.constantFrom(...addresses), result, code: fc.constantFrom('2.0.0', '4.2.0', '5.1.1'), reason: fc.string() });

describe('one outcome per recipient (issue 13)', () => {
  it('issue13-3 whatever the attempt returned — nothing, duplicates, strangers — each recipient of the job gets exactly one outcome', () => {
    fc.assert(fc.property(
      fc.uniqueArray(fc.constantFrom<string>('a@x', 'b@x', 'c@x', 'd@x'), { minLength: 1 }),
      fc.array(outcome(['a@x', 'b@x', 'c@x', 'd@x', 'stranger@y']), { maxLength: 8 }),
      (recipients, given) => {
        const { outcomes, breaches } = oneOutcomeEach(recipients, given);
        expect(outcomes.map((o) => o.address)).toEqual(recipients);
        for (const o of outcomes) {
          const mine = given.filter((g) => g.address === o.address);
          // kept only when the attempt said it once, or said the same thing every time; else deferred
          if (mine.length === 1) expect(o).toBe(mine[0]);
          else if (mine.length > 1 && mine.every((m) => m.result === mine[0]!.result)) expect(o).toBe(mine[0]);
          else expect([o.result, o.code]).toEqual(['deferred', '4.3.0']);
        }
        const clean = given.every((g) => recipients.includes(g.address)) && recipients.every((r) => given.filter((g) => g.address === r).length === 1);
        expect(breaches.length === 0).toBe(clean);
      },
    ));
  });

  it('issue13-3 an attempt that gave no outcome at all (MAIL 251 without PIPELINING, before the fix) defers every recipient, with a backoff', () => {
    const now = 1_000_000_000;
    const { outcomes, breaches } = oneOutcomeEach(['a@x', 'b@x'], []);
    expect(outcomes.map((o) => [o.address, o.result, o.code])).toEqual([['a@x', 'deferred', '4.3.0'], ['b@x', 'deferred', '4.3.0']]);
    expect(breaches).toHaveLength(2);
    const cur: RecipientStatus = { address: 'a@x', state: 'pending', attempts: 0, nextAttempt: now };
    const { next } = applyOutcome(cur, outcomes[0]!, { received: now, kind: 'normal' }, now, cfg, () => 0.5);
    expect(next).toMatchObject({ state: 'deferred', attempts: 1, nextAttempt: now + cfg.min_backoff });
  });

  it('DANE-34 a deferral always has a backoff: the next attempt is at least min_backoff ahead, attempts counted, until the lifetime ends it', () => {
    fc.assert(fc.property(fc.nat(50), fc.integer({ min: 0, max: cfg.lifetime * 2 }), fc.double({ min: 0, max: 0.9999999, noNaN: true }), (attempts, age, r) => {
      const now = 2_000_000_000_000;
      const cur: RecipientStatus = { address: 'a@x', state: attempts ? 'deferred' : 'pending', attempts, nextAttempt: now };
      const { next, dsn } = applyOutcome(cur, { address: 'a@x', result: 'deferred', code: '4.5.0', reason: 'protocol error' }, { received: now - age, kind: 'normal' }, now, cfg, () => r);
      expect(next.attempts).toBe(attempts + 1);
      if (age >= cfg.lifetime) {
        expect(next.state).toBe('failed');
        expect(dsn).toMatchObject({ action: 'failed', status: '5.5.0' });
      } else {
        expect(next.state).toBe('deferred');
        expect(next.nextAttempt - now).toBeGreaterThanOrEqual(cfg.min_backoff);
      }
    }));
  });
});
