/**
 * DANE-4 (derived): at start-up, ask the resolver for a name that must validate and one
 * that must fail validation. A validating resolver answers the first with AD=1 and the
 * second with SERVFAIL; anything else means DANE would silently not apply.
 */
import type { Resolver } from './types.js';

/**
 * `notValidating`: the resolver answered and the answers show it does not validate (no AD on the signed
 * name, or the broken name answered) — a downgrade risk. A resolver that did not answer the signed name
 * fails the test too, but every lookup then fails on its own (deferred 4.4.3), nothing is downgraded.
 */
export interface SelfTestResult {
  ok: boolean;
  detail: string;
  signed: string;
  broken: string;
  notValidating?: boolean;
}

export async function selfTest(resolver: Resolver, names = { signed: 'ietf.org', broken: 'dnssec-failed.org' }): Promise<SelfTestResult> {
  const [good, bad] = await Promise.all([resolver.lookup(names.signed, 'A'), resolver.lookup(names.broken, 'A')]);
  const signed = good.error ? `error ${good.error.kind}` : good.status;
  const broken = bad.error ? `error ${bad.error.kind}` : bad.status;
  if (good.status === 'secure' && !good.error && bad.error) return { ok: true, detail: 'resolver validates', signed, broken };
  if (good.error) return { ok: false, detail: `signed name ${names.signed} did not resolve (${signed}); resolver unreachable or broken`, signed, broken };
  if (good.status !== 'secure')
    return {
      ok: false,
      notValidating: true,
      detail: `signed name ${names.signed} came back ${signed}: the resolver does not set AD (not validating)`,
      signed,
      broken,
    };
  return {
    ok: false,
    notValidating: true,
    detail: `broken name ${names.broken} came back ${broken}: the resolver does not reject bogus answers`,
    signed,
    broken,
  };
}

export interface SelfTestLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export interface SelfTestMonitorOptions {
  /** the resolver under test; in trust-ad mode one without an answer cache, so a re-test sees the resolver as it is now */
  resolver: Resolver;
  /** re-test period while DANE is in force (`metrics.selftest_interval`, default 60 s) */
  intervalMs: number;
  log: SelfTestLog;
  /** dns.mode trust-ad: while the test fails, deliveries that need DANE are held (`hold()`) */
  holds: boolean;
  /** the names asked (tests) */
  names?: { signed: string; broken: string };
}

/**
 * The enhanced status code of a delivery held because the resolver fails the self-test. 4.4.3
 * ("directory server failure", RFC 3463), not 4.7.5: nothing is wrong with the destination's
 * certificate or TLSA records; our own DNS cannot tell us whether it has any, exactly like an MX or
 * TLSA lookup error (DANE-11, DANE-33), which the relay also defers with 4.4.3.
 */
export const SELFTEST_HOLD_CODE = '4.4.3';

/**
 * DANE-4 at run time (issue 13): the self-test is run at start, repeated every `intervalMs` (and on
 * SIGHUP), and in trust-ad mode a failing result holds the deliveries that need DANE — a resolver that
 * does not validate answers every TLSA query "insecure", which would send DANE mail without DANE.
 * Logged loudly when it starts failing and when it passes again; /readyz shows the same result.
 */
export class SelfTestMonitor {
  private last?: SelfTestResult;
  private running?: Promise<SelfTestResult>;
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly opts: SelfTestMonitorOptions) {}

  /** The latest result, or the run in flight; a first run if there is none (for /readyz). */
  current(why: string): Promise<SelfTestResult> {
    return this.running ?? (this.last ? Promise.resolve(this.last) : this.run(why));
  }

  /** The latest completed result, if any. */
  get latest(): SelfTestResult | undefined {
    return this.last;
  }

  /** Run the test now (a run in flight is shared). Never rejects: a test that cannot run has failed. */
  run(why: string): Promise<SelfTestResult> {
    this.running ??= (async () => {
      let r: SelfTestResult;
      try {
        r = await selfTest(this.opts.resolver, this.opts.names);
      } catch (e) {
        r = { ok: false, detail: `the self-test could not run: ${(e as Error).message}`, signed: 'error', broken: 'error' };
      }
      this.report(r, why);
      this.last = r;
      return r;
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private report(r: SelfTestResult, why: string): void {
    const before = this.last;
    const held = this.opts.holds && r.notValidating ? `; deliveries that need DANE are held (${SELFTEST_HOLD_CODE}) until it passes` : '';
    if (!r.ok && (!before || before.ok)) {
      this.opts.log.warn({ selftest: r, why }, `DNSSEC SELF-TEST FAILED: ${r.detail} — DANE cannot protect deliveries until the resolver validates${held}`);
    } else if (r.ok && before && !before.ok) {
      this.opts.log.warn(
        { selftest: r, why },
        `DNSSEC self-test passed again: ${r.detail}${this.opts.holds ? '; held DANE deliveries go out at their next attempt (`dane-relay queue flush` sends them now)' : ''}`,
      );
    } else if (r.ok && !before) {
      this.opts.log.info({ selftest: r, why }, 'DNSSEC self-test passed');
    } else {
      this.opts.log.debug({ selftest: r, why }, r.ok ? 'DNSSEC self-test passed' : 'DNSSEC self-test still failing');
    }
  }

  /** First run now, then one every `intervalMs` until stop(). Idempotent. */
  start(why: string): Promise<SelfTestResult> {
    const first = this.run(why);
    if (!this.timer && !this.stopped) {
      this.timer = setInterval(() => void this.run('periodic'), Math.max(1000, this.opts.intervalMs));
      this.timer.unref();
    }
    return first;
  }

  /**
   * trust-ad mode: why a delivery that needs DANE must wait, or undefined. Waits for a run in flight
   * (the one at start: bounded by dns.timeout × attempts), so mail recovered at start is not deferred
   * before the resolver was even asked. Without any run (DANE not in force) nothing is held. Only a
   * resolver shown not to validate holds mail: one that did not answer cannot downgrade anything (each
   * lookup fails and defers by itself), and a transient timeout must not hold mail for a whole backoff.
   */
  async hold(): Promise<{ code: string; reason: string } | undefined> {
    if (!this.opts.holds) return undefined;
    const r = this.running !== undefined ? await this.running : this.last;
    if (!r || r.ok || !r.notValidating) return undefined;
    return {
      code: SELFTEST_HOLD_CODE,
      reason: `DNSSEC self-test failed (${r.detail}): the resolver's answers cannot show whether the destination requires DANE, so the message waits (dns.mode trust-ad)`,
    };
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
