/**
 * Issue 13 defect 3: exactly one outcome per recipient of an attempt, and a deferral always moves
 * the next attempt into the future; issue 19: the DSN the settle rule asks for follows NOTIFY.
 * Properties over generated outcomes (fast-check), and a table per NOTIFY rule.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { oneOutcomeEach, type RecipientOutcome } from '../../src/delivery/outcome.js';
import { applyOutcome } from '../../src/scheduler/settle.js';
import type { RecipientStatus } from '../../src/spool/types.js';
import type { Notify, RcptDsn } from '../../src/dsn/params.js';

const cfg = { min_backoff: 30 * 60_000, max_backoff: 4 * 3_600_000, lifetime: 5 * 86_400_000, delay_warning: 4 * 3_600_000 };
const result = fc.constantFrom('sent', 'deferred', 'bounced') as fc.Arbitrary<RecipientOutcome['result']>;
const outcome = (addresses: string[]) =>
  fc.record({ address: fc.constantFrom(...addresses), result, code: fc.constantFrom('2.0.0', '4.2.0', '5.1.1'), reason: fc.string() });

describe('one outcome per recipient (issue 13)', () => {
  it('issue13-3 whatever the attempt returned — nothing, duplicates, strangers — each recipient of the job gets exactly one outcome', () => {
    fc.assert(
      fc.property(
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
      ),
    );
  });

  it('issue13-3 an attempt that gave no outcome at all (MAIL 251 without PIPELINING, before the fix) defers every recipient, with a backoff', () => {
    const now = 1_000_000_000;
    const { outcomes, breaches } = oneOutcomeEach(['a@x', 'b@x'], []);
    expect(outcomes.map((o) => [o.address, o.result, o.code])).toEqual([
      ['a@x', 'deferred', '4.3.0'],
      ['b@x', 'deferred', '4.3.0'],
    ]);
    expect(breaches).toHaveLength(2);
    const cur: RecipientStatus = { address: 'a@x', state: 'pending', attempts: 0, nextAttempt: now };
    const { next } = applyOutcome(cur, outcomes[0]!, { received: now, kind: 'normal' }, now, cfg, () => 0.5);
    expect(next).toMatchObject({ state: 'deferred', attempts: 1, nextAttempt: now + cfg.min_backoff });
  });

  it('DANE-34 a deferral always has a backoff: the next attempt is at least min_backoff ahead, attempts counted, until the lifetime ends it', () => {
    fc.assert(
      fc.property(fc.nat(50), fc.integer({ min: 0, max: cfg.lifetime * 2 }), fc.double({ min: 0, max: 0.9999999, noNaN: true }), (attempts, age, r) => {
        const now = 2_000_000_000_000;
        const cur: RecipientStatus = { address: 'a@x', state: attempts ? 'deferred' : 'pending', attempts, nextAttempt: now };
        const { next, dsn } = applyOutcome(
          cur,
          { address: 'a@x', result: 'deferred', code: '4.5.0', reason: 'protocol error' },
          { received: now - age, kind: 'normal' },
          now,
          cfg,
          () => r,
        );
        expect(next.attempts).toBe(attempts + 1);
        if (age >= cfg.lifetime) {
          expect(next.state).toBe('failed');
          expect(dsn).toMatchObject({ action: 'failed', status: '5.5.0' });
        } else {
          expect(next.state).toBe('deferred');
          expect(next.nextAttempt - now).toBeGreaterThanOrEqual(cfg.min_backoff);
        }
      }),
    );
  });
});

/**
 * Issue 19 on top of the settle rule: the recipient's NOTIFY (RFC 3461 §4.1) decides which DSN
 * applyOutcome asks the scheduler to queue; it never changes the recipient's state.
 */
describe('the DSN a settled outcome asks for follows NOTIFY (RFC 3461 §4.1, §5.2)', () => {
  const conditions = fc.subarray(['SUCCESS', 'FAILURE', 'DELAY'] as const, { minLength: 1 });
  /** undefined: no NOTIFY given (no rcptDsn entry, or one with only ORCPT) */
  const notify: fc.Arbitrary<Notify[] | undefined> = fc.oneof(
    fc.constant(undefined),
    fc.constant(['NEVER'] as Notify[]),
    conditions.map((c) => [...c] as Notify[]),
  );
  const entry = (n: Notify[] | undefined, orcpt: boolean): RcptDsn | undefined =>
    n === undefined && !orcpt ? undefined : { ...(n ? { notify: n } : {}), ...(orcpt ? { orcpt: { type: 'rfc822', address: 'orig@x' } } : {}) };

  it('NOTIFY changes only the DSN: relayed ⇔ sent, SUCCESS asked and no DSN at the next hop; failed ⇔ failed and FAILURE (or no NOTIFY); delayed ⇔ a warning due and DELAY (or no NOTIFY); NEVER ⇒ none', () => {
    const now = 2_000_000_000_000;
    fc.assert(
      fc.property(
        fc.record({
          result,
          nextHopDsn: fc.constantFrom(true, false, undefined),
          notify,
          orcpt: fc.boolean(),
          other: notify,
          attempts: fc.nat(30),
          age: fc.integer({ min: 0, max: cfg.lifetime * 2 }),
          delayNotified: fc.option(fc.integer({ min: 0, max: cfg.lifetime }), { nil: undefined }),
          r: fc.double({ min: 0, max: 0.9999999, noNaN: true }),
          reply: fc.option(fc.constantFrom('250 2.0.0 queued', '550 5.1.1 no such user', '451 4.3.0 later'), { nil: undefined }),
        }),
        (g) => {
          const code = g.result === 'sent' ? '2.0.0' : g.result === 'bounced' ? '5.1.1' : '4.3.0';
          const o: RecipientOutcome = {
            address: 'a@x',
            result: g.result,
            code,
            reason: 'r',
            relay: 'mx.x[127.0.0.1]:25',
            remoteMta: 'mx.x',
            ...(g.reply ? { reply: g.reply } : {}),
            ...(g.nextHopDsn !== undefined ? { nextHopDsn: g.nextHopDsn } : {}),
          };
          const cur: RecipientStatus = {
            address: 'a@x',
            state: g.attempts ? 'deferred' : 'pending',
            attempts: g.attempts,
            nextAttempt: now,
            ...(g.delayNotified !== undefined ? { delayNotified: now - g.delayNotified } : {}),
          };
          const received = now - g.age;
          const mine = entry(g.notify, g.orcpt);
          // another recipient's NOTIFY must not matter
          const rcptDsn: Record<string, RcptDsn> = { ...(mine ? { 'a@x': mine } : {}), ...(g.other ? { 'b@x': { notify: g.other } } : {}) };
          const withNotify = applyOutcome(cur, o, { received, kind: 'normal', rcptDsn }, now, cfg, () => g.r);
          const plain = applyOutcome(cur, o, { received, kind: 'normal' }, now, cfg, () => g.r);

          const allows = (c: 'SUCCESS' | 'FAILURE' | 'DELAY') => (g.notify === undefined ? c !== 'SUCCESS' : g.notify.includes(c));
          // the state, attempts, next attempt, reason and code are NOTIFY's business in no case
          const { delayNotified: dn1, ...s1 } = withNotify.next;
          const { delayNotified: dn2, ...s2 } = plain.next;
          expect(s1).toEqual(s2);
          // without NOTIFY the rule is the one before issue 19: failures and delay warnings, no success
          if (plain.dsn) expect(['failed', 'delayed']).toContain(plain.dsn.action);

          const want =
            withNotify.next.state === 'delivered'
              ? allows('SUCCESS') && !g.nextHopDsn
                ? 'relayed'
                : undefined
              : withNotify.next.state === 'failed'
                ? allows('FAILURE')
                  ? 'failed'
                  : undefined
                : plain.dsn?.action === 'delayed' && allows('DELAY')
                  ? 'delayed'
                  : undefined;
          expect(withNotify.dsn?.action).toBe(want);
          if (g.notify?.[0] === 'NEVER') expect(withNotify.dsn).toBeUndefined();
          if (want && want !== 'relayed') expect(withNotify.dsn).toEqual(plain.dsn);
          if (want === 'relayed') {
            expect(withNotify.dsn).toEqual({
              address: 'a@x',
              action: 'relayed',
              status: '2.0.0',
              remoteMta: 'mx.x',
              diagnostic: g.reply ? { type: 'smtp', text: g.reply } : undefined,
              lastAttempt: now,
            });
          }
          // a delay warning is recorded as sent only when it was: one not asked for leaves delayNotified as it was
          if (want === 'delayed') expect(dn1).toBe(now);
          else if (plain.dsn?.action === 'delayed') expect(dn1).toBe(cur.delayNotified);
          else expect(dn1).toBe(dn2);
        },
      ),
      { numRuns: 2000 },
    );
  });

  const now = 3_000_000_000_000;
  const cur: RecipientStatus = { address: 'a@x', state: 'pending', attempts: 0, nextAttempt: now };
  const sent: RecipientOutcome = { address: 'a@x', result: 'sent', code: '2.0.0', reason: '250 ok', reply: '250 2.0.0 ok', remoteMta: 'mx.x' };
  const bounced: RecipientOutcome = { address: 'a@x', result: 'bounced', code: '5.1.1', reason: 'no', reply: '550 5.1.1 no' };
  const deferred: RecipientOutcome = { address: 'a@x', result: 'deferred', code: '4.4.1', reason: 'no answer' };
  const env = (notify?: Notify[]) => ({ received: now - cfg.delay_warning, kind: 'normal' as const, ...(notify ? { rcptDsn: { 'a@x': { notify } } } : {}) });
  const rows: [string, RecipientOutcome, Notify[] | undefined, string | undefined][] = [
    ['RFC 3461 §5.2.2 NOTIFY=SUCCESS delivered to a next hop without DSN: relayed', { ...sent, nextHopDsn: false }, ['SUCCESS'], 'relayed'],
    ['RFC 3461 §5.2.1 NOTIFY=SUCCESS delivered to a next hop with DSN: none (the next hop reports)', { ...sent, nextHopDsn: true }, ['SUCCESS'], undefined],
    ['no NOTIFY, delivered to a next hop without DSN: none (success is not reported by default)', { ...sent, nextHopDsn: false }, undefined, undefined],
    ['NOTIFY=FAILURE,DELAY delivered: none', { ...sent, nextHopDsn: false }, ['FAILURE', 'DELAY'], undefined],
    ['no NOTIFY, bounced: failed', bounced, undefined, 'failed'],
    ['RFC 3461 §5.2.6 NOTIFY=NEVER bounced: none', bounced, ['NEVER'], undefined],
    ['NOTIFY=SUCCESS,DELAY bounced: none (FAILURE not asked)', bounced, ['SUCCESS', 'DELAY'], undefined],
    ['NOTIFY=FAILURE bounced: failed', bounced, ['FAILURE'], 'failed'],
    ['no NOTIFY, deferred past delay_warning: delayed', deferred, undefined, 'delayed'],
    ['RFC 3461 §5.2.5 NOTIFY=FAILURE deferred past delay_warning: none', deferred, ['FAILURE'], undefined],
    ['NOTIFY=NEVER deferred past delay_warning: none', deferred, ['NEVER'], undefined],
    ['NOTIFY=DELAY deferred past delay_warning: delayed', deferred, ['DELAY'], 'delayed'],
  ];
  for (const [name, o, n, action] of rows) {
    it(name, () => {
      const { next, dsn } = applyOutcome(cur, o, env(n), now, cfg, () => 0.5);
      expect(next.state).toBe({ sent: 'delivered', bounced: 'failed', deferred: 'deferred' }[o.result]);
      expect(dsn?.action).toBe(action);
      if (o.result === 'deferred') expect(next.delayNotified).toBe(action ? now : undefined);
    });
  }
});
