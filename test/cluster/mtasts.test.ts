/**
 * The MTA-STS policy cache shared by a cluster's nodes (issue 16, `spool.backend: postgres`): real
 * PostgreSQL, real HTTPS policy hosts on loopback with a test CA, the relay's StubResolver against the
 * loopback test DNS server. Several StsPolicies instances, each on its own pool, stand for several nodes;
 * `dane-relay mta-sts show|purge` (the CLI's main(), in this process) works on the same rows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pool } from 'pg';
import { fetchPolicy } from '../../src/mtasts/fetch.js';
import { StsPolicies } from '../../src/mtasts/policies.js';
import { PgStsPolicyStore } from '../../src/mtasts/pgStore.js';
import { openPool } from '../../src/spool/postgres/connect.js';
import { migrate } from '../../src/spool/postgres/migrate.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { chainPem, makeCa, makeLeaf, type Issued } from '../support/pki.js';
import { startPolicyHost, type PolicyHost } from '../support/stsHost.js';
import { pgSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { runCliIn } from '../support/relayProcess.js';
import { main } from '../../src/cli.js';

const policy = (mode: string, maxAge = 604800, mx = ['mail.example.test']) =>
  `version: STSv1\nmode: ${mode}\n${mx.map((m) => `mx: ${m}\n`).join('')}max_age: ${maxAge}\n`;

let pg: TestPostgres;
let ca: Issued;
let dns: TestDns;
let resolver: StubResolver;
const hosts: PolicyHost[] = [];
const pools: Pool[] = [];
let n = 0;
const clock = Date.UTC(2026, 11, 7, 4, 0, 0, 123);
const logs: { level: string; msg: string }[] = [];
const log = {
  info: (_o: object, msg: string) => {
    logs.push({ level: 'info', msg });
  },
  warn: (_o: object, msg: string) => {
    logs.push({ level: 'warn', msg });
  },
};

if (pgSkipReason) console.warn(`test/cluster/mtasts.test.ts: skipped: ${pgSkipReason}`);

const settings = () => ({ url: pg.url, password_file: pg.passwordFile, password_env: 'PGPASSWORD', pool: 2 });
function pool(): Pool {
  const p = openPool(settings());
  pools.push(p);
  return p;
}

async function site(id: string, body: string) {
  const domain = `shared${++n}.test`;
  const leaf = await makeLeaf(ca, { dnsNames: [`mta-sts.${domain}`] });
  const host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) }, { body });
  hosts.push(host);
  dns.add({ name: `mta-sts.${domain}`, type: 'A', data: '127.0.0.1' });
  dns.add({ name: `_mta-sts.${domain}`, type: 'TXT', data: `v=STSv1; id=${id}` });
  return {
    domain,
    host,
    setId: (v: string) => {
      dns.remove(`_mta-sts.${domain}`, 'TXT');
      dns.add({ name: `_mta-sts.${domain}`, type: 'TXT', data: `v=STSv1; id=${v}` });
    },
  };
}

/** One node's policy state on the shared cache (its own pool). */
function nodePolicies(port: number): StsPolicies {
  return new StsPolicies({
    store: new PgStsPolicyStore(pool()),
    resolver,
    log,
    now: () => clock,
    random: () => 0.5,
    fetch: (d) => fetchPolicy(d, { resolver, ca: ca.certPem, port, timeoutMs: 20_000 }),
  });
}

describe.skipIf(pgSkipReason !== undefined)('MTA-STS policy cache shared on PostgreSQL', () => {
  beforeAll(async () => {
    pg = startPostgres('sts');
    const p = openPool(settings());
    await migrate(p);
    await p.end();
    ca = await makeCa({ cn: 'MTA-STS shared cache test CA' });
    dns = await startDnsServer();
    resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1, cache: false });
  }, 120_000);
  afterAll(async () => {
    await Promise.all(hosts.map((h) => h.close()));
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
    await resolver?.close();
    await dns?.close();
    pg?.destroy();
  });

  it('STS-30 STS-31 a policy one node fetched governs every node without a second fetch, a restarted node loads it, and a new id fetched by any node is seen by all', async () => {
    const s = await site('one', policy('enforce'));
    const a = nodePolicies(s.host.port);
    const b = nodePolicies(s.host.port);
    const first = await a.lookup(s.domain);
    expect(first).toMatchObject({ fetch: 'fetched', applied: { id: 'one', policy: { mode: 'enforce', mx: ['mail.example.test'] } } });
    expect(s.host.requests).toHaveLength(1);
    // node B: the same entry, exact to the millisecond, from the database; no fetch of its own
    const other = await b.lookup(s.domain);
    expect(other.fetch).toBe('cached');
    expect(other.applied).toEqual(first.applied);
    expect(s.host.requests).toHaveLength(1);
    // a node (re)started now: loads it at start, applies it without fetching
    s.host.set({ status: 500 });
    const c = nodePolicies(s.host.port);
    expect(await c.load()).toBeGreaterThanOrEqual(1);
    expect(await c.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'one', policy: { mode: 'enforce' } } });
    expect(s.host.requests).toHaveLength(1);
    // the owner publishes a new policy: the first node to see the new id fetches it; the others take it from the database
    s.setId('two');
    s.host.set({ body: policy('testing', 86400, ['mx2.example.test']) });
    expect(await b.lookup(s.domain)).toMatchObject({ fetch: 'fetched', applied: { id: 'two', policy: { mode: 'testing' } } });
    expect(await a.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'two', policy: { mode: 'testing', mx: ['mx2.example.test'] } } });
    expect(await c.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'two' } });
    expect(s.host.requests).toHaveLength(2);
    expect(pg.sql(`SELECT id, policy->>'mode', expires_at - fetched_at FROM relay_sts_policies WHERE domain = '${s.domain}'`).trim()).toBe(
      'two\ttesting\t1 day',
    );
  });

  it('STS-30 STS-33 a purge (the CLI, another process) is seen by every node at its next lookup; while the database is down a node keeps enforcing the policy it holds', async () => {
    const s = await site('p1', policy('enforce'));
    const a = nodePolicies(s.host.port);
    expect((await a.lookup(s.domain)).applied?.policy.mode).toBe('enforce');
    const dir = mkdtempSync(join(tmpdir(), 'dane-relay-sts-cli-'));
    try {
      const cfg = join(dir, 'cli.yml');
      writeFileSync(
        cfg,
        `queue_dir: ${join(dir, 'q')}\nspool:\n  backend: postgres\n  postgres:\n    url: "${pg.url}"\n    password_file: ${pg.passwordFile}\n`,
      );
      const show = await runCliIn(main, ['mta-sts', 'show', s.domain, '--config', cfg]);
      expect(show.code, show.stderr).toBe(0);
      expect(show.stdout).toMatch(new RegExp(`^${s.domain.replace('.', '\\.')}: MTA-STS policy id p1\\n  mode enforce`));
      const purge = await runCliIn(main, ['mta-sts', 'purge', s.domain, '--config', cfg]);
      expect(purge.code, purge.stderr).toBe(0);
      expect(pg.sql(`SELECT count(*) FROM relay_sts_policies WHERE domain = '${s.domain}'`).trim()).toBe('0');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // the node sees the row gone: the same TXT id now fetches again (a purge forgets)
    expect(await a.lookup(s.domain)).toMatchObject({ fetch: 'fetched', applied: { id: 'p1' } });
    expect(s.host.requests).toHaveLength(2);
    logs.length = 0;
    await pg.stopAsync('fast');
    try {
      // the row cannot be read: the policy in memory stays in force (never a downgrade because the cache is away)
      expect(await a.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'p1', policy: { mode: 'enforce' } } });
      expect(logs.some((l) => l.level === 'warn' && /cannot read the cached policy/.test(l.msg))).toBe(true);
    } finally {
      await pg.startAsync();
    }
    expect(s.host.requests).toHaveLength(2);
  }, 120_000); // a PostgreSQL stop and start (not a speed expectation)
});
