/**
 * A host name's addresses through the relay's own Resolver, and the `lookup` that makes node:net,
 * node:tls and node:https connect to one of them: the relay trusts one view of DNS and never lets
 * getaddrinfo answer (guide: every name goes through the configured resolver), and a pinned address
 * leaves no second lookup an attacker could answer differently.
 */
import type { LookupFunction } from 'node:net';
import type { Resolver } from './types.js';
import { isAnswer } from './types.js';

export type HostAddresses = { ok: true; v4: string[]; v6: string[] } | { ok: false; why: string };

/**
 * A and AAAA of `host`. Either lookup failing (bogus, indeterminate, transport) fails the whole: a
 * caller must not silently use only the family an attacker left alone. Insecure answers are answers.
 */
export async function hostAddresses(resolver: Resolver, host: string): Promise<HostAddresses> {
  const [a, aaaa] = await Promise.all([resolver.lookup(host, 'A'), resolver.lookup(host, 'AAAA')]);
  for (const ans of [a, aaaa]) {
    if (!isAnswer(ans)) return { ok: false, why: `${ans.qtype} lookup for ${host}: ${ans.error?.message ?? ans.status}` };
  }
  if (a.records.length + aaaa.records.length === 0) return { ok: false, why: `${host} has no A/AAAA records` };
  return { ok: true, v4: a.records, v6: aaaa.records };
}

/** A lookup that only ever returns `address`: the socket asks no resolver of its own. */
export function pinnedLookup(address: string, family: 4 | 6): LookupFunction {
  return ((_host: string, options: { all?: boolean }, cb: (...a: unknown[]) => void) => {
    if (options?.all) cb(null, [{ address, family }]);
    else cb(null, address, family);
  }) as unknown as LookupFunction;
}
