/**
 * TLSRPT shared by the nodes of a cluster (issue 16) on a real PostgreSQL: every node adds its deltas to
 * the same rows, the report built from them is the one the file store would give, and exactly one node
 * sends each day's report per domain, also when the node that claimed the send dies before sending.
 * Each TlsrptService (its own pool, its own node name, its own plan directory) stands for one relay node.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type pg from 'pg';
import { openPool } from '../../src/spool/postgres/connect.js';
import { migrate } from '../../src/spool/postgres/migrate.js';
import { PgPendingStore, PgSendClaims, PgTlsrptStore } from '../../src/reporting/tlsrpt/pgStore.js';
import { HttpsSender } from '../../src/reporting/tlsrpt/https.js';
import { startHttpsEndpoint } from '../support/tlsrpt.js';
import { TlsrptService, SETTLE_MS, type TlsrptSettings } from '../../src/reporting/tlsrpt/daily.js';
import type { TlsSessionResult } from '../../src/reporting/tlsrpt/results.js';
import { dkimKeygen } from '../../src/reporting/tlsrpt/mail.js';
import { policyKey } from '../../src/reporting/tlsrpt/report.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { pgSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { runCliIn } from '../support/relayProcess.js';
import { main } from '../../src/cli.js';

let pgc: TestPostgres;
let dns: TestDns;
let resolver: StubResolver;
const pools: pg.Pool[] = [];
const services: TlsrptService[] = [];
const dirs: string[] = [];
const DOMAINS = ['a.test', 'b.test', 'c.test'];
const DAY = '2025-03-01';
const END = Date.parse('2025-03-02T00:00:00Z');
const dkim = { domain: 'relay.test', selector: 'tlsrpt', privateKey: dkimKeygen({}).privateKeyPem };
const log = { info() {}, debug() {}, warn() {} };
const P = policyKey({ type: 'no-policy-found', strings: [], domain: 'x' });

function pool(): pg.Pool {
  const p = openPool({ url: pgc.url, password_file: pgc.passwordFile, password_env: 'PGPASSWORD', pool: 4 });
  pools.push(p);
  return p;
}

/** One node's TLSRPT: shared (database) or, for comparison, file-backed. */
async function node(name: string, clock: { t: number }, opts: { sendLeaseMs?: number; file?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), `tlsrpt-cluster-${name}-`));
  dirs.push(dir);
  const settings: TlsrptSettings = {
    dir,
    organizationName: 'T',
    contactInfo: 'tlsrpt@relay.test',
    submitter: 'relay.test',
    retentionDays: 30,
    maxDelayMs: 0,
    allowPrivateTargets: false,
    dkim,
  };
  const p = opts.file ? undefined : pool();
  const sends = p ? new PgSendClaims(p, name, opts.sendLeaseMs ?? 60_000) : undefined;
  const svc = await TlsrptService.open({
    settings,
    resolver,
    log,
    now: () => clock.t,
    rand: () => 0,
    ...(p && sends ? { shared: { store: new PgTlsrptStore(p), sends } } : {}),
  });
  services.push(svc);
  const queued: string[] = [];
  // the job starts (with a first pass) only when the test says so: what it finds is then what the test set up
  const start = () =>
    svc.start(async (env) => {
      queued.push(env.recipients[0]!);
      return `${name}-${queued.length}`;
    });
  return { svc, sends, pool: p, queued, start };
}

/** Session outcomes of every kind the recorder keys differently: success, two failure details, a TLSA policy. */
function session(i: number): TlsSessionResult {
  const domain = DOMAINS[i % DOMAINS.length]!;
  if (i % 4 === 0) return { domain, host: `mx.${domain}`, address: '192.0.2.1', ok: true };
  if (i % 4 === 1)
    return {
      domain,
      host: `mx.${domain}`,
      address: '192.0.2.1',
      ok: false,
      resultType: 'starttls-not-supported',
      sendingIp: '127.0.0.1',
      reasonCode: 'no STARTTLS',
    };
  if (i % 4 === 2) return { domain, host: `mx.${domain}`, address: '2001:db8::1', ok: false, resultType: 'validation-failure', reasonCode: 'x' };
  return { domain, host: `mx.${domain}`, ok: true, policy: { type: 'tlsa', baseDomain: `mx.${domain}`, records: ['3 1 1 abcd'] } };
}

if (pgSkipReason) console.warn(`test/cluster/tlsrpt.test.ts: skipped: ${pgSkipReason}`);

describe.skipIf(pgSkipReason !== undefined)('TLSRPT shared by the cluster (PostgreSQL)', () => {
  beforeAll(async () => {
    pgc = startPostgres('tlsrpt');
    const p = openPool({ url: pgc.url, password_file: pgc.passwordFile, password_env: 'PGPASSWORD', pool: 2 });
    await migrate(p);
    await p.end();
    dns = await startDnsServer();
    resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1 });
    for (const d of DOMAINS) dns.add({ name: `_smtp._tls.${d}`, type: 'TXT', data: `v=TLSRPTv1; rua=mailto:reports@${d}` });
  }, 120_000);
  afterEach(async () => {
    for (const s of services.splice(0)) await s.stop().catch(() => undefined);
    for (const p of pools.splice(0)) await p.end().catch(() => undefined);
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  afterAll(async () => {
    await resolver?.close();
    await dns?.close();
    pgc?.destroy();
  });
  beforeEach(() => {
    pgc.sql('DELETE FROM relay_tlsrpt_counts; DELETE FROM relay_tlsrpt_details; DELETE FROM relay_tlsrpt_sends');
  });

  it("TLSRPT-10 3 nodes add their counts concurrently: the sums equal the sessions, and the report is the file store's", async () => {
    const clock = { t: Date.parse(`${DAY}T12:00:00Z`) };
    const nodes = await Promise.all(['n0', 'n1', 'n2'].map((n) => node(n, clock)));
    const file = await node('file', clock, { file: true });
    const N = 300;
    // every node records its share, flushing in between, all at once: the upserts race on the same rows
    await Promise.all(
      nodes.map(async (n, k) => {
        for (let i = k; i < N; i += nodes.length) {
          n.svc.recorder.record(session(i));
          if (i % 10 === 0) await n.svc.store.flush();
        }
        await n.svc.store.flush();
      }),
    );
    for (let i = 0; i < N; i++) file.svc.recorder.record(session(i));
    await file.svc.store.flush();
    const rows = pgc.sql('SELECT sum(success) + sum(failure) FROM relay_tlsrpt_counts').trim();
    expect(Number(rows)).toBe(N);
    const failures = Number(pgc.sql('SELECT sum(count) FROM relay_tlsrpt_details').trim());
    expect(failures).toBe(N / 2);
    // any node reads the whole cluster's counts; the report JSON is the one the file store gives
    for (const n of nodes) {
      const shared = await n.svc.build(DAY);
      const local = await file.svc.build(DAY);
      const norm = (rs: typeof shared) =>
        rs.map((r) => ({
          domain: r.domain,
          filename: r.filename,
          policies: r.json.policies
            .map((p) => ({ ...p, 'failure-details': [...(p['failure-details'] ?? [])].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1)) }))
            .sort((a, b) => (JSON.stringify(a.policy) < JSON.stringify(b.policy) ? -1 : 1)),
        }));
      expect(norm(shared)).toEqual(norm(local));
      expect(shared.map((r) => r.domain)).toEqual(DOMAINS);
    }
  });

  it('TLSRPT-34 two nodes running the daily job for the same day: exactly one report per domain', async () => {
    const clock = { t: END + SETTLE_MS + 60_000 };
    const [a, b] = await Promise.all([node('n0', clock), node('n1', clock)]);
    for (const d of DOMAINS) {
      a.svc.store.add(DAY, d, P, true);
      b.svc.store.add(DAY, d, P, true);
    }
    await Promise.all([a.svc.store.flush(), b.svc.store.flush()]);
    a.start();
    b.start();
    for (let round = 0; round < 3; round++) await Promise.all([a.svc.tick(), b.svc.tick()]);
    expect([...a.queued, ...b.queued].sort()).toEqual(DOMAINS.map((d) => `reports@${d}`));
    for (const d of DOMAINS) {
      expect(await a.svc.wasSent(DAY, d)).toBe(true);
      expect(await b.svc.wasSent(DAY, d)).toBe(true);
    }
    expect(pgc.sql(`SELECT count(*) FROM relay_tlsrpt_sends WHERE day = '${DAY}' AND sent_at IS NOT NULL AND outcome->>'result' = 'sent'`).trim()).toBe('3');
  });

  it('TLSRPT-34 a node that dies after claiming a send and before sending: another node sends once its lease has expired', async () => {
    const clock = { t: END + SETTLE_MS + 60_000 };
    // n0 claims a.test's report with a short lease, then dies (its pool ends, nothing is sent or released)
    const dead = await node('n0', clock, { sendLeaseMs: 500 });
    const b = await node('n1', clock);
    b.svc.store.add(DAY, 'a.test', P, true);
    await b.svc.store.flush();
    expect(await dead.sends!.claim(DAY, 'a.test')).toBeDefined();
    await dead.svc.stop();
    await dead.pool!.end();
    pools.splice(pools.indexOf(dead.pool!), 1);
    b.start();
    // while the dead node's lease lasts, the report is neither sent nor sendable by another node
    await b.svc.tick();
    expect(b.queued).toEqual([]);
    expect(await b.svc.wasSent(DAY, 'a.test')).toBe(false);
    expect(await b.sends!.claim(DAY, 'a.test')).toBeUndefined();
    // the lease ends on the database's clock: wait for that, not for a guessed time
    while (pgc.sql(`SELECT expires_at < now() FROM relay_tlsrpt_sends WHERE day = '${DAY}' AND domain = 'a.test'`).trim() !== 't')
      await new Promise((r) => setTimeout(r, 50));
    await b.svc.tick();
    expect(b.queued).toEqual(['reports@a.test']);
    expect(await b.svc.wasSent(DAY, 'a.test')).toBe(true);
    expect(pgc.sql(`SELECT owner FROM relay_tlsrpt_sends WHERE day = '${DAY}' AND domain = 'a.test'`).trim()).toBe('n1');
    // no one sends again
    await b.svc.tick();
    expect(b.queued).toHaveLength(1);
  });

  it('TLSRPT-34 tlsrpt send from any machine with the config queues the mailed report in the shared queue, free for any node to deliver; the CLI is not a node', async () => {
    const clock = { t: Date.parse(`${DAY}T12:00:00Z`) };
    const n = await node('counter', clock);
    n.svc.recorder.record(session(0)); // a.test
    await n.svc.store.flush();
    pgc.sql("DELETE FROM relay_messages WHERE envelope->>'kind' = 'tlsrpt'");
    const dir = mkdtempSync(join(tmpdir(), 'tlsrpt-cluster-cli-'));
    dirs.push(dir);
    const cfg = join(dir, 'cli.yml');
    const key = join(dir, 'dkim.pem');
    writeFileSync(key, dkim.privateKey, { mode: 0o600 });
    writeFileSync(
      cfg,
      JSON.stringify({
        hostname: 'relay.test',
        queue_dir: join(dir, 'q'),
        dns: { mode: 'trust-ad', resolvers: [dns.server], timeout: '1s', attempts: 1 },
        spool: { backend: 'postgres', postgres: { url: pgc.url, password_file: pgc.passwordFile } },
        tlsrpt: { contact_info: 'tlsrpt@relay.test', organization_name: 'T', dkim: { domain: 'relay.test', selector: 'tlsrpt', key_file: key } },
      }),
    );
    const r = await runCliIn(main, ['tlsrpt', 'send', '--config', cfg, '--day', DAY, '--domain', 'a.test']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^a\.test: sent: /m);
    // one row, the report, leased to nobody (given back at the CLI's close): the next claim of any node takes it
    const rows = pgc.sql("SELECT envelope->'recipients'->>0, lease_token IS NULL FROM relay_messages WHERE envelope->>'kind' = 'tlsrpt'").trim();
    expect(rows).toBe('reports@a.test\tt');
    expect(pgc.sql("SELECT count(*) FROM relay_nodes WHERE name LIKE 'cli:%'").trim()).toBe('0');
    // and the cluster knows it is sent: the daily job of every node skips it
    expect(await n.svc.wasSent(DAY, 'a.test')).toBe(true);
    // nothing in an outbox a single node would have to drain
    expect(existsSync(join(dir, 'q', 'tlsrpt', 'outbox'))).toBe(false);
  });

  it('TLSRPT-48 an https retry is shared: any node retries a due send, one attempt at a time across the nodes, and the retry state is on the row', async () => {
    pgc.sql('DELETE FROM relay_tlsrpt_pending');
    const ep = await startHttpsEndpoint(500);
    try {
      let t = Date.parse('2025-03-02T03:00:00Z');
      const sender = (name: string) =>
        new HttpsSender(mkdtempSync(join(tmpdir(), `tlsrpt-pending-${name}-`)), {
          ca: ep.ca,
          now: () => t,
          allowPrivateTargets: true,
          store: new PgPendingStore(pool(), name, 60_000),
        });
      const a = sender('pa');
      const b = sender('pb');
      const job = { id: `${DAY}-a.test-1`, day: DAY, domain: 'a.test', filename: 'f.json.gz', urls: [ep.url()], body: Buffer.from('gz').toString('base64') };
      expect(await a.send(job)).toBe('pending');
      expect(ep.requests).toHaveLength(1);
      // every node sees it (show), none retries before it is due
      expect((await b.pending()).map((p) => [p.id, p.attempts])).toEqual([[job.id, 1]]);
      expect(await Promise.all([a.retryDue(), b.retryDue()])).toEqual([0, 0]);
      // due: the nodes race for it, one attempt in all (the claim), the new state on the row
      t += 60_000;
      const tries = await Promise.all([a.retryDue(), b.retryDue(), b.retryDue()]);
      expect(tries.reduce((x, y) => x + y, 0)).toBe(1);
      expect(ep.requests).toHaveLength(2);
      expect(pgc.sql(`SELECT send->>'attempts', lease_token IS NULL, next_at = ${t + 120_000} FROM relay_tlsrpt_pending`).trim()).toBe('2\tt\tt');
      // the other node takes the next one (any node can): here only B asks
      t += 120_000;
      expect(await b.retryDue()).toBe(1);
      expect(ep.requests).toHaveLength(3);
      // a claim whose node died mid-attempt (lease never ended) holds it back until the lease expires, then anyone retries
      t += 240_000;
      pgc.sql("UPDATE relay_tlsrpt_pending SET lease_owner = 'dead', lease_token = gen_random_uuid(), lease_expires_at = now() + interval '1 hour'");
      expect(await a.retryDue()).toBe(0);
      pgc.sql("UPDATE relay_tlsrpt_pending SET lease_expires_at = now() - interval '1 second'");
      expect(await a.retryDue()).toBe(1);
      expect(ep.requests).toHaveLength(4);
    } finally {
      await ep.close();
    }
  });
});
