/**
 * SIGHUP and the YAML configuration (issue 21 item 1): which keys a running relay takes over from a
 * re-read file and which need a restart. `planReload(old, next)` is pure: it compares the two validated
 * configurations key by key and returns the configuration to run with (the new value of every key in
 * RELOADABLE, the old value of every other key) and the changed keys that keep their old value until a
 * restart. Postfix does the same split (`postfix reload` vs `inet_interfaces` needing a restart).
 *
 * A key is reloadable only where the running relay reads it per delivery, per connection or per
 * scheduling pass from the live objects (src/compose.ts applies the plan to them); every other key — a
 * listener, a file opened at start, a limiter built at start — is named "restart needed" and kept.
 */
import type { LoadedConfig } from './load.js';

/** Key paths (dotted) a reload applies; a prefix covers the keys under it. */
export const RELOADABLE: readonly string[] = [
  // read per delivery through the policy store (the default level) and the delivery deps
  'delivery.tls_level',
  'delivery.timeouts',
  'delivery.digest_preference',
  'delivery.max_messages_per_connection',
  'delivery.discard_ehlo_keywords',
  'delivery.mx_host_limit',
  'delivery.mime_conversion',
  // read per scheduling pass
  'delivery.concurrency',
  'delivery.per_destination',
  'delivery.connection_cache_time',
  'queue.min_backoff',
  'queue.max_backoff',
  'queue.run_interval',
  'queue.lifetime',
  'queue.delay_warning',
  // read per connection / per command by ingress
  'ingress.max_recipients',
  'ingress.max_connections',
  'ingress.max_connections_per_client',
  'ingress.max_hops',
  'ingress.postmaster',
  'ingress.long_lines',
  // read per self-test run (issue 21 item 3): a reload re-runs the test with the new names
  'dns.dnssec_probe',
  'dns.dnssec_bogus_probe',
  // the policy files' contents are re-read on SIGHUP by the policy store; the level for a listed destination is an input of it
  'policy.exception_level',
];

/**
 * Keys that need a restart, with the reason an operator is told. Together with RELOADABLE this names every
 * key of the schema (test/config/reload.test.ts checks it), so a new key must be put on one side.
 */
export const RESTART_NEEDED: Readonly<Record<string, string>> = {
  listen: 'listeners are bound at start',
  relay_clients: 'compiled at ingress start',
  queue_dir: 'the spool is opened at start',
  hostname: 'used by listeners, loop detection and TLSRPT set up at start',
  user: 'privileges are dropped at start',
  allow_root: 'checked at start',
  'dns.mode': 'the resolver is built at start',
  'dns.resolvers': 'the resolver is built at start',
  'dns.trusted_resolvers': 'the resolver and its trust rules are built at start',
  'dns.timeout': 'the resolver is built at start',
  'dns.attempts': 'the resolver is built at start',
  'dns.trust_anchors': 'the validator reads its trust anchors at start',
  'delivery.port': 'also used by the danefail prober and loop detection set up at start',
  'ingress.max_message_size': 'advertised in EHLO SIZE by the listener built at start',
  'ingress.rate_per_minute': 'the rate limiter is built at start',
  'ingress.max_auth_per_client': 'the AUTH limiter is built at start',
  'ingress.client_ipv6_prefix': 'per-client counters are keyed at start',
  'ingress.tls': 'the TLS key pair is loaded at start',
  'ingress.users_file': 'the path is fixed at start (its contents are reloaded on SIGHUP)',
  'ingress.banner': 'the listener is built at start',
  'ingress.timeout': 'the listener is built at start',
  spool: 'the queue backend is opened at start',
  control: 'the control socket is bound at start',
  metrics: 'the metrics listener is bound at start',
  tlsrpt: 'the TLSRPT service is opened at start',
  mta_sts: 'the MTA-STS policy service (its fetcher, cache and refresh timer) is built at start',
  log: 'loggers are made at start',
  'policy.tls_policy': "the path is fixed at start (the file's contents are reloaded on SIGHUP)",
  'policy.danefail': "the path is fixed at start (the file's contents are reloaded on SIGHUP)",
  'policy.probe_interval': 'the prober is started at start',
  'policy.rollover_warn': 'the rollover watch is set up at start',
  // derived by loadConfig, not keys of the file: they follow the keys above
  baseDir: 'the config file moved',
  file: 'the config file moved',
  resolvedResolvers: 'the resolver is built at start',
};

export interface ReloadPlan {
  /** the configuration to run with: new values of the reloadable keys, old values of the rest */
  config: LoadedConfig;
  /** reloadable keys whose value changed (leaf paths, dotted), now in force */
  applied: string[];
  /** changed keys that keep their old value until a restart, with the reason */
  restartNeeded: { key: string; reason: string }[];
}

type Json = unknown;

/** Leaf paths whose values differ (arrays are compared whole: a list is one value). */
export function changedKeys(a: Json, b: Json, prefix = ''): string[] {
  const isObj = (v: Json): v is Record<string, Json> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObj(a) && isObj(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    return keys.flatMap((k) => changedKeys(a[k], b[k], prefix ? `${prefix}.${k}` : k));
  }
  if (isObj(a) || isObj(b)) return [prefix]; // a section added or removed: one change
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix];
}

const covers = (rule: string, key: string) => key === rule || key.startsWith(`${rule}.`);

/** Is `key` (a dotted leaf path) applied on reload? */
export function isReloadable(key: string): boolean {
  return RELOADABLE.some((r) => covers(r, key));
}

/** Why `key` needs a restart (the most specific rule), or a generic reason for a key no rule names. */
export function restartReason(key: string): string {
  const rule = Object.keys(RESTART_NEEDED)
    .filter((r) => covers(r, key))
    .sort((x, y) => y.length - x.length)[0];
  return rule ? RESTART_NEEDED[rule]! : 'not reloadable';
}

function getPath(o: Json, path: string[]): Json {
  return path.reduce<Json>((v, k) => (v && typeof v === 'object' ? (v as Record<string, Json>)[k] : undefined), o);
}

function setPath(o: Record<string, Json>, path: string[], value: Json): void {
  let cur = o;
  for (const k of path.slice(0, -1)) {
    const next = cur[k];
    cur[k] = next && typeof next === 'object' && !Array.isArray(next) ? { ...(next as Record<string, Json>) } : {};
    cur = cur[k] as Record<string, Json>;
  }
  const last = path[path.length - 1]!;
  if (value === undefined) delete cur[last];
  else cur[last] = value;
}

/** What a reload from `old` to `next` (both validated) changes, and what it cannot. Pure: neither input is modified. */
export function planReload(old: LoadedConfig, next: LoadedConfig): ReloadPlan {
  const config = { ...old } as unknown as Record<string, Json>;
  const applied: string[] = [];
  const restartNeeded: { key: string; reason: string }[] = [];
  for (const key of changedKeys(old, next)) {
    if (isReloadable(key)) {
      const path = key.split('.');
      setPath(config, path, structuredClone(getPath(next, path)));
      applied.push(key);
    } else {
      restartNeeded.push({ key, reason: restartReason(key) });
    }
  }
  return { config: config as unknown as LoadedConfig, applied, restartNeeded };
}
