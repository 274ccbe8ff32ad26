/**
 * DANE-4 (derived): ask the resolver for a name that must validate and one that must fail
 * validation. A validating resolver answers the first secure with records (RFC 4035 §4.3: AD=1 in
 * trust-ad mode) and the second with a failure (SERVFAIL); anything else means DANE would not apply.
 *
 * The names are configurable (issue 21 item 3, like Postfix's `dnssec_probe`): `dns.dnssec_probe`
 * (`[type:]name`, default `ietf.org`) and `dns.dnssec_bogus_probe` (default `dnssec-failed.org`, `""`
 * turns that half off). A secure NXDOMAIN or NODATA for the positive probe is *not* a pass: it proves
 * the resolver validated a denial, not that it validates positive answers, and it usually means the
 * probe name is wrong. Each way the test can fail is a `SelfTestFailure` with its own wording.
 */
import type { DnsAnswer, QueryType, Resolver } from './types.js';

/** One probe: a name and the type asked (`[type:]name`, A by default). */
export interface Probe {
  name: string;
  type: QueryType;
}

/** The probes a run asks; no `bogus`: the bogus half is off (`dns.dnssec_bogus_probe: ""`). */
export interface SelfTestProbes {
  secure: Probe;
  bogus?: Probe;
}

export const DEFAULT_SECURE_PROBE = 'ietf.org';
export const DEFAULT_BOGUS_PROBE = 'dnssec-failed.org';
const PROBE_TYPES: readonly QueryType[] = ['A', 'AAAA', 'MX', 'TXT', 'TLSA'];

/**
 * `[type:]name` → a probe (Postfix's `dnssec_probe` syntax, e.g. `mx:example.org`; the name alone asks A).
 * Throws with the reason on a type we do not ask for or an empty name (the config schema shows it).
 */
export function parseProbe(text: string): Probe {
  const m = /^([A-Za-z]+):(.*)$/.exec(text.trim());
  const type = (m ? m[1]!.toUpperCase() : 'A') as QueryType;
  const name = (m ? m[2]! : text).trim().replace(/\.$/, '').toLowerCase();
  if (!PROBE_TYPES.includes(type)) throw new Error(`probe type ${m![1]} is not one of ${PROBE_TYPES.map((t) => t.toLowerCase()).join(', ')}`);
  if (!/^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/.test(name))
    throw new Error(`"${text}" is not [type:]name with a DNS name`);
  return { name, type };
}

/** The probes of the configuration keys (`bogus` empty or false: that half off). */
export function selfTestProbes(secure: string = DEFAULT_SECURE_PROBE, bogus: string | false = DEFAULT_BOGUS_PROBE): SelfTestProbes {
  return { secure: parseProbe(secure), ...(bogus ? { bogus: parseProbe(bogus) } : {}) };
}

const show = (p: Probe) => (p.type === 'A' ? p.name : `${p.type.toLowerCase()}:${p.name}`);

/**
 * Why a run failed, one kind per thing an operator does differently:
 * - `unreachable`: no answer from the resolver for the secure probe (timeout, network): check dns.resolvers
 * - `resolver-error`: the resolver answered with an error (SERVFAIL, REFUSED, …): it cannot resolve or validate the name
 * - `secure-bogus`: validate mode, the secure probe failed validation (trust anchors, clock)
 * - `not-secure`: the answer came back insecure (trust-ad: no AD): the resolver does not validate, or the name is unsigned
 * - `nxdomain` / `nodata`: a (secure) denial: the probe name does not exist / has no records of the type
 * - `bogus-accepted`: the bogus probe came back with an answer: the resolver does not reject bogus data
 */
export type SelfTestFailure = 'unreachable' | 'resolver-error' | 'secure-bogus' | 'not-secure' | 'nxdomain' | 'nodata' | 'bogus-accepted' | 'not-run';

/**
 * `notValidating`: the resolver answered and the answers show it does not validate (no AD on the signed
 * name, or the broken name answered) — a downgrade risk. A resolver that did not answer the signed name
 * fails the test too, but every lookup then fails on its own (deferred 4.4.3), nothing is downgraded.
 */
export interface SelfTestResult {
  ok: boolean;
  detail: string;
  /** what the secure probe came back as: `secure`, `insecure`, `secure NXDOMAIN`, `error timeout`, … */
  signed: string;
  /** the same for the bogus probe; `off` when that half is off */
  broken: string;
  /** the probes asked, as configured (`[type:]name`) */
  probes?: { secure: string; bogus?: string };
  failure?: SelfTestFailure;
  notValidating?: boolean;
}

const verdict = (a: DnsAnswer): string =>
  a.error ? `error ${a.error.kind}` : a.rcode === 'NXDOMAIN' ? `${a.status} NXDOMAIN` : a.records.length === 0 ? `${a.status} NODATA` : a.status;

/** The pure judgement of two answers (tests drive it with hand-made answers too). */
export function judgeSelfTest(probes: SelfTestProbes, good: DnsAnswer, bad: DnsAnswer | undefined): SelfTestResult {
  const signed = verdict(good);
  const broken = bad ? verdict(bad) : 'off';
  const s = show(probes.secure);
  const base = { signed, broken, probes: { secure: s, ...(probes.bogus ? { bogus: show(probes.bogus) } : {}) } };
  const fail = (failure: SelfTestFailure, detail: string, notValidating = false): SelfTestResult => ({
    ok: false,
    detail,
    ...base,
    failure,
    ...(notValidating ? { notValidating } : {}),
  });
  const hint = '; set dns.dnssec_probe to a signed name that exists and that this network can reach';
  if (good.error) {
    const k = good.error.kind;
    if (k === 'timeout') return fail('unreachable', `no answer from the resolver for the secure probe ${s} (timeout): check that dns.resolvers are reachable`);
    if (k === 'bogus')
      return fail('secure-bogus', `the secure probe ${s} failed DNSSEC validation (${good.error.message}): check dns.trust_anchors and the system clock`);
    return fail(
      'resolver-error',
      `the resolver could not answer the secure probe ${s} (${k}${good.rcode ? ` ${good.rcode}` : ''}): it cannot reach or validate that name${hint}`,
    );
  }
  if (good.status !== 'secure')
    return fail(
      'not-secure',
      `the secure probe ${s} came back ${signed}, not secure: the resolver does not validate (no AD), or the name is not signed${hint}`,
      true,
    );
  if (good.rcode === 'NXDOMAIN')
    return fail('nxdomain', `the secure probe ${s} does not exist (secure NXDOMAIN): a denial is not a positive secure answer${hint}`);
  if (good.records.length === 0)
    return fail('nodata', `the secure probe ${s} has no ${probes.secure.type} records (secure NODATA): a denial is not a positive secure answer${hint}`);
  if (!bad || !probes.bogus) return { ok: true, detail: `resolver validates: ${s} secure (bogus probe off)`, ...base };
  const b = show(probes.bogus);
  if (bad.error) return { ok: true, detail: `resolver validates: ${s} secure, ${b} rejected (${bad.error.kind})`, ...base };
  return fail(
    'bogus-accepted',
    `the bogus probe ${b} came back ${broken} instead of failing validation: the resolver does not reject bogus answers (or the name is no longer broken: dns.dnssec_bogus_probe)`,
    true,
  );
}

export async function selfTest(resolver: Resolver, probes: SelfTestProbes = selfTestProbes()): Promise<SelfTestResult> {
  const [good, bad] = await Promise.all([
    resolver.lookup(probes.secure.name, probes.secure.type),
    probes.bogus ? resolver.lookup(probes.bogus.name, probes.bogus.type) : undefined,
  ]);
  return judgeSelfTest(probes, good, bad);
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
  /** the probes asked (`dns.dnssec_probe`, `dns.dnssec_bogus_probe`); a reload changes them with `setProbes` */
  probes?: SelfTestProbes;
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
  private runningProbes?: SelfTestProbes;
  private timer?: NodeJS.Timeout;
  private stopped = false;

  private probes: SelfTestProbes;

  constructor(private readonly opts: SelfTestMonitorOptions) {
    this.probes = opts.probes ?? selfTestProbes();
  }

  /**
   * A config reload changed the probes (issue 21 item 3): the next run asks the new names. Returns whether
   * they changed (the caller then re-runs, so /readyz and the hold judge by the new names).
   */
  setProbes(probes: SelfTestProbes): boolean {
    if (JSON.stringify(probes) === JSON.stringify(this.probes)) return false;
    this.probes = probes;
    return true;
  }

  /** The latest result, or the run in flight; a first run if there is none (for /readyz). */
  current(why: string): Promise<SelfTestResult> {
    return this.running ?? (this.last ? Promise.resolve(this.last) : this.run(why));
  }

  /** The latest completed result, if any. */
  get latest(): SelfTestResult | undefined {
    return this.last;
  }

  /**
   * Run the test now. A run in flight with the current probes is shared; one with probes a reload has
   * since replaced is followed by a run with the new ones (returned). Never rejects: a test that cannot
   * run has failed.
   */
  run(why: string): Promise<SelfTestResult> {
    const probes = this.probes;
    if (this.running && this.runningProbes === probes) return this.running;
    const before = this.running ?? Promise.resolve();
    const run: Promise<SelfTestResult> = before
      .then(async () => {
        let r: SelfTestResult;
        try {
          r = await selfTest(this.opts.resolver, probes);
        } catch (e) {
          r = { ok: false, failure: 'not-run', detail: `the self-test could not run: ${(e as Error).message}`, signed: 'error', broken: 'error' };
        }
        this.report(r, why);
        this.last = r;
        return r;
      })
      .finally(() => {
        if (this.running === run) {
          this.running = undefined;
          this.runningProbes = undefined;
        }
      });
    this.running = run;
    this.runningProbes = probes;
    return run;
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
