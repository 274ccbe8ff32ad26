/**
 * DANE-2 (RFC 4035 §4.9.3, RFC 6698 §4.1): the AD bit is believed only from a resolver on
 * loopback, or one the operator vouches for (a secured path) — and not from systemd-resolved's
 * stub listeners, although they are on loopback: for a query with the DO bit (ours, DANE-3) the
 * stub at 127.0.0.53 takes the "bypass" path and copies the upstream resolver's AD bit into its
 * reply without having validated anything (systemd issue 34121, fixed only in systemd 257 by
 * PR 34129), and 127.0.0.54 is its proxy-only listener, which forwards replies as they come.
 * Their AD bit is then whatever the network path to the upstream says.
 */
import { isLoopbackServer, parseServer } from './stub.js';

export { isLoopbackServer };

/** systemd-resolved's stub listeners (resolved.conf(5)): 127.0.0.53 (stub) and 127.0.0.54 (proxy). */
export const SYSTEMD_RESOLVED_STUBS = ['127.0.0.53', '127.0.0.54'];

/** "ip:port" → a comparable key; unparseable strings compare as themselves. */
function serverKey(s: string): string {
  try {
    const a = parseServer(s);
    return `${a.host}|${a.port}`;
  } catch {
    return s;
  }
}

/** True for a resolver address that is one of systemd-resolved's stub listeners. */
export function isSystemdResolvedStub(s: string): boolean {
  try {
    return SYSTEMD_RESOLVED_STUBS.includes(parseServer(s).host);
  } catch {
    return false;
  }
}

/**
 * The settings the trust rules read: the loaded configuration is one (dns sits below config, so the
 * configuration passes itself in rather than being imported here).
 */
export interface TrustAdSettings {
  dns: { mode: string; trusted_resolvers: string[] };
  delivery: { tls_level: string };
  /** dns.resolvers, or resolv.conf's nameservers when none are configured */
  resolvedResolvers: string[];
}

/**
 * The reason the relay must not run a DANE level with these resolvers, if any. A DANE level is in
 * force when `delivery.tls_level` is dane/dane-only or, with `policy.dane`, when some tls_policy
 * entry asks for DANE (pass PolicyStore.mentionsDane()). Only `dns.mode: trust-ad` believes the
 * resolver's AD bit; other modes (validate) do not depend on the path to the resolver. A resolver
 * listed in `dns.trusted_resolvers` is always believed (the operator vouches for it).
 */
export function trustAdProblem(cfg: TrustAdSettings, policy?: { dane: boolean; source?: string }): string | undefined {
  if (cfg.dns.mode !== 'trust-ad') return undefined;
  const defaultDane = cfg.delivery.tls_level === 'dane' || cfg.delivery.tls_level === 'dane-only';
  if (!defaultDane && !policy?.dane) return undefined;
  const vouched = new Set(cfg.dns.trusted_resolvers.map(serverKey));
  const listed = (s: string) => vouched.has(serverKey(s));
  const resolved = cfg.resolvedResolvers.filter((s) => isSystemdResolvedStub(s) && !listed(s));
  const offHost = cfg.resolvedResolvers.filter((s) => !isLoopbackServer(s) && !listed(s));
  if (resolved.length === 0 && offHost.length === 0) return undefined;
  const what = defaultDane ? `delivery.tls_level ${cfg.delivery.tls_level}` : `a DANE entry in ${policy?.source ?? 'the tls_policy file'}`;
  const otherwise = defaultDane ? 'choose delivery.tls_level: may to deliver without DANE' : 'remove the dane/dane-only entries';
  const problems: string[] = [];
  if (offHost.length) {
    problems.push(`resolver(s) ${offHost.join(', ')} are not on loopback, so their AD bit proves nothing (anyone on the path can set it)`);
  }
  if (resolved.length) {
    problems.push(
      `resolver(s) ${resolved.join(', ')} are systemd-resolved's stub listener: for DNSSEC (DO) queries it passes the upstream ` +
        `resolver's AD bit through without validating (systemd issue 34121), so the AD bit proves nothing`,
    );
  }
  return (
    `dns.mode trust-ad with ${what}: ${problems.join('; and ')}. Run a validating resolver on loopback ` +
    `(e.g. unbound on 127.0.0.1) and set dns.resolvers to it, or use dns.mode: validate (the relay validates itself; ` +
    `any resolver will do), or list the resolver in dns.trusted_resolvers if you have made sure it validates and the path to it ` +
    `is secured, or ${otherwise}.`
  );
}
