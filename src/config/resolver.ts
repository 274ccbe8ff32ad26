/**
 * The one place a Resolver is built from the configuration: `serve`, `check`, `dns lookup`, the
 * danefail exception probe (the relay's resolver), TLSRPT discovery and https report hosts all get
 * theirs here, so no command can explain a verdict the relay would not reach (issue 13: `check`
 * used to ask the AD bit of resolv.conf's resolver while delivery validated in-process).
 *
 * `dns.mode: validate` → ValidatingResolver (DNSSEC checked in-process from `dns.trust_anchors`,
 * default the IANA root KSKs); `dns.mode: trust-ad` → StubResolver (the AD bit of a trusted
 * resolver; whether it may be trusted is `dns/trust.ts`, checked by the start-up checks).
 *
 * Small on purpose: callers that need more (per-message budgets, timing metrics) wrap the
 * returned Resolver rather than add options here.
 */
import { readFileSync } from 'node:fs';
import type { Config } from './schema.js';
import { ValidatingResolver } from '../dnssec/resolver.js';
import { StubResolver } from '../dns/stub.js';
import type { DnsTransport } from '../dns/transport.js';

export interface ResolverDeps {
  /** validation clock (signature windows, cache ages): the relay passes its own */
  now?: () => number;
  /** answer cache (default on); a one-shot command or the DNSSEC self-test asks fresh */
  cache?: boolean;
  /** the exchange layer (tests and the fault suite plug in their own) */
  transport?: DnsTransport;
}

export type ConfiguredResolver = ValidatingResolver | StubResolver;

export function resolverFor(cfg: Pick<Config, 'dns'> & { resolvedResolvers: string[] }, deps: ResolverDeps = {}): ConfiguredResolver {
  const common = {
    servers: cfg.resolvedResolvers,
    timeoutMs: cfg.dns.timeout,
    attempts: cfg.dns.attempts,
    ...(deps.transport ? { transport: deps.transport } : {}),
  };
  if (cfg.dns.mode === 'validate') {
    const trustAnchors = cfg.dns.trust_anchors ? readFileSync(cfg.dns.trust_anchors, 'utf8') : undefined;
    // The validator's answer cache cannot be switched off (its chain caches make it affordable); a
    // one-shot caller closes it after use, so nothing outlives the command.
    return new ValidatingResolver({ ...common, trustAnchors, ...(deps.now ? { now: deps.now } : {}) });
  }
  return new StubResolver({ ...common, ...(deps.cache === false ? { cache: false } : {}) });
}
