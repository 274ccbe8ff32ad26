/** Policy store and prober from the `policy:` config section (paths relative to the config file). */
import type { Logger } from 'pino';
import { ConfigError, configPath, type LoadedConfig } from '../config/load.js';
import { PolicyStore, type PolicyFile } from './store.js';
import { trustAdProblem } from '../dns/trust.js';
import { mentionsDane, type PolicyInputs } from './resolve.js';

/**
 * `trustCheck` (default true): DANE-2, a tls_policy DANE entry under an untrusted trust-ad resolver
 * is refused like a DANE default level: at start-up (ConfigError) and on reload (file rejected).
 * Tests that inject their own resolver turn it off, as Relay.start does for the default level.
 */
export function policyStoreFor(cfg: LoadedConfig, log?: Logger, statIntervalMs?: number, trustCheck = true): PolicyStore {
  const file = (p: string | undefined): PolicyFile | undefined => (p ? { path: configPath(cfg, p), label: p } : undefined);
  const p = cfg.policy;
  try {
    return new PolicyStore({
      defaultLevel: cfg.delivery.tls_level,
      exceptionLevel: p.exception_level,
      tlsPolicy: file(p.tls_policy),
      danefail: file(p.danefail),
      ...(log ? { log } : {}),
      ...(statIntervalMs !== undefined ? { statIntervalMs } : {}),
      ...(trustCheck ? { admit: (c: PolicyInputs) => trustAdProblem(cfg, { dane: mentionsDane(c), source: c.table?.source }) } : {}),
    });
  } catch (e) {
    // At start-up there is no previous version to keep: refuse to run (exit 2).
    throw new ConfigError('policy', [(e as Error).message]);
  }
}
