/**
 * Delivery to one destination domain: MX → hosts in order → one SMTP session,
 * reused for several messages. A TLS plan becomes a TlsRequirement for the SMTP client
 * only in the shared attempt sequence (attempt.ts, also used by `check`), so the policy
 * check runs after the handshake and before any envelope command (RFC 7672 §2.2, digest
 * DANE-41/43/63).
 */
import type { Readable } from 'node:stream';
import tls from 'node:tls';
import type { Resolver } from '../dns/types.js';
import type { Envelope } from '../spool/types.js';
import type { TlsLevel } from '../dane/levels.js';
import { addressLiteral, type MxDecision } from '../route/mx.js';
import { planHost, type HostFacts } from '../route/host.js';
import type { TlsPlan } from '../dane/policy.js';
import { type SmtpSession, SmtpError, requireTlsProblem, type Connector, type SmtpClientOptions } from './smtpClient.js';
import { attemptAddress, requirementFor } from './attempt.js';
import { webpkiVerdict } from '../mtasts/webpki.js';
import type { VerifyOutcome } from '../dane/types.js';
import { stsConsidered, stsGate, stsHostRule } from '../mtasts/enforce.js';
import type { StsLookup } from '../mtasts/policies.js';
import type { CachedPolicy } from '../mtasts/store.js';
import { lookupMx, hostContext } from '../route/nexthop.js';
import { PlanBudget } from '../route/budget.js';
import { DEFAULT_MX_HOST_LIMIT } from '../route/mx.js';
import { INTERNAL_ERROR, oneOutcomeEach, outcomeOf, PROTOCOL_ERROR, type RecipientOutcome } from './outcome.js';
import {
  publish,
  splitDelays,
  REQUIRETLS_PROBLEM,
  type CarrierFacts,
  type DeferralCause,
  type DeliveryEvent,
  type DeliverySubscriber,
  type HostFailure,
} from './events.js';
import { outboundBody, type MimeConversion, type OutboundBody } from './body.js';
import type { BodyFacts } from '../mime/scan.js';
import type { RcptDsn } from '../dsn/params.js';

/** The destination's TLS level for a relay-generated TLSRPT report: opportunistic at most (RFC 8460 §3, digest TLSRPT-45). */
export const REPORT_TLS_LEVEL = { level: 'may' as TlsLevel, rule: 'tlsrpt report: no DANE/MTA-STS enforcement (RFC 8460 §3)' };

/**
 * The level of a run of REQUIRETLS messages (RFC 8689 §4.2.1, digest RT-21…25): a DNSSEC-secure MX whose
 * certificate DANE authenticates (`dane-only`: without usable TLSA the host is not used), whatever
 * `tls_policy` or the danefail list say for the destination (RT-25: no downgrade for such a message).
 * The RFC's other route, an MX host matched by the destination's MTA-STS `enforce` policy with a certificate
 * WebPKI-valid for the MX name, is added per host in `DestinationRun.open` where DANE has no usable TLSA.
 * Not implemented: a DNSSEC-secure MX with a WebPKI-valid certificate and neither TLSA nor an STS policy
 * (RT-22's derived reading): such a message waits rather than going out less protected.
 */
export const REQUIRETLS_LEVEL = {
  level: 'dane-only' as TlsLevel,
  rule: 'REQUIRETLS (RFC 8689): DNSSEC MX and DANE, or MTA-STS enforce; tls_policy and danefail do not apply',
};

/** RFC 3463 X.7.0 (other security status): the MTA-STS state could not be read, so the message waits (events.ts `sts-state`). */
export const STS_STATE_CODE = '4.7.0';

/**
 * The level of a run of `TLS-Required: No` messages (RFC 8689 §4.2.2, §8.4; RT-31, RT-33): the recipient's DANE
 * (level `dane`: TLSA where the destination publishes it) becomes opportunistic TLS (`may`: STARTTLS when offered,
 * cleartext when not or after a failed handshake), and no MTA-STS policy is looked up, so the recipient's DANE and
 * MTA-STS failures are ignored. A level the operator made mandatory — `encrypt`, `dane-only`, from a tls_policy
 * entry or `delivery.tls_level` — is local policy, not the recipient's, and stands, as do `none` and `may`.
 * The next hop is still found as always: a bogus or indeterminate MX or address answer still defers (route/mx.ts,
 * route/host.ts), because the field waives the protection of the content, not the authenticity of the route —
 * honouring it there would let an on-path attacker who forges DNS send the mail to a host of their choosing.
 */
export function tlsRequiredNoLevel(p: ReturnType<DeliveryDeps['tlsLevel']>): ReturnType<DeliveryDeps['tlsLevel']> {
  if (p.level !== 'dane') return p;
  return { level: 'may', rule: `TLS-Required: No (RFC 8689 section 4.2.2): recipient DANE/MTA-STS not enforced, instead of ${p.rule}` };
}

/** RFC 8689 §4.2.1 (RT-27): why no host took a REQUIRETLS message, as the code its final DSN will carry (5.7.30 / 5.7.10). */
function requireTlsCode(codes: string[]): string {
  if (codes.includes('4.7.30')) return '4.7.30';
  if (codes.includes('4.7.5') || codes.includes('4.7.10')) return '4.7.10';
  return aggregateCode(codes);
}

export interface DeliveryDeps {
  resolver: Resolver;
  heloName: string;
  selfNames: string[];
  port: number;
  /** the destination's TLS level and the rule that chose it (one place decides it) */
  tlsLevel: (domain: string) => {
    level: TlsLevel;
    rule: string;
    trustInsecureMx?: boolean;
    audit?: boolean;
    nsec3IterationsInsecure?: boolean;
    exception?: { underlying: TlsLevel };
    explicit?: true;
    /** issue 15: `sts-ignore` in tls_policy (mtasts/enforce.ts stsGate) */
    stsIgnore?: true;
  };
  /**
   * MTA-STS (RFC 8461, issue 15): the policy in force for a Policy Domain (mtasts/policies.ts), asked once
   * per run; absent: no MTA-STS. `stsRoots`: the WebPKI trust anchors MX certificates are checked against.
   */
  sts?: (domain: string) => Promise<StsLookup>;
  stsRoots?: readonly (string | Buffer)[];
  timeouts: SmtpClientOptions['timeouts'];
  /** how the SMTP client connects to a host's address (default: TCP, smtpClient.ts `dialTcp`); tests pass an in-process peer */
  connector?: Connector;
  digestPreference: ('sha512' | 'sha256')[];
  maxMessagesPerConnection: number;
  /** delivery.discard_ehlo_keywords, upper case: EHLO keywords of every next hop treated as not advertised */
  discardExtensions?: readonly string[];
  /** delivery.mx_host_limit: MX hosts planned and tried per message (0: all; default 5) */
  mxHostLimit?: number;
  now: () => number;
  /**
   * Who hears what a delivery does (delivery/events.ts): the log (delivery/log.ts), metrics
   * (delivery/metrics.ts), TLSRPT (reporting/tlsrpt/results.ts), rollover warnings
   * (delivery/rollover.ts). Called in order, synchronously; none may throw.
   */
  subscribers: readonly DeliverySubscriber[];
  /**
   * This relay's own listen endpoints (route/self.ts): an MX host with an address among them, at
   * the delivery port, is this relay — a mail loop (RFC 5321 §5.1). Absent: no address check.
   */
  ownEndpoints?: () => { has(address: string, port: number): boolean } | undefined;
  /** delivery.mime_conversion: a body the next hop did not agree to is converted (default) or bounced (5.6.3) */
  mimeConversion?: MimeConversion;
  /**
   * DANE-4 / issue 13: why a delivery that needs DANE must wait now (trust-ad mode with a failing
   * DNSSEC self-test: the resolver's AD bit cannot tell whether DANE applies), or undefined.
   */
  dnssecHold?: () => Promise<{ code: string; reason: string } | undefined>;
}

export interface DeliveryJob {
  id: string;
  envelope: Envelope;
  size: number;
  /** recipients of this message in this destination to attempt now */
  recipients: string[];
  body: () => Readable;
  /** what the body holds (spool format 2); undefined for a v1 spool message: scanned before sending */
  bodyFacts?: BodyFacts;
  /** when the message was committed to the queue (this process saw it arrive); absent after a restart: `delays` then counts from `envelope.received` */
  queuedAt?: number;
}

/** RFC 3461 §6.1: the relay's own DSNs, and TLSRPT reports, ask for no notification about themselves. */
const NOTIFY_NEVER: RcptDsn = { notify: ['NEVER'] };
/** transmit(): the session failed its RSET; the message goes over a new connection */
const RESEND = Symbol('resend');

/** No host could take the message: deferred, or bounced (`permanent`) when the next hop is this relay itself. */
interface Unreachable {
  code: string;
  reason: string;
  permanent?: boolean;
  cause: DeferralCause;
}

/** Code for a deferral when no host could be used: DANE/TLS failures dominate, then DNS, then connection trouble. */
function aggregateCode(codes: string[]): string {
  for (const pref of ['4.7.5', '4.4.3', '4.4.4', '4.4.2', '4.4.1']) if (codes.includes(pref)) return pref;
  return codes[0] ?? '4.4.1';
}

/** The TLS plan → client requirement mapping lives with the shared attempt sequence (attempt.ts). */
export { requirementFor };

/**
 * The RFC 3463 code one failed connection attempt contributes: TLS policy failures 4.7.5 (a
 * failed opportunistic handshake is no policy failure: its cleartext retry follows), a lost
 * greeting 4.4.2, anything else 4.4.1.
 */
function attemptCode(err: SmtpError, plan: TlsPlan): string {
  if (err.stage === 'verify' || err.stage === 'starttls') return '4.7.5';
  if (err.stage === 'tls' && plan.kind !== 'may') return '4.7.5';
  return err.stage === 'greeting' ? '4.4.2' : '4.4.1';
}

/** The outcomes of one attempt and why each one that was not delivered failed. */
interface Attempted {
  outcomes: RecipientOutcome[];
  cause: (o: RecipientOutcome) => DeferralCause | undefined;
}

/** Omit over each member of a union (the events without the run's own fields). */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/** Everything of a resolved policy that changes how a destination is delivered. */
function policyKey(p: ReturnType<DeliveryDeps['tlsLevel']>): string {
  return JSON.stringify([p.level, p.rule, !!p.trustInsecureMx, !!p.audit, !!p.nsec3IterationsInsecure, p.exception?.underlying ?? null]);
}

export class DestinationRun {
  private mx?: MxDecision;
  private session?: SmtpSession;
  private sessionPlan?: { host: HostFacts; plan: TlsPlan; address: string };
  private sent = 0;
  /** the message being delivered (its queue id goes on every event), and when its session was ready */
  private job?: string;
  private ready?: number;
  private unreachable?: Unreachable;
  private level: ReturnType<DeliveryDeps['tlsLevel']>;
  /** what `level` was resolved to, to notice a policy reload between two messages */
  private levelKey: string;
  /** a run of relay-generated TLSRPT reports (TLSRPT-45) */
  private readonly report: boolean;
  /** a run of messages tagged REQUIRETLS (RFC 8689): REQUIRETLS_LEVEL, REQUIRETLS after STARTTLS, passed on */
  private readonly requireTls: boolean;
  /** a run of `TLS-Required: No` messages (RFC 8689 §4.2.2): tlsRequiredNoLevel, no MTA-STS */
  private readonly tlsRequiredNo: boolean;
  /** the current message's hosts were planned (or its session opened) under the resolved level: DANE-70 counts it */
  private planned = false;
  /** TLSRPT: skipped hosts (host, result type) already recorded in this run */
  private readonly skipsRecorded = new Set<string>();
  /** the MTA-STS policy this run applies (enforce or testing), looked up once per run; null = none */
  private sts?: { policy: CachedPolicy } | null;
  /** the MTA-STS policy a tls_policy entry set aside for this run (explicit level or `sts-ignore`, issue 15) */
  private stsSetAside?: CachedPolicy;
  /** the session of the current transaction, for metrics even after a failure dropped it */
  private carrier?: CarrierFacts;
  /** when the run began: its MX answer and MTA-STS policy are kept for the run, so they are this old at most */
  readonly started: number;

  /**
   * `opts.report`: this run carries relay-generated TLSRPT reports (Envelope.kind 'tlsrpt'). They are
   * delivered at most opportunistically and never counted (RFC 8460 §3, digest TLSRPT-45): no reporting loop.
   */
  constructor(
    private readonly deps: DeliveryDeps,
    readonly domain: string,
    opts: { report?: boolean; requireTls?: boolean; tlsRequiredNo?: boolean } = {},
  ) {
    this.report = !!opts.report;
    // A REQUIRETLS run is judged by the sender's demand, not the destination's policy: its events say so
    // (`requireTls`), and TLSRPT counts only the destination's own sessions (reporting/tlsrpt/results.ts).
    this.requireTls = !!opts.requireTls && !this.report;
    // RT-32: REQUIRETLS wins over TLS-Required: No.
    this.tlsRequiredNo = !!opts.tlsRequiredNo && !this.report && !this.requireTls;
    this.level = this.policyNow();
    this.levelKey = policyKey(this.level);
    this.started = deps.now();
  }

  /** An open session that could carry the next message now (the scheduler keeps only such runs while idle). */
  get reusable(): boolean {
    return !!this.session?.usable && this.sent < this.deps.maxMessagesPerConnection;
  }

  /** Every fact goes to every subscriber, in order (delivery/events.ts). */
  private readonly emit = (e: DistributiveOmit<DeliveryEvent, 'domain' | 'report' | 'requireTls' | 'tlsRequiredNo'>): void => {
    // issue 21 item 5: every fact of an attempt names the message being delivered (one at a time per run)
    publish(this.deps.subscribers, {
      queueId: this.job,
      ...e,
      domain: this.domain,
      report: this.report,
      requireTls: this.requireTls,
      ...(this.tlsRequiredNo ? { tlsRequiredNo: true } : {}),
    } as DeliveryEvent);
  };

  private policyNow(): ReturnType<DeliveryDeps['tlsLevel']> {
    if (this.report) return REPORT_TLS_LEVEL;
    if (this.requireTls) return REQUIRETLS_LEVEL;
    const p = this.deps.tlsLevel(this.domain);
    return this.tlsRequiredNo ? tlsRequiredNoLevel(p) : p;
  }

  /**
   * A policy reload reaches a destination being delivered (the scheduler keeps a busy run
   * alive): each message resolves the policy again, and when the level, rule or options
   * changed, the session and the cached MX/unreachable state made under the old policy go.
   */
  private async refreshPolicy(): Promise<void> {
    const next = this.policyNow();
    const key = policyKey(next);
    if (key === this.levelKey) return;
    this.emit({ kind: 'policy-changed', rule: next.rule, previousRule: this.level.rule });
    this.level = next;
    this.levelKey = key;
    this.mx = undefined;
    this.sts = undefined;
    this.stsSetAside = undefined;
    this.unreachable = undefined;
    await this.dropSession();
  }

  private async resolveMx(plan: PlanBudget): Promise<MxDecision> {
    if (this.mx) return this.mx;
    this.mx = await lookupMx(plan, this.domain, this.deps.selfNames, this.deps.mxHostLimit);
    if (this.mx.kind === 'hosts' && this.mx.notTried) {
      this.emit({
        kind: 'mx-capped',
        hosts: this.mx.hosts.map((h) => h.host),
        notTried: this.mx.notTried,
        limit: this.deps.mxHostLimit ?? DEFAULT_MX_HOST_LIMIT,
      });
    }
    // TLSRPT-21: an MX lookup error is reported as dnssec-invalid (once per run, not per message).
    if (this.mx.kind === 'defer' && this.mx.code === '4.4.3') this.emit({ kind: 'mx-lookup-failed', problem: this.mx.problem, reason: this.mx.reason });
    if (!addressLiteral(this.domain)) {
      if (this.mx.kind === 'hosts' && this.mx.status !== 'secure') {
        // DANE-16: an insecure MX RRset is logged as such; never claimed secure.
        this.emit({ kind: 'mx-insecure', hosts: this.mx.hosts.map((h) => h.host), status: this.mx.status });
      }
    }
    return this.mx;
  }

  /**
   * The MTA-STS policy this run applies (STS-31…34 in mtasts/policies.ts: the TXT id is checked at every
   * run, so a deferred message sees a new policy before it could fail, STS-44). None for TLSRPT reports (their
   * own level), for `tls_level none`, and where an explicit tls_policy entry decides (it wins; reported when a
   * policy would have applied). A REQUIRETLS run asks too: an `enforce` policy is one of its routes (RT-21).
   * `{ unknown }`: the lookup failed locally.
   */
  private async resolveSts(): Promise<{ policy: CachedPolicy } | null | { unknown: string }> {
    if (!this.deps.sts || this.report || this.tlsRequiredNo || !stsConsidered(this.level) || addressLiteral(this.domain)) return null;
    let r: StsLookup;
    try {
      r = await this.deps.sts(this.domain);
    } catch (e) {
      // STS-16's "as without MTA-STS" is a fetch that failed with nothing cached, which lookup() returns, never
      // throws. A throw (the cache unreadable, a bug) leaves the policy in force unknown: the message waits.
      const unknown = (e as Error)?.message ?? String(e);
      this.emit({ kind: 'sts-lookup-failed', error: unknown });
      return { unknown };
    }
    const p = r.applied;
    // STS-60, STS-62: a fetch made now that failed (a valid TXT record, a new id) is reported, also when a cached policy stays in force.
    if (r.fetch === 'failed' && r.failure)
      this.emit({ kind: 'sts-fetch-failed', resultType: r.failure.resultType, reason: r.failure.reason, ...(p ? { cached: p } : {}) });
    const gate = stsGate(r, this.level);
    // An explicit entry or `sts-ignore` sets the policy aside: logged per delivery (log()), like a danefail exception.
    this.stsSetAside = gate.kind === 'exception' ? gate.policy : undefined;
    return gate.kind === 'apply' ? { policy: gate.policy } : null;
  }

  private everyone(
    job: DeliveryJob,
    result: 'deferred' | 'bounced',
    code: string,
    reason: string,
    cause: DeferralCause,
    extra: Partial<RecipientOutcome> = {},
  ): Attempted {
    return { outcomes: job.recipients.map((address) => ({ address, result, code, reason, ...extra })), cause: () => cause };
  }

  private unreachableFor(job: DeliveryJob, u: Unreachable): Attempted {
    return this.everyone(job, u.permanent ? 'bounced' : 'deferred', u.code, u.reason, u.cause);
  }

  /**
   * No host took the job. A DSN tagged REQUIRETLS (RFC 8689 §5, RT-52: REQUIRETLS should not get a bounce
   * discarded) that no host qualified for — 4.7.30 / 4.7.10, not a DNS or connection failure, which waits
   * and retries under REQUIRETLS — goes out now as an ordinary message through a run of its own: the
   * destination's own policy (DANE, MTA-STS, tls_policy), no REQUIRETLS parameter, its header-only content
   * unchanged. That run's events are the job's (one `recipient` event each); this one only says why.
   */
  private async unreached(job: DeliveryJob, started: number, u: Unreachable): Promise<RecipientOutcome[]> {
    if (!(this.requireTls && job.envelope.kind === 'dsn' && !u.permanent && (u.code === '4.7.30' || u.code === '4.7.10')))
      return this.log(job, started, this.unreachableFor(job, u));
    this.emit({ kind: 'requiretls-dsn-fallback', queueId: job.id, code: u.code, reason: u.reason });
    const { requireTls: _tag, ...envelope } = job.envelope;
    const ordinary = new DestinationRun(this.deps, this.domain);
    try {
      return await ordinary.deliver({ ...job, envelope });
    } finally {
      await ordinary.close();
    }
  }

  /**
   * Open a session to the first usable host, in MX order. Hosts are planned through `plan` (the
   * message's work budget, route/budget.ts): once it is spent no further host is planned, and if none
   * was usable the message is deferred (4.4.3) with the budget's reason.
   */
  private async open(plan: PlanBudget): Promise<Unreachable | undefined> {
    const mx = this.mx!;
    if (mx.kind !== 'hosts') throw new Error('unreachable');
    const failures: string[] = [];
    const codes: string[] = [];
    const hostFailures: HostFailure[] = [];
    const own = this.deps.ownEndpoints?.();
    for (const h of mx.hosts) {
      if (plan.exhausted) {
        const rest = mx.hosts.slice(mx.hosts.indexOf(h)).map((x) => x.host);
        failures.push(`${plan.exhausted}; not planned: ${rest.join(', ')}`);
        codes.push('4.4.3');
        hostFailures.push({ kind: 'budget', code: '4.4.3' });
        this.emit({ kind: 'budget-spent', notPlanned: rest, work: { ...plan.spent } });
        break;
      }
      this.planned = true;
      const hp = await planHost(hostContext(plan, this.domain, mx, this.level, this.deps.port), h);
      const self = own && hp.addresses.find((a) => own.has(a, this.deps.port));
      if (self) {
        // RFC 5321 §5.1: MUST NOT deliver to itself. Like the MX-name rule (DANE-14, route/mx.ts): hosts at our
        // preference or worse are dropped; a better one was tried before us and failed (defer), none at all is a loop.
        const where = `${h.host}[${self}]:${this.deps.port}`;
        this.emit({ kind: 'host-is-self', host: h.host, address: self, port: this.deps.port });
        if (mx.hosts.some((x) => x.preference < h.preference)) {
          failures.push(`${where} is this relay: hosts at preference ${h.preference} or worse dropped`);
          hostFailures.push({ kind: 'self' });
          break;
        }
        return {
          code: '5.4.6',
          reason: `mail for ${this.domain} loops back to myself: ${where} is this relay's own listen address`,
          permanent: true,
          cause: { kind: 'self-loop' },
        };
      }
      // RFC 8689 §4.2.1 step 2 (RT-21): for a REQUIRETLS message a host without usable DANE (dane-only skipped it)
      // may still be authenticated by the destination's MTA-STS `enforce` policy; every other skip (a failed or
      // insecure-by-limit lookup, no address) stands, as does a DANE plan (DANE precedence, RFC 8461 §2).
      const stsRoute =
        this.requireTls &&
        hp.kind === 'skip' &&
        hp.skip.cause.kind === 'dane-required' &&
        hp.addresses.length > 0 &&
        this.sts?.policy.policy.mode === 'enforce';
      if (hp.kind === 'skip' && !stsRoute) {
        const { skip, kind: _kind, ...facts } = hp;
        failures.push(`${h.host}: ${skip.reason}`);
        codes.push(skip.code);
        hostFailures.push({ kind: 'skipped', host: h.host, code: skip.code, cause: skip.cause });
        // TLSRPT: a skipped host is one result per DestinationRun, not one per open() (every reconnect).
        const skipKey = `${h.host}\0${skip.resultType}`;
        const repeat = this.skipsRecorded.has(skipKey);
        this.skipsRecorded.add(skipKey);
        this.emit({ kind: 'host-skipped', host: facts satisfies HostFacts, skip, repeat });
        continue;
      }
      let hostPlan: TlsPlan | undefined = hp.kind === 'plan' ? hp.plan : undefined;
      // A REQUIRETLS run uses only an `enforce` policy (a `testing` one authenticates nothing, RT-21).
      if (this.sts && hostPlan?.kind !== 'dane' && (!this.requireTls || this.sts.policy.policy.mode === 'enforce')) {
        // STS-50…52: a host with usable TLSA is DANE's alone (and a DANE lookup failure skipped it above);
        // only here, without DANE, does the MTA-STS policy apply.
        const p = this.sts.policy;
        const rule = stsHostRule(p, h.host, this.deps.stsRoots ?? tls.rootCertificates);
        if (rule.kind === 'mismatch') {
          const key = `${h.host}\0sts-mx-mismatch`;
          const repeat = this.skipsRecorded.has(key);
          this.skipsRecorded.add(key);
          this.emit({ kind: 'sts-mx-mismatch', host: h.host, policy: p, reason: rule.reason, repeat });
          if (rule.skip) {
            // STS-40, STS-43: not in the policy's mx patterns → not used; none left is a temporary failure.
            failures.push(`${h.host}: ${rule.reason}`);
            codes.push('4.7.5');
            hostFailures.push({ kind: 'sts-mx-mismatch', code: '4.7.5' });
            continue;
          }
          // STS-45 testing: delivered as without a policy; the failure is reported.
        } else if (p.policy.mode === 'testing') {
          // STS-45, STS-62: delivered under the ordinary plan whatever the certificate; the WebPKI verdict (chain and
          // MX name) is taken on the side and reported. An `encrypt` plan from an unusable TLSA RRset stays DANE's to report.
          if (hostPlan?.kind === 'may' || (hostPlan?.kind === 'encrypt' && !hostPlan.baseDomain))
            hostPlan = {
              ...hostPlan,
              stsTesting: {
                policyDomain: p.domain,
                roots: this.deps.stsRoots ?? tls.rootCertificates,
                policyLines: p.policy.lines,
                mxPatterns: p.policy.mx,
              },
            };
        } else if (rule.plan) hostPlan = rule.plan;
      }
      if (!hostPlan) throw new Error('unreachable: a REQUIRETLS STS route without a plan');
      for (const address of hp.addresses) {
        const where = `${h.host}[${address}]:${this.deps.port}`;
        /** STS-45: the WebPKI verdict of the handshake under a `testing` policy (decides nothing) */
        let webpki: VerifyOutcome | undefined;
        const opened = await attemptAddress(
          { host: h.host, address, port: this.deps.port },
          hostPlan,
          {
            heloName: this.deps.heloName,
            timeouts: this.deps.timeouts,
            digestPreference: this.deps.digestPreference,
            now: this.deps.now,
            audit: !!this.level.audit,
            ...(this.deps.connector ? { connector: this.deps.connector } : {}),
            ...(this.deps.discardExtensions?.length ? { discardExtensions: this.deps.discardExtensions } : {}),
          },
          {
            before: (a) => {
              webpki = undefined;
              if ((a.plan.kind === 'may' || a.plan.kind === 'encrypt') && a.plan.stsTesting)
                a.requirement.observe = (chain) => {
                  webpki = webpkiVerdict(chain, h.host);
                };
            },
            after: (r) => {
              const target = { host: h.host, address, port: this.deps.port };
              const { plan, retry } = r.attempt;
              if (r.ok) {
                const s = r.session;
                this.emit({
                  kind: 'session-opened',
                  target,
                  plan,
                  ...(retry ? { retry } : {}),
                  ...(s.tls ? { tls: s.tls } : {}),
                  starttlsOffered: s.extensions.has('STARTTLS'),
                  localAddress: s.localAddress,
                  greeting: s.greeting?.text,
                  ...(webpki ? { webpki } : {}),
                });
                return;
              }
              const err = r.error;
              failures.push(`${where}: ${err.message}`);
              const code = attemptCode(err, plan);
              codes.push(code);
              hostFailures.push({
                kind: 'attempt',
                target,
                code,
                stage: err.stage,
                planKind: plan.kind,
                ...(err.verify?.reason ? { verifyReason: err.verify.reason } : {}),
              });
              this.emit({
                kind: 'attempt-failed',
                target,
                plan,
                ...(retry ? { retry } : {}),
                ...(r.next ? { next: r.next } : {}),
                error: err,
                rule: this.level.rule,
              });
            },
          },
        );
        if (!opened) continue;
        const { session, plan } = opened;
        const problem = this.requireTls ? requireTlsProblem(session.tls, session.extensions) : undefined;
        if (problem) {
          // RFC 8689 §4.2.1 step 5 (RT-23, RT-25): QUIT and try the next host; never a weaker delivery.
          const code = problem === 'not-advertised' ? '4.7.30' : '4.7.10';
          failures.push(`${where}: ${REQUIRETLS_PROBLEM[problem]}`);
          codes.push(code);
          hostFailures.push({ kind: 'requiretls', target: { host: h.host, address, port: this.deps.port }, code, problem });
          this.emit({ kind: 'requiretls-host-refused', target: { host: h.host, address, port: this.deps.port }, plan, problem });
          await session.quit();
          continue;
        }
        this.session = session;
        this.sessionPlan = { host: hp, plan, address };
        this.sent = 0;
        return undefined;
      }
    }
    return {
      code: this.requireTls ? requireTlsCode(codes) : aggregateCode(codes),
      reason: failures.length ? failures.join('; ') : `no MX host for ${this.domain}`,
      cause: { kind: 'unreachable', hosts: hostFailures },
    };
  }

  async deliver(job: DeliveryJob): Promise<RecipientOutcome[]> {
    const started = this.deps.now();
    this.job = job.id;
    this.ready = undefined;
    if (!!job.envelope.requireTls !== this.requireTls) {
      // The scheduler keeps REQUIRETLS messages in runs of their own; a mix-up must not send one less protected.
      this.emit({ kind: 'requiretls-run-mismatch', queueId: job.id, messageRequireTls: !!job.envelope.requireTls });
      return this.log(
        job,
        started,
        this.everyone(job, 'deferred', INTERNAL_ERROR, 'internal error: REQUIRETLS message in the wrong delivery run', { kind: 'internal' }),
      );
    }
    if (this.tlsRequiredNo && !job.envelope.tlsRequiredNo) {
      // An ordinary message must never go over a `TLS-Required: No` run's opportunistic session (the reverse is only stricter).
      this.emit({ kind: 'internal-error', queueId: job.id, what: 'unexpected', err: new Error('message without TLS-Required: No in such a run') });
      return this.log(
        job,
        started,
        this.everyone(job, 'deferred', INTERNAL_ERROR, 'internal error: message in a TLS-Required: No delivery run', { kind: 'internal' }),
      );
    }
    await this.refreshPolicy();
    this.planned = false;
    if (this.level.level === 'dane' || this.level.level === 'dane-only') {
      const hold = await this.deps.dnssecHold?.();
      if (hold) return this.log(job, started, this.everyone(job, 'deferred', hold.code, hold.reason, { kind: 'dnssec-hold' }));
    }
    // One work budget for this message's plan: its MX lookup (once per run) and the hosts planned.
    const plan = new PlanBudget(this.deps.resolver, this.domain);
    let mx: MxDecision;
    try {
      mx = await this.resolveMx(plan);
    } catch (e) {
      return this.log(
        job,
        started,
        this.everyone(job, 'deferred', '4.4.3', `MX lookup for ${this.domain} failed: ${(e as Error).message}`, { kind: 'mx-lookup', problem: 'error' }),
      );
    }
    if (mx.kind === 'fail') return this.log(job, started, this.everyone(job, 'bounced', mx.code, mx.reason, { kind: 'mx-refused' }));
    if (mx.kind === 'defer') return this.log(job, started, this.everyone(job, 'deferred', mx.code, mx.reason, { kind: 'mx-lookup', problem: mx.problem }));
    if (this.sts === undefined) {
      const s = await this.resolveSts();
      if (s && 'unknown' in s) {
        // not kept: the next message of the run asks again
        const reason = `MTA-STS policy state for ${this.domain} unavailable (${s.unknown}): not delivered without the policy that may be in force`;
        return this.log(job, started, this.everyone(job, 'deferred', STS_STATE_CODE, reason, { kind: 'sts-state' }));
      }
      this.sts = s;
    }
    if (this.unreachable) {
      this.planned = true; // the cached result was reached under the same level
      return this.unreached(job, started, this.unreachable);
    }

    // At most two sessions carry this message: a reused one whose RSET fails (RFC 5321 §4.1.1.5) accepted
    // nothing of it, so it goes once more over a new connection, opened and verified like any other.
    for (let first = true; ; first = false) {
      if (this.session && (!this.session.usable || this.sent >= this.deps.maxMessagesPerConnection)) await this.dropSession();
      if (!this.session) {
        this.unreachable = await this.open(plan);
        if (this.unreachable) return this.unreached(job, started, this.unreachable);
      }
      const out = await this.transmit(job, started, first);
      if (out !== RESEND) return out;
    }
  }

  /**
   * One transaction of `job` over the open session. RESEND when the session failed its RSET
   * (`mayResend`: only once per message): the session is dropped, nothing of the message was accepted.
   */
  private async transmit(job: DeliveryJob, started: number, mayResend: boolean): Promise<RecipientOutcome[] | typeof RESEND> {
    const session = this.session!;
    this.ready = this.deps.now(); // connection setup (DNS, TCP, TLS, EHLO) ends here; transmission starts
    const { host, address } = this.sessionPlan!;
    this.carrier = { tls: !!session.tls, verified: !!session.tls?.verified, planKind: this.sessionPlan!.plan.kind };
    const relay = `${host.host}[${address}]:${this.deps.port}`;
    // nextHopDsn: the server took NOTIFY/ORCPT along, so a success is its to report (RFC 3461 §5.2.1)
    const nextHopDsn = session.extensions.has('DSN');
    const extra = { relay, remoteMta: host.host, nextHopDsn };
    // What this server agreed to receive (8BITMIME, 998-octet lines): as it is, converted, or refused here,
    // before any command of the transaction is sent.
    let body: OutboundBody;
    try {
      body = await outboundBody(
        { envelope: job.envelope, size: job.size, facts: job.bodyFacts, body: job.body },
        session.extensions,
        this.deps.mimeConversion ?? 'convert',
      );
    } catch (e) {
      // The spool file could not be read for the decision (v1 scan, conversion plan): nothing was sent, the session stays.
      this.emit({ kind: 'internal-error', queueId: job.id, what: 'body-unreadable', err: e });
      return this.log(
        job,
        started,
        this.everyone(
          job,
          'deferred',
          INTERNAL_ERROR,
          `internal error: could not read the message body for ${relay}: ${(e as Error)?.message ?? e}`,
          { kind: 'internal' },
          extra,
        ),
      );
    }
    // A refusal (5.6.3) is the attempt's outcome for every recipient, checked by log() like any other.
    if (!body.ok) return this.log(job, started, this.everyone(job, 'bounced', body.code, `${relay}: ${body.reason}`, { kind: 'body-refused' }, extra));
    if (body.converted) this.emit({ kind: 'body-converted', queueId: job.id, relay, target: body.converted });
    const own = job.envelope.kind !== 'normal';
    const dsn = { mail: job.envelope.dsn, rcpt: job.recipients.map((a) => (own ? NOTIFY_NEVER : job.envelope.rcptDsn?.[a])) };
    this.sent++;
    try {
      const res = await session.send({
        from: job.envelope.from,
        recipients: job.recipients,
        size: body.size,
        eightBit: body.eightBit,
        smtputf8: job.envelope.smtputf8,
        ...(this.requireTls ? { requireTls: true } : {}),
        dsn,
        body: body.body,
      });
      // The client classified every reply (RecipientVerdict); only `delivered` becomes `sent`.
      const causes = new Map<RecipientOutcome, DeferralCause>();
      const out = res.recipients.map((v) => {
        const o = { ...outcomeOf(v, relay, host.host), nextHopDsn };
        if (v.kind !== 'delivered') causes.set(o, { kind: v.kind === 'refused' ? 'reply' : 'protocol' });
        return o;
      });
      return this.log(job, started, { outcomes: out, cause: (o) => causes.get(o) });
    } catch (e) {
      await this.dropSession();
      if (e instanceof SmtpError && e.stage === 'rset' && mayResend) {
        // The replies to the MAIL/RCPT pipelined behind the failed RSET were never read: no verdict came from them.
        this.emit({ kind: 'reset-failed', queueId: job.id, target: { host: host.host, address, port: this.deps.port }, error: e });
        return RESEND;
      }
      if (!(e instanceof SmtpError)) {
        this.emit({ kind: 'internal-error', queueId: job.id, what: 'unexpected', err: e });
        return this.log(
          job,
          started,
          this.everyone(
            job,
            'deferred',
            INTERNAL_ERROR,
            `internal error while delivering to ${relay}: ${(e as Error)?.message ?? e}`,
            { kind: 'internal' },
            extra,
          ),
        );
      }
      const err = e;
      if (err.permanent && err.stage === 'mail')
        return this.log(job, started, this.everyone(job, 'bounced', err.reply?.enhanced ?? '5.6.7', `${relay}: ${err.message}`, { kind: 'reply' }, extra));
      // Connection trouble or a peer out of step mid-transaction: nothing is marked delivered that was not acknowledged.
      if (err.stage === 'protocol' && !err.timeout)
        return this.log(
          job,
          started,
          this.everyone(job, 'deferred', PROTOCOL_ERROR, `protocol error with ${relay}: ${err.message}`, { kind: 'protocol' }, extra),
        );
      return this.log(
        job,
        started,
        this.everyone(
          job,
          'deferred',
          '4.4.2',
          `lost connection with ${relay} (${err.stage}): ${err.message}`,
          { kind: 'connection-lost', stage: err.stage },
          extra,
        ),
      );
    }
  }

  /** Every attempt ends here: exactly one outcome per recipient of the job (issue 13), then one `recipient` event each. */
  private log(job: DeliveryJob, started: number, given: Attempted): RecipientOutcome[] {
    const { outcomes: out, breaches } = oneOutcomeEach(job.recipients, given.outcomes);
    if (breaches.length) this.emit({ kind: 'invariant-breach', queueId: job.id, breaches });
    const ex = this.level.exception;
    const connected = out.some((o) => o.relay);
    if (ex && (connected || this.planned)) {
      // DANE-70: every attempt the exception list governed is logged and counted, also one that
      // deferred before connecting (its hosts were planned without TLSA); not one that an MX
      // failure stopped before the level mattered.
      this.emit({ kind: 'exception-applied', queueId: job.id, rule: this.level.rule, level: this.level.level, underlying: ex.underlying, connected });
    }
    if (this.stsSetAside && (connected || this.planned)) {
      // Issue 15: every attempt an MTA-STS exception governed is logged, like DANE-70's.
      this.emit({ kind: 'sts-exception-applied', queueId: job.id, rule: this.level.rule, policy: this.stsSetAside, connected });
    }
    const tls = this.session?.tls;
    const plan = this.sessionPlan?.plan;
    const session = plan ? { plan, ...(tls ? { tls } : {}) } : undefined;
    const now = this.deps.now();
    for (const o of out) {
      // A kept outcome is the object given; one oneOutcomeEach made in its place is a repaired breach (internal).
      const cause = o.result === 'sent' ? undefined : (given.cause(o) ?? { kind: 'internal' as const });
      this.emit({
        kind: 'recipient',
        queueId: job.id,
        outcome: o,
        ...(cause ? { cause } : {}),
        ...(this.carrier ? { carrier: this.carrier } : {}),
        ...(session ? { session } : {}),
        delayMs: now - job.envelope.received,
        attemptMs: now - started,
        delays: splitDelays(job.envelope.received, job.queuedAt, started, this.ready, now),
        rule: this.level.rule,
        exception: !!ex,
      });
    }
    return out;
  }

  private async dropSession(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    this.sessionPlan = undefined;
    if (s) await s.quit();
  }

  async close(): Promise<void> {
    await this.dropSession();
  }
}
