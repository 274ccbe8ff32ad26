/**
 * `npm run bench:postfix`: dane-relay against Postfix 3.7 in the interop world (nsd + unbound under
 * a private root, a Postfix receiver with a valid DANE-EE record), the same load through both relays
 * one after the other: smtp-source submitting N messages (BENCH_N, default 10,000) of 2 KB and of
 * 50 KB over 20 sessions. Measures end-to-end messages/s (submission start → last message in the
 * receiver's Maildir), ingest-only messages/s (smtp-source's run), CPU seconds and peak RSS of each
 * relay (from /proc: the node process; Postfix's master and all its children, live and reaped),
 * and checks that nothing was lost. Writes its own section of BENCHMARKS.md.
 *
 * Needs root (port 25/53 on 127.x, mount namespaces) and the README's Debian packages.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { writeOwnSections } from './sections.js';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDnsWorld, type DnsWorld } from '../interop/support/dnsworld.js';
import { startPostfixReceivers, startPostfixRelay, type PostfixReceivers } from '../interop/support/postfix.js';
import { startRelay } from '../interop/support/relay.js';
import { makeSelfSigned, tlsaData } from '../support/pki.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..', '..');
const N = Number(process.env.BENCH_N ?? 10_000);
const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 20);
const SIZES = (process.env.BENCH_SIZES ?? '2048,51200').split(',').map(Number);
const CLK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100);
const PAGE = Number(spawnSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).stdout.trim() || 4096);
/** dane-relay as shipped, and with as many connections per destination as Postfix's default (20) */
const OURS: { label: string; perDestination?: number }[] = [
  { label: 'dane-relay' },
  ...(process.env.BENCH_MATCHED === '0' ? [] : [{ label: 'dane-relay, per_destination 20', perDestination: 20 }]),
];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ProcStat {
  pid: number;
  ppid: number;
  cpu: number;
  childCpu: number;
  rss: number;
}

function stat(pid: number): ProcStat | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    // fields after "(comm)": state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14 ... rss=21
    return { pid, ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / CLK, childCpu: (Number(f[13]) + Number(f[14])) / CLK, rss: Number(f[21]) * PAGE };
  } catch {
    return undefined;
  }
}

/** Proportional set size: shared pages (libc, Postfix's shared libraries) split among the processes
 * sharing them, so a sum over Postfix's ~10 processes does not count them ten times. */
function pss(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** A process and its descendants: CPU (own + reaped children) and summed PSS. */
function tree(root: number, memory = false): { cpu: number; rss: number } {
  const all = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map((d) => stat(Number(d)))
    .filter((s): s is ProcStat => !!s);
  const kids = new Map<number, ProcStat[]>();
  for (const s of all) kids.set(s.ppid, [...(kids.get(s.ppid) ?? []), s]);
  let cpu = 0;
  let rss = 0;
  const walk = (s: ProcStat) => {
    cpu += s.cpu + s.childCpu;
    if (memory) rss += pss(s.pid);
    for (const k of kids.get(s.pid) ?? []) walk(k);
  };
  const r = all.find((s) => s.pid === root);
  if (r) walk(r);
  return { cpu, rss };
}

interface Result {
  relay: string;
  size: number;
  n: number;
  delivered: number;
  e2eRate: number;
  ingestRate: number;
  ingestSecs: number;
  e2eSecs: number;
  cpu: number;
  peakRss: number;
  lost: number;
}

function count(dir: string): number {
  return existsSync(dir) ? readdirSync(dir).length : 0;
}

async function runOne(relay: string, pid: number, server: string, rx: PostfixReceivers, size: number, rcpt: string): Promise<Result> {
  rmSync(rx.newDir, { recursive: true, force: true }); // virtual re-creates it
  const base = 0;
  const cpu0 = tree(pid).cpu;
  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, tree(pid, true).rss);
      await sleep(100);
    }
  })();
  const t0 = performance.now();
  const ingest = await new Promise<number>((resolve, reject) => {
    execFile(
      '/usr/sbin/smtp-source',
      ['-d', '-s', String(SESSIONS), '-m', String(N), '-l', String(size), '-M', 'bench.client.invalid', '-f', 'bench@sender.tst', '-t', rcpt, server],
      { maxBuffer: 64 * 1024 * 1024 },
      (err, _out, errOut) => {
        if (err) reject(new Error(`smtp-source: ${err.message} ${errOut}`));
        else resolve(performance.now());
      },
    );
  });
  const deadline = Date.now() + Math.max(300_000, N * 60);
  let last = count(rx.newDir);
  let lastChange = Date.now();
  while (count(rx.newDir) - base < N && Date.now() < deadline) {
    await sleep(50);
    const c = count(rx.newDir);
    if (c !== last) {
      last = c;
      lastChange = Date.now();
    }
    if (Date.now() - lastChange > 120_000) break; // stalled: report what arrived
  }
  const t1 = performance.now();
  sampling = false;
  await sampler;
  const delivered = count(rx.newDir) - base;
  const cpu = tree(pid).cpu - cpu0;
  const r: Result = {
    relay,
    size,
    n: N,
    delivered,
    e2eSecs: (t1 - t0) / 1000,
    ingestSecs: (ingest - t0) / 1000,
    e2eRate: delivered / ((t1 - t0) / 1000),
    ingestRate: N / ((ingest - t0) / 1000),
    cpu,
    peakRss: peak,
    lost: N - delivered,
  };
  console.log(JSON.stringify(r));
  return r;
}

async function main(): Promise<void> {
  const ee = await makeSelfSigned({ dnsNames: ['mx1.bench.tst'] });
  const hex = tlsaData(ee, 1, 1).toString('hex');
  let dns: DnsWorld | undefined;
  let rx: PostfixReceivers | undefined;
  const results: Result[] = [];
  try {
    dns = await startDnsWorld({
      zones: [
        { name: 'bench.tst', records: ['@ MX 10 mx1', 'mx1 A 127.0.200.1', `_25._tcp.mx1 TLSA 3 1 1 ${hex}`] },
        { name: 'sender.tst', records: ['@ MX 10 mx1', 'mx1 A 127.0.200.1', `_25._tcp.mx1 TLSA 3 1 1 ${hex}`] },
      ],
    });
    // the receiver's queue and Maildir on tmpfs: its fsyncs are not what is being measured
    rx = await startPostfixReceivers({
      baseDir: existsSync('/dev/shm') ? '/dev/shm' : undefined,
      resolver: dns.unbound,
      listeners: [{ name: 'mx1.bench.tst', address: '127.0.200.1', tls: { keyPem: ee.keyPem, chainPem: ee.certPem } }],
    });
    for (const size of SIZES) {
      // Postfix first, then ours: each relay starts fresh (empty queue) for each size.
      const pf = await startPostfixRelay({
        address: '127.0.0.2',
        resolver: dns.unbound,
        // production-like: normal retry timers, TLS session cache as Debian ships it
        extra: {
          queue_run_delay: '300s',
          minimal_backoff_time: '300s',
          maximal_backoff_time: '4000s',
          smtp_tls_session_cache_database: 'btree:${data_directory}/smtp_scache',
        },
      });
      try {
        results.push(await runOne('postfix', pf.pid, `${pf.address}:${pf.port}`, rx, size, 'pf@bench.tst'));
      } finally {
        await pf.stop();
      }
      for (const v of OURS) {
        const ours = await startRelay({ resolver: dns.unbound, listen: '127.0.0.3:2525', queueYaml: '', perDestination: v.perDestination });
        try {
          results.push(await runOne(v.label, ours.child.pid!, `${ours.host}:${ours.port}`, rx, size, 'ours@bench.tst'));
        } finally {
          await ours.stop();
        }
      }
    }
  } finally {
    await rx?.stop();
    await dns?.stop();
  }
  writeSection(results);
}

function writeSection(results: Result[]): void {
  const f1 = (n: number) => n.toFixed(1);
  const f2 = (n: number) => n.toFixed(2);
  const mb = (n: number) => (n / 1048576).toFixed(0);
  const lines = [
    '## vs Postfix 3.7 (`npm run bench:postfix`)',
    '',
    `Command: \`npm run bench:postfix\` (N = ${N.toLocaleString('en-US')} per size; \`BENCH_N=1000 npm run bench:postfix\` for a quick run). ` +
      `Measured ${new Date().toISOString().slice(0, 16)}Z on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'} (shared machine).`,
    '',
    'Same world for both, one relay after the other: nsd + Unbound under a private root, one Postfix receiver (queue and Maildir on tmpfs, so its',
    "own fsyncs do not cap the relays; the relays' spools are on the disk of section 1) with a",
    `valid DANE-EE \`3 1 1\` record. Load: \`smtp-source -d -s ${SESSIONS} -m N -l SIZE\` into the relay. Postfix: \`smtp_tls_security_level = dane\`,`,
    '`smtp_dns_support_level = dnssec`, TLS session cache, otherwise defaults (20 connections per destination). dane-relay: `dns.mode: trust-ad`,',
    'defaults (10 connections per destination), and once more with `delivery.per_destination: 20` to match Postfix. End to end = submission',
    "start → last message in the receiver's Maildir; ingest = smtp-source's run; CPU = utime+stime of the relay's processes (Postfix: master and",
    'all its children, reaped ones included); peak memory = largest sum of PSS (/proc/PID/smaps_rollup: resident pages, shared ones divided among',
    "their sharers, so Postfix's shared libraries are not counted once per process) over those processes, sampled every 100 ms. The receiver is the same for both",
    '(the ratio is what it is under this receiver).',
    '',
    '| size | relay | delivered / N | end-to-end msg/s | ingest msg/s | CPU s | peak PSS MB |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...results.map(
      (r) => `| ${r.size / 1024} KB | ${r.relay} | ${r.delivered} / ${r.n} | ${f1(r.e2eRate)} | ${f1(r.ingestRate)} | ${f1(r.cpu)} | ${mb(r.peakRss)} |`,
    ),
    '',
    '| size | ours | end-to-end ratio (ours / Postfix) | ingest ratio | CPU ratio | peak PSS ratio | loss (ours, Postfix) |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...SIZES.flatMap((size) =>
      OURS.map((v) => {
        const p = results.find((r) => r.size === size && r.relay === 'postfix');
        const o = results.find((r) => r.size === size && r.relay === v.label);
        if (!p || !o) return `| ${size / 1024} KB | ${v.label} | (incomplete run) | | | | |`;
        return `| ${size / 1024} KB | ${v.label} | ${f2(o.e2eRate / p.e2eRate)}× | ${f2(o.ingestRate / p.ingestRate)}× | ${f2(o.cpu / p.cpu)}× | ${f2(o.peakRss / p.peakRss)}× | ${o.lost}, ${p.lost} |`;
      }),
    ),
    '',
    'Goal: ≥ 1.5× Postfix end to end with no loss. One run on a machine shared with other jobs: rates move by tens of percent between',
    'runs, so compare several runs (`BENCH_N` smaller for quick ones) before drawing conclusions.',
    '',
  ];
  writeOwnSections(join(ROOT, 'BENCHMARKS.md'), lines.join('\n'), (h) => h.startsWith('## vs Postfix 3.7'));
  console.log(lines.join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
