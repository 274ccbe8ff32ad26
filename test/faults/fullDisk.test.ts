/**
 * Full disk: the spool on a small tmpfs that fills up in the middle of the load. Submissions get
 * 452 4.3.1 (RFC 5321 §4.2.5, RFC 3463 §3.3) instead of a 250 the relay could not honour; nothing
 * acknowledged is lost; and once deliveries free space the relay accepts again by itself — no
 * restart, no operator.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { RelayProcess, freePort, sleep } from '../support/relayProcess.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { mountTmpfs, type Tmpfs } from '../support/tmpfs.js';
import { runLoad } from './support/load.js';
import { record, SCALE } from './support/report.js';

const MESSAGES = 400 * SCALE;
const CLIENTS = 10;
const BODY = 16 * 1024;
const DISK = '2m';

let dns: TestDns;
let rx: Receiver;
let dir: string;
/** mounted when the file is collected, so a machine without mount rights skips with the reason */
const fs: Tmpfs = mountTmpfs(DISK, 'dane-relay-fulldisk-', 'the full-disk case is SKIPPED (it needs a disk that really fills up)');

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  rx = await startReceiver({ host: '127.0.0.30', keepBody: false });
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-fulldisk-cfg-'));
}, 60_000);
afterAll(async () => {
  await rx?.close();
  await dns?.close();
  fs?.unmount();
  rmSync(dir, { recursive: true, force: true });
});

describe('full disk', () => {
  it.skipIf(!!fs.skip)(
    `spool on a ${DISK} tmpfs filling up under ${CLIENTS} clients: 452 4.3.1, nothing acknowledged lost, recovers by itself${fs.skip ? ` (skipped: ${fs.skip})` : ''}`,
    async () => {
      // The destination is down at first (nothing listens at its address), so the spool fills up.
      dns.add(
        { name: 'dest.test', type: 'MX', ttl: 0, data: { preference: 10, exchange: 'mx.dest.test' } },
        { name: 'mx.dest.test', type: 'A', ttl: 0, data: '127.0.0.31' },
      );
      const port = await freePort();
      const cfg = join(dir, 'relay.yml');
      const queue = join(fs.mnt, 'queue');
      writeFileSync(
        cfg,
        `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${queue}\n` +
          `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
          `delivery:\n  port: ${rx.port}\n  tls_level: may\n  timeouts:\n    connect: 1s\n` +
          `queue:\n  min_backoff: 1s\n  max_backoff: 1s\n  run_interval: 200ms\n` +
          `log:\n  level: warn\n`,
      );
      const relay = new RelayProcess(cfg, port);
      await relay.start();
      const pid = relay.pid;

      let fullSince = 0;
      const codes = new Set<string>();
      const ids = Array.from({ length: MESSAGES }, (_, n) => `f${n}`);
      const filler = 'x'.repeat(76) + '\r\n';
      const load = runLoad({
        port,
        clients: CLIENTS,
        ids,
        recipient: (id) => `${id}@dest.test`,
        body: (id) => `Subject: ${id}\r\nX-Test-Id: ${id}\r\n\r\n${filler.repeat(Math.ceil(BODY / filler.length))}`,
        onRefusal: (code, enhanced) => {
          codes.add(`${code} ${enhanced ?? ''}`.trim());
          if (code === 452 && !fullSince) fullSince = Date.now();
        },
      });
      // Wait until the disk is full and refusals have gone on for a while, then let the destination come back.
      // (Ends early when the load finished without ever seeing the disk full: that fails below.)
      let loadDone = false;
      void load.then(() => {
        loadDone = true;
      });
      while (!fullSince && !loadDone) await sleep(50);
      expect(fullSince).toBeGreaterThan(0);
      await sleep(1000);
      const deliveredWhileDown = rx.messages.length;
      dns.remove('mx.dest.test', 'A');
      dns.add({ name: 'mx.dest.test', type: 'A', ttl: 0, data: rx.host });
      const res = await load;

      const arrived = () => new Set(rx.messages.flatMap((m) => m.to).map((a) => a.split('@')[0]!));
      const missing = () => {
        const a = arrived();
        return [...res.acked].filter((id) => !a.has(id));
      };
      // Until every acknowledged message arrived, or the spool holds nothing more to deliver (then
      // whatever is missing is lost): a count, not a deadline, so a slow machine only takes longer.
      const spoolEmpty = () => readdirSync(join(queue, 'msg')).length === 0;
      while (missing().length > 0 && !spoolEmpty()) await sleep(200);
      const lost = missing();
      const got = rx.messages.flatMap((m) => m.to);
      const duplicated = got.length - new Set(got).size;
      const corrupt = readdirSync(join(queue, 'corrupt')).length;
      const refused452 = res.refusals.get(452) ?? 0;
      expect(relay.child!.exitCode).toBeNull();
      expect(relay.pid).toBe(pid); // recovered by itself: the same process
      await relay.kill('SIGTERM');

      record({
        case: `full disk (spool on a ${DISK} tmpfs)`,
        sent: MESSAGES,
        acknowledged: res.acked.size,
        delivered: new Set(got).size,
        duplicated,
        lost: lost.length,
        leaked: 0,
        crashes: 0,
        notes: `${refused452} submissions refused with 452 while full (codes seen: ${[...codes].join(', ')}); ${deliveredWhileDown} delivered before the destination came back; corrupt files ${corrupt}; same relay process throughout`,
      });
      expect(deliveredWhileDown).toBe(0);
      expect(codes).toContain('452 4.3.1');
      expect([...codes].every((c) => c.startsWith('452'))).toBe(true);
      expect(refused452).toBeGreaterThan(0);
      expect(res.acked.size).toBe(MESSAGES);
      expect(lost).toEqual([]);
      expect(corrupt).toBe(0);
    },
    180_000 * SCALE,
  );
});
