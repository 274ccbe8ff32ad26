/**
 * Delivery to one destination domain: MX → hosts in order → one SMTP session,
 * reused for several messages. A TLS plan becomes a TlsRequirement for the SMTP client
 * only in the shared attempt sequence (attempt.ts, also used by `check`), so the policy
 * check runs after the handshake and before any envelope command (RFC 7672 §2.2, digest
 * DANE-41/43/63).
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Resolver, TlsaRecord } from '../dns/types.js';
import type { Envelope } from '../spool/types.js';
import type { TlsLevel } from '../dane/levels.js';
import { addressLiteral, type MxDecision } from '../route/mx.js';
import { planHost, type HostPlan } from '../route/host.js';
import type { TlsPlan } from '../dane/policy.js';
import { SmtpSession, SmtpError, type SmtpClientOptions } from './smtpClient.js';
import { attemptAddress, requirementFor, type Attempt } from './attempt.js';
import tls from 'node:tls';
import { matchingPattern } from '../mtasts/policy.js';
import type { StsLookup } from '../mtasts/policies.js';
import type { CachedPolicy } from '../mtasts/store.js';
import type { RelayEvents } from '../metrics/events.js';
import { lookupMx, hostContext } from '../route/nexthop.js';
import { assessRollover } from '../policy/rollover.js';
import type { MxFactsStore } from '../policy/mxFacts.js';
import type { VerifyOutcome } from '../dane/types.js';
import { INTERNAL_ERROR, oneOutcomeEach, outcomeOf, PROTOCOL_ERROR, type RecipientOutcome } from './outcome.js';
import { daneStatusOf, deferralReason } from '../metrics/labels.js';
import { formatTlsa } from '../dane/tlsa.js';
import { outboundBody, type MimeConversion, type OutboundBody } from './body.js';
import type { BodyFacts } from '../mime/scan.js';
import type { RcptDsn } from '../dsn/params.js';

/** The TLSA RRset behind a plan or a skipped host, for TLSRPT policy-string/policy-domain (RFC 8460 §4.4). */
function tlsaOf(records: TlsaRecord[] | undefined, baseDomain: string | undefined): TlsSessionResult['tlsa'] {
  return baseDomain ? { baseDomain, records: (records ?? []).map(formatTlsa) } : undefined;
}

/** The TLSA RRset a plan was made from (DANE plans only), for TLSRPT. */
function tlsaOfPlan(plan: TlsPlan): TlsSessionResult['tlsa'] {
  return 'baseDomain' in plan ? tlsaOf(plan.records, plan.baseDomain) : undefined;
}

/** First word of a 220 greeting: the server's own name (RFC 5321 §4.2), for receiving-mx-helo. */
function heloOf(text: string | undefined): string | undefined {
  const w = text?.trim().split(/\s+/)[0];
  return w && /^[A-Za-z0-9.-]+$/.test(w) ? w : undefined;
}

/** The destination's TLS level for a relay-generated TLSRPT report: opportunistic at most (RFC 8460 §3, digest TLSRPT-45). */
export const REPORT_TLS_LEVEL = { level: 'may' as TlsLevel, rule: 'tlsrpt report: no DANE/MTA-STS enforcement (RFC 8460 §3)' };

/**
 * The level of a run of REQUIRETLS messages (RFC 8689 §4.2.1, digest RT-21…25): only a DNSSEC-secure MX
 * whose certificate DANE authenticates (`dane-only`: no usable TLSA → the host is not used), whatever
 * `tls_policy` or the danefail list say for the destination (RT-25: no downgrade for such a message).
 * The RFC's other routes (MX matched by an MTA-STS enforce policy, or a secure MX with a WebPKI
 * certificate) are not implemented yet: such a message waits rather than going out less protected.
 */
export const REQUIRETLS_LEVEL = { level: 'dane-only' as TlsLevel, rule: 'REQUIRETLS (RFC 8689): DNSSEC MX and DANE only; tls_policy and danefail do not apply' };

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
  tlsLevel: (domain: string) => { level: TlsLevel; rule: string; trustInsecureMx?: boolean; audit?: boolean; nsec3IterationsInsecure?: boolean; exception?: { underlying: TlsLevel }; explicit?: true };
  /**
   * MTA-STS (RFC 8461, issue 15): the policy in force for a Policy Domain (mtasts/policies.ts), asked once
   * per run; absent: no MTA-STS. `stsRoots`: the WebPKI trust anchors MX certificates are checked against.
   */
  sts?: (domain: string) => Promise<StsLookup>;
  stsRoots?: readonly (string | Buffer)[];
  timeouts: SmtpClientOptions['timeouts'];
  digestPreference: ('sha512' | 'sha256')[];
  maxMessagesPerConnection: number;
  log: Logger;
  now: () => number;
  /** TLSRPT seam: every TLS session attempt that reached a policy decision (issue 6) */
  onTlsResult?: (r: TlsSessionResult) => void;
  /** metrics hooks (src/metrics/events.ts) */
  events?: RelayEvents;
  /** rollover warning window: a pinned certificate expiring within this many ms (default 14 days) */
  rolloverWarnMs?: number;
  /** per-MX DANE facts; warns once a day per MX and risk instead of per session */
  mxFacts?: MxFactsStore;
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

export interface TlsSessionResult {
  domain: string;
  /** the MX host; absent when no host was reached (an MX lookup failure): receiving-mx-hostname is then omitted */
  host?: string;
  address?: string;
  plan?: TlsPlan;
  ok: boolean;
  resultType?: string;
  reason?: string;
  /** TLSRPT (issue 6): the TLSA RRset in presentation form ("u s m HEX") and its base domain, when one was retrieved */
  tlsa?: { baseDomain: string; records: string[] };
  /** TLSRPT sending-mta-ip: our end of the connection, when a connection was made */
  sendingIp?: string;
  /** TLSRPT receiving-mx-helo: the name in the peer's 220 greeting, when one was read */
  receivingHelo?: string;
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
}

/** RFC 3461 §6.1: the relay's own DSNs, and TLSRPT reports, ask for no notification about themselves. */
const NOTIFY_NEVER: RcptDsn = { notify: ['NEVER'] };

/** No host could take the message: deferred, or bounced (`permanent`) when the next hop is this relay itself. */
interface Unreachable { code: string; reason: string; permanent?: boolean }

/** Code for a deferral when no host could be used: DANE/TLS failures dominate, then DNS, then connection trouble. */
function aggregateCode(codes: string[]): string {
  for (const pref of ['4.7.5', '4.4.3', '4.4.4', '4.4.2', '4.4.1']) if (codes.includes(pref)) return pref;
  return codes[0] ?? '4.4.1';
}

/** The TLS plan → client requirement mapping lives with the shared attempt sequence (attempt.ts). */
export { requirementFor };

/**
 * TLSRPT-21 result type for an SMTP client failure under a plan (RFC 8460 §4.3). A failed `may`
 * handshake is a failure too (validation-failure): its cleartext retry is no policy-compliant TLS
 * session (§4.3), and the caller records nothing for a retry. `none`: no TLS was attempted.
 */
export function resultTypeOf(err: SmtpError, plan: TlsPlan): string | undefined {
  if (plan.kind === 'none') return undefined;
  if (err.stage === 'starttls') return 'starttls-not-supported';
  if (err.stage === 'verify') { const r = err.verify?.reason; return r === 'dane-no-match' ? 'certificate-not-trusted' : r ?? 'validation-failure'; }
  if (err.stage === 'tls') return 'validation-failure';
  return undefined;
}

/** Everything of a resolved policy that changes how a destination is delivered. */
function policyKey(p: ReturnType<DeliveryDeps['tlsLevel']>): string {
  return JSON.stringify([p.level, p.rule, !!p.trustInsecureMx, !!p.audit, !!p.nsec3IterationsInsecure, p.exception?.underlying ?? null]);
}

export class DestinationRun {
  private mx?: MxDecision;
  private session?: SmtpSession;
  private sessionPlan?: { host: HostPlan; plan: TlsPlan; address: string };
  private sent = 0;
  private unreachable?: Unreachable;
  private level: ReturnType<DeliveryDeps['tlsLevel']>;
  /** what `level` was resolved to, to notice a policy reload between two messages */
  private levelKey: string;
  /** a run of relay-generated TLSRPT reports (TLSRPT-45) */
  private readonly report: boolean;
  /** a run of messages tagged REQUIRETLS (RFC 8689): REQUIRETLS_LEVEL, REQUIRETLS after STARTTLS, passed on */
  private readonly requireTls: boolean;
  /** the current message's hosts were planned (or its session opened) under the resolved level: DANE-70 counts it */
  private planned = false;
  /** TLSRPT: skipped hosts (host, result type) already recorded in this run */
  private readonly skipsRecorded = new Set<string>();
  /** the MTA-STS policy this run applies (enforce or testing), looked up once per run; null = none */
  private sts?: { policy: CachedPolicy } | null;
  /** the session of the current transaction, for metrics even after a failure dropped it */
  private carrier?: { tls: boolean; verified: boolean; planKind: TlsPlan['kind'] };

  /**
   * `opts.report`: this run carries relay-generated TLSRPT reports (Envelope.kind 'tlsrpt'). They are
   * delivered at most opportunistically and never counted (RFC 8460 §3, digest TLSRPT-45): no reporting loop.
   */
  constructor(private readonly deps: DeliveryDeps, readonly domain: string, opts: { report?: boolean; requireTls?: boolean } = {}) {
    this.report = !!opts.report;
    this.requireTls = !!opts.requireTls && !this.report;
    // A REQUIRETLS run is judged by the sender's demand, not the destination's policy: TLSRPT counts the
    // destination's own sessions (the ordinary runs), never failures our stricter level produced.
    if (this.report || this.requireTls) this.deps = { ...deps, onTlsResult: undefined };
    this.level = this.policyNow();
    this.levelKey = policyKey(this.level);
  }

  private policyNow(): ReturnType<DeliveryDeps['tlsLevel']> {
    return this.report ? REPORT_TLS_LEVEL : this.requireTls ? REQUIRETLS_LEVEL : this.deps.tlsLevel(this.domain);
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
    this.deps.log.info({ domain: this.domain, tls_rule: next.rule, previous_rule: this.level.rule }, 'policy changed while delivering: new session under the new rule');
    this.level = next;
    this.levelKey = key;
    this.mx = undefined;
    this.sts = undefined;
    this.unreachable = undefined;
    await this.dropSession();
  }

  private async resolveMx(): Promise<MxDecision> {
    if (this.mx) return this.mx;
    this.mx = await lookupMx(this.deps.resolver, this.domain, this.deps.selfNames);
    // TLSRPT-21: an MX lookup error is reported as dnssec-invalid (once per run, not per message).
    // No MX host was reached: `host` is left out, so receiving-mx-hostname is omitted rather than the recipient domain.
    if (this.mx.kind === 'defer' && this.mx.code === '4.4.3') this.deps.onTlsResult?.({ domain: this.domain, ok: false, resultType: 'dnssec-invalid', reason: this.mx.reason });
    if (!addressLiteral(this.domain)) {
      if (this.mx.kind === 'hosts' && this.mx.status !== 'secure') {
        // DANE-16: an insecure MX RRset is logged as such; never claimed secure.
        this.deps.log.debug({ domain: this.domain, mx: this.mx.hosts.map((h) => h.host), mx_status: this.mx.status }, 'MX lookup not secure');
      }
    }
    return this.mx;
  }

  /**
   * The MTA-STS policy this run applies (STS-31…34 in mtasts/policies.ts: the TXT id is checked at every
   * run, so a deferred message sees a new policy before it could fail, STS-44). None for TLSRPT reports and
   * REQUIRETLS runs (their own levels), for `tls_level none`, and where an explicit tls_policy entry decides
   * (it wins; logged when a policy would have applied).
   */
  private async resolveSts(): Promise<{ policy: CachedPolicy } | null> {
    if (!this.deps.sts || this.report || this.requireTls || this.level.level === 'none' || addressLiteral(this.domain)) return null;
    let r: StsLookup;
    try {
      r = await this.deps.sts(this.domain);
    } catch (e) {
      // STS-16: no policy could be had: delivery goes on as without MTA-STS (a cached one would have been returned).
      this.deps.log.warn({ domain: this.domain, err: (e as Error).message }, 'MTA-STS lookup failed; delivering as without MTA-STS');
      return null;
    }
    const p = r.applied;
    if (!p || p.policy.mode === 'none') return null;
    if (this.level.explicit) {
      this.deps.log.warn({ domain: this.domain, tls_rule: this.level.rule, sts_id: p.id, sts_mode: p.policy.mode }, 'MTA-STS exception applied: tls_policy entry wins over the MTA-STS policy');
      return null;
    }
    return { policy: p };
  }

  private everyone(job: DeliveryJob, result: 'deferred' | 'bounced', code: string, reason: string, extra: Partial<RecipientOutcome> = {}): RecipientOutcome[] {
    return job.recipients.map((address) => ({ address, result, code, reason, ...extra }));
  }

  private unreachableFor(job: DeliveryJob, u: Unreachable): RecipientOutcome[] {
    return this.everyone(job, u.permanent ? 'bounced' : 'deferred', u.code, u.reason);
  }

  /** Open a session to the first usable host, in MX order. */
  private async open(): Promise<Unreachable | undefined> {
    const mx = this.mx!;
    if (mx.kind !== 'hosts') throw new Error('unreachable');
    const failures: string[] = [];
    const codes: string[] = [];
    const own = this.deps.ownEndpoints?.();
    for (const h of mx.hosts) {
      this.planned = true;
      const hp = await planHost(hostContext(this.deps.resolver, this.domain, mx, this.level, this.deps.port), h);
      const self = own && hp.addresses.find((a) => own.has(a, this.deps.port));
      if (self) {
        // RFC 5321 §5.1: MUST NOT deliver to itself. Like the MX-name rule (DANE-14, route/mx.ts): hosts at our
        // preference or worse are dropped; a better one was tried before us and failed (defer), none at all is a loop.
        const where = `${h.host}[${self}]:${this.deps.port}`;
        this.deps.log.warn({ domain: this.domain, mx: h.host, address: self, port: this.deps.port }, 'MX host is this relay (own listen address): hosts at its preference or worse dropped');
        if (mx.hosts.some((x) => x.preference < h.preference)) {
          failures.push(`${where} is this relay: hosts at preference ${h.preference} or worse dropped`);
          break;
        }
        return { code: '5.4.6', reason: `mail for ${this.domain} loops back to myself: ${where} is this relay's own listen address`, permanent: true };
      }
      if (hp.skip || !hp.plan) {
        const reason = hp.skip?.reason ?? 'no TLS plan';
        failures.push(`${h.host}: ${reason}`);
        codes.push(hp.skip?.code ?? '4.4.1');
        this.deps.log.info({ domain: this.domain, mx: h.host, skipped: reason, mx_status: hp.mxStatus, address_status: hp.addressStatus, tlsa_status: hp.tlsaStatus }, 'MX host skipped');
        // TLSRPT: a skipped host is one result per DestinationRun, not one per open() (every reconnect).
        const skipKey = `${h.host}\0${hp.skip?.resultType}`;
        if (hp.skip?.resultType && !this.skipsRecorded.has(skipKey)) {
          this.skipsRecorded.add(skipKey);
          this.deps.onTlsResult?.({ domain: this.domain, host: h.host, ok: false, resultType: hp.skip.resultType, reason, tlsa: tlsaOf(hp.tlsaRecords, hp.tlsaName?.replace(/^_\d+\._tcp\./, '')) });
        }
        continue;
      }
      let hostPlan: TlsPlan = hp.plan;
      if (this.sts && hostPlan.kind !== 'dane') {
        // STS-50…52: a host with usable TLSA is DANE's alone (and a DANE lookup failure skipped it above);
        // only here, without DANE, does the MTA-STS policy apply.
        const p = this.sts.policy;
        const pattern = matchingPattern(p.policy, h.host);
        if (p.policy.mode === 'enforce') {
          if (pattern === undefined) {
            // STS-40, STS-43: not in the policy's mx patterns → not used; none left is a temporary failure.
            const reason = `MTA-STS policy of ${p.domain} (id ${p.id}, enforce): ${h.host} matches no mx pattern (${p.policy.mx.join(', ')})`;
            failures.push(`${h.host}: ${reason}`);
            codes.push('4.7.5');
            this.deps.log.info({ domain: this.domain, mx: h.host, skipped: reason }, 'MX host skipped');
            continue;
          }
          hostPlan = { kind: 'sts', why: `MTA-STS enforce (${p.domain} id ${p.id}, mx ${pattern})`, sni: h.host, policyDomain: p.domain, pattern, roots: this.deps.stsRoots ?? tls.rootCertificates };
        } else if (pattern === undefined) {
          // STS-45 testing: delivered as without a policy; the failure is logged (TLSRPT sts reporting: not yet).
          this.deps.log.warn({ domain: this.domain, mx: h.host, sts_id: p.id, mx_patterns: p.policy.mx }, 'MTA-STS testing: MX host matches no mx pattern (delivered anyway)');
        }
      }
      for (const address of hp.addresses) {
        const where = `${h.host}[${address}]:${this.deps.port}`;
        const opened = await attemptAddress({ host: h.host, address, port: this.deps.port }, hostPlan, {
          heloName: this.deps.heloName, timeouts: this.deps.timeouts, digestPreference: this.deps.digestPreference, now: this.deps.now, audit: !!this.level.audit,
        }, {
          after: (r) => {
            if (r.ok) return this.tlsrptSession(h.host, address, r.attempt, r.session);
            const { error: err, attempt: { plan } } = r;
            failures.push(`${where}: ${err.message}`);
            const rt = resultTypeOf(err, plan);
            // TLSRPT (RFC 8460 §4.3): a cleartext (DANE-44) or audit (DANE-46) retry is no TLS session of its own; the failure before it was recorded.
            if (rt && !r.attempt.retry && plan.kind !== 'sts') this.deps.onTlsResult?.({ domain: this.domain, host: h.host, address, plan, ok: false, resultType: rt, reason: err.verify?.reason ?? err.message, tlsa: tlsaOfPlan(plan), sendingIp: err.localAddress, receivingHelo: heloOf(err.greeting) });
            if (err.stage === 'starttls' || err.stage === 'tls' || err.stage === 'verify') this.deps.events?.tlsHandshake?.({ result: err.stage === 'starttls' ? 'starttls-unsupported' : err.stage === 'tls' ? 'handshake-failed' : 'verify-failed' });
            codes.push((rt && plan.kind !== 'may') || err.stage === 'verify' || err.stage === 'starttls' || (err.stage === 'tls' && plan.kind !== 'may') ? '4.7.5' : err.stage === 'greeting' ? '4.4.2' : '4.4.1');
            this.deps.log.info({ domain: this.domain, relay: where, stage: err.stage, error: err.message, tls_plan: plan.kind }, 'connection attempt failed');
            // DANE-46: the failed authentication is logged; the retry goes over TLS without it, logged `untrusted`.
            if (r.next === 'audit') this.deps.log.warn({ domain: this.domain, relay: where, tls_rule: this.level.rule, error: err.message }, 'DANE audit: authentication failed, delivering over unauthenticated TLS (audit-only policy)');
          },
        });
        if (!opened) continue;
        const { session, plan } = opened;
        if (this.requireTls && !(session.tls?.verified && session.extensions.has('REQUIRETLS'))) {
          // RFC 8689 §4.2.1 step 5 (RT-23, RT-25): QUIT and try the next host; never a weaker delivery.
          const why = session.tls?.verified ? 'does not advertise REQUIRETLS after STARTTLS' : 'no authenticated TLS session';
          failures.push(`${where}: ${why}`);
          codes.push(session.tls?.verified ? '4.7.30' : '4.7.10');
          this.deps.log.info({ domain: this.domain, relay: where, tls_plan: plan.kind, why }, 'REQUIRETLS: host not used');
          await session.quit();
          continue;
        }
        this.session = session;
        this.sessionPlan = { host: hp, plan, address };
        this.sent = 0;
        if (plan.kind === 'dane') this.rollover(h.host, session.tls?.verify);
        if (session.tls) this.deps.events?.tlsHandshake?.({ result: 'ok' });
        return undefined;
      }
    }
    return { code: this.requireTls ? requireTlsCode(codes) : aggregateCode(codes), reason: failures.length ? failures.join('; ') : `no MX host for ${this.domain}` };
  }

  async deliver(job: DeliveryJob): Promise<RecipientOutcome[]> {
    const started = this.deps.now();
    if (!!job.envelope.requireTls !== this.requireTls) {
      // The scheduler keeps REQUIRETLS messages in runs of their own; a mix-up must not send one less protected.
      this.deps.log.error({ queue_id: job.id, domain: this.domain, require_tls: !!job.envelope.requireTls }, 'REQUIRETLS message in the wrong delivery run (internal error)');
      return this.log(job, started, this.everyone(job, 'deferred', INTERNAL_ERROR, 'internal error: REQUIRETLS message in the wrong delivery run'));
    }
    await this.refreshPolicy();
    this.planned = false;
    if (this.level.level === 'dane' || this.level.level === 'dane-only') {
      const hold = await this.deps.dnssecHold?.();
      if (hold) return this.log(job, started, this.everyone(job, 'deferred', hold.code, hold.reason));
    }
    let mx: MxDecision;
    try {
      mx = await this.resolveMx();
    } catch (e) {
      return this.log(job, started, this.everyone(job, 'deferred', '4.4.3', `MX lookup for ${this.domain} failed: ${(e as Error).message}`));
    }
    if (mx.kind === 'fail') return this.log(job, started, this.everyone(job, 'bounced', mx.code, mx.reason));
    if (mx.kind === 'defer') return this.log(job, started, this.everyone(job, 'deferred', mx.code, mx.reason));
    if (this.sts === undefined) this.sts = await this.resolveSts();
    if (this.unreachable) {
      this.planned = true; // the cached result was reached under the same level
      return this.log(job, started, this.unreachableFor(job, this.unreachable));
    }

    if (this.session && (!this.session.usable || this.sent >= this.deps.maxMessagesPerConnection)) await this.dropSession();
    if (this.session) {
      // A reused connection that fails RSET is replaced, not trusted for the next transaction.
      await this.session.reset().catch(() => this.dropSession());
    }
    if (!this.session) {
      this.unreachable = await this.open();
      if (this.unreachable) return this.log(job, started, this.unreachableFor(job, this.unreachable));
    }
    const session = this.session!;
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
      body = await outboundBody({ envelope: job.envelope, size: job.size, facts: job.bodyFacts, body: job.body }, session.extensions, this.deps.mimeConversion ?? 'convert');
    } catch (e) {
      // The spool file could not be read for the decision (v1 scan, conversion plan): nothing was sent, the session stays.
      this.deps.log.error({ err: e, queue_id: job.id, domain: this.domain }, 'could not read the message body to decide what the next hop gets');
      return this.log(job, started, this.everyone(job, 'deferred', INTERNAL_ERROR, `internal error: could not read the message body for ${relay}: ${(e as Error)?.message ?? e}`, extra));
    }
    // A refusal (5.6.3) is the attempt's outcome for every recipient, checked by log() like any other.
    if (!body.ok) return this.log(job, started, this.everyone(job, 'bounced', body.code, `${relay}: ${body.reason}`, extra));
    if (body.converted) this.deps.log.info({ queue_id: job.id, relay, target: body.converted }, 'message body converted for the next hop (RFC 6152, RFC 2045)');
    const own = job.envelope.kind !== 'normal';
    const dsn = { mail: job.envelope.dsn, rcpt: job.recipients.map((a) => (own ? NOTIFY_NEVER : job.envelope.rcptDsn?.[a])) };
    this.sent++;
    try {
      const res = await session.send({ from: job.envelope.from, recipients: job.recipients, size: body.size, eightBit: body.eightBit, smtputf8: job.envelope.smtputf8, ...(this.requireTls ? { requireTls: true } : {}), dsn, body: body.body });
      // The client classified every reply (RecipientVerdict); only `delivered` becomes `sent`.
      const out = res.recipients.map((v) => ({ ...outcomeOf(v, relay, host.host), nextHopDsn }));
      return this.log(job, started, out);
    } catch (e) {
      await this.dropSession();
      if (!(e instanceof SmtpError)) {
        this.deps.log.error({ err: e, queue_id: job.id, domain: this.domain }, 'delivery failed unexpectedly');
        return this.log(job, started, this.everyone(job, 'deferred', INTERNAL_ERROR, `internal error while delivering to ${relay}: ${(e as Error)?.message ?? e}`, extra));
      }
      const err = e;
      if (err.permanent && err.stage === 'mail') return this.log(job, started, this.everyone(job, 'bounced', err.reply?.enhanced ?? '5.6.7', `${relay}: ${err.message}`, extra));
      // Connection trouble or a peer out of step mid-transaction: nothing is marked delivered that was not acknowledged.
      if (err.stage === 'protocol' && !err.timeout) return this.log(job, started, this.everyone(job, 'deferred', PROTOCOL_ERROR, `protocol error with ${relay}: ${err.message}`, extra));
      return this.log(job, started, this.everyone(job, 'deferred', '4.4.2', `lost connection with ${relay} (${err.stage}): ${err.message}`, extra));
    }
  }

  /**
   * TLSRPT for an opened session (one result per connection, however many messages it carries).
   * RFC 8460 §4.3: a success is a policy-compliant TLS session, so a session without TLS never is:
   * under `may` (no policy found) STARTTLS not offered or refused is starttls-not-supported (§4.3.1);
   * a retry (cleartext after a failed `may` handshake, DANE-44; unauthenticated TLS under audit-only,
   * DANE-46) records nothing, its first attempt's failure was recorded; `none` attempted no TLS.
   */
  private tlsrptSession(host: string, address: string, a: Attempt, session: SmtpSession): void {
    const record = this.deps.onTlsResult;
    // An MTA-STS session is no TLSA/no-policy session; TLSRPT `sts` results are not recorded yet (issue 15).
    if (!record || a.retry || a.plan.kind === 'sts') return;
    const plan = a.plan;
    const base = { domain: this.domain, host, address, plan, tlsa: tlsaOfPlan(plan), sendingIp: session.localAddress, receivingHelo: heloOf(session.greeting?.text) };
    if (session.tls) return record({ ...base, ok: true });
    if (plan.kind === 'none') return;
    record({ ...base, ok: false, resultType: 'starttls-not-supported', reason: session.extensions.has('STARTTLS') ? 'starttls-refused' : 'starttls-not-offered' });
  }

  /** Per-MX rollover facts of a DANE session that just verified: warn when one renewal away from failing. */
  private rollover(host: string, v: VerifyOutcome | undefined): void {
    if (!v?.ok || !v.facts) return;
    const now = this.deps.now();
    const due = this.deps.mxFacts
      ? this.deps.mxFacts.note(this.domain, host, { facts: v.facts, matchedIndex: v.matchedIndex, matchedUsage: v.matchedUsage }, now)
      : assessRollover(v.facts, now, this.deps.rolloverWarnMs ?? 14 * 86_400_000);
    for (const f of due) {
      if (f.severity !== 'warning') continue;
      this.deps.log.warn({ domain: this.domain, mx: host, rollover: f.kind, record: f.record, depth: f.depth, expires: f.expires }, `DANE rollover risk: ${f.detail}`);
      this.deps.events?.rolloverWarning?.({ domain: this.domain, host, kind: f.kind, detail: f.detail });
    }
  }

  /** Every attempt ends here: exactly one outcome per recipient of the job (issue 13), then logs and metrics. */
  private log(job: DeliveryJob, started: number, given: RecipientOutcome[]): RecipientOutcome[] {
    const { outcomes: out, breaches } = oneOutcomeEach(job.recipients, given);
    if (breaches.length) this.deps.log.error({ queue_id: job.id, domain: this.domain, breaches }, 'internal invariant breach: not exactly one outcome per recipient (repaired: deferred)');
    const ex = this.level.exception;
    const connected = out.some((o) => o.relay);
    if (ex && (connected || this.planned)) {
      // DANE-70: every attempt the exception list governed is logged and counted, also one that
      // deferred before connecting (its hosts were planned without TLSA); not one that an MX
      // failure stopped before the level mattered.
      this.deps.log.warn({ queue_id: job.id, domain: this.domain, tls_rule: this.level.rule, level: this.level.level, instead_of: ex.underlying },
        connected ? 'DANE exception applied: delivered without DANE (danefail list)' : 'DANE exception applied: attempted without DANE, deferred (danefail list)');
      this.deps.events?.exceptionDowngrade?.({ domain: this.domain, level: this.level.level });
    }
    const tls = this.session?.tls;
    const plan = this.sessionPlan?.plan;
    for (const o of out) {
      // Metrics: the one place every recipient's attempt ends.
      this.deps.events?.deliveryOutcome?.({ domain: this.domain, outcome: o.result === 'sent' ? 'delivered' : o.result, dane: daneStatusOf({ connected: !!o.relay && !!this.carrier, planKind: this.carrier?.planKind, tls: !!this.carrier?.tls, verified: !!this.carrier?.verified }), reason: o.result === 'sent' ? undefined : o.reason });
      if (o.result === 'deferred') this.deps.events?.deferral?.({ domain: this.domain, reason: deferralReason(o) });
      this.deps.log.info({
        queue_id: job.id,
        to: o.address,
        relay: o.relay ?? 'none',
        delay: (this.deps.now() - job.envelope.received) / 1000,
        attempt_ms: this.deps.now() - started,
        status: o.result === 'sent' ? 'sent' : o.result,
        dsn: o.code,
        reply: o.reply,
        reason: o.result === 'sent' ? undefined : o.reason,
        tls: o.relay && tls ? { version: tls.protocol, cipher: tls.cipher, verified: tls.verified } : undefined,
        dane: o.relay ? (plan?.kind === 'dane' ? plan.label : plan?.kind === 'sts' ? 'sts-webpki' : tls ? 'untrusted' : 'cleartext') : undefined,
        matched: o.relay ? tls?.verify?.matched : undefined,
        tls_rule: this.level.rule,
        dane_exception: ex ? true : undefined,
      }, 'delivery');
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
