/**
 * What MTA-STS (issue 15) costs: section 8 of BENCHMARKS.md.
 * - End to end, one relay delivering side by side to an MTA-STS `enforce` destination (policy cached, WebPKI-checked
 *   STARTTLS) and to an opportunistic-TLS one (no policy): the ratio of their rates is the cost of enforcement.
 * - The policy cache (`src/mtasts/policies.ts` over `store.ts`) holding 100,000 domains: load time at start, memory,
 *   and the time of one delivery's `lookup` (TXT id check + stat of the policy file) with the policy cached.
 *
 * Used by run.ts (`npm run bench`); also runnable alone, writing only section 8 of BENCHMARKS.md:
 *   npm run bench:mtasts                          (builds, then `node dist/test/bench/mtasts.js`)
 *   node dist/test/bench/mtasts.js --dry          prints the section, writes nothing
 *   BENCH_STS_TOTAL=400 BENCH_STS_RUNS=1 BENCH_STS_DOMAINS=5000 node dist/test/bench/mtasts.js --dry   (a small smoke run)
 * The cache figures come from a child process (`node --expose-gc dist/test/bench/mtasts.js cache <dir> <n>`), so the
 * heap holds nothing but the cache and `gc()` can be asked for.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SmtpTestClient } from '../support/submit.js';
import { World } from '../support/world.js';
import { chainPem, makeCa, makeLeaf } from '../support/pki.js';
import { startPolicyHost } from '../support/stsHost.js';
import { benchBody, sideBySideRates } from './load.js';
import { writeOwnSections } from './sections.js';
import { PolicyStore, STORE_FORMAT, type CachedPolicy } from '../../src/mtasts/store.js';
import { StsPolicies } from '../../src/mtasts/policies.js';
import { ensurePrivateSubdir } from '../../src/files/private.js';
import type { DnsAnswer, QueryType, Resolver } from '../../src/dns/types.js';

const here = dirname(fileURLToPath(import.meta.url));
const num = (name: string, dflt: number) => (process.env[name] ? Number(process.env[name]) : dflt);

/** One relay, sts.test (enforce, cached) and opp.test (no policy) side by side; rates in msgs/s. */
async function sideBySide(total: number, clients: number, size: number): Promise<{ sts: number; opp: number; stsVerified: number; oppTls: number }> {
  const w = await World.create();
  const ca = await makeCa({ cn: 'bench MTA-STS CA' });
  writeFileSync(join(w.dir, 'sts-ca.pem'), ca.certPem);
  const policyLeaf = await makeLeaf(ca, { dnsNames: ['mta-sts.sts.test'] });
  const host = await startPolicyHost(
    { key: policyLeaf.keyPem, cert: chainPem(policyLeaf) },
    { body: 'version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 604800\n' },
  );
  try {
    const rx = async (name: string) => {
      const leaf = await makeLeaf(ca, { dnsNames: [name] });
      return w.receiver({ tls: { key: leaf.keyPem, cert: chainPem(leaf) }, keepBody: false });
    };
    const sts = await rx('mx.sts.test');
    const opp = await rx('mx.opp.test');
    for (const [d, r] of [
      ['sts.test', sts],
      ['opp.test', opp],
    ] as const)
      w.dns.add({ name: d, type: 'MX', data: { preference: 10, exchange: `mx.${d}` } }, { name: `mx.${d}`, type: 'A', data: r.host });
    w.dns.add({ name: '_mta-sts.sts.test', type: 'TXT', data: 'v=STSv1; id=bench1' }, { name: 'mta-sts.sts.test', type: 'A', data: '127.0.0.1' });
    await w.start({ log: { level: 'info' }, mta_sts: { ca_file: 'sts-ca.pem', port: host.port } });
    // Warm-up: one message each, so the policy is fetched and cached before the timed part (a cached policy is the steady state).
    const c = await SmtpTestClient.connect({ port: w.ingressPort });
    await c.ehlo('bench.client');
    for (const d of ['sts.test', 'opp.test']) await c.sendMail('app@sender.test', [`warm@${d}`], benchBody(size, 0));
    await c.quit();
    await sts.waitFor(1);
    await opp.waitFor(1);
    await w.settle();
    const r = await sideBySideRates(w.ingressPort, sts, opp, {
      clients,
      total,
      payload: SmtpTestClient.dataPayload(benchBody(size, 1)),
      rcpt: (i, side) => `user${i}@${side === 'a' ? 'sts' : 'opp'}.test`,
      timeoutMs: 180_000,
    });
    // the timed messages only (user<i>@…), not the warm-up ones
    const timed = (to: unknown) => String(to).startsWith('user');
    return {
      sts: r.rateA,
      opp: r.rateB,
      stsVerified: w.deliveries().filter((l) => l.status === 'sent' && timed(l.to) && String(l.to).endsWith('@sts.test') && l.dane === 'Verified').length,
      oppTls: opp.messages.filter((m) => m.secure && m.to.some(timed)).length,
    };
  } finally {
    await w.close();
    await host.close();
  }
}

/** A resolver answering every `_mta-sts.` TXT question from memory (the relay's CachingResolver answers a cached one the same way). */
function memoryResolver(): Resolver {
  return {
    lookup<T extends QueryType>(name: string, type: T): Promise<DnsAnswer<T>> {
      const records = type === 'TXT' && name.startsWith('_mta-sts.') ? ['v=STSv1; id=bench1'] : [];
      return Promise.resolve({
        qname: name,
        qtype: type,
        canonicalName: name,
        chain: [],
        status: 'insecure',
        firstStatus: 'insecure',
        insecureReason: 'unsigned-delegation',
        rcode: 'NOERROR',
        records,
        ttl: 300,
      } as unknown as DnsAnswer<T>);
    },
    close: () => Promise.resolve(),
  };
}

const domainOf = (i: number) => `d${i}.bench.test`;

/** Child: `n` cached policies under `dir`, then load, memory and lookups; prints one JSON line. */
async function cacheChild(dir: string, n: number): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const store = new PolicyStore(dir);
  const sub = await ensurePrivateSubdir(dir, 'mta-sts');
  const now = Date.now();
  // Set-up, not measured: the files as store.write makes them, written without its fsync per file.
  for (let i = 0; i < n; i++) {
    const d = domainOf(i);
    const entry: CachedPolicy = {
      domain: d,
      id: 'bench1',
      fetchedAt: now,
      expiresAt: now + 604800_000,
      lastUsed: now,
      policy: {
        mode: 'enforce',
        maxAge: 604800,
        mx: [`mx1.${d}`, `*.mx.${d}`],
        lines: ['version: STSv1', 'mode: enforce', `mx: mx1.${d}`, `mx: *.mx.${d}`, 'max_age: 604800'],
      },
    };
    writeFileSync(join(sub, `${d}.json`), `${JSON.stringify({ format: STORE_FORMAT, ...entry })}\n`, { mode: 0o600 });
  }
  gc();
  const base = process.memoryUsage();
  const policies = new StsPolicies({
    store,
    resolver: memoryResolver(),
    fetch: () => Promise.resolve({ ok: false, resultType: 'sts-policy-fetch-error', reason: 'bench: no fetch expected' }),
  });
  const t0 = performance.now();
  const loaded = await policies.load();
  const loadMs = performance.now() - t0;
  gc();
  const after = process.memoryUsage();
  // Lookups as deliveries make them: a random cached domain each, one at a time.
  const m = Math.min(n, 20_000);
  const times: number[] = [];
  let fetched = 0;
  let x = 12345;
  for (let k = 0; k < m; k++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    const s = performance.now();
    const r = await policies.lookup(domainOf(x % n));
    times.push(performance.now() - s);
    if (r.fetch !== 'cached' || r.applied?.policy.mode !== 'enforce') fetched++;
  }
  times.sort((a, b) => a - b);
  const at = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!;
  process.stdout.write(
    `${JSON.stringify({
      n,
      loaded,
      loadMs,
      heapDelta: after.heapUsed - base.heapUsed,
      rssDelta: after.rss - base.rss,
      rss: after.rss,
      lookups: m,
      notCached: fetched,
      meanUs: (times.reduce((a, b) => a + b, 0) / m) * 1000,
      p50Us: at(0.5) * 1000,
      p99Us: at(0.99) * 1000,
    })}\n`,
  );
}

export async function mtastsSection(say: (s?: string) => void): Promise<void> {
  const TOTAL = num('BENCH_STS_TOTAL', 2000),
    CLIENTS = 20,
    SIZE = 2048,
    RUNS = num('BENCH_STS_RUNS', 3),
    DOMAINS = num('BENCH_STS_DOMAINS', 100_000);
  say('## 8. MTA-STS: enforcement end to end, and the policy cache');
  say();
  say(
    `End to end, one relay delivering to two destinations side by side (insecure zone, both receivers with a certificate from the same test CA, bodies hashed not kept): ${TOTAL} messages of 2 KB by ${CLIENTS} clients, alternating between \`sts.test\` — MTA-STS \`enforce\`, its policy fetched once by a warm-up message and cached, so every session checks the TXT id, matches the MX against the policy and validates the certificate under WebPKI for the MX name — and \`opp.test\` — no policy, opportunistic TLS. Both halves share the machine, the spool and the scheduler, so the ratio of their rates is the cost of enforcing MTA-STS. ${RUNS} run(s), median reported.`,
  );
  say();
  say('| run | enforce msgs/s | opportunistic msgs/s | ratio enforce/opportunistic | enforce sent Verified | opportunistic over TLS |');
  say('|---:|---:|---:|---:|---:|---:|');
  const ratios: number[] = [];
  for (let i = 1; i <= RUNS; i++) {
    const r = await sideBySide(TOTAL, CLIENTS, SIZE);
    ratios.push(r.sts / r.opp);
    say(`| ${i} | ${r.sts.toFixed(0)} | ${r.opp.toFixed(0)} | ${(r.sts / r.opp).toFixed(3)} | ${r.stsVerified}/${TOTAL / 2} | ${r.oppTls}/${TOTAL / 2} |`);
  }
  ratios.sort((a, b) => a - b);
  const median = ratios[Math.floor(ratios.length / 2)]!;
  say();
  say(`- Median ratio enforce/opportunistic: **${median.toFixed(3)}** → target ≥ 0.95 → **${median >= 0.95 ? 'PASS' : 'MISS'}**`);
  say();
  const dir = mkdtempSync(join(os.tmpdir(), 'dane-relay-bench-sts-'));
  try {
    const r = spawnSync(process.execPath, ['--expose-gc', join(here, 'mtasts.js'), 'cache', dir, String(DOMAINS)], { encoding: 'utf8', timeout: 900_000 });
    if (r.status !== 0) throw new Error(`cache child failed (${r.status ?? r.signal}): ${r.stderr}`);
    const c = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
    say(
      `The policy cache with ${c.n!.toLocaleString('en-US')} domains (each an \`enforce\` policy with two mx patterns, one 0600 file under \`queue_dir/mta-sts/\`), in a fresh \`node --expose-gc\` process: \`StsPolicies.load()\` as at start, then ${c.lookups!.toLocaleString('en-US')} \`lookup()\`s of random cached domains one after another, as deliveries make them (the TXT id checked against a resolver answering from memory, as the relay's DNS cache does for a cached record; the policy file stat'ed to notice \`mta-sts refresh|purge\` beside the relay; no fetch).`,
    );
    say();
    say('| measure | value |');
    say('|---|---:|');
    say(`| load at start (read and parse every file) | ${(c.loadMs! / 1000).toFixed(2)} s (${((c.loadMs! * 1000) / c.n!).toFixed(0)} µs per domain) |`);
    say(`| heap held by the cache after gc | ${(c.heapDelta! / 2 ** 20).toFixed(1)} MB (${(c.heapDelta! / c.n!).toFixed(0)} bytes per domain) |`);
    say(`| RSS growth / RSS | ${(c.rssDelta! / 2 ** 20).toFixed(1)} MB / ${(c.rss! / 2 ** 20).toFixed(1)} MB |`);
    say(`| lookup of a cached policy: mean / p50 / p99 | ${c.meanUs!.toFixed(1)} / ${c.p50Us!.toFixed(1)} / ${c.p99Us!.toFixed(1)} µs |`);
    say(`| lookups that were not a cache hit | ${c.notCached} |`);
  } catch (e) {
    say(`Failed: ${String(e)}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  say();
}

async function alone(): Promise<void> {
  const out: string[] = [];
  const say = (s = '') => {
    out.push(s);
    console.log(s);
  };
  await mtastsSection(say);
  if (process.argv.includes('--dry')) {
    console.log('(--dry: BENCHMARKS.md not written)');
  } else {
    const file = join(here, '..', '..', '..', 'BENCHMARKS.md');
    writeOwnSections(file, out.join('\n') + '\n', (h) => /^## 8\. /.test(h));
    console.log(`wrote section 8 of ${file}`);
  }
  process.exit(0);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [mode, dir, n] = process.argv.slice(2);
  (mode === 'cache' ? cacheChild(dir!, Number(n)) : alone()).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
