/**
 * `npm run bench:postfix`: dane-relay against Postfix 3.7 in the interop world (nsd + unbound under
 * a private root, a Postfix receiver with a valid DANE-EE record), the same load through both relays:
 * smtp-source submitting N messages (`--n`/BENCH_N, default 2,000 and 10,000) of 2 KB and of 50 KB
 * over 20 sessions, the relays alternating (ours, Postfix, ours, …) for `--pairs`/BENCH_PAIRS runs
 * each (default 5), each run on a freshly started relay. Per run: end-to-end messages/s (submission
 * start → last message in the receiver's Maildir), ingest messages/s (smtp-source's run), the
 * per-message queue wait (250 after the dot, seen by a TCP tap in front of the relay → the message's
 * Maildir file), first-message wait and tail (last 250 → last delivery), CPU ms per message and peak
 * PSS of each relay (from /proc: the node process; Postfix's master and all its children, live and
 * reaped), and loss. Reports medians with their spread and per-pair ratios, and writes its own
 * section of BENCHMARKS.md (not with `--no-write`/BENCH_WRITE=0: a smoke run on a busy machine).
 *
 * With `--profile`, BENCH_PROFILE_OUT=<file> keeps the whole .cpuprofile of the profiled run.
 * With `--direct`, one more run per pair sends the same load straight into the receiver (no relay): with the whole
 * machine's busy CPU per message recorded for every run, that shows what the rest of the world costs and the rate it allows.
 * With `--variant="<node flags>"`, an A/B of dane-relay against itself with those node flags (no Postfix, nothing written).
 * With `--warm`, each relay first carries an unmeasured run of the same load (how much of a short run is warm-up). The tap
 * also times each ingest step (MAIL, RCPT, DATA, end of data → its reply): where a closed-loop client's time goes.
 *
 * Needs root (port 25/53 on 127.x, mount namespaces) and the README's Debian packages.
 */
import { execFile, spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { writeOwnSections } from './sections.js';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startDnsWorld, type DnsWorld } from '../interop/support/dnsworld.js';
import { startPostfixReceivers, startPostfixRelay, type PostfixReceivers } from '../interop/support/postfix.js';
import { startRelay } from '../interop/support/relay.js';
import { makeSelfSigned, tlsaData } from '../support/pki.js';
import { MESSAGE_ID, type ReplyStep, SmtpTap } from './smtpTap.js';
import { profileMarkdown, summariseProfile, type CpuProfile, type ProfileSummary } from './cpuprofile.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..', '..');
const args = parseArgs({
  options: {
    n: { type: 'string' },
    pairs: { type: 'string' },
    sizes: { type: 'string' },
    'no-write': { type: 'boolean' },
    direct: { type: 'boolean' },
    profile: { type: 'boolean' },
    warm: { type: 'boolean' },
    variant: { type: 'string' },
  },
  allowPositionals: false,
}).values;
/** message counts: `--n 2000,10000` or BENCH_N (one or a list); the goal of issue 17 is judged at both */
const NS = (args.n ?? process.env.BENCH_N ?? '2000,10000').split(',').map(Number);
/** alternating runs per relay (ours, Postfix, ours, …): the median of these is reported */
const PAIRS = Number(args.pairs ?? process.env.BENCH_PAIRS ?? 5);
const SESSIONS = Number(process.env.BENCH_SESSIONS ?? 20);
const SIZES = (args.sizes ?? process.env.BENCH_SIZES ?? '2048,51200').split(',').map(Number);
/** a smoke run on a loaded machine must not overwrite the section measured on a quiet one */
const WRITE = !args['no-write'] && process.env.BENCH_WRITE !== '0';
const CLK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100);
const PAGE = Number(spawnSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).stdout.trim() || 4096);
/** `--direct`/BENCH_DIRECT=1: one more run per pair with no relay, smtp-source straight into the receiver (cleartext):
 * what the rest of the world (load generator, tap, receiver, kernel) costs per message and the rate it allows at most */
const DIRECT = !!args.direct || process.env.BENCH_DIRECT === '1';
const NO_RELAY = 'no relay (smtp-source → receiver, cleartext)';
/** `--profile`/BENCH_PROFILE=1: after the measured runs, one more run of dane-relay (first N and size) under `node --cpu-prof`, summarised */
const PROFILE = !!args.profile || process.env.BENCH_PROFILE === '1';
/**
 * `--warm`/BENCH_WARM=1: each relay first carries an unmeasured run of the same N and size, then the measured one, in the
 * same processes: a relay that has been up for a while (JIT-compiled, caches and connections as they are then), against
 * the default of a relay started fresh for the measured run. Not part of the goal's measurement; it says how much of a
 * short run is warm-up.
 */
const WARM = !!args.warm || process.env.BENCH_WARM === '1';
/**
 * `--variant="<node flags>"`/BENCH_VARIANT: an A/B of the relay against itself, no Postfix and nothing written: in each pair
 * dane-relay as shipped, then dane-relay with these node flags after the launcher's (V8 takes the last value of a flag, so
 * `--interrupt-budget=67584` undoes the launcher's). Prints each pair's variant / shipped ratio of end-to-end rate and of
 * main-thread and all CPU per message, with their medians: how a launcher flag was judged (bin/dane-relay.js).
 */
const VARIANT = args.variant ?? process.env.BENCH_VARIANT;
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

/** /proc/PID/stat, or with `tid` /proc/PID/task/TID/stat (one thread: its own cpu; childCpu is the process's). */
function stat(pid: number, tid?: string): ProcStat | undefined {
  try {
    const s = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
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

/** The whole machine's busy CPU seconds so far (/proc/stat: user+nice+system+irq+softirq+steal, every CPU). */
function machineBusy(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return (user + nice + system + irq + softirq + steal) / CLK;
}

/**
 * CPU seconds of one process's threads (/proc/PID/task): its main thread (for node: JavaScript and the
 * syscalls it makes) and all the others together (for node: V8's garbage-collector and compiler helpers,
 * libuv's file-system pool). Threads that ended before the read are not counted.
 */
function threads(pid: number): { main: number; other: number } & MainSched {
  let main = 0;
  let other = 0;
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { main, other, ...mainSched(pid) };
  }
  for (const tid of tids) {
    const cpu = stat(pid, tid)?.cpu ?? 0; // undefined: the thread ended between readdir and read
    if (Number(tid) === pid) main += cpu;
    else other += cpu;
  }
  return { main, other, ...mainSched(pid) };
}

/** The main thread's scheduling so far: seconds on a CPU and seconds runnable but waiting for one, and how often it was preempted. */
interface MainSched {
  onCpu: number;
  runqueue: number;
  preempted: number;
}

/**
 * /proc/PID/task/PID/schedstat (ns on a CPU, ns waiting on a run queue, time slices) and the thread's
 * nonvoluntary_ctxt_switches. On a CPU plus waiting near 100 % of a run means the thread never waited for
 * work: it was the bottleneck, and the waiting share is what the other threads and processes took from it.
 */
function mainSched(pid: number): MainSched {
  try {
    const [run = 0, wait = 0] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number);
    const m = /^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'));
    return { onCpu: run / 1e9, runqueue: wait / 1e9, preempted: m ? Number(m[1]) : 0 };
  } catch {
    return { onCpu: 0, runqueue: 0, preempted: 0 };
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
  pair: number;
  delivered: number;
  e2eRate: number;
  ingestRate: number;
  ingestSecs: number;
  e2eSecs: number;
  /** ms from a message's 250 (after its dot) to its file in the receiver's Maildir: median and p99 over the run */
  waitP50: number;
  waitP99: number;
  /** ms from the first 250 to the first delivery (does the first message wait for a timer?) */
  firstWait: number;
  /** ms from the last 250 to the last delivery */
  tail: number;
  /**
   * Deliveries per second in the middle of the run, from the 10th to the 90th percentile of the Maildir
   * times: the rate once the relay is warm (JIT, first connections and verifications) and before the tail.
   */
  steadyRate: number;
  /** messages matched by Message-ID on both sides (the wait statistics are over these) */
  matched: number;
  cpu: number;
  cpuMsPerMsg: number;
  /** the whole machine's busy CPU per message (relay, smtp-source, tap, receiver, kernel): what the run cost everything */
  machineMsPerMsg: number;
  /** busy CPU / (elapsed × CPUs): near 100 % the machine, not a relay, sets the rate */
  machineBusyPct: number;
  peakRss: number;
  lost: number;
  /** ingest: p50 ms from each step passing the tap to its reply (smtpTap.ts `replyMs`) */
  replyP50: Record<ReplyStep, number>;
  /** the relay process's own threads, CPU ms per message: main thread, all others (threads()) */
  mainMsPerMsg: number;
  otherThreadsMsPerMsg: number;
  /** the main thread's share of the run on a CPU, and runnable but waiting for one (%); preemptions per message */
  mainOnCpuPct: number;
  mainRunqueuePct: number;
  mainPreemptedPerMsg: number;
}

function count(dir: string): number {
  return existsSync(dir) ? readdirSync(dir).length : 0;
}

/** When each message reached the receiver's Maildir (the file's mtime: when the delivery agent finished
 * writing it, before its rename into new/), by the Message-ID smtp-source gave it. */
function deliveries(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const buf = Buffer.alloc(16384);
  for (const f of existsSync(dir) ? readdirSync(dir) : []) {
    const path = join(dir, f);
    const fd = openSync(path, 'r');
    try {
      const n = readSync(fd, buf, 0, buf.length, 0);
      const id = MESSAGE_ID.exec(buf.subarray(0, n).toString('latin1'))?.[1];
      if (id) out.set(id, Number(statSync(path, { bigint: true }).mtimeNs) / 1e6);
    } finally {
      closeSync(fd);
    }
  }
  return out;
}

/** Deliveries per second between the 10th and the 90th percentile of the delivery times (NaN for a tiny run). */
function steadyRate(times: number[]): number {
  const s = [...times].sort((a, b) => a - b);
  const lo = Math.floor(0.1 * s.length);
  const hi = Math.ceil(0.9 * s.length) - 1;
  if (hi - lo < 10 || s[hi]! <= s[lo]!) return Number.NaN;
  return (hi - lo) / ((s[hi]! - s[lo]!) / 1000);
}

const pctl = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : Number.NaN);
const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return Number.NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function runOne(
  relay: string,
  pid: number,
  tap: SmtpTap & { port: number },
  tapHost: string,
  rx: PostfixReceivers,
  size: number,
  n: number,
  pair: number,
  rcpt: string,
  warmUp = false,
): Promise<Result> {
  rmSync(rx.newDir, { recursive: true, force: true }); // virtual re-creates it
  tap.reset();
  const cpu0 = tree(pid).cpu;
  const threads0 = threads(pid);
  const busy0 = machineBusy();
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
      [
        '-d',
        '-s',
        String(SESSIONS),
        '-m',
        String(n),
        '-l',
        String(size),
        '-M',
        'bench.client.invalid',
        '-f',
        'bench@sender.tst',
        '-t',
        rcpt,
        `${tapHost}:${tap.port}`,
      ],
      { maxBuffer: 64 * 1024 * 1024 },
      (err, _out, errOut) => {
        if (err) reject(new Error(`smtp-source: ${err.message} ${errOut}`));
        else resolve(performance.now());
      },
    );
  });
  const deadline = Date.now() + Math.max(300_000, n * 60);
  let last = count(rx.newDir);
  let lastChange = Date.now();
  while (count(rx.newDir) < n && Date.now() < deadline) {
    await sleep(50);
    const c = count(rx.newDir);
    if (c !== last) {
      last = c;
      lastChange = Date.now();
    }
    if (Date.now() - lastChange > 120_000) break; // stalled: report what arrived
  }
  const t1 = performance.now();
  const busy = machineBusy() - busy0;
  sampling = false;
  await sampler;
  const delivered = count(rx.newDir);
  const cpu = tree(pid).cpu - cpu0;
  const threads1 = threads(pid);
  // The split: per message 250 → Maildir, and the run's first and last of each.
  const done = deliveries(rx.newDir);
  const waits: number[] = [];
  let first250 = Infinity;
  let last250 = -Infinity;
  for (const t of tap.stats.accepted.values()) {
    first250 = Math.min(first250, t);
    last250 = Math.max(last250, t);
  }
  const doneTimes = [...done.values()];
  for (const [id, t] of tap.stats.accepted) {
    const d = done.get(id);
    if (d !== undefined) waits.push(d - t);
  }
  waits.sort((a, b) => a - b);
  const r: Result = {
    steadyRate: steadyRate(doneTimes),
    relay,
    size,
    n,
    pair,
    delivered,
    e2eSecs: (t1 - t0) / 1000,
    ingestSecs: (ingest - t0) / 1000,
    e2eRate: delivered / ((t1 - t0) / 1000),
    ingestRate: n / ((ingest - t0) / 1000),
    waitP50: pctl(waits, 0.5),
    waitP99: pctl(waits, 0.99),
    firstWait: doneTimes.length ? Math.min(...doneTimes) - first250 : Number.NaN,
    tail: doneTimes.length ? Math.max(...doneTimes) - last250 : Number.NaN,
    matched: waits.length,
    cpu,
    cpuMsPerMsg: (cpu * 1000) / n,
    machineMsPerMsg: (busy * 1000) / n,
    machineBusyPct: (100 * busy) / (((t1 - t0) / 1000) * os.cpus().length),
    peakRss: peak,
    lost: n - delivered,
    mainMsPerMsg: ((threads1.main - threads0.main) * 1000) / n,
    otherThreadsMsPerMsg: ((threads1.other - threads0.other) * 1000) / n,
    mainOnCpuPct: (100 * (threads1.onCpu - threads0.onCpu)) / ((t1 - t0) / 1000),
    mainRunqueuePct: (100 * (threads1.runqueue - threads0.runqueue)) / ((t1 - t0) / 1000),
    mainPreemptedPerMsg: (threads1.preempted - threads0.preempted) / n,
    replyP50: Object.fromEntries(
      Object.entries(tap.stats.replyMs).map(([k, v]) => [
        k,
        pctl(
          [...v].sort((a, b) => a - b),
          0.5,
        ),
      ]),
    ) as Record<ReplyStep, number>,
  };
  if (!warmUp) console.log(JSON.stringify(r));
  return r;
}

const POSTFIX = 'postfix';
const TAP_HOST = '127.0.0.4';

async function main(): Promise<void> {
  const ee = await makeSelfSigned({ dnsNames: ['mx1.bench.tst'] });
  const hex = tlsaData(ee, 1, 1).toString('hex');
  let dns: DnsWorld | undefined;
  let rx: PostfixReceivers | undefined;
  const results: Result[] = [];
  let profile: { run: Result; summary: ProfileSummary } | undefined;
  const started = Date.now();
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
    const postfix = async (size: number, n: number, pair: number) => {
      const pf = await startPostfixRelay({
        address: '127.0.0.2',
        resolver: dns!.unbound,
        // production-like: normal retry timers, TLS session cache as Debian ships it
        extra: {
          queue_run_delay: '300s',
          minimal_backoff_time: '300s',
          maximal_backoff_time: '4000s',
          smtp_tls_session_cache_database: 'btree:${data_directory}/smtp_scache',
        },
      });
      const tap = await SmtpTap.listen(TAP_HOST, { host: pf.address, port: pf.port });
      try {
        if (WARM) await runOne(POSTFIX, pf.pid, tap, TAP_HOST, rx!, size, n, pair, 'pf@bench.tst', true);
        results.push(await runOne(POSTFIX, pf.pid, tap, TAP_HOST, rx!, size, n, pair, 'pf@bench.tst'));
      } finally {
        await tap.close();
        await pf.stop();
      }
    };
    /** a fresh dane-relay; `nodeFlags` go after the launcher's for this one start (DANE_RELAY_NODE_FLAGS, read at the spawn) */
    const startOurs = async (perDestination?: number, nodeFlags?: string) => {
      if (nodeFlags !== undefined) process.env.DANE_RELAY_NODE_FLAGS = nodeFlags;
      try {
        return await startRelay({ resolver: dns!.unbound, listen: '127.0.0.3:2525', queueYaml: '', perDestination });
      } finally {
        if (nodeFlags !== undefined) delete process.env.DANE_RELAY_NODE_FLAGS;
      }
    };
    const ours = async (v: (typeof OURS)[number], size: number, n: number, pair: number, nodeFlags?: string) => {
      const relay = await startOurs(v.perDestination, nodeFlags);
      const tap = await SmtpTap.listen(TAP_HOST, { host: relay.host, port: relay.port });
      try {
        if (WARM) await runOne(v.label, relay.child.pid!, tap, TAP_HOST, rx!, size, n, pair, 'ours@bench.tst', true);
        results.push(await runOne(v.label, relay.child.pid!, tap, TAP_HOST, rx!, size, n, pair, 'ours@bench.tst'));
      } finally {
        await tap.close();
        await relay.stop();
      }
    };
    // Not one of the measured runs: the profiler's own cost stays out of the medians.
    const profiled = async (size: number, n: number) => {
      const dir = mkdtempSync(join(os.tmpdir(), 'dane-relay-prof-'));
      try {
        const relay = await startOurs(undefined, `--cpu-prof --cpu-prof-dir=${dir}`);
        const tap = await SmtpTap.listen(TAP_HOST, { host: relay.host, port: relay.port });
        let run: Result;
        try {
          run = await runOne(`${OURS[0]!.label} (profiled)`, relay.child.pid!, tap, TAP_HOST, rx!, size, n, 0, 'ours@bench.tst');
        } finally {
          await tap.close();
          await relay.stop(); // SIGTERM: the relay exits normally and node writes the profile
        }
        const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
        if (!file) throw new Error(`no .cpuprofile written in ${dir}`);
        // BENCH_PROFILE_OUT=<file>: keep the whole profile (for speedscope, Chrome DevTools, or call-path digging)
        if (process.env.BENCH_PROFILE_OUT) copyFileSync(join(dir, file), process.env.BENCH_PROFILE_OUT);
        profile = { run, summary: summariseProfile(JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile, 20) };
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };
    const direct = async (size: number, n: number, pair: number) => {
      const tap = await SmtpTap.listen(TAP_HOST, { host: '127.0.200.1', port: 25 });
      try {
        results.push(await runOne(NO_RELAY, 0, tap, TAP_HOST, rx!, size, n, pair, 'direct@bench.tst'));
      } finally {
        await tap.close();
      }
    };
    // Alternating, each relay fresh (empty queue) for every run: ours, Postfix, ours, Postfix, … so that
    // whatever else the machine does at the time lands on both.
    for (const n of NS) {
      for (const size of SIZES) {
        for (let pair = 1; pair <= PAIRS; pair++) {
          if (VARIANT !== undefined) {
            await ours(OURS[0]!, size, n, pair);
            await ours({ label: `dane-relay ${VARIANT}` }, size, n, pair, VARIANT);
            continue;
          }
          await ours(OURS[0]!, size, n, pair);
          await postfix(size, n, pair);
          for (const v of OURS.slice(1)) await ours(v, size, n, pair);
          if (DIRECT) await direct(size, n, pair);
        }
      }
    }
    if (PROFILE) await profiled(SIZES[0]!, NS[0]!);
  } finally {
    await rx?.stop();
    await dns?.stop();
  }
  if (VARIANT !== undefined) {
    console.log(variantTable(results, VARIANT));
    return;
  }
  const text = section(results, (Date.now() - started) / 1000, profile);
  if (WRITE) writeOwnSections(join(ROOT, 'BENCHMARKS.md'), text, (h) => h.startsWith('## vs Postfix 3.7'));
  console.log(text);
}

/** `--variant`: per (N, size), each pair's variant / shipped ratios and their medians. */
function variantTable(results: Result[], flags: string): string {
  const lines = [
    `dane-relay with \`${flags}\` against dane-relay as shipped, fresh relays alternating, ratio variant / shipped per pair (median, then each pair):`,
    '',
    '| N | size | pairs | end-to-end msg/s | main-thread CPU per message | all CPU per message |',
    '| ---: | --- | ---: | --- | --- | --- |',
  ];
  for (const n of NS)
    for (const size of SIZES) {
      const a = results.filter((r) => r.n === n && r.size === size && r.relay === OURS[0]!.label);
      const b = results.filter((r) => r.n === n && r.size === size && r.relay !== OURS[0]!.label);
      const ratio = (f: (r: Result) => number) => {
        const rs = a.map((x, i) => f(b[i]!) / f(x));
        return `${median(rs).toFixed(3)} (${rs.map((r) => r.toFixed(2)).join(', ')})`;
      };
      lines.push(
        `| ${n.toLocaleString('en-US')} | ${size / 1024} KB | ${a.length} | ${ratio((r) => r.e2eRate)} | ${ratio((r) => r.mainMsPerMsg)} | ${ratio((r) => r.cpuMsPerMsg)} |`,
      );
    }
  return lines.join('\n');
}

/** the median over the runs, with the spread (lowest–highest) when there is more than one */
function spread(xs: number[], fmt: (n: number) => string): string {
  const ok = xs.filter((x) => Number.isFinite(x));
  if (!ok.length) return '–';
  if (ok.length === 1) return fmt(ok[0]!);
  return `${fmt(median(ok))} (${fmt(Math.min(...ok))}–${fmt(Math.max(...ok))})`;
}

function section(results: Result[], secs: number, profile?: { run: Result; summary: ProfileSummary }): string {
  const f0 = (n: number) => n.toFixed(0);
  const f2 = (n: number) => n.toFixed(2);
  const mb = (n: number) => (n / 1048576).toFixed(0);
  const relays = [OURS[0]!.label, POSTFIX, ...OURS.slice(1).map((v) => v.label), ...(DIRECT ? [NO_RELAY] : [])];
  const of = (n: number, size: number, relay: string) => results.filter((r) => r.n === n && r.size === size && r.relay === relay);
  /** each (N, size, relay) cell that has runs, in table order */
  const cellsOf = function* (): Generator<[number, number, string, Result[]]> {
    for (const n of NS)
      for (const size of SIZES)
        for (const relay of relays) {
          const rs = of(n, size, relay);
          if (rs.length) yield [n, size, relay, rs];
        }
  };
  const load = os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
  const lines = [
    '## vs Postfix 3.7 (`npm run bench:postfix`)',
    '',
    `Command: \`npm run bench:postfix\` (N = ${NS.map((n) => n.toLocaleString('en-US')).join(' and ')} per size, ${PAIRS} alternating runs of each relay; ` +
      '`npm run bench:postfix -- --n 200 --pairs 1 --sizes 2048 --no-write` for a quick run that leaves this file alone; `BENCH_N`, `BENCH_PAIRS`, `BENCH_SIZES` the same). ' +
      `Measured ${new Date().toISOString().slice(0, 16)}Z on ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}, load average ${load} at the end; whole run ${f0(secs)} s.`,
    '',
    'Same world for both: nsd + Unbound under a private root, one Postfix receiver (queue and Maildir on tmpfs, so its',
    "own fsyncs do not cap the relays; the relays' spools are on the disk of section 1) with a",
    `valid DANE-EE \`3 1 1\` record. Load: \`smtp-source -d -s ${SESSIONS} -m N -l SIZE\` into the relay. Postfix: \`smtp_tls_security_level = dane\`,`,
    '`smtp_dns_support_level = dnssec`, TLS session cache, otherwise defaults (20 connections per destination). dane-relay: `dns.mode: trust-ad`,',
    `defaults (10 connections per destination)${OURS.length > 1 ? ', and once more with `delivery.per_destination: 20` to match Postfix' : ''}. The relays run one at a time,`,
    WARM
      ? '**`--warm`: each relay carried an unmeasured run of the same N and size just before each measured run, in the same processes (warm, not started fresh).** ' +
        'Alternating (ours, Postfix, ours, …); each cell is the median over the runs with the lowest–highest in brackets.'
      : 'alternating (ours, Postfix, ours, …), each started fresh (empty queue) for every run; each cell is the median over the runs with the lowest–highest in brackets.',
    "End to end = submission start → last message in the receiver's Maildir; ingest = smtp-source's run (to the last 250); steady = deliveries per second",
    'between the 10th and the 90th percentile of the Maildir times (the relay warm, the tail excluded: why a short run is slower). smtp-source talks to the relay',
    "through a transparent TCP tap (test/bench/smtpTap.ts, the same for both) that notes each message's 250 after its dot by Message-ID; the",
    "receiver's Maildir file of that message (its mtime, the kernel's coarse clock: a few ms) says when it arrived. Queue wait = 250 → in the Maildir,",
    'per message (p50, p99 over the run: the time a message spends in the relay, its one delivery transaction included; no message is retried here,',
    'delivered / N checks it); first = first 250 → first delivery (a timer between ingest and delivery shows here); tail = last 250 → last delivery.',
    "CPU = utime+stime of the relay's processes from /proc (Postfix: master and all its children, reaped ones included) per message; peak memory =",
    'largest sum of PSS (/proc/PID/smaps_rollup) over those processes, sampled every 100 ms. The receiver is the same for both.',
    "Machine CPU = the whole machine's busy time (/proc/stat) during the run per message: the relay, smtp-source, the tap, the receiver and the kernel;",
    'machine busy = that time over (elapsed × CPUs). Near 100 % busy the rate is what the machine allows: rate ≈ CPUs × 1000 / machine CPU ms per message,',
    "so a relay's own CPU per message is the part of that sum it can change.",
    ...(DIRECT
      ? [
          `\`--direct\`: "${NO_RELAY}" is smtp-source through the same tap straight into the receiver, no relay and no TLS: the rest of the world's CPU`,
          'per message, and the rate the machine allows with a relay that cost nothing.',
        ]
      : []),
    '',
    '| N | size | relay | runs | delivered / N (all runs) | end-to-end msg/s | steady msg/s | ingest msg/s | queue wait p50 ms | queue wait p99 ms | first ms | tail ms | CPU ms/msg | machine CPU ms/msg | machine busy % | peak PSS MB |',
    '| ---: | --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const [n, size, relay, rs] of cellsOf()) {
    const sum = (f: (r: Result) => number) => rs.reduce((a, r) => a + f(r), 0);
    const cells: [(r: Result) => number, (n: number) => string][] = [
      [(r) => r.e2eRate, f0],
      [(r) => r.steadyRate, f0],
      [(r) => r.ingestRate, f0],
      [(r) => r.waitP50, f0],
      [(r) => r.waitP99, f0],
      [(r) => r.firstWait, f0],
      [(r) => r.tail, f0],
      [(r) => r.cpuMsPerMsg, f2],
      [(r) => r.machineMsPerMsg, f2],
      [(r) => r.machineBusyPct, f0],
      [(r) => r.peakRss, mb],
    ];
    const row = [n.toLocaleString('en-US'), `${size / 1024} KB`, relay, rs.length, `${sum((r) => r.delivered)} / ${sum((r) => r.n)}`];
    lines.push(`| ${[...row, ...cells.map(([get, fmt]) => spread(rs.map(get), fmt))].join(' | ')} |`);
  }
  lines.push(
    '',
    'Ratios per pair (each run of ours against the Postfix run of the same pair), median (lowest–highest):',
    '',
    '| N | size | ours | end to end (ours / Postfix) | steady | ingest | CPU per message | peak PSS | loss (ours, Postfix) |',
    '| ---: | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const n of NS)
    for (const size of SIZES)
      for (const v of OURS) {
        const pairs = of(n, size, v.label)
          .map((o) => ({ o, p: of(n, size, POSTFIX).find((p) => p.pair === o.pair) }))
          .filter((x): x is { o: Result; p: Result } => !!x.p);
        if (!pairs.length) {
          lines.push(`| ${n.toLocaleString('en-US')} | ${size / 1024} KB | ${v.label} | (incomplete run) | | | | | |`);
          continue;
        }
        const ratio = (f: (r: Result) => number) =>
          spread(
            pairs.map(({ o, p }) => f(o) / f(p)),
            (x) => `${f2(x)}×`,
          );
        lines.push(
          `| ${n.toLocaleString('en-US')} | ${size / 1024} KB | ${v.label} | ${ratio((r) => r.e2eRate)} | ${ratio((r) => r.steadyRate)} | ${ratio((r) => r.ingestRate)} | ` +
            `${ratio((r) => r.cpuMsPerMsg)} | ${ratio((r) => r.peakRss)} | ${pairs.reduce((a, x) => a + x.o.lost, 0)}, ${pairs.reduce((a, x) => a + x.p.lost, 0)} |`,
        );
      }
  lines.push(
    '',
    "Ingest, step by step: ms from the client's command passing the tap to the relay's reply passing it back, p50 over each run, median",
    "(lowest–highest) over the runs. smtp-source does not pipeline, so a message's submission is these four in turn: MAIL, RCPT and DATA show how long",
    'a command waits for the relay to get to it (a few µs of work each); the dot adds the commit to stable storage before the 250.',
    '',
    '| N | size | relay | MAIL | RCPT | DATA (→ 354) | end of data (→ 250) |',
    '| ---: | --- | --- | --- | --- | --- | --- |',
  );
  for (const [n, size, relay, rs] of cellsOf()) {
    const steps: ReplyStep[] = ['MAIL', 'RCPT', 'DATA', 'dot'];
    lines.push(
      `| ${n.toLocaleString('en-US')} | ${size / 1024} KB | ${relay} | ${steps
        .map((k) =>
          spread(
            rs.map((r) => r.replyP50[k]),
            (x) => x.toFixed(1),
          ),
        )
        .join(' | ')} |`,
    );
  }
  lines.push(
    '',
    "dane-relay's CPU by thread, ms per message (median, lowest–highest): the main thread runs the JavaScript and the syscalls it makes;",
    "the others are V8's garbage-collector and compiler helpers and libuv's file-system pool (fsync, create, unlink). Postfix is many",
    "processes, not threads: its row would say nothing. Then the main thread's scheduling over the run (/proc/PID/task/PID/schedstat and",
    'status): the share of the run it was on a CPU, the share it was runnable but waiting for one, and how often per message it was',
    'preempted. On a CPU plus waiting near 100 % means it never waited for work: it is the bottleneck, and the waiting share is what the',
    'other threads and processes on the machine took from it.',
    '',
    '| N | size | relay | main thread | other threads | all | main on a CPU % | main waiting for a CPU % | main preempted per message |',
    '| ---: | --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const [n, size, relay, rs] of cellsOf()) {
    if (!OURS.some((v) => v.label === relay)) continue;
    const cell = (f: (r: Result) => number) => spread(rs.map(f), f2);
    lines.push(
      `| ${n.toLocaleString('en-US')} | ${size / 1024} KB | ${relay} | ${cell((r) => r.mainMsPerMsg)} | ${cell((r) => r.otherThreadsMsPerMsg)} | ${cell((r) => r.cpuMsPerMsg)} | ${spread(
        rs.map((r) => r.mainOnCpuPct),
        f0,
      )} | ${spread(
        rs.map((r) => r.mainRunqueuePct),
        f0,
      )} | ${spread(
        rs.map((r) => r.mainPreemptedPerMsg),
        (x) => x.toFixed(1),
      )} |`,
    );
  }
  lines.push(
    '',
    'Goal (issue 17): ≥ 2.0× Postfix end to end at 2 KB and 50 KB, for N = 2,000 and N = 10,000, as the median of ≥ 5 alternating runs, and CPU per',
    "message ≤ 0.5× Postfix's, with no loss. Rates on a shared machine move by tens of percent between runs: read the medians and the spread, not one run.",
    '',
  );
  if (profile) {
    const r = profile.run;
    lines.push(
      '### Where dane-relay spends its time under this load (`--profile`)',
      '',
      `One more run after the measured ones (N = ${r.n.toLocaleString('en-US')}, ${r.size / 1024} KB), the relay under \`node --cpu-prof\`: ` +
        `${r.delivered} / ${r.n} delivered, ${f0(r.e2eRate)} msg/s end to end, ${f2(r.cpuMsPerMsg)} CPU ms/msg, machine ${f0(r.machineBusyPct)} % busy. ` +
        `Profile: ${f0(profile.summary.totalMs)} ms of samples. The profiler samples the main thread on a wall-clock timer: on a busy machine the time the`,
      'relay was descheduled lands on the frame it was in — mostly the native call that woke another process (a socket write, a thread-pool hand-off),',
      'so read the native rows as where the relay gave up the CPU as much as their own cost (test/bench/cpuprofile.ts). Self time, top 20, then by place:',
      '',
      ...profileMarkdown(profile.summary),
      '',
    );
  }
  return lines.join('\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
