/**
 * Crash: 10,000 messages submitted by 20 clients while the relay — a real process — is killed with
 * SIGKILL at random moments (at least 20 times) and restarted each time. Every message answered
 * 250 reaches the receiver; duplicates are possible only for deliveries in flight at a kill (and
 * for messages whose 250 was lost in the kill, which the client sends again) and are counted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { RelayProcess, freePort, sleep } from '../support/relayProcess.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { mountTmpfs, type Tmpfs } from '../support/tmpfs.js';
import { readdirSync, readFileSync } from 'node:fs';
import { runLoad } from './support/load.js';
import { record, SCALE } from './support/report.js';

const MESSAGES = Number(process.env.FAULTS_CRASH_MESSAGES ?? 10_000 * SCALE);
const CLIENTS = 20;
const MIN_KILLS = Number(process.env.FAULTS_CRASH_KILLS ?? 20 * SCALE);
const DOMAINS = 10;
const CONCURRENCY = 50;

let dns: TestDns;
let rx: Receiver;
let dir: string;
let fs: Tmpfs;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  rx = await startReceiver({ host: '127.0.0.20', keepBody: false });
  for (let d = 0; d < DOMAINS; d++) dns.add({ name: `d${d}.test`, type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } });
  dns.add({ name: 'mx.dest.test', type: 'A', data: rx.host });
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-crash-'));
  // The spool on a tmpfs unless FAULTS_CRASH_DISK=1: a SIGKILL does not drop the page cache, so
  // what this proves — the order of rename, 250 and state writes — is the same on any file
  // system, and fsync costs nothing here. (Power loss is another matter, not tested here.)
  fs = process.env.FAULTS_CRASH_DISK
    ? { mnt: '', skip: 'disk', unmount: () => undefined }
    : mountTmpfs('2g', 'dane-relay-crash-spool-', 'the spool is on disk (slower; it proves the same ordering)');
}, 120_000);
afterAll(async () => {
  await rx?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
  fs?.unmount();
});

describe('crash: SIGKILL under load', () => {
  it(
    `${MESSAGES} messages from ${CLIENTS} clients, ≥${MIN_KILLS} SIGKILLs at random moments: every message acknowledged with 250 is delivered`,
    async () => {
      const port = await freePort();
      const cfg = join(dir, 'relay.yml');
      writeFileSync(
        cfg,
        `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${join(fs.mnt || dir, 'queue')}\n` +
          `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
          `delivery:\n  port: ${rx.port}\n  tls_level: may\n  concurrency: ${CONCURRENCY}\n  per_destination: 5\n` +
          `queue:\n  min_backoff: 1s\n  max_backoff: 2s\n  run_interval: 200ms\n` +
          `log:\n  level: ${process.env.FAULTS_LOG ?? 'warn'}\n`,
      );
      const relay = new RelayProcess(cfg, port);
      await relay.start();
      // each message has its own recipient: the receiver's envelope says which one arrived
      const ids = Array.from({ length: MESSAGES }, (_, n) => `m${n}`);
      const recipient = (id: string) => `${id}@d${Number(id.slice(1)) % DOMAINS}.test`;
      const t0 = Date.now();
      let loadDone = false;
      const load = runLoad({ port, clients: CLIENTS, ids, recipient, body: (id) => `Subject: ${id}\r\nX-Test-Id: ${id}\r\n\r\nbody ${id}\r\n` }).finally(() => {
        loadDone = true;
      });

      // MIN_KILLS kills at random moments while the load runs (and, if it is quick, during delivery).
      let kills = 0;
      const downMs: number[] = [];
      let duringStartup = 0;
      while (kills < MIN_KILLS) {
        await sleep(200 + Math.random() * (loadDone ? 400 : 1300));
        await relay.kill('SIGKILL');
        kills++;
        if (Math.random() < 0.25 && kills < MIN_KILLS) {
          // and now and then in the middle of start-up: spool recovery, lock, listener
          relay.launch();
          await sleep(Math.random() * 400);
          await relay.kill('SIGKILL');
          kills++;
          duringStartup++;
        }
        const d0 = Date.now();
        await relay.start();
        downMs.push(Date.now() - d0);
      }
      const res = await load;
      const submittedMs = Date.now() - t0;

      // Everything acknowledged must arrive; the last relay runs undisturbed.
      const deadline = Date.now() + 120_000;
      const arrived = () => new Set(rx.messages.flatMap((m) => m.to).map((a) => a.split('@')[0]!));
      // (the receiver lives in this process: keep the poll cheap or it starves the receiver)
      const missing = () => {
        const a = arrived();
        return [...res.acked].some((id) => !a.has(id));
      };
      while (Date.now() < deadline && missing()) await sleep(250);
      const got = rx.messages.flatMap((m) => m.to).map((a) => a.split('@')[0]!);
      const distinct = new Set(got);
      const lost = [...res.acked].filter((id) => !distinct.has(id));
      const duplicated = got.length - distinct.size;
      const resent = [...res.attempts.values()].filter((n) => n > 1).length;
      const code = await relay.kill('SIGTERM');
      if (process.env.FAULTS_LOG) {
        const lines = relay.output.split('\n');
        const dl = lines.filter((l) => /"msg":"delivery"/.test(l));
        console.log(`deliveries logged ${dl.length}; first ${dl[0]?.slice(0, 80)}; last ${dl[dl.length - 1]?.slice(0, 80)}`);
        console.log(
          lines
            .filter((l) => !/"msg":"(queued|delivery)"/.test(l) || /deferred/.test(l))
            .slice(0, 30)
            .join('\n'),
        );
      }
      if (lost.length) {
        // Say where the lost ones are: still in the spool (and in which state), or gone.
        const q = join(fs.mnt || dir, 'queue');
        const files = readdirSync(join(q, 'msg'));
        for (const id of lost.slice(0, 5)) {
          const f = files.find((x) => readFileSync(join(q, 'msg', x), 'latin1').includes(`X-Test-Id: ${id}\r`));
          let state = '';
          try {
            state = f ? readFileSync(join(q, 'state', `${f}.json`), 'utf8') : '';
          } catch {
            state = '(no state file: all pending)';
          }
          console.log(`lost ${id}: ${f ? `spool file ${f} state ${state}` : 'not in the spool'}`);
        }
      }

      record({
        case: 'crash: SIGKILL under load (relay process)',
        sent: MESSAGES,
        acknowledged: res.acked.size,
        delivered: distinct.size,
        duplicated,
        lost: lost.length,
        leaked: 0,
        crashes: 0,
        notes: `${kills} SIGKILLs (${duringStartup} during start-up/recovery), restarts ${Math.round(downMs.reduce((a, b) => a + b, 0) / downMs.length)} ms on average; ${CLIENTS} clients (${res.reconnects} connection attempts); ${resent} messages sent again after a kill; all submitted in ${Math.round(submittedMs / 1000)} s, delivered ${Math.round((Date.now() - t0) / 1000)} s after start`,
      });
      expect(res.acked.size).toBe(MESSAGES);
      expect(lost).toEqual([]);
      expect(kills).toBeGreaterThanOrEqual(MIN_KILLS);
      // A duplicate needs a delivery in flight at a kill (at most `concurrency` each) or a 250 lost in a kill.
      expect(duplicated).toBeLessThanOrEqual(kills * (CONCURRENCY + CLIENTS));
      expect(code).toBe(0);
    },
    600_000 * SCALE,
  );
});
