/**
 * Issue 21 item 1 on the real process: SIGHUP re-reads the YAML configuration. `delivery.tls_level`
 * dane → dane-only takes effect (a signed domain without TLSA is then deferred, DANE-45), an invalid
 * file is refused whole and said, and a changed listen address is named as needing a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { makeSelfSigned } from '../support/pki.js';
import { RelayProcess, cpuMsOf, freePort, sleep } from '../support/relayProcess.js';
import { submit } from '../support/mail.js';

let dns: TestDns;
let rx: Receiver;
let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  const ee = await makeSelfSigned({ dnsNames: ['mx.notlsa.test'] });
  rx = await startReceiver({ host: '127.0.0.21', tls: { key: ee.keyPem, cert: ee.certPem } });
  // a signed zone whose MX host publishes no TLSA: `dane` sends over unauthenticated TLS, `dane-only` defers (DANE-45)
  dns.addZone({ name: 'notlsa.test', secure: true });
  dns.add({ name: 'notlsa.test', type: 'MX', data: { preference: 10, exchange: 'mx.notlsa.test' } }, { name: 'mx.notlsa.test', type: 'A', data: rx.host });
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-reload-'));
});
afterAll(async () => {
  await rx?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('SIGHUP re-reads the configuration (issue 21 item 1)', () => {
  it('DANE-45 issue21: tls_level dane → dane-only + SIGHUP defers a signed domain without TLSA; an invalid file is refused and said; a listen change needs a restart', async () => {
    const port = await freePort();
    const file = join(dir, 'relay.yml');
    const config = (level: string, listenPort = port) =>
      `listen: ["127.0.0.1:${listenPort}"]\nhostname: relay.test\nqueue_dir: queue\ndns: { mode: trust-ad, resolvers: ["${dns.server}"], timeout: 1s, attempts: 1 }\n` +
      `delivery: { port: ${rx.port}, tls_level: ${level} }\nqueue: { min_backoff: 1h }\n`;
    writeFileSync(file, config('dane'));
    const relay = new RelayProcess(file, port);
    await relay.start();
    const lines = () =>
      relay.output
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const until = async <T>(what: string, find: () => T | undefined): Promise<T> => {
      for (;;) {
        const v = find();
        if (v !== undefined) return v;
        if (!relay.running || (cpuMsOf(relay.pid) ?? 0) > 15_000) throw new Error(`no ${what} in: ${relay.output}`);
        await sleep(20);
      }
    };
    const outcome = (queueId: string) => until(`delivery of ${queueId}`, () => lines().find((l) => l.msg === 'delivery' && l.queue_id === queueId));
    const reloads = () => lines().filter((l) => l.msg === 'config reloaded' || String(l.msg).startsWith('CONFIG RELOAD REFUSED'));
    const hup = async () => {
      const before = reloads().length;
      relay.child!.kill('SIGHUP');
      return until('config reload outcome', () => reloads()[before]);
    };
    try {
      // dane: the message goes out (TLS without authentication: no TLSA)
      const first = await submit({ port, from: 'app@sender.test', to: ['a@notlsa.test'], subject: 'before' });
      expect(await outcome(first.queueId)).toMatchObject({ status: 'sent', tls_rule: 'delivery.tls_level=dane' });
      expect(rx.messages).toHaveLength(1);

      // dane-only + SIGHUP: the same destination is now deferred
      writeFileSync(file, config('dane-only'));
      expect(await hup()).toMatchObject({ msg: 'config reloaded', applied: ['delivery.tls_level'], restart_needed: [], tls_level: 'dane-only' });
      const second = await submit({ port, from: 'app@sender.test', to: ['b@notlsa.test'], subject: 'after' });
      const deferred = await outcome(second.queueId);
      expect(deferred).toMatchObject({ status: 'deferred', dsn: '4.7.5', tls_rule: 'delivery.tls_level=dane-only' });
      expect(deferred.reason).toMatch(/dane-only: no TLSA records/);
      expect(rx.messages).toHaveLength(1);

      // an invalid file: refused whole, the problem named, dane-only stays in force
      writeFileSync(file, config('dane').replace('tls_level: dane', 'tls_level: sometimes'));
      const refused = await hup();
      expect(refused.msg).toMatch(/^CONFIG RELOAD REFUSED: .*delivery\.tls_level.*the running configuration stays in force$/);
      const third = await submit({ port, from: 'app@sender.test', to: ['c@notlsa.test'], subject: 'still' });
      expect(await outcome(third.queueId)).toMatchObject({ status: 'deferred', tls_rule: 'delivery.tls_level=dane-only' });
      expect(rx.messages).toHaveLength(1);

      // a listen change: named as needing a restart, the old listener keeps serving
      const other = await freePort();
      writeFileSync(file, config('dane-only', other));
      expect(await hup()).toMatchObject({ msg: 'config reloaded', applied: [], restart_needed: ['listen'] });
      expect(lines().some((l) => l.config_key === 'listen' && String(l.msg).includes('restart needed'))).toBe(true);
      const fourth = await submit({ port, from: 'app@sender.test', to: ['d@notlsa.test'], subject: 'old listener' });
      expect(await outcome(fourth.queueId)).toMatchObject({ status: 'deferred', tls_rule: 'delivery.tls_level=dane-only' });
    } finally {
      await relay.kill('SIGTERM');
    }
  });
});
