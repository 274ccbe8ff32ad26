import { afterEach, describe, expect, it } from 'vitest';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { StubResolver } from '../../src/dns/stub.js';
import { selfTest } from '../../src/dns/selftest.js';

let dns: TestDns | undefined;
let r: StubResolver | undefined;
afterEach(async () => {
  await r?.close();
  await dns?.close();
});

const names = { signed: 'signed.test', broken: 'broken.test' };

describe('DNSSEC start-up self-test', () => {
  it('DANE-4 a validating resolver: signed name secure, broken name SERVFAIL → ok', async () => {
    dns = await startDnsServer({
      zones: [{ name: 'signed.test', secure: true }],
      records: [
        { name: 'signed.test', type: 'A', data: '192.0.2.1' },
        { name: 'broken.test', type: 'A', data: '192.0.2.2' },
      ],
    });
    dns.behave('broken.test', 'A', 'servfail');
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    expect(await selfTest(r, names)).toMatchObject({ ok: true, signed: 'secure' });
  });
  it('DANE-4 a resolver that does not set AD → not ok, says it does not validate', async () => {
    dns = await startDnsServer({
      records: [
        { name: 'signed.test', type: 'A', data: '192.0.2.1' },
        { name: 'broken.test', type: 'A', data: '192.0.2.2' },
      ],
    });
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    const res = await selfTest(r, names);
    expect(res.ok).toBe(false);
    expect(res.detail).toContain('does not set AD');
  });
  it('DANE-4 a resolver that passes bogus answers → not ok', async () => {
    dns = await startDnsServer({
      zones: [
        { name: 'signed.test', secure: true },
        { name: 'broken.test', secure: true },
      ],
      records: [
        { name: 'signed.test', type: 'A', data: '192.0.2.1' },
        { name: 'broken.test', type: 'A', data: '192.0.2.2' },
      ],
    });
    r = new StubResolver({ servers: [dns.server], timeoutMs: 500, attempts: 1 });
    expect((await selfTest(r, names)).detail).toContain('does not reject bogus');
  });
  it('DANE-4 an unreachable resolver → not ok, says so', async () => {
    r = new StubResolver({ servers: ['127.0.0.1:9'], timeoutMs: 200, attempts: 1 });
    expect((await selfTest(r, names)).detail).toContain('did not resolve');
  });
});
