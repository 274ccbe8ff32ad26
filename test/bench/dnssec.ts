/**
 * `npm run bench` section: in-process DNSSEC validation (dns.mode validate)
 * against a local Unbound validating the same zones, and the memory the
 * validated cache holds at 100,000 names (child process, dnssecCache.ts).
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTree, key, mailZone, type Tree } from '../dnssec/fixture.js';
import { StubResolver } from '../../src/dns/stub.js';
import type { Resolver } from '../../src/dns/types.js';
import { startUnbound, unboundAvailable } from '../support/unbound.js';

const here = dirname(fileURLToPath(import.meta.url));
const f0 = (n: number) => Math.round(n).toLocaleString('en-US');

/** MX, then A and TLSA of the exchange, like a delivery does; `domains` resolved `parallel` at a time. */
async function mailLookups(r: Resolver, domains: string[], parallel: number): Promise<{ perSec: number; lookups: number; failed: number }> {
  let next = 0;
  let lookups = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < domains.length) {
        const d = domains[next++]!;
        const mx = await r.lookup(d, 'MX');
        const host = mx.records[0]?.exchange ?? `mx.${d}`;
        const [a, tlsa] = await Promise.all([r.lookup(host, 'A'), r.lookup(`_25._tcp.${host}`, 'TLSA')]);
        lookups += 3;
        for (const x of [mx, a, tlsa]) if (x.error || x.status !== 'secure') failed++;
      }
    }),
  );
  return { perSec: lookups / ((performance.now() - t0) / 1000), lookups, failed };
}

export async function benchDnssec(say: (s?: string) => void): Promise<void> {
  say('## 6. DNSSEC validation (dns.mode validate) vs a local Unbound');
  say();
  const N = 400;
  const PAR = 8;
  let t: Tree | undefined;
  try {
    const zones = Array.from({ length: N + 1 }, (_, i) => mailZone(`b${i}.test`, { keys: [key(`b${i % 20}`, 13)] }));
    t = await buildTree(zones);
    const domains = Array.from({ length: N }, (_, i) => `b${i + 1}.test`);
    say(
      `${N} signed mail domains (ECDSAP256SHA256, NSEC) below a private signed root and TLD, served by the test's recursive look-alike on loopback (test/support/signedDnsServer.ts). One "mail lookup" = MX, then A and TLSA of the exchange (3 lookups), ${PAR} domains in parallel. *Cold*: first lookup of each domain (root and TLD keys already cached by one warm-up domain, so each domain costs its DS, DNSKEY, MX, A, TLSA). *Warm*: the same lookups again, answered from cache.`,
    );
    say();
    const ours = t.resolver({ maxCacheEntries: 100_000 });
    await mailLookups(ours, ['b0.test'], 1);
    const oc = await mailLookups(ours, domains, PAR);
    const ow = await mailLookups(ours, domains, PAR);
    let uc: Awaited<ReturnType<typeof mailLookups>> | undefined;
    let uw: typeof uc;
    let unboundNote = '';
    if (unboundAvailable()) {
      const ub = await startUnbound({ anchors: t.anchors, upstreamPort: t.dns.port });
      const client = new StubResolver({ servers: [ub.server], timeoutMs: 5000, attempts: 2, cache: false });
      try {
        await mailLookups(client, ['b0.test'], 1);
        uc = await mailLookups(client, domains, PAR);
        uw = await mailLookups(client, domains, PAR);
      } finally {
        await client.close();
        await ub.close();
      }
      unboundNote =
        'Unbound 1.17 (`unbound -d`, 1 thread, qname-minimisation off, the private anchor, the zones as a stub-zone for "."), asked by the relay\'s trust-ad StubResolver with its cache off, so every lookup is one UDP round trip to Unbound.';
    } else {
      unboundNote = 'unbound is not installed: no comparison.';
    }
    say('| | in-process validator lookups/s | Unbound lookups/s | ratio (ours / Unbound) | not secure |');
    say('|---|---:|---:|---:|---:|');
    const row = (label: string, o: typeof oc, u?: typeof oc) =>
      say(
        `| ${label} | ${f0(o.perSec)} | ${u ? f0(u.perSec) : '—'} | ${u ? (o.perSec / u.perSec).toFixed(2) : '—'} | ${o.failed}${u ? ` / ${u.failed}` : ''} |`,
      );
    row('cold cache', oc, uc);
    row('warm cache', ow, uw);
    say();
    say(`- ${unboundNote}`);
    say(
      '- Both validate the same chain; the look-alike upstream runs in this process and shares its CPU with the in-process validator (and with Unbound, on 2 cores). Warm in-process lookups skip the network entirely: an answer-cache hit is a Map lookup and a copy.',
    );
    say();
  } catch (e) {
    say(`Failed: ${String(e)}`);
    say();
  } finally {
    await t?.close();
  }

  say('### Memory of the validated cache at 100,000 names');
  say();
  const r = spawnSync(process.execPath, ['--expose-gc', join(here, 'dnssecCache.js'), '100000'], { encoding: 'utf8', timeout: 600_000 });
  if (r.status !== 0) {
    say(`Failed: ${r.stderr || r.signal}`);
    say();
    return;
  }
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
    names: number;
    entries: number;
    heapDelta: number;
    heapAfterClose: number;
    ms: number;
    secure: number;
  };
  say(
    `A fresh \`node --expose-gc\` process validated ${f0(m.names)} distinct names (\`hN.many.test\` A, each a secure wildcard answer with its NSEC proof) with \`maxCacheEntries\` 100,000 in ${(m.ms / 1000).toFixed(1)} s (${f0(m.names / (m.ms / 1000))} lookups/s, ${f0(m.secure)} secure), then measured the heap after \`gc()\`:`,
  );
  say();
  say(`- Cache entries held (answers + chain): ${f0(m.entries)}`);
  say(
    `- **Heap held by the cache: ${(m.heapDelta / 2 ** 20).toFixed(1)} MB** (${f0(m.heapDelta / m.names)} bytes per name); released on \`close()\` (heap change after close: ${(m.heapAfterClose / 2 ** 20).toFixed(1)} MB)`,
  );
  say();
}
