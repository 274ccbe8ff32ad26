/**
 * `npm run bench:ab -- --other <worktree>`: section 2's ingest (in-process relay, scheduler stopped, 4 KB
 * messages, persistent connections, no pipelining) for this tree and another checkout of the relay,
 * both in one process and in alternating blocks (A, B, B, A, A, B, …), so that whatever else the
 * machine does lands on both alike. Two runs of `npm run bench` on different days compare two
 * machines as much as two commits; this compares the commits. The other tree must be built
 * (`npm run build` there: its dist/test/support is loaded).
 *
 * Per tree: messages/s and latency (MAIL sent → 250 after the dot) while its blocks ran, and the
 * process's CPU time (user + system, all threads: relay, its thread pool and GC, and the test client,
 * which is the same code for both) per message, the measure that a busy machine disturbs least.
 *
 * To find where a difference comes from: `--threads` splits each tree's CPU time by thread (main, the libuv
 * pool, V8's helpers that run the GC), `--prof <dir>` writes a CPU profile of every measured block of the
 * main thread (A-n.cpuprofile, B-n.cpuprofile), so that each tree's profile holds only its own blocks, and
 * `--alloc <dir>` a sampling profile of what each block allocates (A-n.heapprofile, …; collected objects too).
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { writeOwnSections } from './sections.js';

const here = dirname(fileURLToPath(import.meta.url));
const THIS = join(here, '..', '..', '..');

const args = parseArgs({
  options: {
    other: { type: 'string' },
    clients: { type: 'string', default: '1,10,50' },
    blocks: { type: 'string', default: '20' },
    per: { type: 'string', default: '50' },
    write: { type: 'boolean', default: false },
    /** a directory: a CPU profile of each measured block, named after its tree (A-…, B-…), to compare where the time goes */
    prof: { type: 'string' },
    /** a directory: a sampling allocation profile of every measured block (A-n.heapprofile, …), what each tree allocates, collected or not */
    alloc: { type: 'string' },
    /** the CPU time of each tree split by thread kind (main, libuv pool, V8 helpers: GC), from /proc/self/task */
    threads: { type: 'boolean', default: false },
  },
}).values;
if (!args.other) {
  console.error(
    'usage: node dist/test/bench/ab.js --other <path of another built checkout> [--clients 1,10,50] [--blocks 20] [--per 50] [--threads] [--prof <dir>] [--alloc <dir>]',
  );
  process.exit(2);
}

interface Client {
  cmd(line: string): Promise<{ code: number }>;
  reply(): Promise<{ code: number }>;
  write(b: Buffer): void;
  ehlo(name: string): Promise<unknown>;
  quit(): Promise<unknown>;
}
interface Tree {
  name: string;
  world: { ingressPort: number; relay?: { scheduler: { stop(ms: number): Promise<void> } }; close(): Promise<void> };
  connect(port: number): Promise<Client>;
  payload: Buffer;
  lat: number[];
  cpuUs: number;
  /** CPU µs by thread kind (--threads) */
  byThread: Map<string, number>;
  /** the measured blocks' [start, end] (performance.now()), to count the GC pauses in them (--threads) */
  windows: [number, number][];
  ms: number;
  n: number;
}

function body(size: number): Buffer {
  let s = 'From: app@sender.test\r\nTo: user@dest.test\r\nSubject: bench\r\nMessage-ID: <ab@sender.test>\r\n\r\n';
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl\r\n';
  while (s.length + line.length <= size) s += line;
  s += `${'z'.repeat(Math.max(0, size - s.length - 2))}\r\n`;
  return Buffer.from(s);
}

async function load(root: string): Promise<Tree> {
  const { World } = await import(pathToFileURL(join(root, 'dist', 'test', 'support', 'world.js')).href);
  const { SmtpTestClient } = await import(pathToFileURL(join(root, 'dist', 'test', 'support', 'submit.js')).href);
  const world = await World.create();
  await world.start({ delivery: { port: 9 }, log: { level: 'warn' } });
  await world.relay.scheduler.stop(0);
  return {
    name: root,
    world,
    connect: async (port) => {
      const c = await SmtpTestClient.connect({ port, timeout: 60_000 });
      await c.ehlo('bench.client');
      return c;
    },
    payload: SmtpTestClient.dataPayload(body(4096)),
    lat: [],
    cpuUs: 0,
    byThread: new Map(),
    windows: [],
    ms: 0,
    n: 0,
  };
}

/** CPU ns of every thread of this process, keyed by tid, with the thread's kind (its name; the main thread "main"). */
function threadTimes(): Map<string, { kind: string; ns: number }> {
  const out = new Map<string, { kind: string; ns: number }>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const ns = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'latin1').split(' ')[0]);
      const comm = readFileSync(`/proc/self/task/${tid}/comm`, 'latin1').trim();
      // Node 20 names its pool and V8 threads alike ("node"): only the main thread is told apart
      out.set(tid, { kind: tid === String(process.pid) ? 'main' : comm === 'node' ? 'others' : comm, ns });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** GC pauses (--threads), each counted for the tree whose block it fell in */
const gcs: PerformanceEntry[] = [];
const gcObserver = new PerformanceObserver((list) => gcs.push(...list.getEntries()));

function gcOf(t: Tree): { n: number; ms: number } {
  const mine = gcs.filter((g) => t.windows.some(([a, b]) => g.startTime >= a && g.startTime < b));
  return { n: mine.length, ms: mine.reduce((s, g) => s + g.duration, 0) };
}

let session: Session | undefined;
let profiled = 0;

let seq = 0;
async function block(t: Tree, conns: Client[], count: number, measure: boolean): Promise<void> {
  let next = 0;
  if (measure && args.prof) await session!.post('Profiler.start');
  if (measure && args.alloc)
    await session!.post('HeapProfiler.startSampling', {
      samplingInterval: 256,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  const th0 = measure && args.threads ? threadTimes() : undefined;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    conns.map(async (c, k) => {
      while (next < count) {
        next++;
        const i = seq++;
        const s = performance.now();
        const m = await c.cmd('MAIL FROM:<app@sender.test>');
        const r = await c.cmd(`RCPT TO:<user${k}.${i}@nowhere.test>`);
        const d = await c.cmd('DATA');
        if (m.code !== 250 || r.code !== 250 || d.code !== 354) throw new Error(`${t.name}: refused (${m.code} ${r.code} ${d.code})`);
        c.write(t.payload);
        const e = await c.reply();
        if (e.code !== 250) throw new Error(`${t.name}: ${e.code} after the dot`);
        if (measure) t.lat.push(performance.now() - s);
      }
    }),
  );
  if (!measure) return;
  const cu = process.cpuUsage(c0);
  if (th0) for (const [tid, { kind, ns }] of threadTimes()) t.byThread.set(kind, (t.byThread.get(kind) ?? 0) + (ns - (th0.get(tid)?.ns ?? 0)) / 1000);
  if (args.alloc) {
    const { profile } = await session!.post('HeapProfiler.stopSampling');
    writeFileSync(join(args.alloc, `${t === first ? 'A' : 'B'}-${profiled++}.heapprofile`), JSON.stringify(profile));
  }
  if (args.prof) {
    const { profile } = await session!.post('Profiler.stop');
    writeFileSync(join(args.prof, `${t === first ? 'A' : 'B'}-${profiled++}.cpuprofile`), JSON.stringify(profile));
  }
  t.cpuUs += cu.user + cu.system;
  t.ms += performance.now() - t0;
  t.windows.push([t0, performance.now()]);
  t.n += count;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))]! : Number.NaN;
};

let first: Tree | undefined;

async function main(): Promise<void> {
  const trees = [await load(resolve(THIS)), await load(resolve(args.other!))];
  first = trees[0];
  if (args.threads) gcObserver.observe({ entryTypes: ['gc'] });
  for (const d of [args.prof, args.alloc]) if (d) mkdirSync(d, { recursive: true });
  if (args.prof || args.alloc) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
  }
  const blocks = Number(args.blocks);
  const per = Number(args.per);
  const rows: string[] = [];
  const say = (line: string) => {
    rows.push(line);
    console.log(line);
  };
  const commit = (dir: string) => {
    const r = spawnSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
    return r.status === 0 ? r.stdout.trim() : 'unknown';
  };
  console.log(`A = ${trees[0]!.name}\nB = ${trees[1]!.name}\n`);
  say('| clients | tree | messages | msgs/s | p50 ms | p99 ms | CPU µs/msg | B/A CPU |');
  say('|---:|---|---:|---:|---:|---:|---:|---:|');
  try {
    for (const clients of args.clients!.split(',').map(Number)) {
      const conns = await Promise.all(trees.map(async (t) => Promise.all(Array.from({ length: clients }, () => t.connect(t.world.ingressPort)))));
      for (const [i, t] of trees.entries()) {
        await block(t, conns[i]!, Math.max(100, per), false); // warm-up
        Object.assign(t, { lat: [], cpuUs: 0, byThread: new Map(), windows: [], ms: 0, n: 0 });
      }
      // A B B A A B …: each tree goes first as often as second
      for (let b = 0; b < blocks; b++) for (const i of b % 2 ? [1, 0] : [0, 1]) await block(trees[i]!, conns[i]!, per * Math.max(1, clients / 10), true);
      const cpu = trees.map((t) => t.cpuUs / t.n);
      for (const [i, t] of trees.entries())
        say(
          `| ${clients} | ${i ? 'B' : 'A'} | ${t.n} | ${Math.round((t.n / t.ms) * 1000)} | ${pct(t.lat, 0.5).toFixed(2)} | ${pct(t.lat, 0.99).toFixed(2)} | ` +
            `${Math.round(cpu[i]!)} | ${i ? (cpu[1]! / cpu[0]!).toFixed(3) : ''} |`,
        );
      if (args.threads) {
        await new Promise((r) => setImmediate(r)); // the last GC entries
        for (const [i, t] of trees.entries()) {
          const gc = gcOf(t);
          console.log(
            `  ${i ? 'B' : 'A'} CPU µs/msg by thread: ${[...t.byThread]
              .sort((x, y) => y[1] - x[1])
              .map(([k, us]) => `${k} ${Math.round(us / t.n)}`)
              .join(', ')}; GC pauses: ${gc.n} (${((gc.n / t.n) * 1000).toFixed(1)} per 1000 msgs), ${Math.round((gc.ms * 1000) / t.n)} µs/msg`,
          );
        }
      }
      await Promise.all(conns.flat().map((c) => c.quit()));
    }
    if (args.write) {
      const text = [
        '## Ingest A/B against another commit (`npm run bench:ab`)',
        '',
        `Command: \`npm run bench:ab -- --other <checkout of ${commit(args.other!)}> --write\` (${new Date().toISOString()}, load average ${os.loadavg()[0]!.toFixed(1)} at the end). ` +
          `A = this tree (${commit(THIS)}), B = the other, both in one process in alternating blocks (A B B A …), section 2's ingest (4 KB, scheduler stopped). ` +
          "CPU is the process's user + system time per message (relay, thread pool, GC and the test client alike): on a busy machine the column to read.",
        '',
        ...rows,
        '',
      ].join('\n');
      writeOwnSections(join(THIS, 'BENCHMARKS.md'), text, (h) => h.startsWith('## Ingest A/B'));
    }
  } finally {
    for (const t of trees) await t.world.close();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
