/**
 * /healthz and /readyz of a real relay process: not ready while the DNSSEC self-test fails
 * (DANE-4) or while the spool cannot be written, ready again when that is repaired; live all along.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { modesBind } from '../support/modes.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { submit } from '../support/mail.js';
import { RelayProcess, freePort, sleep } from '../support/relayProcess.js';
import { httpGet, scrape, value, type HttpReply } from '../support/prom.js';

let dns: TestDns;
let dir: string;
// As root nothing is read-only (CAP_DAC_OVERRIDE): the relay then runs without that capability,
// as the same user, so it reaches a checkout and TMPDIR wherever they are (issue 20).
const modes = modesBind();

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  dir = mkdtempSync(join(tmpdir(), 'dr-health-'));
}, 120_000);
afterAll(async () => {
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function until(f: () => Promise<HttpReply>, ok: (r: HttpReply) => boolean, ms = 15_000): Promise<HttpReply> {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await f().catch((e) => ({ status: 0, body: String(e), headers: {} }));
    if (ok(r) || Date.now() > deadline) return r;
    await sleep(100);
  }
}

describe('health endpoints of a relay process', () => {
  // the skip reason goes into the title so a skipped run says why
  it.skipIf(!!modes.skip)(
    `DANE-4 /readyz is 503 while the self-test fails or the spool is read-only, 200 once both are fine; /healthz stays 200${modes.skip ? ` (skipped: ${modes.skip})` : ''}`,
    async () => {
      // The resolver cannot answer the self-test's signed name yet.
      dns.behave('ietf.org', 'A', 'servfail');
      dns.behave('dnssec-failed.org', 'A', 'servfail');
      const port = await freePort();
      const mport = await freePort();
      const queue = join(dir, 'queue');
      mkdirSync(queue, { mode: 0o700 });
      const cfg = join(dir, 'relay.yml');
      writeFileSync(
        cfg,
        `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${queue}\n` +
          `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 500ms\n  attempts: 1\n` +
          `delivery:\n  tls_level: dane\n` +
          `metrics:\n  listen: "127.0.0.1:${mport}"\n  ready_cache: 200ms\n  selftest_interval: 300ms\n`,
        { mode: 0o644 },
      );
      const relay = new RelayProcess(cfg);
      await relay.start({}, modes.prefix);
      try {
        const get = (p: string) => () => httpGet('127.0.0.1', mport, p);
        expect((await get('/healthz')()).status).toBe(200);
        let r = await until(get('/readyz'), (x) => x.body.includes('selftest: FAIL'));
        expect(r.status).toBe(503);
        expect(r.body).toContain('could not answer the secure probe ietf.org (servfail SERVFAIL)');
        expect(r.body).toContain('spool: ok');

        // The resolver validates now: signed name secure (the broken name was SERVFAIL all along).
        dns.behave('ietf.org', 'A', undefined);
        dns.addZone({ name: 'ietf.org', secure: true });
        dns.add({ name: 'ietf.org', type: 'A', data: '192.0.2.1' });
        r = await until(get('/readyz'), (x) => x.status === 200);
        expect(r.status).toBe(200);
        expect(r.body).toContain('selftest: ok: DNSSEC self-test passed');

        // The spool becomes read-only (a remount, an operator mistake): where messages are committed…
        chmodSync(join(queue, 'msg'), 0o500);
        r = await until(get('/readyz'), (x) => x.status === 503);
        expect(r.status).toBe(503);
        expect(r.body).toContain(`spool: FAIL: spool not writable: ${join(queue, 'msg')}: EACCES`);
        chmodSync(join(queue, 'msg'), 0o700);
        r = await until(get('/readyz'), (x) => x.status === 200);
        expect(r.status).toBe(200);
        // …and where drafts are written: the write probe fails.
        chmodSync(join(queue, 'tmp'), 0o500);
        r = await until(get('/readyz'), (x) => x.status === 503);
        expect(r.status).toBe(503);
        expect(r.body).toMatch(/spool: FAIL: spool not writable: create .*EACCES/);
        expect((await get('/healthz')()).status).toBe(200);
        chmodSync(join(queue, 'tmp'), 0o700);
        r = await until(get('/readyz'), (x) => x.status === 200);
        expect(r.status).toBe(200);

        // The process's /metrics: its own series, and the default process series under the prefix.
        await submit({ port, from: 'a@sender.test', to: ['x@nowhere.test'] });
        const s = await scrape('127.0.0.1', mport);
        expect(value(s, 'dane_relay_messages_received_total')).toBe(1);
        expect(value(s, 'dane_relay_process_cpu_user_seconds_total')).toBeGreaterThan(0);
      } finally {
        expect(await relay.stop('SIGTERM')).toBe(0);
      }
    },
    60_000,
  );
});
