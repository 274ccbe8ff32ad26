/**
 * DANE-2 (RFC 4035 §4.9.3, RFC 6698 §4.1): the AD bit is believed only from a resolver on
 * loopback, or one the operator vouches for (a secured path).
 */
import { isLoopbackServer } from './stub.js';
import type { Config } from '../config/schema.js';

export { isLoopbackServer };

/**
 * The reason the relay must not run a DANE level with these resolvers, if any. A DANE level is in
 * force when `delivery.tls_level` is dane/dane-only or, with `policy.dane`, when some tls_policy
 * entry asks for DANE (pass PolicyStore.mentionsDane()). Only `dns.mode: trust-ad` believes the
 * resolver's AD bit; other modes (validate) do not depend on the path to the resolver.
 */
export function trustAdProblem(
  cfg: Pick<Config, 'dns' | 'delivery'> & { resolvedResolvers: string[] },
  policy?: { dane: boolean; source?: string },
): string | undefined {
  if (cfg.dns.mode !== 'trust-ad') return undefined;
  const defaultDane = cfg.delivery.tls_level === 'dane' || cfg.delivery.tls_level === 'dane-only';
  if (!defaultDane && !policy?.dane) return undefined;
  const untrusted = cfg.resolvedResolvers.filter((s) => !isLoopbackServer(s) && !cfg.dns.trusted_resolvers.includes(s));
  if (untrusted.length === 0) return undefined;
  const what = defaultDane ? `delivery.tls_level ${cfg.delivery.tls_level}` : `a DANE entry in ${policy?.source ?? 'the tls_policy file'}`;
  return (
    `dns.mode trust-ad with ${what}: resolver(s) ${untrusted.join(', ')} are not on loopback, ` +
    `so their AD bit proves nothing (anyone on the path can set it). Run a validating resolver on loopback ` +
    `(e.g. unbound on 127.0.0.1) and set dns.resolvers to it, or list the resolver in dns.trusted_resolvers if the path to it ` +
    `is secured, or ${defaultDane ? 'choose delivery.tls_level: may to deliver without DANE' : 'remove the dane/dane-only entries'}.`
  );
}
