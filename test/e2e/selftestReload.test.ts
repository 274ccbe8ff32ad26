/**
 * Issue 21 item 3 on the real process: the DNSSEC self-test's probes come from the config
 * (`dns.dnssec_probe`, `dns.dnssec_bogus_probe`) and a SIGHUP applies new ones; /readyz adds the
 * self-test when a reload turns DANE on (it used to decide that once, at start, and said "not required").
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { RelayProcess, cpuMsOf, freePort, sleep } from '../support/relayProcess.js';
import { httpGet } from '../support/prom.js';

let dns: TestDns;
let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer({ selfTest: false });
  // a signed name of this network, an unsigned one, a broken one (the resolver SERVFAILs it, as a validating one does)
  dns.addZone({ name: 'probe.test', secure: true });
  dns.add({ name: 'probe.test', type: 'A', data: '192.0.2.53' }, { name: 'plain.test', type: 'A', data: '192.0.2.54' });
  dns.behave('broken.test', 'A', 'servfail');
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-selftest-reload-'));
});
afterAll(async () => {
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('DNSSEC self-test probes and /readyz across SIGHUP (issue 21 item 3)', () => {
  it('DANE-4 issue21: tls_level may → dane by SIGHUP puts the self-test into /readyz; a new dns.dnssec_probe is applied by SIGHUP and re-tested at once', async () => {
    const port = await freePort();
    const mport = await freePort();
    const file = join(dir, 'relay.yml');
    const config = (level: string, probe: string) =>
      `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: queue\n` +
      `dns: { mode: trust-ad, resolvers: ["${dns.server}"], timeout: 1s, attempts: 1, dnssec_probe: "${probe}", dnssec_bogus_probe: broken.test }\n` +
      `delivery: { tls_level: ${level} }\nmetrics: { listen: "127.0.0.1:${mport}", selftest_interval: 1h }\n`;
    writeFileSync(file, config('may', 'plain.test'));
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
    const selfTestLines = () => lines().filter((l) => /DNSSEC self-test|DNSSEC SELF-TEST/.test(String(l.msg)));
    const hup = async () => {
      const before = lines().filter((l) => l.msg === 'config reloaded').length;
      relay.child!.kill('SIGHUP');
      return until('config reloaded', () => lines().filter((l) => l.msg === 'config reloaded')[before]);
    };
    const readyz = () => httpGet('127.0.0.1', mport, '/readyz');
    try {
      // `may`: DNSSEC does not matter, the self-test does not run
      expect((await readyz()).body).toContain('selftest: ok: not required at this TLS level');
      expect(selfTestLines()).toEqual([]);

      // dane by SIGHUP, with an unsigned probe name: the test runs at once and fails; /readyz says so
      writeFileSync(file, config('dane', 'plain.test'));
      expect(await hup()).toMatchObject({ applied: ['delivery.tls_level'], restart_needed: [] });
      const failed = await until('self-test failure', () => selfTestLines()[0]);
      expect(failed).toMatchObject({
        why: 'reload introduced DANE',
        selftest: { ok: false, failure: 'not-secure', probes: { secure: 'plain.test', bogus: 'broken.test' } },
      });
      let r = await readyz();
      expect(r.status).toBe(503);
      expect(r.body).toContain('selftest: FAIL: DNSSEC self-test failed: the secure probe plain.test came back insecure, not secure');

      // a signed probe name by SIGHUP: applied (no restart), re-tested with the new name, /readyz 200
      writeFileSync(file, config('dane', 'probe.test'));
      expect(await hup()).toMatchObject({ applied: ['dns.dnssec_probe'], restart_needed: [] });
      await until('self-test pass', () => selfTestLines().find((l) => String(l.msg).startsWith('DNSSEC self-test passed again')));
      r = await readyz();
      expect(r.status).toBe(200);
      expect(r.body).toContain('selftest: ok: DNSSEC self-test passed (resolver validates: probe.test secure, broken.test rejected (servfail))');
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
  });
});
