/**
 * MTA-STS policy fetch (RFC 8461 §3.2, §3.3, §7): real HTTPS on loopback with a test CA, one policy
 * host per case, the host name resolved through the relay's StubResolver against the loopback test
 * DNS server. Nothing is mocked: the certificate checks are node:tls/OpenSSL's with our name rule.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchPolicy, isTextPlain, webpkiNameProblem, type FetchOptions } from '../../src/mtasts/fetch.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { chainPem, makeCa, makeLeaf, makeSelfSigned, type Issued } from '../support/pki.js';
import { startPolicyHost, type PolicyAnswer, type PolicyHost } from '../support/stsHost.js';

const POLICY = 'version: STSv1\nmode: enforce\nmx: mail.example.test\nmx: *.example.test\nmax_age: 604800\n';

let ca: Issued;
let dns: TestDns;
let resolver: StubResolver;
const hosts: PolicyHost[] = [];
let n = 0;

/** A fresh Policy Domain whose mta-sts host is a new loopback server with `leaf` (default: valid for mta-sts.<D>). */
async function policyDomain(answer: PolicyAnswer, o: { leaf?: (d: string) => Promise<Issued>; tls?: { maxVersion?: 'TLSv1.1' }; addresses?: string[] } = {}) {
  const domain = `case${++n}.test`;
  const leaf = await (o.leaf ?? ((d: string) => makeLeaf(ca, { dnsNames: [`mta-sts.${d}`] })))(domain);
  const host = await startPolicyHost(
    {
      key: leaf.keyPem,
      cert: chainPem(leaf),
      ...(o.tls?.maxVersion ? { minVersion: 'TLSv1' as const, maxVersion: o.tls.maxVersion, ciphers: 'DEFAULT@SECLEVEL=0' } : {}),
    },
    answer,
  );
  hosts.push(host);
  for (const a of o.addresses ?? ['127.0.0.1']) dns.add({ name: `mta-sts.${domain}`, type: 'A', data: a });
  return { domain, host };
}
const opts = (host: PolicyHost, more: Partial<FetchOptions> = {}): FetchOptions => ({ resolver, ca: ca.certPem, port: host.port, timeoutMs: 20_000, ...more });

beforeAll(async () => {
  ca = await makeCa({ cn: 'MTA-STS fetch test CA' });
  dns = await startDnsServer();
  resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1 });
});
afterAll(async () => {
  await Promise.all(hosts.map((h) => h.close()));
  await resolver.close();
  await dns.close();
});

describe('MTA-STS policy fetch over HTTPS', () => {
  it('STS-10 STS-11 DANE-81 GET https://mta-sts.<D>/.well-known/mta-sts.txt with SNI and Host mta-sts.<D>; 200 text/plain gives the policy', async () => {
    const { domain, host } = await policyDomain({ body: POLICY });
    const r = await fetchPolicy(domain, opts(host));
    expect(r).toMatchObject({
      ok: true,
      policy: { mode: 'enforce', maxAge: 604800, mx: ['mail.example.test', '*.example.test'] },
      body: POLICY,
      address: '127.0.0.1',
    });
    expect(host.requests).toEqual([{ host: `mta-sts.${domain}:${host.port}`, servername: `mta-sts.${domain}`, path: '/.well-known/mta-sts.txt' }]);
  });

  it('STS-13 DANE-81 only 200 is a policy: 301 to a valid policy is not followed, 404 and 500 give none', async () => {
    const target = await policyDomain({ body: POLICY });
    const moved = await policyDomain({
      status: 301,
      headers: { Location: `https://mta-sts.${target.domain}:${target.host.port}/.well-known/mta-sts.txt` },
      body: POLICY,
    });
    const r = await fetchPolicy(moved.domain, opts(moved.host));
    expect(r).toMatchObject({ ok: false, resultType: 'sts-policy-fetch-error' });
    expect(!r.ok && r.reason).toMatch(/HTTP 301 \(redirect to .* not followed\)/);
    expect(target.host.requests).toEqual([]);
    for (const status of [404, 500, 204, 206]) {
      const c = await policyDomain({ status, body: POLICY });
      const x = await fetchPolicy(c.domain, opts(c.host));
      expect(x, String(status)).toMatchObject({ ok: false, resultType: 'sts-policy-fetch-error' });
      expect(!x.ok && x.reason).toContain(`HTTP ${status}`);
    }
  });

  it('STS-13 HTTP caching headers are ignored: no-store, an Expires in the past or max-age=0 change nothing', async () => {
    const c = await policyDomain({ body: POLICY, headers: { 'Cache-Control': 'no-store, max-age=0', Expires: 'Thu, 01 Jan 1970 00:00:00 GMT' } });
    expect(await fetchPolicy(c.domain, opts(c.host))).toMatchObject({ ok: true, policy: { maxAge: 604800 } });
  });

  it('STS-14 the media type must be text/plain (any case, parameters ignored); text/html or none is no policy', async () => {
    const table: [string | null, boolean][] = [
      ['text/plain', true],
      ['text/plain; charset=utf-8', true],
      ['TEXT/Plain ;charset="us-ascii"', true],
      ['text/html', false],
      ['text/plain-x', false],
      ['application/octet-stream', false],
      [null, false],
    ];
    for (const [contentType, ok] of table) {
      const c = await policyDomain({ body: POLICY, contentType });
      const r = await fetchPolicy(c.domain, opts(c.host));
      expect(r.ok, String(contentType)).toBe(ok);
      if (!r.ok) expect(r).toMatchObject({ resultType: 'sts-policy-fetch-error', reason: expect.stringMatching(/Content-Type .*not text\/plain/) });
    }
    expect(isTextPlain(undefined)).toBe(false);
  });

  it('STS-14 a UTF-8 body is decoded (charset ignored); bytes that are not UTF-8 make the policy invalid', async () => {
    const c = await policyDomain({ body: `${POLICY}note: caf\u00e9 \u2713\n`, contentType: 'text/plain; charset=iso-8859-1' });
    expect(await fetchPolicy(c.domain, opts(c.host))).toMatchObject({ ok: true });
    const bad = await policyDomain({ body: Buffer.concat([Buffer.from(POLICY), Buffer.from([0x6e, 0x3a, 0x20, 0xff, 0x0a])]) });
    expect(await fetchPolicy(bad.domain, opts(bad.host))).toMatchObject({ ok: false, resultType: 'sts-policy-invalid' });
  });

  it('STS-15 the body stops at 64 KiB: exactly 65,536 bytes is read, one more (declared or chunked) is no policy', async () => {
    const pad = (total: number) => {
      const head = `${POLICY}x: `;
      return `${head}${'a'.repeat(total - head.length - 1)}\n`;
    };
    expect(Buffer.byteLength(pad(65_536))).toBe(65_536);
    const exact = await policyDomain({ body: pad(65_536) });
    expect(await fetchPolicy(exact.domain, opts(exact.host))).toMatchObject({ ok: true });
    const over = await policyDomain({ body: pad(70 * 1024) });
    expect(await fetchPolicy(over.domain, opts(over.host))).toMatchObject({
      ok: false,
      resultType: 'sts-policy-fetch-error',
      reason: expect.stringContaining('over 65536'),
    });
    // no Content-Length: the limit is counted as the body arrives
    const chunked = await policyDomain({});
    chunked.host.set((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write(POLICY);
      for (let i = 0; i < 70; i++) res.write('x: '.padEnd(1023, 'b') + '\n');
      res.end();
    });
    expect(await fetchPolicy(chunked.domain, opts(chunked.host))).toMatchObject({
      ok: false,
      resultType: 'sts-policy-fetch-error',
      reason: expect.stringContaining('body over 65536 bytes'),
    });
  });

  it('STS-15 one deadline for the whole fetch: a host that never answers, or stops in the body, gives no policy', async () => {
    const stall = await policyDomain({ stall: true });
    const r = await fetchPolicy(stall.domain, opts(stall.host, { timeoutMs: 300 }));
    expect(r).toMatchObject({ ok: false, resultType: 'sts-policy-fetch-error', reason: expect.stringContaining('timed out after') });
    const half = await policyDomain({ body: POLICY, stallAfterBytes: 20 });
    const h = await fetchPolicy(half.domain, opts(half.host, { timeoutMs: 300 }));
    expect(h).toMatchObject({ ok: false, resultType: 'sts-policy-fetch-error', reason: expect.stringContaining('timed out after') });
  });

  it('STS-11 WebPKI: wrong name, expired, not yet valid, untrusted root, self-signed, CN-only, partial wildcard → sts-webpki-invalid; a leftmost wildcard is valid', async () => {
    const other = await makeCa({ cn: 'someone else' });
    const hour = 3600_000;
    const table: [string, (d: string) => Promise<Issued>, boolean][] = [
      ['wrong name (the domain itself)', (d) => makeLeaf(ca, { dnsNames: [d] }), false],
      ['wrong name (an MX name)', (d) => makeLeaf(ca, { dnsNames: [`mail.${d}`] }), false],
      [
        'expired',
        (d) => makeLeaf(ca, { dnsNames: [`mta-sts.${d}`], notBefore: new Date(Date.now() - 48 * hour), notAfter: new Date(Date.now() - hour) }),
        false,
      ],
      [
        'not yet valid',
        (d) => makeLeaf(ca, { dnsNames: [`mta-sts.${d}`], notBefore: new Date(Date.now() + 24 * hour), notAfter: new Date(Date.now() + 48 * hour) }),
        false,
      ],
      ['untrusted root', (d) => makeLeaf(other, { dnsNames: [`mta-sts.${d}`] }), false],
      ['self-signed', (d) => makeSelfSigned({ dnsNames: [`mta-sts.${d}`] }), false],
      ['CN only, no SAN', (d) => makeLeaf(ca, { cn: `mta-sts.${d}` }), false],
      ['partial wildcard', (d) => makeLeaf(ca, { dnsNames: [`mta-*.${d}`] }), false],
      ['two-label wildcard', (d) => makeLeaf(ca, { dnsNames: [`*.*.${d.split('.').slice(1).join('.')}`] }), false],
      ['leftmost wildcard', (d) => makeLeaf(ca, { dnsNames: [`*.${d}`] }), true],
      ['one of several SANs', (d) => makeLeaf(ca, { dnsNames: ['www.example.test', `MTA-STS.${d.toUpperCase()}`] }), true],
    ];
    for (const [what, leaf, ok] of table) {
      const c = await policyDomain({ body: POLICY }, { leaf });
      const r = await fetchPolicy(c.domain, opts(c.host));
      if (ok) expect(r, what).toMatchObject({ ok: true });
      else {
        expect(r, what).toMatchObject({ ok: false, resultType: 'sts-webpki-invalid' });
        expect(c.host.requests, `${what}: no request reaches a host that failed`).toEqual([]);
      }
    }
  });

  it('STS-11 the name rule itself: SAN dNSName only, wildcard one whole leftmost label', async () => {
    const leaf = await makeLeaf(ca, { cn: 'mta-sts.cn.test', dnsNames: ['*.wild.test', 'exact.test'] });
    expect(webpkiNameProblem('mta-sts.wild.test', leaf.der)).toBeUndefined();
    expect(webpkiNameProblem('exact.test', leaf.der)).toBeUndefined();
    expect(webpkiNameProblem('a.b.wild.test', leaf.der)).toMatch(/not valid/);
    expect(webpkiNameProblem('wild.test', leaf.der)).toMatch(/not valid/);
    expect(webpkiNameProblem('mta-sts.cn.test', leaf.der)).toMatch(/not valid/);
  });

  it('STS-12 TLS below 1.2 is refused: a host offering at most TLS 1.1 gives no policy', async () => {
    let c: Awaited<ReturnType<typeof policyDomain>>;
    try {
      c = await policyDomain({ body: POLICY }, { tls: { maxVersion: 'TLSv1.1' } });
    } catch (e) {
      // an OpenSSL built without TLS 1.1 cannot even start such a server: then nothing can offer it either
      expect((e as Error).message).toMatch(/protocol|version|cipher/i);
      console.log('STS-12: TLS 1.1 server could not start here:', (e as Error).message);
      return;
    }
    const r = await fetchPolicy(c.domain, opts(c.host));
    expect(r).toMatchObject({ ok: false, resultType: 'sts-policy-fetch-error' });
    expect(c.host.requests).toEqual([]);
  });

  it("STS-10 the host is resolved through the relay's resolver: no address or a DNS failure is a fetch error; an unreachable address is skipped for the next", async () => {
    const none = `noaddr${++n}.test`;
    expect(await fetchPolicy(none, { resolver, ca: ca.certPem })).toMatchObject({
      ok: false,
      resultType: 'sts-policy-fetch-error',
      reason: `mta-sts.${none} has no A/AAAA records`,
    });
    const broken = `servfail${++n}.test`;
    dns.behave(`mta-sts.${broken}`, 'A', 'servfail');
    expect(await fetchPolicy(broken, { resolver, ca: ca.certPem })).toMatchObject({
      ok: false,
      resultType: 'sts-policy-fetch-error',
      reason: expect.stringContaining(`A lookup for mta-sts.${broken}`),
    });
    // 127.0.0.2 has nothing listening on the port (the host binds 127.0.0.1 only)
    const two = await policyDomain({ body: POLICY }, { addresses: ['127.0.0.2', '127.0.0.1'] });
    expect(await fetchPolicy(two.domain, opts(two.host))).toMatchObject({ ok: true, address: '127.0.0.1' });
  });

  it('STS-21 a fetched policy that does not validate is sts-policy-invalid', async () => {
    const c = await policyDomain({ body: 'version: STSv1\nmode: enforce\nmax_age: 86400\n' });
    expect(await fetchPolicy(c.domain, opts(c.host))).toMatchObject({
      ok: false,
      resultType: 'sts-policy-invalid',
      reason: expect.stringContaining('without any mx'),
    });
    const html = await policyDomain({ body: '<html><body>It works!</body></html>' });
    expect(await fetchPolicy(html.domain, opts(html.host))).toMatchObject({ ok: false, resultType: 'sts-policy-invalid' });
  });
});
