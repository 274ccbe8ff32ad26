/**
 * Delivery events → TLSRPT session results (RFC 8460 §4.3, digest TLSRPT-10, 16, 20, 21): which
 * delivery facts are one TLS session attempt that reached a policy decision, its result type and
 * failure-reason-code. Pure; `tlsrptSubscriber` hands each result to the recorder. Nothing here
 * reads the wording of a delivery reason: result type and reason code come from the typed facts
 * (SMTP stage, verifier reason, skip cause, lookup problem).
 *
 * MTA-STS (RFC 8461, STS-60…62): `PolicyFacts` `sts`; sessions under an `sts` plan, an MX outside the
 * policy's patterns (`validation-failure` / `mx-mismatch`) and a failed policy fetch (`sts-*` result types).
 */
import type { TlsaRecord } from '../../dns/types.js';
import type { TlsPlan } from '../../dane/policy.js';
import { formatTlsa } from '../../dane/tlsa.js';
import type { HostFacts, SkipCause } from '../../route/host.js';
import type { DeliveryEvent, DeliverySubscriber } from '../../delivery/events.js';
import type { SmtpError } from '../../delivery/smtpClient.js';
import { isResultType, type ResultType } from './report.js';
import type { CachedPolicy } from '../../mtasts/store.js';
import type { FetchFailureType } from '../../mtasts/fetch.js';

/** The policy a session was evaluated against (RFC 8460 §4.4 policy-type, policy-string, policy-domain). */
export type PolicyFacts =
  /** DANE: the TLSA RRset in presentation form ("u s m HEX") and its base domain */
  | { type: 'tlsa'; baseDomain: string; records: string[] }
  /**
   * MTA-STS (STS-61): the Policy Domain, the policy's lines (policy-string) and its mx patterns
   * (mx-host); both empty when a fetch failed with nothing cached (STS-62, derived)
   */
  | { type: 'sts'; policyDomain: string; lines: string[]; mx: string[] };

/** One counted TLS session attempt. */
export interface TlsSessionResult {
  /** the recipient (policy) domain */
  domain: string;
  /** the MX host; absent when no host was reached (an MX lookup failure): receiving-mx-hostname is then omitted */
  host?: string;
  address?: string;
  ok: boolean;
  /** for a failure */
  resultType?: ResultType;
  /** TLSRPT-20: a short, stable failure-reason-code, so identical failures merge (TLSRPT-26) */
  reasonCode?: string;
  /** absent: no-policy-found */
  policy?: PolicyFacts;
  /** TLSRPT sending-mta-ip: our end of the connection, when a connection was made */
  sendingIp?: string;
  /** TLSRPT receiving-mx-helo: the name in the peer's 220 greeting, when one was read */
  receivingHelo?: string;
}

/** The TLSA RRset behind a plan or a skipped host, for policy-string/policy-domain (RFC 8460 §4.4). */
function tlsaPolicy(records: TlsaRecord[] | undefined, baseDomain: string | undefined): PolicyFacts | undefined {
  return baseDomain ? { type: 'tlsa', baseDomain, records: (records ?? []).map(formatTlsa) } : undefined;
}

/** The policy a plan was made from: the TLSA RRset (DANE plans and unusable-RRset `encrypt` plans), the MTA-STS policy. */
function planPolicy(plan: TlsPlan): PolicyFacts | undefined {
  if (plan.kind === 'sts') return { type: 'sts', policyDomain: plan.policyDomain, lines: [...plan.policyLines], mx: [...plan.mxPatterns] };
  // STS-45, STS-62: a host matching a `testing` policy is reported under it (its ordinary plan has no policy of its own)
  if ((plan.kind === 'may' || plan.kind === 'encrypt') && plan.stsTesting) {
    const t = plan.stsTesting;
    return { type: 'sts', policyDomain: t.policyDomain, lines: [...t.policyLines], mx: [...t.mxPatterns] };
  }
  return 'baseDomain' in plan ? tlsaPolicy(plan.records, plan.baseDomain) : undefined;
}

/** An MTA-STS policy as TLSRPT reports it (STS-61). */
function stsPolicy(p: CachedPolicy): PolicyFacts {
  return { type: 'sts', policyDomain: p.domain, lines: [...p.policy.lines], mx: [...p.policy.mx] };
}

/**
 * A failed MTA-STS policy fetch as one failed session (STS-60, STS-62, TLSRPT-22): made by a delivery
 * (event `sts-fetch-failed`) or by the hourly refresh (`StsPolicies.maintain`, counted through
 * `StsPoliciesOptions.refreshFailed`), each fetch once. With a policy still cached, under that policy;
 * with nothing cached, `sts` with an empty policy-string; never for a cached `none` (STS-46).
 */
export function stsFetchFailure(domain: string, resultType: FetchFailureType, cached: CachedPolicy | undefined): TlsSessionResult | undefined {
  if (cached?.policy.mode === 'none') return undefined;
  const policy = cached ? stsPolicy(cached) : { type: 'sts' as const, policyDomain: domain, lines: [], mx: [] };
  return { domain, ok: false, resultType, policy };
}

/** The TLSA RRset a skipped host was looked up at: the base domain is the owner name without `_port._tcp.`. */
function hostPolicy(h: HostFacts): PolicyFacts | undefined {
  return tlsaPolicy(h.tlsaRecords, h.tlsaName?.replace(/^_\d+\._tcp\./, ''));
}

/** First word of a 220 greeting: the server's own name (RFC 5321 §4.2), for receiving-mx-helo. */
export function heloOf(text: string | undefined): string | undefined {
  const w = text?.trim().split(/\s+/)[0];
  return w && /^[A-Za-z0-9.-]+$/.test(w) ? w : undefined;
}

/** A verifier reason that is a token of its own, usable as a failure-reason-code. */
const token = (r: string | undefined): r is string => !!r && /^[a-z0-9-]{1,64}$/.test(r);

/**
 * TLSRPT-21 (RFC 8460 §4.3): the result of an SMTP client failure under a plan, or undefined when
 * the failure is no TLS policy decision (connect, greeting, EHLO, the transaction) or no TLS was
 * asked for (`none`). A failed `may` handshake is a failure too (validation-failure): its cleartext
 * retry is no policy-compliant TLS session.
 */
export function attemptResult(err: Pick<SmtpError, 'stage' | 'verify'>, plan: TlsPlan): { resultType: ResultType; reasonCode?: string } | undefined {
  if (plan.kind === 'none') return undefined;
  switch (err.stage) {
    case 'starttls':
      return { resultType: 'starttls-not-supported' };
    case 'tls':
      return { resultType: 'validation-failure', reasonCode: 'tls-handshake-failure' };
    case 'verify':
      return verifyResult(err.verify?.reason, plan.kind === 'sts');
    case 'connect':
    case 'greeting':
    case 'ehlo':
    case 'rset':
    case 'mail':
    case 'rcpt':
    case 'data':
    case 'protocol':
      return undefined;
  }
}

/** The result of a failed peer verification (DANE, or WebPKI under MTA-STS: `webpki`) from the verifier's reason. */
function verifyResult(r: string | undefined, webpki: boolean): { resultType: ResultType; reasonCode?: string } {
  if (r === 'dane-no-match') return { resultType: 'certificate-not-trusted', reasonCode: 'dane-no-match' };
  const resultType: ResultType = r && isResultType(r) ? r : 'validation-failure';
  if (token(r) && r !== resultType) return { resultType, reasonCode: r };
  return resultType === 'validation-failure' ? { resultType, reasonCode: webpki ? 'webpki-validation-failure' : 'dane-validation-failure' } : { resultType };
}

/** TLSRPT-21: a skipped host's result (dnssec-invalid, dane-required) and reason code, from its typed cause. */
export function skipResult(resultType: 'dnssec-invalid' | 'dane-required', cause: SkipCause): { resultType: ResultType; reasonCode: string } {
  if (resultType === 'dane-required') return { resultType, reasonCode: 'no-secure-tlsa' };
  return { resultType, reasonCode: cause.kind === 'lookup-failed' ? `${cause.rrtype.toLowerCase()}-lookup-${cause.problem}` : 'dns-lookup-failed' };
}

/**
 * The TLSRPT session result a delivery event stands for, or undefined. A run of relay-generated
 * reports is never counted (TLSRPT-45); a retry (cleartext after a failed `may` handshake,
 * DANE-44; unauthenticated TLS under audit-only, DANE-46) is no session of its own, the failure
 * before it was counted; a skipped host counts once per run.
 */
export function tlsrptResultOf(e: DeliveryEvent): TlsSessionResult | undefined {
  // TLSRPT-45: reports are never counted; a REQUIRETLS run (RFC 8689) is judged by the sender's demand, not the destination's policy.
  // RFC 8689 §4.2.2: nor a TLS-Required: No run, whose sender waived the destination's policy.
  if (e.report || e.requireTls || e.tlsRequiredNo) return undefined;
  switch (e.kind) {
    case 'mx-lookup-failed':
      // No MX host was reached: `host` is left out, so receiving-mx-hostname is omitted rather than the recipient domain.
      return { domain: e.domain, ok: false, resultType: 'dnssec-invalid', reasonCode: `mx-lookup-${e.problem}` };
    case 'host-skipped': {
      if (e.repeat || !e.skip.resultType) return undefined;
      const policy = hostPolicy(e.host);
      return { domain: e.domain, host: e.host.host, ok: false, ...skipResult(e.skip.resultType, e.skip.cause), ...(policy ? { policy } : {}) };
    }
    case 'attempt-failed': {
      if (e.retry) return undefined;
      const r = attemptResult(e.error, e.plan);
      if (!r) return undefined;
      const policy = planPolicy(e.plan);
      const helo = heloOf(e.error.greeting);
      return {
        domain: e.domain,
        host: e.target.host,
        address: e.target.address,
        ok: false,
        ...r,
        ...(policy ? { policy } : {}),
        ...(e.error.localAddress ? { sendingIp: e.error.localAddress } : {}),
        ...(helo ? { receivingHelo: helo } : {}),
      };
    }
    case 'session-opened': {
      if (e.retry || e.plan.kind === 'none') return undefined;
      const policy = planPolicy(e.plan);
      const helo = heloOf(e.greeting);
      const base = {
        domain: e.domain,
        host: e.target.host,
        address: e.target.address,
        ...(policy ? { policy } : {}),
        ...(e.localAddress ? { sendingIp: e.localAddress } : {}),
        ...(helo ? { receivingHelo: helo } : {}),
      };
      // RFC 8460 §4.3: a session without TLS is never a success; under `may` (no policy found) STARTTLS not
      // offered or refused is starttls-not-supported (§4.3.1).
      if (!e.tls)
        return { ...base, ok: false, resultType: 'starttls-not-supported', reasonCode: e.starttlsOffered ? 'starttls-refused' : 'starttls-not-offered' };
      // TLSRPT-21: a TLSA RRset without a usable record is reported as tlsa-invalid, although RFC 7672 §2.2 lets the
      // message go over unauthenticated TLS (plan `encrypt`): the domain's DANE policy could not be applied.
      if (e.plan.kind === 'encrypt' && policy?.type === 'tlsa') return { ...base, ok: false, resultType: 'tlsa-invalid', reasonCode: 'no-usable-tlsa' };
      // STS-45, STS-62: under a `testing` policy the session went on; a WebPKI failure (chain or MX name) is still reported.
      if (e.webpki && !e.webpki.ok) return { ...base, ok: false, ...verifyResult(e.webpki.reason, true) };
      return { ...base, ok: true };
    }
    case 'policy-changed':
    case 'mx-insecure':
    case 'host-is-self':
    case 'rollover-risk':
    case 'reset-failed':
    case 'body-converted':
    case 'internal-error':
    case 'invariant-breach':
    case 'exception-applied':
    case 'recipient':
    case 'sts-lookup-failed':
    case 'sts-exception-applied':
    case 'requiretls-host-refused':
    case 'requiretls-run-mismatch':
    case 'requiretls-dsn-fallback':
      return undefined;
    case 'sts-fetch-failed':
      return stsFetchFailure(e.domain, e.resultType, e.cached);
    case 'sts-mx-mismatch':
      // STS-60: RFC 8460 has no result type for an MX outside the policy's patterns; enforce and testing alike (STS-45, STS-62)
      if (e.repeat || e.policy.policy.mode === 'none') return undefined;
      return { domain: e.domain, host: e.host, ok: false, resultType: 'validation-failure', reasonCode: 'mx-mismatch', policy: stsPolicy(e.policy) };
  }
}

/** The TLSRPT subscriber: every session result goes to `record` (TlsrptRecorder.record). */
export function tlsrptSubscriber(record: (r: TlsSessionResult) => void): DeliverySubscriber {
  return (e) => {
    const r = tlsrptResultOf(e);
    if (r) record(r);
  };
}
