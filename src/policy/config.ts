/** Policy store and prober from the `policy:` config section (paths relative to the config file). */
import { isAbsolute, resolve } from 'node:path';
import type { Logger } from 'pino';
import { ConfigError, type LoadedConfig } from '../config/load.js';
import { PolicyStore, type PolicyFile } from './store.js';

export function policyStoreFor(cfg: LoadedConfig, log?: Logger, statIntervalMs?: number): PolicyStore {
  const file = (p: string | undefined): PolicyFile | undefined => (p ? { path: isAbsolute(p) ? p : resolve(cfg.baseDir, p), label: p } : undefined);
  const p = cfg.policy;
  try {
    return new PolicyStore({
      defaultLevel: cfg.delivery.tls_level,
      exceptionLevel: p.exception_level,
      tlsPolicy: file(p.tls_policy),
      danefail: file(p.danefail),
      ...(log ? { log } : {}),
      ...(statIntervalMs !== undefined ? { statIntervalMs } : {}),
    });
  } catch (e) {
    // At start-up there is no previous version to keep: refuse to run (exit 2).
    throw new ConfigError('policy', [(e as Error).message]);
  }
}
