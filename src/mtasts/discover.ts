/**
 * MTA-STS discovery through the relay's own Resolver (RFC 8461 §3.1, digest STS-1, 2, 5): TXT at
 * `_mta-sts.<Policy Domain>`, aliases followed by the resolver, the parent zone never asked.
 */
import type { DnsAnswer, Resolver } from '../dns/types.js';
import { isAnswer } from '../dns/types.js';
import { parseStsTxt, stsRecordName } from './record.js';

/**
 * `record`: a valid record with its id. `none`: the name has no usable record (NXDOMAIN, NODATA,
 * zero or several `v=STSv1` records, or one that does not parse). `error`: DNS could not say (bogus,
 * indeterminate, transport failure). For the policy both of the latter mean "no live record": the
 * cached policy, if any, still applies (STS-5, STS-33).
 */
export type Discovery =
  | { kind: 'record'; id: string; name: string }
  | { kind: 'none'; name: string; why: string }
  | { kind: 'error'; name: string; why: string };

export async function discoverSts(resolver: Resolver, policyDomain: string): Promise<Discovery> {
  const name = stsRecordName(policyDomain);
  let ans: DnsAnswer<'TXT'>;
  try {
    ans = await resolver.lookup(name, 'TXT');
  } catch (e) {
    return { kind: 'error', name, why: `TXT lookup for ${name}: ${(e as Error).message}` };
  }
  if (!isAnswer(ans)) return { kind: 'error', name, why: `TXT lookup for ${name}: ${ans.error?.message || ans.error?.kind || ans.status}` };
  if (ans.rcode === 'NXDOMAIN') return { kind: 'none', name, why: `${name}: no such name` };
  const rec = parseStsTxt(ans.records);
  return rec.ok ? { kind: 'record', id: rec.id, name } : { kind: 'none', name, why: `${name}: ${rec.why}` };
}
