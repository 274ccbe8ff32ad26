/**
 * Child process for the DNSSEC cache-memory figure of `npm run bench`:
 *   node --expose-gc dist/test/bench/dnssecCache.js <names>  → prints {"names":n,"entries":e,"heapDelta":bytes,...}
 */
import { buildTree, key } from '../dnssec/fixture.js';
import { Zone, rd } from '../support/signer.js';

const gc = (globalThis as { gc?: () => void }).gc!;
const names = Number(process.argv[2] ?? 100_000);

async function main(): Promise<void> {
  const many = new Zone({ name: 'many.test', keys: [key('many', 13)] });
  many.add('*.many.test', 'A', rd.A('192.0.2.80'));
  const t = await buildTree([many]);
  const r = t.resolver({ maxCacheEntries: names });
  await r.lookup('h0.many.test', 'A');
  t.dns.queries.length = 0;
  gc();
  const before = process.memoryUsage().heapUsed;
  const t0 = Date.now();
  let next = 0;
  let secure = 0;
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < names) {
        const i = next++;
        const a = await r.lookup(`h${i}.many.test`, 'A');
        if (a.status === 'secure' && !a.error) secure++;
        if ((i & 1023) === 0) t.dns.queries.length = 0; // the test server's query log is not the cache
      }
    }),
  );
  const ms = Date.now() - t0;
  t.dns.queries.length = 0;
  gc();
  const after = process.memoryUsage().heapUsed;
  const entries = r.cacheSize;
  await r.close();
  gc();
  const closed = process.memoryUsage().heapUsed;
  console.log(JSON.stringify({ names, entries, heapDelta: after - before, heapAfterClose: closed - before, ms, secure }));
  await t.close();
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
