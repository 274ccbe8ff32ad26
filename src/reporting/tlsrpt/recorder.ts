/**
 * The one place TLSRPT counts (digest TLSRPT-10, 16): the delivery subscriber (results.ts) calls
 * `record` once per TLS session attempt that reached a policy decision. Every session is stored at once
 * (durable within a second), unless the domain is known (cached) to publish no valid TLSRPT
 * record: NXDOMAIN, NODATA or an invalid record. A cache miss or a DNS temporary failure counts
 * (a lookup is started to warm the cache): dnssec-invalid results happen exactly when DNS is in
 * trouble, and they must not be lost. TLSRPT-6 "statistics only for domains with a valid record"
 * is kept by the report step, which looks `rua` up again and drops a domain without one.
 */
import type { TlsSessionResult } from './results.js';
import type { TlsrptDiscovery } from './discovery.js';
import type { CountStore } from './store.js';
import { aLabel, dayOf, detailKey, policyKey, type FailureDetail, type Policy } from './report.js';
import { printable } from '../../text/printable.js';
import { canonicalIp } from '../../dns/name.js';

export interface SessionCount {
  /** the TLSRPT Policy Domain the report is about and sent for (TLSRPT-1) */
  reportDomain: string;
  policy: Policy;
  ok: boolean;
  detail?: FailureDetail;
}

/** TLSRPT-25/26: one spelling per address (dns/name.ts `canonicalIp`), so the failure-details merge key does not split one peer in two. */
export const normalIp = canonicalIp;

/** Pure: a session result → what is counted, keyed by policy (TLSRPT-11…14, 21, 25). */
export function sessionCount(r: TlsSessionResult): SessionCount {
  const reportDomain = aLabel(r.domain);
  const p = r.policy;
  const policy: Policy = !p
    ? { type: 'no-policy-found', strings: [], domain: reportDomain }
    : p.type === 'tlsa'
      ? { type: 'tlsa', strings: [...p.records], domain: aLabel(p.baseDomain) }
      : // STS-61: policy-string = the policy lines, mx-host = the patterns (an array)
        { type: 'sts', strings: [...p.lines], domain: aLabel(p.policyDomain), mxHost: [...p.mx] };
  if (r.ok) return { reportDomain, policy, ok: true };
  const detail: FailureDetail = { resultType: r.resultType ?? 'validation-failure' }; // TLSRPT-20
  if (r.sendingIp) detail.sendingIp = normalIp(r.sendingIp);
  if (r.host) detail.receivingMx = aLabel(r.host); // no host reached (MX lookup failure): receiving-mx-hostname omitted
  if (r.receivingHelo) detail.receivingHelo = printable(r.receivingHelo);
  if (r.address) detail.receivingIp = normalIp(r.address);
  if (r.reasonCode) detail.reasonCode = printable(r.reasonCode);
  return { reportDomain, policy, ok: false, detail };
}

export interface RecorderDeps {
  store: CountStore;
  discovery: TlsrptDiscovery;
  now: () => number;
  log?: { debug(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

export class TlsrptRecorder {
  constructor(private readonly deps: RecorderDeps) {}

  /** Called by the delivery subscriber (results.ts). Never throws: a counting problem must not disturb a delivery. */
  readonly record = (r: TlsSessionResult): void => {
    const at = this.deps.now();
    let c: SessionCount;
    try {
      c = sessionCount(r);
    } catch (e) {
      this.deps.log?.warn({ err: (e as Error).message, domain: r.domain }, 'tlsrpt: session not countable');
      return;
    }
    const known = this.deps.discovery.cached(c.reportDomain);
    if (known?.kind === 'none') {
      this.deps.log?.debug({ domain: c.reportDomain, tlsrpt: known.kind, why: known.why }, 'tlsrpt: domain publishes no TLSRPT record; session not counted');
      return;
    }
    this.count(c, at);
    if (!known) void this.deps.discovery.lookup(c.reportDomain).catch(() => undefined);
  };

  private count(c: SessionCount, at: number): void {
    this.deps.store.add(dayOf(at), c.reportDomain, policyKey(c.policy), c.ok, c.detail ? detailKey(c.detail) : undefined);
  }
}
