/**
 * Garbage SMTP on ingress: ≥100,000 mutated command sequences and bodies (random lines, NULs,
 * long lines, bad sequence, bad syntax, hostile bodies with bare LF/CR and NULs, smuggling
 * look-alikes, pipelined floods, huge headers, byte-mutated transactions) over real loopback
 * connections — many sequences per connection, several connections in parallel — against the
 * relay as a real process. No crash, the right 5xx for each class of input, RSS bounded, and a
 * well-formed message is still accepted and delivered afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { RelayProcess, freePort } from '../support/relayProcess.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { SmtpTestClient } from '../support/submit.js';
import { submit } from '../support/mail.js';
import { mountTmpfs, type Tmpfs } from '../support/tmpfs.js';
import { generate, type Kind } from './support/smtpFuzz.js';
import { record, SCALE } from './support/report.js';
import { rng, SEED } from './support/rng.js';

const SEQUENCES = Number(process.env.FAULTS_SMTP_SEQUENCES ?? 100_000 * SCALE);
const CONNECTIONS = 32;
const MAX_SIZE = 50_000;
/** RSS ceiling for the relay process: it holds no message in memory, whatever the input. */
const RSS_LIMIT = 400 * 1024 * 1024;

let dns: TestDns;
let rx: Receiver;
let relay: RelayProcess;
let fs: Tmpfs;
let dir: string;
let port: number;

beforeAll(async () => {
  ensureBuilt();
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-smtpfuzz-'));
  // The spool on a tmpfs: the accepted fuzz messages are real commits, but fsync is free there.
  fs = mountTmpfs('2g', 'dane-relay-smtpfuzz-spool-', 'the spool is on disk (slower, and removing its ~20,000 files at the end takes a while)');
  dns = await startDnsServer();
  rx = await startReceiver({ host: '127.0.0.3' });
  dns.add({ name: 'good.test', type: 'MX', data: { preference: 10, exchange: 'mx.good.test' } }, { name: 'mx.good.test', type: 'A', data: rx.host });
  port = await freePort();
  const cfg = join(dir, 'relay.yml');
  writeFileSync(
    cfg,
    `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${join(fs.mnt || dir, 'queue')}\n` +
      `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
      `delivery:\n  port: ${rx.port}\n  tls_level: may\n  timeouts:\n    connect: 1s\n` +
      `ingress:\n  max_message_size: ${MAX_SIZE}\n  max_connections: 50\n` +
      `queue:\n  min_backoff: 1h\n  run_interval: 1s\n` +
      `log:\n  level: error\n`,
  );
  relay = new RelayProcess(cfg, port);
  await relay.start();
}, 120_000);

afterAll(async () => {
  if (relay?.child) await relay.kill('SIGKILL');
  await rx?.close();
  await dns?.close();
  fs?.unmount();
  rmSync(dir, { recursive: true, force: true });
  // Without a tmpfs the spool's ~20,000 deferred fuzz files are on disk: their removal takes as long
  // as the disk and the machine's load make it, which the default 30 s hook bound does not cover.
}, 600_000);

describe(`garbage SMTP on ingress (seed ${SEED})`, () => {
  it(
    `${SEQUENCES} mutated sequences over ${CONNECTIONS} parallel connections: no crash, the right 5xx, RSS bounded, still accepts mail`,
    async () => {
      const rand = rng(SEED);
      let next = 0;
      const st = {
        sequences: 0,
        violations: 0,
        malformed: 0,
        hangs: 0,
        reconnects: 0,
        closedByServer: 0,
        byKind: {} as Partial<Record<Kind, number>>,
        examples: [] as string[],
      };
      const rss: number[] = [];
      const sampler = setInterval(() => {
        const v = relay.rss();
        if (v) rss.push(v);
      }, 200);
      const pid = relay.pid;
      // Fuzz recipients go to an address literal where nothing listens: accepted, queued, deferred.
      const rcpt = 'fuzz@[127.0.0.2]';

      const worker = async () => {
        let c: SmtpTestClient | undefined;
        while (next < SEQUENCES) {
          if (!c) {
            c = await SmtpTestClient.connect({ port, timeout: 10_000 });
            st.reconnects++;
            await c.cmd('EHLO fuzzer.test');
          }
          next++;
          const seq = generate(rand, rcpt, MAX_SIZE);
          st.byKind[seq.kind] = (st.byKind[seq.kind] ?? 0) + 1;
          for (const ch of seq.chunks) c.write(ch);
          // Sync point: end a DATA the mutation may have opened, RSET, and HELP (214, unique).
          c.write(`${seq.mayBeInData ? '\r\n.\r\n' : ''}RSET\r\nHELP\r\n`);
          const codes: number[] = [];
          let closed = false;
          for (;;) {
            try {
              const r = await c.reply();
              if (r.code === 214) break;
              codes.push(r.code);
              if (r.code === 421) {
                closed = true;
                break;
              }
            } catch (e) {
              const msg = (e as Error).message;
              if (/malformed reply/.test(msg)) {
                st.malformed++;
                if (st.examples.length < 8) st.examples.push(`${seq.kind}: ${msg}`);
              } else if (/no complete reply/.test(msg)) {
                st.hangs++;
                if (st.examples.length < 8) st.examples.push(`${seq.kind}: ${msg.slice(0, 200)}`);
              }
              closed = true;
              break;
            }
          }
          st.sequences++;
          if (closed) {
            st.closedByServer++;
            c.destroy();
            c = undefined;
          } else codes.pop(); // the RSET's 250
          const v = seq.check(codes, closed);
          if (v) {
            st.violations++;
            if (st.examples.length < 8) st.examples.push(`${seq.kind}: ${v}`);
          }
        }
        c?.destroy();
      };
      const t0 = Date.now();
      try {
        await Promise.all(Array.from({ length: CONNECTIONS }, worker));
      } finally {
        clearInterval(sampler);
      }
      const ms = Date.now() - t0;
      const peak = Math.max(...rss);
      console.log(`[smtp fuzz] ${JSON.stringify({ ...st, examples: undefined, ms, peakRssMb: Math.round(peak / 1048576) })}`);
      for (const e of st.examples) console.log(e);

      // Still the same process, still serving: a well-formed message is accepted and delivered.
      expect(relay.child!.exitCode).toBeNull();
      expect(relay.pid).toBe(pid);
      const ok = await submit({
        port,
        from: 'app@sender.test',
        to: ['user@good.test'],
        raw: 'Subject: after the storm\r\nX-Test-Id: after-fuzz\r\n\r\nstill here\r\n',
      });
      expect(ok.response).toMatch(/^250/);
      await rx.waitFor(1, 30_000);
      expect(rx.messages[0]!.body.toString()).toContain('X-Test-Id: after-fuzz');

      record({
        case: 'garbage SMTP on ingress (mutated sequences and bodies)',
        sent: 1,
        acknowledged: 1,
        delivered: rx.messages.length,
        lost: 0,
        leaked: 0,
        fuzzed: st.sequences,
        crashes: relay.child!.exitCode === null ? 0 : 1,
        notes: `${CONNECTIONS} parallel connections, ${st.reconnects} connections in all (${st.closedByServer} closed by the server, e.g. 421 after 10 unrecognised commands); wrong replies ${st.violations}, malformed replies ${st.malformed}, hangs ${st.hangs}; peak RSS ${Math.round(peak / 1048576)} MB over ${rss.length} samples; ${Math.round(ms / 1000)} s; seed ${SEED}`,
      });
      expect(st.sequences).toBeGreaterThanOrEqual(SEQUENCES);
      expect({ violations: st.violations, malformed: st.malformed, hangs: st.hangs }).toEqual({ violations: 0, malformed: 0, hangs: 0 });
      expect(peak).toBeLessThan(RSS_LIMIT);
    },
    600_000 * SCALE,
  );
});
