/**
 * Issue 21 item 1: which keys a SIGHUP puts in force and which need a restart (src/config/reload.ts),
 * over every key of the schema: each one changed alone, and random sets of them changed together.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { parseConfigText, type LoadedConfig } from '../../src/config/load.js';
import { changedKeys, isReloadable, planReload, restartReason, RELOADABLE, RESTART_NEEDED } from '../../src/config/reload.js';

/** A configuration with every optional section and key present, so every key of the schema is a leaf here. */
const FULL = `
listen: ["127.0.0.1:2525"]
relay_clients: ["127.0.0.0/8"]
queue_dir: /var/spool/dane-relay
hostname: relay.example.net
user: danerelay
allow_root: false
dns: { mode: validate, resolvers: ["127.0.0.1:53"], trusted_resolvers: ["192.0.2.1:53"], timeout: 2s, attempts: 2, trust_anchors: root.key }
delivery:
  port: 25
  tls_level: dane
  concurrency: 50
  per_destination: 10
  max_messages_per_connection: 100
  discard_ehlo_keywords: [chunking]
  mx_host_limit: 5
  timeouts: { connect: 30, greeting: 300, ehlo: 300, starttls: 120, mail: 300, rcpt: 300, data: 120, data_block: 180, data_done: 600 }
  digest_preference: [sha512, sha256]
  mime_conversion: convert
ingress:
  max_message_size: 1048576
  max_recipients: 100
  max_connections: 200
  rate_per_minute: 0
  max_connections_per_client: 0
  max_auth_per_client: 3
  client_ipv6_prefix: 64
  tls: { cert: cert.pem, key: key.pem }
  users_file: users
  max_hops: 50
  banner: dane-relay ESMTP
  timeout: 300
  postmaster: ops@example.net
  long_lines: encode
queue: { min_backoff: 30m, max_backoff: 4h, run_interval: 10s, lifetime: 5d, delay_warning: 4h }
spool:
  backend: postgres
  postgres: { url: "postgresql://relay@db/relay", password_file: pw, password_env: PGPASSWORD, node: n1, lease: 30s, pool: 10 }
control: { socket: control.sock }
metrics: { listen: "127.0.0.1:9100", allow_remote: false, ready_cache: 5s, selftest_interval: 60s }
tlsrpt:
  enabled: true
  organization_name: Example
  contact_info: tlsrpt@example.net
  submitter: example.net
  dir: tlsrpt
  retention_days: 30
  max_delay: 4h
  allow_private_targets: false
  dkim: { domain: example.net, selector: tlsrpt, key_file: dkim.key }
log: { level: info }
policy: { tls_policy: tls_policy, danefail: danefail, exception_level: may, probe_interval: 6h, rollover_warn: 14d }
`;

function full(): LoadedConfig {
  return { ...parseConfigText(FULL), baseDir: '/etc/dane-relay', file: '/etc/dane-relay/config.yml', resolvedResolvers: ['127.0.0.1:53'] };
}

/** Every leaf key path (a list is one value), e.g. "delivery.timeouts.connect". */
function leaves(o: unknown, prefix = ''): string[] {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return [prefix];
  return Object.entries(o).flatMap(([k, v]) => leaves(v, prefix ? `${prefix}.${k}` : k));
}

function get(o: unknown, key: string): unknown {
  return key.split('.').reduce<unknown>((v, k) => (v as Record<string, unknown>)[k], o);
}

/** A copy of `c` with `key` set to a different value of the same kind. */
function changed(c: LoadedConfig, key: string, salt = 1): LoadedConfig {
  const copy = structuredClone(c) as unknown as Record<string, unknown>;
  const path = key.split('.');
  const parent = path.slice(0, -1).reduce<Record<string, unknown>>((v, k) => v[k] as Record<string, unknown>, copy);
  const last = path[path.length - 1]!;
  const v = parent[last];
  parent[last] = typeof v === 'number' ? v + salt : typeof v === 'boolean' ? !v : Array.isArray(v) ? [...v, `x${salt}`] : `${String(v)}-changed${salt}`;
  return copy as unknown as LoadedConfig;
}

function deepFreeze<T>(o: T): T {
  if (typeof o === 'object' && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

const KEYS = leaves(full());

describe('config reload plan (issue 21 item 1)', () => {
  it('issue21: the full configuration names every key of the schema (nothing optional is left out of this test)', () => {
    // every top-level section of the schema, and the optional keys the defaults leave out
    for (const k of [
      'user',
      'dns.trust_anchors',
      'ingress.tls.cert',
      'ingress.users_file',
      'ingress.postmaster',
      'spool.postgres.url',
      'control.socket',
      'metrics.listen',
      'tlsrpt.dkim.key_file',
      'policy.tls_policy',
      'policy.danefail',
    ]) {
      expect(KEYS).toContain(k);
    }
    expect(KEYS.length).toBeGreaterThan(80);
  });

  it('issue21: every key is decided explicitly: reloadable, or restart needed with a reason', () => {
    for (const key of KEYS) {
      const reload = isReloadable(key);
      const restart = Object.keys(RESTART_NEEDED).some((r) => key === r || key.startsWith(`${r}.`));
      expect(reload !== restart, `${key}: reloadable ${reload}, restart rule ${restart}`).toBe(true);
    }
    // no rule names a key that does not exist
    for (const r of [...RELOADABLE, ...Object.keys(RESTART_NEEDED)])
      expect(
        KEYS.some((k) => k === r || k.startsWith(`${r}.`)),
        r,
      ).toBe(true);
  });

  it.each(KEYS)('issue21: %s changed alone: applied with its new value, or named as needing a restart and kept', (key) => {
    const old = deepFreeze(full());
    const next = deepFreeze(changed(old, key));
    const plan = planReload(old, next);
    expect(changedKeys(old, next)).toEqual([key]);
    if (isReloadable(key)) {
      expect(plan.applied).toEqual([key]);
      expect(plan.restartNeeded).toEqual([]);
      expect(plan.config).toEqual(next);
    } else {
      expect(plan.applied).toEqual([]);
      expect(plan.restartNeeded).toEqual([{ key, reason: restartReason(key) }]);
      expect(plan.restartNeeded[0]!.reason).not.toBe('not reloadable');
      expect(plan.config).toEqual(old);
    }
  });

  it('issue21: the keys the issue names: tls_level and the delivery limits are applied; listen, queue_dir, spool, user, control, metrics, dns need a restart', () => {
    for (const k of [
      'delivery.tls_level',
      'delivery.timeouts.connect',
      'delivery.concurrency',
      'delivery.mx_host_limit',
      'queue.min_backoff',
      'ingress.max_recipients',
      'ingress.max_connections',
    ])
      expect(isReloadable(k), k).toBe(true);
    for (const k of ['listen', 'queue_dir', 'spool.backend', 'user', 'control.socket', 'metrics.listen', 'dns.mode', 'dns.resolvers'])
      expect(isReloadable(k), k).toBe(false);
  });

  it('issue21: a section added or removed is one change, decided by its rule', () => {
    const old = full();
    const { metrics: _m, ...rest } = old;
    const plan = planReload(rest as LoadedConfig, old);
    expect(plan.restartNeeded).toEqual([{ key: 'metrics', reason: RESTART_NEEDED.metrics }]);
    expect(plan.config.metrics).toBeUndefined();
    // an optional reloadable key appears and disappears
    const noPm = structuredClone(old);
    delete (noPm.ingress as { postmaster?: string }).postmaster;
    expect(planReload(old, noPm)).toMatchObject({ applied: ['ingress.postmaster'], restartNeeded: [] });
    expect(planReload(old, noPm).config.ingress.postmaster).toBeUndefined();
    expect(planReload(noPm, old).config.ingress.postmaster).toBe('ops@example.net');
  });

  it('issue21: any set of changed keys: applied and restart-needed partition the changes; the result has exactly the new reloadable values and the old rest; inputs untouched', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.constantFrom(...KEYS), { maxLength: 20 }), fc.integer({ min: 1, max: 9 }), (keys, salt) => {
        const old = deepFreeze(full());
        let next = full();
        for (const k of keys) next = changed(next, k, salt);
        deepFreeze(next);
        const plan = planReload(old, next);
        expect([...plan.applied, ...plan.restartNeeded.map((r) => r.key)].sort()).toEqual([...keys].sort());
        for (const k of KEYS) expect(get(plan.config, k)).toEqual(get(isReloadable(k) ? next : old, k));
        // the result is a config the plan leaves alone: planning it against itself changes nothing
        expect(planReload(plan.config, plan.config)).toEqual({ config: plan.config, applied: [], restartNeeded: [] });
      }),
      { numRuns: 200 },
    );
  });
});
