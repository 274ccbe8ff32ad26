/**
 * `npm run bench`: measures the disk's fsync-bound rate, ingest throughput/latency, end-to-end
 * delivery (opportunistic TLS vs DANE-EE), RSS with a large queue, TLSRPT and DNSSEC costs, and
 * what 8BITMIME handling costs 7-bit mail; writes BENCHMARKS.md.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdtempSync, openSync, constants, renameSync, rmSync, writeSync, statfsSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SmtpTestClient } from '../support/submit.js';
import { writeOwnSections } from './sections.js';
import { World } from '../support/world.js';
import { benchBody as body, timedDelivery } from './load.js';
import { mtastsSection } from './mtasts.js';
import { makeSelfSigned, tlsaData } from '../support/pki.js';
import { tlsrptSection } from './tlsrpt.js';
import { benchDnssec } from './dnssec.js';
import { mimeSection } from './mime.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..', '..');
const out: string[] = [];
const say = (s = '') => {
  out.push(s);
  console.log(s);
};
const f1 = (n: number) => n.toFixed(1);
const f0 = (n: number) => Math.round(n).toLocaleString('en-US');
const pct = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : NaN);

// ---- 1. raw fsync-bound rate -------------------------------------------------------------
function fsyncRate(ms: number): { rate: number; n: number; dir: string; p50: number; p99: number; max: number } {
  const dir = mkdtempSync(join(os.tmpdir(), 'dane-relay-bench-fsync-'));
  const buf = Buffer.alloc(4096, 0x61);
  const t0 = performance.now();
  let n = 0;
  const each: number[] = [];
  while (performance.now() - t0 < ms) {
    const s = performance.now();
    const tmp = join(dir, `t${n}`);
    const fd = openSync(tmp, 'w');
    writeSync(fd, buf);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, join(dir, `m${n}`));
    const dfd = openSync(dir, constants.O_RDONLY);
    fsyncSync(dfd);
    closeSync(dfd);
    each.push(performance.now() - s);
    n++;
  }
  const secs = (performance.now() - t0) / 1000;
  rmSync(dir, { recursive: true, force: true });
  each.sort((a, b) => a - b);
  return { rate: n / secs, n, dir, p50: pct(each, 0.5), p99: pct(each, 0.99), max: each[each.length - 1] ?? NaN };
}

// ---- 2. ingest ---------------------------------------------------------------------------
/**
 * `clients` persistent connections sending for `ms`. Flat out (no `rate`): each sends its next message the
 * moment the last 250 came. Paced (`rate` messages/s in all): each client sends one message every
 * clients / rate seconds, staggered, as application servers handing over mail do; latency is then measured
 * from each message's scheduled start, so a client that falls behind counts its own queueing (no
 * coordinated omission).
 */
async function ingestLevel(
  w: World,
  clients: number,
  ms: number,
  msg: Buffer,
  rate?: number,
): Promise<{ rate: number; n: number; p50: number; p99: number; errors: number }> {
  const conns = await Promise.all(
    Array.from({ length: clients }, async () => {
      const c = await SmtpTestClient.connect({ port: w.ingressPort, timeout: 30_000 });
      await c.ehlo('bench.client');
      return c;
    }),
  );
  const lat: number[] = [];
  let errors = 0;
  const payload = SmtpTestClient.dataPayload(msg);
  const every = rate ? (clients / rate) * 1000 : 0;
  const t0 = performance.now();
  await Promise.all(
    conns.map(async (c, k) => {
      for (let i = 0; ; i++) {
        let start: number;
        if (rate) {
          start = t0 + (i + k / clients) * every;
          if (start - t0 >= ms) break;
          const wait = start - performance.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        } else {
          start = performance.now();
          if (start - t0 >= ms) break;
        }
        const mail = await c.cmd('MAIL FROM:<app@sender.test>');
        const rcpt = await c.cmd(`RCPT TO:<user${k}.${i}@nowhere.test>`);
        const data = await c.cmd('DATA');
        if (mail.code !== 250 || rcpt.code !== 250 || data.code !== 354) {
          errors++;
          await c.cmd('RSET');
          continue;
        }
        c.write(payload);
        const end = await c.reply();
        if (end.code !== 250) {
          errors++;
          continue;
        }
        lat.push(performance.now() - start);
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  await Promise.all(conns.map((c) => c.quit()));
  lat.sort((a, b) => a - b);
  return { rate: lat.length / secs, n: lat.length, p50: pct(lat, 0.5), p99: pct(lat, 0.99), errors };
}

// ---- 3. end to end -----------------------------------------------------------------------
async function e2e(dane: boolean, total: number, clients: number, size: number): Promise<{ ms: number; got: number; secure: number; verified: number }> {
  const w = await World.create();
  try {
    const mx = 'mx.dest.test';
    const ee = await makeSelfSigned({ dnsNames: [mx] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: ee.certPem }, keepBody: false });
    w.dns.addZone({ name: 'dest.test', secure: dane });
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: mx } });
    w.dns.add({ name: mx, type: 'A', data: rx.host });
    if (dane) w.dns.add({ name: `_${w.port}._tcp.${mx}`, type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(ee, 1, 1) } });
    await w.start({ log: { level: 'info' } });
    const ms = await timedDelivery(w.ingressPort, rx, clients, total, SmtpTestClient.dataPayload(body(size, 0)), 90_000);
    const verified = w.deliveries().filter((l) => l.dane === 'Verified').length;
    return { ms, got: rx.messages.length, secure: rx.messages.filter((m) => m.secure).length, verified };
  } finally {
    await w.close();
  }
}

// ---- 4. RSS ------------------------------------------------------------------------------
function child(args: string[], timeoutMs: number): Record<string, number> {
  const r = spawnSync(process.execPath, ['--expose-gc', join(here, 'rss.js'), ...args], { encoding: 'utf8', timeout: timeoutMs });
  if (r.status !== 0) throw new Error(`rss child ${args[0]} failed (${r.status ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

async function main(): Promise<void> {
  const started = Date.now();
  const cpus = os.cpus();
  say('# dane-relay benchmarks');
  say();
  say(
    'Generated by `npm run bench` (builds, then runs `node dist/test/bench/run.js`; source `test/bench/run.ts`). Each command rewrites only its own sections: this one the machine and sections 1–8 (section 8 alone: `npm run bench:mtasts`); `bench:dos`, `bench:cluster` and `bench:postfix` theirs (test/bench/sections.ts).',
  );
  say();
  say('## Machine');
  say();
  say(`- CPU: ${cpus[0]?.model ?? 'unknown'} × ${cpus.length}`);
  say(`- Memory: ${f1(os.totalmem() / 2 ** 30)} GiB total`);
  say(`- OS: ${os.type()} ${os.release()} (${os.arch()})`);
  say(`- Node: ${process.version}`);
  say(`- Date: ${new Date().toISOString()}`);
  const st = statfsSync(os.tmpdir());
  say(`- Temp dir / queue filesystem: \`${os.tmpdir()}\` (statfs type 0x${st.type.toString(16)}; the relay's queue_dir in these runs is under it)`);
  say();

  // 1
  const fs1 = fsyncRate(2000);
  say('## 1. Raw fsync-bound rate of this disk');
  say();
  say(`Loop for 2 s in a temp dir under \`${os.tmpdir()}\`: create file, write 4 KB, fsync, close, rename, fsync directory.`);
  say();
  say(`- **${f0(fs1.rate)} msgs/s** (${fs1.n} iterations, single-threaded, no batching)`);
  say(
    `- one iteration (what a message's 250 waits for at the least): p50 ${fs1.p50.toFixed(2)} ms, p99 ${fs1.p99.toFixed(2)} ms, max ${fs1.max.toFixed(2)} ms`,
  );
  say();

  // 2
  say('## 2. Ingest throughput and latency (4 KB messages)');
  say();
  say(
    'Relay in-process (test World: loopback DNS, fake clock, log level warn as a quiet production relay would run), scheduler stopped right after start so nothing is delivered: pure ingest (SMTP → spool, durable before 250). Each client has its own persistent SMTP connection: EHLO once, then MAIL/RCPT/DATA/body per message, no pipelining. Latency = MAIL sent → 250 after the final dot. ~3 s per level.',
  );
  say();
  say('| clients | msgs/s | ratio to (1) | p50 ms | p99 ms | messages | errors |');
  say('|---:|---:|---:|---:|---:|---:|---:|');
  const w = await World.create();
  const levels: Record<number, Awaited<ReturnType<typeof ingestLevel>>> = {};
  const paced: (Awaited<ReturnType<typeof ingestLevel>> & { share: number; offered: number })[] = [];
  try {
    await w.start({ delivery: { port: 9 }, log: { level: 'warn' } }); // no receiver: nothing is delivered anyway; production-like log volume
    await w.relay!.scheduler.stop(0);
    const msg = body(4096, 0);
    await ingestLevel(w, 4, 300, msg); // warm-up
    for (const n of [1, 10, 50]) {
      const r = await ingestLevel(w, n, 3000, msg);
      levels[n] = r;
      say(`| ${n} | ${f0(r.rate)} | ${(r.rate / fs1.rate).toFixed(2)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.n} | ${r.errors} |`);
    }
    // Where the p99 target holds: the same 50 clients offering a fixed share of what they reached flat out.
    const max = levels[50]!.rate;
    for (const share of [0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.75])
      paced.push({ share, offered: max * share, ...(await ingestLevel(w, 50, 3000, msg, max * share)) });
  } finally {
    await w.close();
  }
  const l50 = levels[50]!;
  const ratio = l50.rate / fs1.rate;
  say();
  say(`- Target: throughput ≥ 0.80 × (1) at 50 clients → ${ratio.toFixed(2)} × → **${ratio >= 0.8 ? 'PASS' : 'MISS'}**`);
  say(`- Target: p99 ≤ 10 ms at 50 clients → ${l50.p99.toFixed(2)} ms → **${l50.p99 <= 10 ? 'PASS' : 'MISS'}**`);
  // 50 closed-loop clients: mean latency = clients / throughput (Little's law), so the p99 target needs the rate to go up, not the wait down.
  say(
    `- Why: with 50 clients each waiting for its 250, mean latency is 50 / ${Math.round(l50.rate)} msgs/s = ${(50_000 / l50.rate).toFixed(1)} ms (Little's law); a 10 ms p99 needs ≥ ~5,000 msgs/s here, where the 50 clients and the relay share 2 cores.`,
  );
  say();
  say('The same 50 clients paced (each sends on a fixed schedule; together they offer a share of the rate above; latency from the scheduled start):');
  say();
  say('| 50 clients offering | msgs/s offered | msgs/s taken | p50 ms | p99 ms | messages | errors |');
  say('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of paced)
    say(`| ${Math.round(r.share * 100)} % of flat out | ${f0(r.offered)} | ${f0(r.rate)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.n} | ${r.errors} |`);
  const within = paced.filter((r) => r.p99 <= 10);
  const best = within.length ? within[within.length - 1]! : undefined;
  say();
  say(
    best
      ? `- p99 ≤ 10 ms at 50 clients holds up to ${f0(best.offered)} msgs/s offered (${Math.round(best.share * 100)} % of the flat-out rate); above that the 2 cores, shared with the clients, queue the work.`
      : '- p99 ≤ 10 ms at 50 clients: not reached at any paced rate measured here.',
  );
  // The light-load latency says what one message costs when nothing queues; the paced rows say how far that holds.
  const light = paced[0];
  if (light)
    say(
      `- Where the limit is: at ${Math.round(light.share * 100)} % load a message's 250 takes p50 ${light.p50.toFixed(2)} ms, p99 ${light.p99.toFixed(2)} ms: four SMTP round trips with the clients on the same 2 cores, plus the durable write (section 1: one create+fsync+rename+directory fsync p50 ${fs1.p50.toFixed(2)} ms, p99 ${fs1.p99.toFixed(2)} ms, max ${fs1.max.toFixed(2)} ms; a message may wait for the group commit already running, then its own). As the offered rate grows the 2 cores, shared by the 50 clients and the relay, queue the work, and flat out the mean latency is clients / rate (Little's law).`,
    );
  say(
    '- Note: (1) is one serial create/fsync/rename/dir-fsync per message; the spool group-commits directory fsyncs across concurrent messages, so ratios above 1 are possible with many clients. Client and relay share the same CPUs here.',
  );
  say();

  // 3
  const TOTAL = 2000,
    CLIENTS = 20,
    SIZE = 2048;
  say('## 3. End to end to a STARTTLS receiver on loopback');
  say();
  say(
    `${TOTAL} messages of 2 KB submitted by ${CLIENTS} clients (persistent connections); time from the first submission until the receiver (smtp-server, self-signed cert, bodies hashed not kept) has accepted all of them. Default delivery config (tls_level dane, concurrency 50, per_destination 10, 100 messages per connection). Fresh relay per scenario.`,
  );
  say();
  const opp = await e2e(false, TOTAL, CLIENTS, SIZE);
  const dn = await e2e(true, TOTAL, CLIENTS, SIZE);
  say('| destination | delivered | over TLS | DANE verified | seconds | msgs/s |');
  say('|---|---:|---:|---:|---:|---:|');
  say(
    `| opportunistic TLS (insecure zone) | ${opp.got}/${TOTAL} | ${opp.secure} | ${opp.verified} | ${(opp.ms / 1000).toFixed(2)} | ${f0(opp.got / (opp.ms / 1000))} |`,
  );
  say(`| DANE-EE 3 1 1 (secure zone) | ${dn.got}/${TOTAL} | ${dn.secure} | ${dn.verified} | ${(dn.ms / 1000).toFixed(2)} | ${f0(dn.got / (dn.ms / 1000))} |`);
  say();
  const cost = dn.got / dn.ms / (opp.got / opp.ms);
  say(`- DANE / opportunistic throughput ratio: **${cost.toFixed(2)}** (1.00 = DANE costs nothing)`);
  say();

  // 4
  const N = 100_000,
    WRITE_MS = 120_000;
  say('## 4. RSS with 100,000 messages queued');
  say();
  const qdir = mkdtempSync(join(os.tmpdir(), 'dane-relay-bench-rss-'));
  try {
    const wr = child(['write', qdir, String(N), String(WRITE_MS)], WRITE_MS + 60_000);
    const ld = child(['load', qdir], 180_000);
    const mb = ld.rss! / 2 ** 20;
    say(
      `Child process 1 enqueued messages (~460-byte body, 1 recipient) with \`Spool.enqueue\`, 64 concurrent, into a spool under \`${os.tmpdir()}\`, capped at ${WRITE_MS / 1000} s: **${f0(wr.written!)} written** in ${(wr.ms! / 1000).toFixed(1)} s (${f0(wr.written! / (wr.ms! / 1000))} msgs/s)${wr.written! < N ? ` — the cap was hit, so this is ${wr.written} messages, not ${N}` : ''}.`,
    );
    say(
      `A fresh \`node --expose-gc\` process then ran \`Spool.open\` + \`recover()\` (${(ld.recoverMs! / 1000).toFixed(1)} s) and added every message to a (stopped) \`Scheduler\`; after \`gc()\`:`,
    );
    say();
    say(`- Messages held: ${f0(ld.inScheduler!)}`);
    say(`- **RSS: ${f1(mb)} MB** (heap used ${f1(ld.heapUsed! / 2 ** 20)} MB; RSS before opening the spool ${f1(ld.baseRss! / 2 ** 20)} MB)`);
    say(`- Target: ≤ 200 MB${wr.written! < N ? ` (for ${f0(wr.written!)} messages)` : ''} → **${mb <= 200 ? 'PASS' : 'MISS'}**`);
  } catch (e) {
    say(`Failed: ${String(e)}`);
  } finally {
    rmSync(qdir, { recursive: true, force: true });
  }
  say();

  // 5, 6
  await tlsrptSection(say);
  await benchDnssec(say);
  await mimeSection(say, fs1.rate);
  await mtastsSection(say);
  say(`Whole run: ${((Date.now() - started) / 1000).toFixed(0)} s.`);
  // Sections 1-8 and the machine are this command's; the others (bench:postfix, bench:dos, bench:cluster) are kept.
  writeOwnSections(join(ROOT, 'BENCHMARKS.md'), out.join('\n') + '\n', (h) => /^## (Machine|\d+\. )/.test(h));
  console.log(`wrote ${join(ROOT, 'BENCHMARKS.md')}`);
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
