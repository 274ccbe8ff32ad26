/**
 * Child process for the RSS figure of `npm run bench`.
 *   node --expose-gc dist/test/bench/rss.js write <dir> <count> <maxMs>  → prints {"written":n,"ms":t}
 *   node --expose-gc dist/test/bench/rss.js load <dir>                   → prints {"recovered":n,"rss":bytes,...}
 */
import { Spool } from '../../src/spool/spool.js';
import type { Envelope, QueuedMessage } from '../../src/spool/types.js';
import { Scheduler } from '../../src/scheduler/scheduler.js';

const [mode, dir, countArg, maxMsArg] = process.argv.slice(2);
const quiet = { warn: () => undefined };

async function write(): Promise<void> {
  const count = Number(countArg);
  const maxMs = Number(maxMsArg);
  const spool = await Spool.open(dir!, { log: quiet });
  const t0 = Date.now();
  let next = 0;
  let written = 0;
  const worker = async () => {
    while (next < count && Date.now() - t0 < maxMs) {
      const i = next++;
      const env: Envelope = {
        from: `app${i % 100}@sender.test`,
        recipients: [`user${i}@dest${i % 50}.test`],
        smtputf8: false,
        eightBit: false,
        client: { address: '127.0.0.1', name: 'bench.client' },
        received: Date.now(),
        kind: 'normal',
      };
      const body = Buffer.from(`From: app@sender.test\r\nTo: user${i}@dest.test\r\nSubject: bench ${i}\r\n\r\n${'x'.repeat(400)}\r\n`);
      await spool.enqueue(env, body);
      written++;
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  const ms = Date.now() - t0;
  await spool.close();
  process.stdout.write(JSON.stringify({ written, ms }) + '\n');
}

async function load(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const base = process.memoryUsage().rss;
  const t0 = Date.now();
  const spool = await Spool.open(dir!, { log: quiet });
  const recovered: QueuedMessage[] = await spool.recover();
  const recoverMs = Date.now() - t0;
  // Hold them the way the relay does: in a Scheduler (stopped, so nothing is delivered).
  const noop = () => undefined;
  const log = { info: noop, warn: noop, error: noop, debug: noop, trace: noop, fatal: noop, child: () => log };
  const scheduler = new Scheduler({
    spool,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    delivery: {} as any,
    config: {
      concurrency: 50,
      per_destination: 10,
      run_interval: 10_000,
      min_backoff: 1_800_000,
      max_backoff: 14_400_000,
      lifetime: 5 * 86_400_000,
      delay_warning: 4 * 3_600_000,
    },
    hostname: 'relay.test',
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    log: log as any,
    now: Date.now,
  });
  await scheduler.stop(0);
  for (const m of recovered) scheduler.add(m);
  gc?.();
  await new Promise((r) => setTimeout(r, 100));
  gc?.();
  const mu = process.memoryUsage();
  process.stdout.write(
    JSON.stringify({ recovered: recovered.length, inScheduler: scheduler.size, recoverMs, rss: mu.rss, heapUsed: mu.heapUsed, baseRss: base }) + '\n',
  );
  await spool.close();
}

(mode === 'write' ? write() : load()).catch((e) => {
  process.stderr.write(String(e?.stack ?? e) + '\n');
  process.exit(1);
});
