/**
 * What the `mta_sts:` configuration means for a fetch (issue 15): the trust anchors — the system
 * store, or `mta_sts.ca_file` instead of it — and the fetch deadline.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { resolve } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import type { Resolver } from '../dns/types.js';
import { fetchPolicy, type FetchResult } from './fetch.js';
import { StsPolicies, type StsLog, type StsPoliciesOptions } from './policies.js';
import type pg from 'pg';
import { PgStsPolicyStore } from './pgStore.js';
import { PolicyStore, type StsPolicyStore } from './store.js';

/**
 * `mta_sts.ca_file` read and checked (at least one PEM certificate, every one readable), or undefined
 * for the system store. Throws a message naming the key: `serve` and `config check` refuse to start.
 */
export function stsTrustAnchors(cfg: Pick<LoadedConfig, 'mta_sts' | 'baseDir'>): Buffer | undefined {
  const file = cfg.mta_sts.ca_file;
  if (file === undefined) return undefined;
  const path = resolve(cfg.baseDir, file);
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (e) {
    throw new Error(`mta_sts.ca_file: ${path}: ${(e as Error).message}`);
  }
  const blocks = pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error(`mta_sts.ca_file: ${path}: no PEM certificate in it`);
  for (const [i, b] of blocks.entries()) {
    try {
      new X509Certificate(b);
    } catch (e) {
      throw new Error(`mta_sts.ca_file: ${path}: certificate ${i + 1} is unreadable: ${(e as Error).message}`);
    }
  }
  return pem;
}

/**
 * Where the policy cache lives: with `spool.backend: postgres` in the queue database (`pool`: a connection to it),
 * shared by every node; otherwise the files under queue_dir.
 */
export function stsStoreFor(cfg: Pick<LoadedConfig, 'queue_dir' | 'spool'>, pool?: pg.Pool): StsPolicyStore {
  if (cfg.spool.backend === 'postgres') {
    if (!pool) throw new Error('the MTA-STS cache of a postgres spool needs a connection to the queue database');
    return new PgStsPolicyStore(pool);
  }
  return new PolicyStore(cfg.queue_dir);
}

/** The relay's policy state (`serve`, `mta-sts` commands, `check`): fetches as configured, the cache in `store` (stsStoreFor). */
export function stsPoliciesFor(
  cfg: Pick<LoadedConfig, 'mta_sts' | 'baseDir' | 'queue_dir'>,
  resolver: Resolver,
  log?: StsLog,
  now?: () => number,
  refreshFailed?: StsPoliciesOptions['refreshFailed'],
  store: StsPolicyStore = new PolicyStore(cfg.queue_dir),
): StsPolicies {
  const ca = stsTrustAnchors(cfg);
  return new StsPolicies({
    store,
    resolver,
    log,
    ...(now ? { now } : {}),
    ...(refreshFailed ? { refreshFailed } : {}),
    fetch: stsFetchFor(cfg, resolver, ca),
  });
}

/** The policy fetch as configured (trust anchors, deadline, port): the relay's and `check`'s. */
export function stsFetchFor(cfg: Pick<LoadedConfig, 'mta_sts'>, resolver: Resolver, ca: Buffer | undefined): (domain: string) => Promise<FetchResult> {
  return (domain) => fetchPolicy(domain, { resolver, ca, timeoutMs: cfg.mta_sts.fetch_timeout, port: cfg.mta_sts.port });
}
