/**
 * `npm run bench:cluster` (issue 16): end-to-end throughput and p99 ingest latency of 1, 2 and 3 relay
 * nodes on one PostgreSQL queue against one node on the file spool, on this machine; CPU per message per
 * node (from /proc, user+system) and the database's share (every process of the cluster's user). Prints
 * a Markdown section for BENCHMARKS.md. Environment: CLUSTER_BENCH_MESSAGES (default 3000), _CLIENTS (24).
 */
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { RelayProcess, freePort } from '../support/relayProcess.js';
import { startDnsServer } from '../support/dnsServer.js';
import { startPostgres } from '../support/postgres.js';
import { SmtpTestClient } from '../support/submit.js';
import { startClusterReceiver, startNode } from '../cluster/support.js';
import { openPool } from '../../src/spool/postgres/connect.js';
import { migrate } from '../../src/spool/postgres/migrate.js';

const MESSAGES = Number(process.env.CLUSTER_BENCH_MESSAGES ?? 3000);
const CLIENTS = Number(process.env.CLUSTER_BENCH_CLIENTS ?? 24);
const TICK = 100; // USER_HZ on Linux

/** user+system CPU seconds of a process (/proc/<pid>/stat fields 14 and 15) */
function cpuOf(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / TICK;
  } catch {
    return 0;
  }
}

/** CPU seconds of every live process owned by `uid` (the PostgreSQL cluster's processes) */
function cpuOfUser(uid: number): number {
  let s = 0;
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (statSync(`/proc/${p}`).uid === uid) s += cpuOf(Number(p));
    } catch {
      /* gone */
    }
  }
  return s;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;

async function main(): Promise<void> {
  const pg = startPostgres('bench');
  const dbUid = statSync(join(pg.dir, 'data')).uid;
  const pool = openPool({ url: pg.url, password_file: pg.passwordFile, password_env: 'PGPASSWORD', pool: 2 });
  await migrate(pool);
  await pool.end();
  const dns = await startDnsServer();
  dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } });
  dns.add({ name: 'mx.dest.test', type: 'A', data: '127.0.0.1' });
  const rx = await startClusterReceiver();
  const dir = mkdtempSync(join(tmpdir(), 'dane-relay-bench-cluster-'));
  const rows: string[] = [];
  const payload = SmtpTestClient.dataPayload(
    `From: app@sender.test\r\nTo: u@dest.test\r\nSubject: bench\r\nX-Test-Id: b\r\n\r\n${'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl\r\n'.repeat(50)}`,
  );
  let base: { rate: number; cpu: number } | undefined;
  try {
    for (const [backend, n] of [
      ['file', 1],
      ['postgres', 1],
      ['postgres', 2],
      ['postgres', 3],
    ] as const) {
      pg.sql('DELETE FROM relay_messages; DELETE FROM relay_slots');
      const nodes: { relay: RelayProcess; port: number }[] = [];
      for (let i = 0; i < n; i++) {
        const port = await freePort();
        const f = join(dir, `${backend}${n}-${i}.yml`);
        writeFileSync(
          f,
          `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${join(dir, `${backend}${n}-${i}`)}\n` +
            (backend === 'postgres'
              ? `spool:\n  backend: postgres\n  postgres:\n    url: "${pg.url}"\n    password_file: ${pg.passwordFile}\n    node: b${i}\n`
              : '') +
            `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
            `delivery:\n  port: ${rx.port}\n  tls_level: may\n  per_destination: 20\n  concurrency: 50\nqueue:\n  run_interval: 200ms\ntlsrpt:\n  enabled: false\nlog:\n  level: warn\n`,
          { mode: 0o644 },
        );
        const node = { relay: new RelayProcess(f, port), port };
        await startNode(node);
        nodes.push(node);
      }
      const before = rx.deliveries.length;
      const conns = await Promise.all(
        Array.from({ length: CLIENTS }, async (_, i) => {
          const c = await SmtpTestClient.connect({ port: nodes[i % n]!.port, timeout: 60_000 });
          await c.ehlo('bench.client');
          return c;
        }),
      );
      const cpu0 = nodes.map((x) => cpuOf(x.relay.pid!));
      const db0 = cpuOfUser(dbUid);
      const lat: number[] = [];
      let next = 0;
      const t0 = performance.now();
      await Promise.all(
        conns.map(async (c) => {
          while (next < MESSAGES) {
            next++;
            c.write('MAIL FROM:<app@sender.test>\r\nRCPT TO:<u@dest.test>\r\nDATA\r\n');
            const [m, r, d] = await c.replies(3);
            if (m!.code !== 250 || r!.code !== 250 || d!.code !== 354) throw new Error(`refused: ${m!.raw} ${r!.raw} ${d!.raw}`);
            const s = performance.now();
            c.write(payload);
            const end = await c.reply();
            if (end.code !== 250) throw new Error(`end of data: ${end.raw}`);
            lat.push(performance.now() - s);
          }
        }),
      );
      const ingestMs = performance.now() - t0;
      while (rx.deliveries.length - before < MESSAGES) await new Promise((r) => setTimeout(r, 20));
      const totalMs = performance.now() - t0;
      const cpu = nodes.map((x, i) => cpuOf(x.relay.pid!) - cpu0[i]!);
      const db = cpuOfUser(dbUid) - db0;
      await Promise.all(conns.map((c) => c.quit()));
      for (const x of nodes) await x.relay.stop('SIGTERM');
      lat.sort((a, b) => a - b);
      const rate = MESSAGES / (totalMs / 1000);
      const cpuPerMsg = (cpu.reduce((a, b) => a + b, 0) / MESSAGES) * 1000;
      base ??= { rate, cpu: cpuPerMsg };
      rows.push(
        `| ${backend} | ${n} | ${Math.round(rate)} | ${(MESSAGES / (ingestMs / 1000)).toFixed(0)} | ${pct(lat, 0.5).toFixed(1)} | ${pct(lat, 0.99).toFixed(1)} | ${cpu.map((c) => ((c / MESSAGES) * 1000).toFixed(2)).join(' / ')} | ${backend === 'postgres' ? ((db / MESSAGES) * 1000).toFixed(2) : '–'} | ${(rate / base.rate).toFixed(2)}× | ${(cpuPerMsg / base.cpu).toFixed(2)}× |`,
      );
      console.error(rows[rows.length - 1]);
    }
  } finally {
    await rx.close();
    await dns.close();
    pg.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
  const out = [
    `## Several relays, one queue (PostgreSQL, issue 16)`,
    '',
    '```sh',
    `npm run bench:cluster   # CLUSTER_BENCH_MESSAGES=${MESSAGES} CLUSTER_BENCH_CLIENTS=${CLIENTS}`,
    '```',
    '',
    `${MESSAGES} messages of ~4 KB from ${CLIENTS} SMTP clients spread over the nodes, delivered to one receiver on loopback (tls_level may);`,
    `PostgreSQL 15 on a Unix socket, synchronous_commit on, fsync on; ${cpus().length} CPUs, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} at the end (other work on the machine).`,
    'End to end = first submission until the receiver has every message. CPU = user+system of each relay process (/proc), and of every process of the database cluster, per message.',
    '',
    '| spool | nodes | end to end msg/s | ingest msg/s | ingest p50 ms | ingest p99 ms | relay CPU ms/msg per node | database CPU ms/msg | vs file: throughput | vs file: relay CPU/msg (all nodes) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |',
    ...rows,
  ];
  console.log(out.join('\n'));
}

await main();
