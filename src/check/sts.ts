/**
 * The MTA-STS part of `dane-relay check DOMAIN` (RFC 8461; issue 15): the `_mta-sts` TXT record with
 * its DNSSEC status, the cached policy, a fresh fetch, and the policy delivery would apply now.
 *
 * The policy in force is found by the relay's own `StsPolicies.lookup` (mtasts/policies.ts) over a
 * copy-on-write view of the cache (`ReadOnlyPolicyStore`: it reads `queue_dir/mta-sts/` and keeps what
 * the lookup would store in memory), so check judges by delivery's rules without changing the cache a
 * running relay uses. Whether that policy governs the destination is `mtasts/enforce.ts stsGate`, the
 * function delivery calls. Extra fetches made only to advise the owner (a policy published without a TXT
 * record, STS-73; a body changed under the same id, STS-71) are marked `diagnostic`.
 */
import type { DnssecStatus, Resolver } from '../dns/types.js';
import { isAnswer } from '../dns/types.js';
import { stsRecordName } from '../mtasts/record.js';
import type { FetchResult } from '../mtasts/fetch.js';
import { StsPolicies, type StsLookup } from '../mtasts/policies.js';
import { PolicyStore, type CachedPolicy } from '../mtasts/store.js';
import type { StsPolicy } from '../mtasts/policy.js';
import { stsConsidered, stsGate, type StsGate, type StsLevelFacts } from '../mtasts/enforce.js';
import { addressLiteral } from '../route/mx.js';

export interface StsInspectDeps {
  /** mta_sts.enabled: false → the relay applies no MTA-STS policy */
  enabled: boolean;
  queueDir: string;
  /** fetchPolicy with the configured trust anchors, deadline and port (mtasts/settings.ts) */
  fetch: (domain: string) => Promise<FetchResult>;
  /** WebPKI roots for MX certificates under a policy (`mta_sts.ca_file`, else the system store) */
  roots: readonly (string | Buffer)[];
}

/** A policy as shown: the cache entry's fields in ISO dates. */
export interface ShownPolicy {
  id: string;
  mode: StsPolicy['mode'];
  maxAge: number;
  mx: string[];
  lines: string[];
  fetchedAt?: string;
  expiresAt?: string;
  /** the last refresh that failed while this policy stayed cached (STS-33, STS-34) */
  refreshFailure?: { at: string; resultType: string; reason: string };
}

export interface StsReport {
  /** `_mta-sts.<domain>` TXT: `record` with its id, `none`, or `error` (DNS could not say) */
  record: { name: string; kind: 'record' | 'none' | 'error'; id?: string; why?: string; status?: DnssecStatus; texts?: string[] };
  /** the cache entry under queue_dir (`error`: unreadable, e.g. check run as another user than the relay) */
  cached?: ShownPolicy & { inForce: boolean };
  cacheError?: string;
  /** the policy fetched now (by delivery's lookup, or diagnostic); a failure as RFC 8460 result type */
  fetched?:
    | { diagnostic: boolean; ok: true; policy: ShownPolicy; notes: string[]; address: string }
    | { diagnostic: boolean; ok: false; resultType: string; reason: string };
  /** what delivery's lookup did: fetched, failed (the cached policy, if any, stays), cached */
  lookup?: StsLookup['fetch'];
  /** the policy in force for delivery now (fetched or cached, unexpired) */
  applied?: ShownPolicy & { source: 'cache' | 'fetch' };
  /** TXT id equal to the cached policy's id (no refetch due) */
  idMatchesCache?: boolean;
  /** does the policy govern this destination (mtasts/enforce.ts stsGate), or why not */
  gate: { kind: StsGate['kind'] | 'disabled' | 'not-considered'; why: string };
}

/**
 * A view of the policy cache that never writes: reads go to disk until the lookup stores or removes
 * something, which then lives in memory only.
 */
export class ReadOnlyPolicyStore extends PolicyStore {
  private readonly overlay = new Map<string, { entry: CachedPolicy; mtimeMs: number } | null>();
  private clock = 0;

  override async read(domain: string): Promise<{ entry: CachedPolicy; mtimeMs: number } | undefined> {
    const o = this.overlay.get(domain);
    if (o !== undefined) return o === null ? undefined : { entry: structuredClone(o.entry), mtimeMs: o.mtimeMs };
    return super.read(domain);
  }

  override async mtimeOf(domain: string): Promise<number | undefined> {
    const o = this.overlay.get(domain);
    if (o !== undefined) return o === null ? undefined : o.mtimeMs;
    return super.mtimeOf(domain);
  }

  override async write(entry: CachedPolicy): Promise<number> {
    const mtimeMs = -++this.clock; // never equal to a file's mtime
    this.overlay.set(entry.domain, { entry: structuredClone(entry), mtimeMs });
    return mtimeMs;
  }

  override async remove(domain: string): Promise<boolean> {
    const had = (await this.mtimeOf(domain)) !== undefined;
    this.overlay.set(domain, null);
    return had;
  }
}

function shown(id: string, p: StsPolicy, e?: CachedPolicy): ShownPolicy {
  return {
    id,
    mode: p.mode,
    maxAge: p.maxAge,
    mx: [...p.mx],
    lines: [...p.lines],
    ...(e ? { fetchedAt: new Date(e.fetchedAt).toISOString(), expiresAt: new Date(e.expiresAt).toISOString() } : {}),
    ...(e?.refreshFailure
      ? { refreshFailure: { at: new Date(e.refreshFailure.at).toISOString(), resultType: e.refreshFailure.resultType, reason: e.refreshFailure.reason } }
      : {}),
  };
}

/** Same policy text? (the lines as fetched, unknown keys left out: what an edit changes) */
export function samePolicy(a: Pick<StsPolicy, 'lines'>, b: Pick<StsPolicy, 'lines'>): boolean {
  return a.lines.length === b.lines.length && a.lines.every((l, i) => l === b.lines[i]);
}

export async function inspectSts(
  domain: string,
  level: StsLevelFacts,
  resolver: Resolver,
  deps: StsInspectDeps,
  now: () => number,
): Promise<{ report: StsReport; policy?: CachedPolicy; governs: boolean }> {
  const name = stsRecordName(domain);
  const report: StsReport = { record: { name, kind: 'none' }, gate: { kind: 'none', why: '' } };
  if (addressLiteral(domain)) {
    report.gate = { kind: 'not-considered', why: 'an address literal has no MTA-STS policy (STS-1)' };
    return { report, governs: false };
  }
  // The TXT RRset as the resolver answers it, for its DNSSEC status (MTA-STS does not need DNSSEC; the owner may want it).
  try {
    const ans = await resolver.lookup(name, 'TXT');
    if (isAnswer(ans)) {
      report.record.status = ans.status;
      if (ans.records.length) report.record.texts = ans.records.map(String);
    } else report.record.status = ans.status;
  } catch {
    // discoverSts below reports the failure
  }
  const store = new ReadOnlyPolicyStore(deps.queueDir);
  let cachedEntry: CachedPolicy | undefined;
  try {
    cachedEntry = (await store.read(domain))?.entry;
  } catch (e) {
    report.cacheError = (e as Error).message;
  }
  if (cachedEntry) report.cached = { ...shown(cachedEntry.id, cachedEntry.policy, cachedEntry), inForce: cachedEntry.expiresAt > now() };

  // Delivery's own lookup (discovery, cache, refetch on a new id), over the read-only view.
  let fetchedNow: FetchResult | undefined;
  const policies = new StsPolicies({
    store,
    resolver,
    now,
    fetch: async (d) => {
      fetchedNow = await deps.fetch(d);
      return fetchedNow;
    },
  });
  let r: StsLookup;
  try {
    r = await policies.lookup(domain);
  } catch (e) {
    // Delivery goes on as without MTA-STS when the lookup throws (STS-16, event sts-lookup-failed): so does the verdict.
    report.gate = { kind: 'none', why: `MTA-STS lookup failed: ${(e as Error).message}; delivery goes on as without MTA-STS (STS-16)` };
    return { report, governs: false };
  }
  report.lookup = r.fetch;
  report.record.kind = r.discovery.kind;
  if (r.discovery.kind === 'record') report.record.id = r.discovery.id;
  else report.record.why = r.discovery.why;
  if (cachedEntry && r.discovery.kind === 'record') report.idMatchesCache = cachedEntry.id === r.discovery.id;
  if (r.applied) report.applied = { ...shown(r.applied.id, r.applied.policy, r.applied), source: r.fetch === 'fetched' ? 'fetch' : 'cache' };

  // A fresh fetch to compare with (STS-71) or to find a policy published without its TXT record (STS-73).
  let diagnostic = false;
  if (!fetchedNow) {
    diagnostic = true;
    fetchedNow = await deps.fetch(domain);
  }
  report.fetched = fetchedNow.ok
    ? { diagnostic, ok: true, policy: shown(report.record.id ?? '', fetchedNow.policy), notes: fetchedNow.notes, address: fetchedNow.address }
    : { diagnostic, ok: false, resultType: fetchedNow.resultType, reason: fetchedNow.reason };

  if (!deps.enabled) {
    report.gate = { kind: 'disabled', why: 'mta_sts.enabled is false: the relay applies no MTA-STS policy' };
    return { report, governs: false };
  }
  if (!stsConsidered(level)) {
    report.gate = { kind: 'not-considered', why: `level none (${level.rule}): no TLS, no MTA-STS` };
    return { report, governs: false };
  }
  const gate = stsGate(r, level);
  switch (gate.kind) {
    case 'apply':
      report.gate = {
        kind: 'apply',
        why: `policy ${gate.policy.domain} id ${gate.policy.id} (${gate.policy.policy.mode}) governs every MX host without usable TLSA`,
      };
      return { report, policy: gate.policy, governs: true };
    case 'none':
      report.gate = { kind: 'none', why: gate.why };
      return { report, governs: false };
    case 'exception':
      report.gate = {
        kind: 'exception',
        why:
          gate.how === 'sts-ignore'
            ? `set aside by ${gate.rule} (sts-ignore): logged as an exception on every delivery`
            : `set aside by ${gate.rule}: an explicit tls_policy level wins over the MTA-STS policy (logged as an exception)`,
      };
      return { report, policy: gate.policy, governs: false };
  }
}
