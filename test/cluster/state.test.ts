/**
 * Shared state beyond the queue (issue 16, spool.backend postgres), on a real PostgreSQL: the danefail
 * exception probe coordinated across nodes (one probe per destination and interval, its result on the
 * row), and the DANE rollover facts (one warning per MX and risk for the cluster; the record ids that
 * authenticated an MX on any node known to every node). Several instances, each on its own pool, stand
 * for several nodes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Pool } from 'pg';
import { openPool } from '../../src/spool/postgres/connect.js';
import { migrate } from '../../src/spool/postgres/migrate.js';
import { ExceptionProber } from '../../src/check/probe.js';
import { PgProbeLedger } from '../../src/check/pgProbeLedger.js';
import { PolicyStore } from '../../src/policy/store.js';
import { MxFactsStore } from '../../src/policy/mxFacts.js';
import { PgRolloverLedger } from '../../src/policy/pgRollover.js';
import { rolloverWatch } from '../../src/delivery/rollover.js';
import type { DeliveryEvent } from '../../src/delivery/events.js';
import type { DaneFacts } from '../../src/dane/types.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { pgSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';

let pg: TestPostgres;
let dns: TestDns;
let resolver: StubResolver;
const pools: Pool[] = [];
const dirs: string[] = [];

if (pgSkipReason) console.warn(`test/cluster/state.test.ts: skipped: ${pgSkipReason}`);

const settings = () => ({ url: pg.url, password_file: pg.passwordFile, password_env: 'PGPASSWORD', pool: 2 });
function pool(): Pool {
  const p = openPool(settings());
  pools.push(p);
  return p;
}

/** a pino-shaped logger that keeps the messages */
function logger(lines: string[]): Logger {
  const keep = (_o: object, msg: string) => {
    lines.push(msg);
  };
  return { info: keep, warn: keep, error: keep, debug: keep } as unknown as Logger;
}

const NOW = Date.parse('2026-12-07T00:00:00Z');
const DAY = 86_400_000;
/** DANE-EE facts: each record [id, matchDepth (null: matched nothing)], the leaf expiring in `days` */
function facts(days: number, records: [string, number | null][]): DaneFacts {
  return {
    records: records.map(([id, matchDepth], index) => ({ index, id, usage: 3, selector: 1, matchingType: 1, usable: true, matchDepth })),
    chain: [
      {
        depth: 0,
        subject: 'CN=mx',
        issuer: 'CN=ca',
        notBefore: new Date(NOW - 60 * DAY).toISOString(),
        notAfter: new Date(NOW + days * DAY).toISOString(),
        spkiSha256: 'AB',
        ca: false,
      },
    ],
  } as DaneFacts;
}
/** a DANE session that verified, as DestinationRun publishes it (only the fields the watcher reads) */
const opened = (host: string, f: DaneFacts): DeliveryEvent =>
  ({
    kind: 'session-opened',
    domain: 'roll.test',
    report: false,
    target: { host, address: '127.0.0.1', port: 25 },
    plan: { kind: 'dane' },
    tls: { verify: { ok: true, facts: f, matchedIndex: f.records.findIndex((r) => r.matchDepth !== null), matchedUsage: 3 } },
    starttlsOffered: true,
  }) as unknown as DeliveryEvent;

/** waits for a condition that asynchronous work makes true (no wall-clock bound of its own: vitest's test timeout) */
async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 20));
}

describe.skipIf(pgSkipReason !== undefined)('cluster state on PostgreSQL: probe results and rollover facts', () => {
  beforeAll(async () => {
    pg = startPostgres('state');
    const p = openPool(settings());
    await migrate(p);
    await p.end();
    dns = await startDnsServer();
    resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1, cache: false });
  }, 120_000);
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)));
    await resolver?.close();
    await dns?.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    pg?.destroy();
  });

  it('DANE-70 the danefail probe across nodes: each listed destination is probed once per interval by one node, its result recorded for all', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dane-relay-probe-'));
    dirs.push(dir);
    const list = join(dir, 'danefail');
    writeFileSync(list, 'broken1.test\nbroken2.test\nbroken3.test\n');
    const store = new PolicyStore({ defaultLevel: 'dane', exceptionLevel: 'may', danefail: { path: list, label: 'danefail' } });
    const INTERVAL = 3_600_000;
    const lines: string[][] = [[], [], []];
    const nodes = lines.map(
      (l, i) =>
        new ExceptionProber({
          store,
          ledger: new PgProbeLedger(pool(), `p${i}`),
          intervalMs: INTERVAL,
          log: logger(l),
          inspect: {
            resolver,
            selfNames: ['relay.test'],
            heloName: 'relay.test',
            port: 25,
            timeouts: { connect: 2000, greeting: 2000, ehlo: 2000, starttls: 2000, mail: 2000, rcpt: 2000, data: 2000, data_block: 2000, data_done: 2000 },
            digestPreference: ['sha512', 'sha256'],
            now: Date.now,
          },
        }),
    );
    const probes = () => lines.flat().filter((m) => /^DANE (still failing|works again) for /.test(m)).length;
    // three nodes run their round at once: 3 destinations, 3 probes in all (not 9)
    await Promise.all(nodes.map((n) => n.probeAll()));
    expect(probes()).toBe(3);
    const rows = pg.sql('SELECT domain, node, probed_at IS NOT NULL, ok, why FROM relay_probe_results ORDER BY domain').trim().split('\n');
    expect(rows.map((r) => r.split('\t').slice(0, 1)[0])).toEqual(['broken1.test', 'broken2.test', 'broken3.test']);
    for (const r of rows) {
      const [, node, probed, ok, why] = r.split('\t');
      expect(node).toMatch(/^p[012]$/);
      expect(probed).toBe('t');
      expect(ok).toBe('f'); // no MX at all: DANE does not work
      expect(why).toMatch(/^verdict /);
    }
    // within the interval nobody probes again
    await Promise.all(nodes.map((n) => n.probeAll()));
    expect(probes()).toBe(3);
    // the interval has passed (on the database's clock): the next round, on any node, probes again, once each
    pg.sql("UPDATE relay_probe_results SET claimed_at = claimed_at - interval '2 hours'");
    await Promise.all([nodes[2]!.probeAll(), nodes[0]!.probeAll()]);
    expect(probes()).toBe(6);
    store.close();
  });

  it('DANE-52 rollover facts across nodes: a record id one node saw authenticate the MX is known to the others, and a warning goes out once for the cluster', async () => {
    const emitted: { node: string; e: DeliveryEvent }[] = [];
    const node = (name: string) => {
      const mxFacts = new MxFactsStore(14 * DAY);
      const real = new PgRolloverLedger(pool(), name, () => NOW);
      const counts = { claimsAnswered: 0 };
      // the real ledger, counting answered claims so the test can wait for them
      const ledger = {
        claimWarning: (k: string, ms: number) =>
          real.claimWarning(k, ms).finally(() => {
            counts.claimsAnswered++;
          }),
        share: real.share.bind(real),
      };
      const watch = rolloverWatch({ now: () => NOW, mxFacts, shared: { ledger } });
      return {
        counts,
        mxFacts,
        see: (f: DaneFacts) =>
          watch(opened('mx.roll.test', f), (x) => {
            emitted.push({ node: name, e: x });
          }),
      };
    };
    const a = node('r-a');
    const b = node('r-b');
    // node A: record A authenticates, record B is pre-published; far from expiry: nothing to say
    a.see(
      facts(200, [
        ['A', 0],
        ['B', null],
      ]),
    );
    await until(async () => pg.sql("SELECT matched_ids FROM relay_mx_facts WHERE host = 'mx.roll.test'").trim() === '{A}');
    // node B first sees the server after it moved to key B (A left behind), B's certificate expiring in 5 days
    const moved = facts(5, [
      ['A', null],
      ['B', 0],
    ]);
    b.see(moved);
    // the shared ids come back to B: A authenticated this MX on another node
    await until(() => (b.mxFacts.get('roll.test', 'mx.roll.test')?.matchedIds ?? []).includes('A'));
    expect(pg.sql("SELECT matched_ids FROM relay_mx_facts WHERE host = 'mx.roll.test'").trim()).toBe('{A,B}');
    // from its next session on, B knows A is the retired key's record: the single live key expires, a warning
    b.see(moved);
    await until(() => emitted.length === 1);
    expect(emitted[0]).toMatchObject({ node: 'r-b', e: { kind: 'rollover-risk', host: 'mx.roll.test', finding: { kind: 'ee-key-expiring' } } });
    // node A sees the same risk: due by its own count, but the cluster already said it today
    a.see(moved);
    a.see(moved); // the second is within A's own repeat period: not even asked
    await until(() => a.counts.claimsAnswered === 1);
    expect(emitted).toHaveLength(1);
    expect(pg.sql('SELECT count(*), min(node) FROM relay_rollover_warnings').trim()).toBe('1\tr-b');
    // a day later (database clock) it may be said again, by whichever node sees it first
    pg.sql("UPDATE relay_rollover_warnings SET warned_at = warned_at - interval '25 hours'");
    const l1 = new PgRolloverLedger(pool(), 'r-c');
    const l2 = new PgRolloverLedger(pool(), 'r-d');
    const key = pg.sql('SELECT key FROM relay_rollover_warnings').trim();
    const claims = await Promise.all([l1.claimWarning(key, DAY), l2.claimWarning(key, DAY), l1.claimWarning(key, DAY)]);
    expect(claims.filter(Boolean)).toHaveLength(1);
  });
});
