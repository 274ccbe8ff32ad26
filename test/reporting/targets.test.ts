/**
 * Issue 13: a destination's TLSRPT `rua` must not make the relay POST or mail into the operator's own
 * network, and https report hosts are looked up through the relay's own Resolver (not getaddrinfo),
 * with the connection made to the checked address under the URL's name (SNI, Host, certificate).
 * Real loopback https servers (test PKI), a real DNS server on loopback, the relay's StubResolver.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { makeCa, makeLeaf, chainPem, type Issued } from '../support/pki.js';
import { StubResolver } from '../../src/dns/stub.js';
import { HttpsSender } from '../../src/reporting/tlsrpt/https.js';
import { httpsTarget, mailtoTargetProblem, specialPurpose } from '../../src/reporting/tlsrpt/targets.js';

interface Collector {
  port: number;
  requests: { host?: string; servername?: string; path?: string }[];
  close(): Promise<void>;
}

let ca: Issued;
let dns: TestDns;
let resolver: StubResolver;
const servers: Collector[] = [];
const dirs: string[] = [];

/** An https report collector on 127.0.0.1 whose certificate names `names`. */
async function collector(names: string[]): Promise<Collector> {
  const leaf = await makeLeaf(ca, { dnsNames: names, cn: names[0] });
  const c: Collector = { port: 0, requests: [], close: async () => undefined };
  const server = https.createServer({ key: leaf.keyPem, cert: chainPem(leaf) }, (req, res) => {
    c.requests.push({ host: req.headers.host, servername: (req.socket as TLSSocket).servername || undefined, path: req.url });
    req.resume();
    req.on('end', () => res.writeHead(201).end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  c.port = (server.address() as AddressInfo).port;
  c.close = async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  };
  servers.push(c);
  return c;
}

const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
const log = {
  info() {},
  warn: (obj: object, msg: string) => {
    warnings.push({ obj: obj as Record<string, unknown>, msg });
  },
};

function sender(allowPrivateTargets: boolean): HttpsSender {
  const dir = mkdtempSync(join(tmpdir(), 'tlsrpt-targets-'));
  dirs.push(dir);
  return new HttpsSender(dir, { ca: ca.certPem, now: Date.now, log, resolver, allowPrivateTargets, timeoutMs: 3000 });
}
const job = (urls: string[]) => ({
  id: `r${Math.random().toString(36).slice(2)}`,
  day: '2026-01-01',
  domain: 'dest.test',
  filename: 'x.json.gz',
  urls,
  body: gzipSync('{}').toString('base64'),
});

beforeAll(async () => {
  ca = await makeCa({ cn: 'TLSRPT targets test CA' });
  dns = await startDnsServer();
  dns.add(
    { name: 'collector.test', type: 'A', data: '127.0.0.1' },
    { name: 'fresh-collector.test', type: 'A', data: '127.0.0.1' },
    { name: 'private.test', type: 'A', data: '10.1.2.3' },
    { name: 'mixed.test', type: 'A', data: '198.51.100.7' }, // documentation block: special-purpose too
    { name: 'mixed6.test', type: 'AAAA', data: 'fd00::5' },
    { name: 'cgnat.test', type: 'A', data: '100.64.0.9' },
    { name: 'mapped.test', type: 'AAAA', data: '::ffff:192.168.1.1' },
  );
  resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1 });
});
afterEach(() => {
  warnings.length = 0;
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
  await resolver.close();
  await dns.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('issue13 TLSRPT rua targets', () => {
  it('special-purpose addresses: loopback, RFC 1918, fc00::/7, link-local, unspecified, multicast, CGNAT, documentation, mapped and NAT64 forms', () => {
    const special = [
      '127.0.0.1',
      '10.0.0.1',
      '172.16.5.4',
      '192.168.0.1',
      '169.254.169.254',
      '0.0.0.0',
      '224.0.0.1',
      '255.255.255.255',
      '100.64.1.1',
      '192.0.2.1',
      '198.18.0.1',
      '::1',
      '::',
      'fc00::1',
      'fd12:3456::1',
      'fe80::1',
      'ff02::1',
      '2001:db8::1',
      '::ffff:10.0.0.1',
      '::ffff:7f00:1',
      '64:ff9b::a00:1',
      '2002:c0a8:101::1',
    ];
    for (const ip of special) expect(specialPurpose(ip), ip).toBeDefined();
    for (const ip of ['8.8.8.8', '1.1.1.1', '2a00:1450:4001::1', '64:ff9b::808:808', '100.128.0.1', '172.32.0.1'])
      expect(specialPurpose(ip), ip).toBeUndefined();
    expect(specialPurpose('100.64.1.1')).toMatch(/carrier-grade NAT/);
    expect(specialPurpose('169.254.169.254')).toMatch(/link-local/);
  });

  it('mailto: to an address literal is refused unless allow_private_targets', () => {
    expect(mailtoTargetProblem('tlsrpt@[127.0.0.1]', false)).toMatch(/address literal/);
    expect(mailtoTargetProblem('tlsrpt@[IPv6:::1]', false)).toMatch(/address literal/);
    expect(mailtoTargetProblem('tlsrpt@reports.example', false)).toBeUndefined();
    expect(mailtoTargetProblem('tlsrpt@[127.0.0.1]', true)).toBeUndefined();
  });

  it('https: IP literals, localhost and names resolving to special-purpose addresses (any of them) are refused; DNS errors are not refusals', async () => {
    const t = (url: string) => httpsTarget(url, { resolver, allowPrivate: false });
    for (const url of ['https://127.0.0.1/r', 'https://[::1]:8443/r', 'https://93.184.216.34/r', 'https://localhost/r', 'https://a.localhost/r']) {
      expect(await t(url), url).toMatchObject({ ok: false, refused: true });
    }
    expect(await t('https://collector.test/r')).toMatchObject({ ok: false, refused: true, reason: expect.stringMatching(/127\.0\.0\.1 \(loopback\)/) });
    expect(await t('https://private.test/r')).toMatchObject({ ok: false, refused: true, reason: expect.stringMatching(/10\.1\.2\.3 \(private/) });
    expect(await t('https://cgnat.test/r')).toMatchObject({ ok: false, refused: true, reason: expect.stringMatching(/carrier-grade NAT/) });
    expect(await t('https://mapped.test/r')).toMatchObject({ ok: false, refused: true, reason: expect.stringMatching(/inside an IPv6 address/) });
    dns.behave('broken.test', 'A', 'servfail');
    expect(await t('https://broken.test/r')).toMatchObject({ ok: false, refused: false });
    expect(await t('https://nothing.test/r')).toMatchObject({ ok: false, refused: false, reason: expect.stringMatching(/no A\/AAAA records/) });
    // allowed: the address comes from the relay's resolver
    expect(await httpsTarget('https://collector.test/r', { resolver, allowPrivate: true })).toEqual({
      ok: true,
      host: 'collector.test',
      address: '127.0.0.1',
      family: 4,
    });
  });

  it("TLSRPT-46 a name only the relay's DNS knows is looked up through its Resolver and POSTed to the checked address with SNI, Host and certificate name of the URL (allow_private_targets: the collector is on loopback)", async () => {
    const c = await collector(['fresh-collector.test']);
    expect(dns.queriesFor('fresh-collector.test', 'A')).toBe(0);
    const url = `https://fresh-collector.test:${c.port}/v1/tlsrpt`;
    expect(await sender(true).send(job([url]))).toBe('accepted');
    expect(dns.queriesFor('fresh-collector.test', 'A')).toBe(1); // our resolver, not getaddrinfo (no such name there)
    expect(c.requests).toEqual([{ host: `fresh-collector.test:${c.port}`, servername: 'fresh-collector.test', path: '/v1/tlsrpt' }]);
  });

  it("TLSRPT-46 the certificate is still checked against the URL's host: a collector whose certificate names another host fails (and is retried, not refused)", async () => {
    const c = await collector(['somewhere-else.test']);
    const s = sender(true);
    expect(await s.send(job([`https://collector.test:${c.port}/r`]))).toBe('pending');
    const [p] = await s.pending();
    expect(p!.lastError).toMatch(/altnames|does not match|Hostname\/IP/i);
  });

  it('without allow_private_targets the same report is refused: logged, nothing connects, nothing kept for retry', async () => {
    const c = await collector(['collector.test']);
    const s = sender(false);
    const url = `https://collector.test:${c.port}/v1/tlsrpt`;
    expect(await s.send(job([url, `https://127.0.0.1:${c.port}/r`]))).toBe('refused');
    expect(c.requests).toEqual([]);
    expect(warnings.filter((w) => w.msg === 'tlsrpt: rua target refused').map((w) => w.obj.url)).toEqual([url, `https://127.0.0.1:${c.port}/r`]);
    expect(warnings.some((w) => w.msg === 'tlsrpt: https report not sent: every rua target refused')).toBe(true);
    expect(await s.pending()).toEqual([]);
  });
});
