/**
 * `dane-relay check` against the same loopback DNS server and TLS receivers as the delivery
 * tests, with golden outputs (dates, ports, digests and random names normalised), and
 * `dane-relay tlsa --cert` cross-checked with node:crypto.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sink } from '../support/sink.js';
import { World } from '../support/world.js';
import { chainPem, makeCa, makeIntermediate, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { Receiver } from '../support/receiver.js';
import { main } from '../../src/cli.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const GOLDEN = join(__dirname, 'golden');
const DAY = 86_400_000;

function configFile(extra = ''): string {
  const file = join(w.dir, 'relay.yml');
  writeFileSync(
    file,
    `hostname: relay.test\nqueue_dir: queue\ndns:\n  mode: trust-ad\n  resolvers: ["${w.dns.server}"]\n  timeout: 1s\n  attempts: 1\ndelivery:\n  port: ${w.port}\n  timeouts: { connect: 2s, greeting: 3s, ehlo: 3s, starttls: 3s }\n${extra}`,
  );
  return file;
}

async function check(domain: string, ...flags: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = sink();
  const e = sink();
  const code = await main(
    [
      'check',
      domain,
      '--config',
      configFile(flags.includes('--danefail') ? 'policy:\n  danefail: danefail\n' : ''),
      ...flags.filter((f) => f !== '--danefail'),
    ],
    o.stream,
    e.stream,
  );
  return { code, out: o.text(), err: e.text() };
}

/** Normalise what changes between runs: dates, ports, digests, random certificate names, cipher. */
function normalise(s: string): string {
  return s
    .replace(/^config: \S+/m, 'config: <CONFIG>')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, '<DATE>')
    .replace(new RegExp(`:${w.port}\\b`, 'g'), ':<PORT>')
    .replace(new RegExp(`_${w.port}\\._tcp`, 'g'), '_<PORT>._tcp')
    .replace(/\b[0-9A-F]{16,}\b/g, '<HEX>')
    .replace(/(test (?:root|intermediate)) \d+ [0-9a-f]{6}/g, '$1 <N>')
    .replace(/TLSv1\.[23] \S+/g, '<TLS>')
    .replace(/expires in \d+ day\(s\)/g, 'expires in <N> day(s)')
    .replace(/sha256 <HEX>|sha256 [0-9A-F]+/g, 'sha256 <HEX>');
}

function golden(name: string, actual: string): void {
  const file = join(GOLDEN, `${name}.txt`);
  const got = normalise(actual);
  if (process.env.UPDATE_GOLDEN) {
    mkdirSync(GOLDEN, { recursive: true });
    writeFileSync(file, got);
  }
  if (!existsSync(file)) throw new Error(`golden ${file} missing: run with UPDATE_GOLDEN=1 and review it`);
  expect(got).toBe(readFileSync(file, 'utf8'));
}

async function rxFor(chain: Issued[], key: Issued): Promise<Receiver> {
  return w.receiver({ tls: { key: key.keyPem, cert: chainPem(...chain) } });
}
const rec = (usage: number, selector: 0 | 1, mt: 0 | 1 | 2, c: Issued) => ({ usage, selector, matchingType: mt, certificate: tlsaData(c, selector, mt) });

function zone(name: string, rx: Receiver, tlsa: object[], opts: { secure?: boolean } = {}): void {
  w.dns.addZone({ name, secure: opts.secure ?? true });
  w.dns.add({ name, type: 'MX', data: { preference: 10, exchange: `mx.${name}` } });
  w.dns.add({ name: `mx.${name}`, type: 'A', data: rx.host });
  for (const t of tlsa) w.dns.add({ name: `_${w.port}._tcp.mx.${name}`, type: 'TLSA', data: t });
}

describe('dane-relay check', () => {
  it('DANE-52 good 3 1 1: exit 0, chain and matching record shown; advice: no second record for the next key', async () => {
    const ee = await makeSelfSigned({ cn: 'mx.good.test', dnsNames: ['mx.good.test'], notAfter: new Date(Date.now() + 90 * DAY) });
    const rx = await rxFor([ee], ee);
    zone('good.test', rx, [rec(3, 1, 1, ee), { usage: 1, selector: 1, matchingType: 1, certificate: Buffer.alloc(32, 7) }]);
    const r = await check('good.test');
    expect(r.code).toBe(0);
    golden('good-311', r.out);
    const spki = createHash('sha256')
      .update(new X509Certificate(ee.der).publicKey.export({ type: 'spki', format: 'der' }))
      .digest('hex')
      .toUpperCase();
    expect(r.out).toContain(`SPKI SHA-256 ${spki}`);
    expect(r.out).toContain('[ee-no-next-key]');
    expect(rx.messages).toHaveLength(0);
    expect(rx.commands.some((c) => /^MAIL/i.test(c))).toBe(false);
  });

  it('DANE-50 stale 3 1 1 (renewed key, TLSA not updated): exit 1, advice gives the record to publish', async () => {
    const ee = await makeSelfSigned({ cn: 'mx.stale.test', dnsNames: ['mx.stale.test'] });
    const old = await makeSelfSigned({ cn: 'old key' });
    const rx = await rxFor([ee], ee);
    zone('stale.test', rx, [rec(3, 1, 1, old)]);
    const r = await check('stale.test');
    expect(r.code).toBe(1);
    golden('stale-311', r.out);
    expect(r.out).toContain(`TLSA 3 1 1 ${tlsaData(ee, 1, 1).toString('hex').toUpperCase()}`);
    expect(r.out).toContain('[tlsa-no-match]');
  });

  it('DANE-21 issue21 signed zone without DS (TLSA published, answers insecure): exit 4 (degraded: a warning), advice no-ds', async () => {
    const ee = await makeSelfSigned({ cn: 'mx.nods.test', dnsNames: ['mx.nods.test'] });
    const rx = await rxFor([ee], ee);
    zone('nods.test', rx, [rec(3, 1, 1, ee)], { secure: false });
    const r = await check('nods.test');
    expect(r.code).toBe(4);
    golden('no-ds', r.out);
    expect(r.out).toContain('[no-ds]');
  });

  it('DANE-53 issue21 2 1 1 pinned to an intermediate that expires in 7 days: exit 4 (degraded) with the ta-expiring warning (JSON)', async () => {
    const root = await makeCa({ cn: 'Root X' });
    const int = await makeIntermediate(root, { cn: 'Intermediate R', notAfter: new Date(Date.now() + 7 * DAY) });
    const leaf = await makeLeaf(int, { cn: 'mx.ta.test', dnsNames: ['mx.ta.test'] });
    const rx = await rxFor([leaf, int], leaf);
    zone('ta.test', rx, [rec(2, 1, 1, int)]);
    const r = await check('ta.test', '--json');
    expect(r.code).toBe(4);
    const j = JSON.parse(r.out);
    expect(j.exitCode).toBe(4);
    expect(j.status).toBe('degraded');
    expect(j.advice.find((a: { code: string }) => a.code === 'ta-expiring').severity).toBe('warning');
    expect(j.verdict).toMatchObject({ kind: 'dane', host: 'mx.ta.test', label: 'verified' });
    const conn = j.hosts[0].connections[0];
    expect(conn.verify).toMatchObject({ ok: true, matchedIndex: 0, matchedUsage: 2, depth: 1 });
    expect(conn.chain.map((c: { subject: string }) => c.subject)).toEqual(['CN=mx.ta.test', 'CN=Intermediate R']);
    expect(j.advice.map((a: { code: string }) => a.code)).toContain('ta-expiring');
    expect(j.policy).toEqual({ level: 'dane', rule: 'delivery.tls_level=dane' });
  });

  it('issue7 issue21: 3 1 1 on a certificate that expires in 3 days: ee-key-expiring warning, exit 4 (degraded)', async () => {
    const ee = await makeSelfSigned({ cn: 'mx.soon.test', dnsNames: ['mx.soon.test'], notAfter: new Date(Date.now() + 3 * DAY) });
    const rx = await rxFor([ee], ee);
    zone('soon.test', rx, [rec(3, 1, 1, ee)]);
    const r = await check('soon.test');
    expect(r.code).toBe(4);
    golden('soon-311', r.out);
    expect(r.out).toContain('[ee-key-expiring]');
  });

  it('DANE-70 a danefail-listed domain: the policy rule is shown, no TLSA query, exit 3', async () => {
    const ee = await makeSelfSigned({ cn: 'mx.listed.test', dnsNames: ['mx.listed.test'] });
    const rx = await rxFor([ee], ee);
    zone('listed.test', rx, [rec(3, 1, 1, ee)]);
    writeFileSync(join(w.dir, 'danefail'), 'listed.test\n');
    const r = await check('listed.test', '--danefail', '--json');
    expect(r.code).toBe(3);
    const j = JSON.parse(r.out);
    expect(j.policy).toMatchObject({ level: 'may', rule: 'danefail:1 listed.test exception dane→may' });
    expect(j.hosts[0].tlsaName).toBeUndefined();
    expect(j.hosts[0].diagnosticTlsa).toBeUndefined();
    expect(j.verdict).toMatchObject({ kind: 'tls', label: 'untrusted' });
    // The second section is the probe's view: real level, TLSA queried once, DANE verifies.
    expect(j.withoutException.verdict).toMatchObject({ kind: 'dane', label: 'verified' });
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.listed.test`, 'TLSA')).toBe(1);
    const t = await check('listed.test', '--danefail');
    expect(t.code).toBe(3);
    golden('danefail-listed', t.out);
  });

  it('DANE-46 an audit entry: the failed DANE attempt, then the audit-only retry over TLS (shown as such, not as a cleartext retry); exit 4 (degraded: DANE failed)', async () => {
    const ee = await makeSelfSigned({ cn: 'mx.audit.test', dnsNames: ['mx.audit.test'] });
    const old = await makeSelfSigned({ cn: 'old key' });
    const rx = await rxFor([ee], ee);
    zone('audit.test', rx, [rec(3, 1, 1, old)]);
    writeFileSync(join(w.dir, 'tls_policy'), 'audit.test dane audit\n');
    const o = sink();
    const code = await main(['check', 'audit.test', '--config', configFile('policy:\n  tls_policy: tls_policy\n')], o.stream, sink().stream);
    expect(code).toBe(4);
    const lines = o
      .text()
      .split('\n')
      .filter((l) => l.startsWith(`  ${rx.host}`));
    expect(lines).toEqual([
      `  ${rx.host}: failed at verify`,
      expect.stringMatching(new RegExp(`^  ${rx.host.replace(/\./g, '\\.')} \\(audit-only retry: TLS without authentication\\): STARTTLS ok, TLSv1\\.[23] `)),
    ]);
    expect(o.text()).not.toContain('cleartext retry');
    expect(o.text()).toContain('verdict: deliverable without DANE (TLS, not authenticated)');
    const j = JSON.parse(
      (
        await (async () => {
          const x = sink();
          await main(['check', 'audit.test', '--json', '--config', configFile('policy:\n  tls_policy: tls_policy\n')], x.stream, sink().stream);
          return x;
        })()
      ).text(),
    );
    expect(j.hosts[0].connections).toMatchObject([
      { plan: 'dane', ok: false, stage: 'verify', auditRetryNext: true },
      { plan: 'encrypt', ok: true, auditRetry: true },
    ]);
    expect(j.hosts[0].connections[1].cleartextRetry).toBeUndefined();
    expect(rx.messages).toHaveLength(0);
  });

  it('DANE-2 check refuses a tls_policy DANE entry under an untrusted trust-ad resolver: exit 2, nothing looked up', async () => {
    await w.receiver();
    writeFileSync(join(w.dir, 'tls_policy'), 'strict.test dane-only\n');
    const file = join(w.dir, 'untrusted.yml');
    // 192.0.2.53 (TEST-NET-1) is refused before any query is sent to it.
    writeFileSync(
      file,
      `hostname: relay.test\nqueue_dir: queue\ndns:\n  mode: trust-ad\n  resolvers: ["192.0.2.53:53"]\ndelivery:\n  tls_level: may\n  port: ${w.port}\npolicy:\n  tls_policy: tls_policy\n`,
    );
    const e = sink();
    expect(await main(['check', 'strict.test', '--config', file], sink().stream, e.stream)).toBe(2);
    expect(e.text()).toMatch(/a DANE entry in tls_policy: resolver\(s\) 192\.0\.2\.53:53 are not on loopback/);
    // the same rule in `config check`
    const e2 = sink();
    expect(await main(['config', 'check', file], sink().stream, e2.stream)).toBe(2);
    expect(e2.text()).toMatch(/a DANE entry in tls_policy/);
    // dns.mode validate does not believe an AD bit: the rule does not apply (the file itself is fine)
    writeFileSync(
      file,
      `hostname: relay.test\nqueue_dir: queue\ndns:\n  mode: validate\n  resolvers: ["192.0.2.53:53"]\ndelivery:\n  tls_level: may\n  port: ${w.port}\npolicy:\n  tls_policy: tls_policy\n`,
    );
    const o3 = sink();
    expect(await main(['config', 'check', file], o3.stream, sink().stream)).toBe(0);
  });

  it('DANE-11/13 NXDOMAIN and null MX: exit 1; usage errors: exit 2', async () => {
    await w.receiver();
    w.dns.addZone({ name: 'null.test', secure: true });
    w.dns.add({ name: 'null.test', type: 'MX', data: { preference: 0, exchange: '.' } });
    const nx = await check('nx.invalid-domain.test');
    expect(nx.code).toBe(1);
    expect(nx.out).toContain('verdict: would fail permanently (5.1.2)');
    const nul = await check('null.test');
    expect(nul.code).toBe(1);
    expect(nul.out).toContain('5.1.10');
    const e = sink();
    expect(await main(['check'], sink().stream, e.stream)).toBe(2);
    expect(await main(['check', 'bad domain!'], sink().stream, e.stream)).toBe(2);
    expect(await main(['check', 'a.test', '--config', join(w.dir, 'missing.yml')], sink().stream, e.stream)).toBe(2);
  });
});

describe('dane-relay tlsa --cert', () => {
  it('issue7: prints 3 1 1 for a server certificate and 2 1 1 for each CA of a PEM chain, equal to node:crypto digests', async () => {
    const root = await makeCa({ cn: 'Root T' });
    const int = await makeIntermediate(root, { cn: 'Int T', keyAlg: 'rsa' });
    const leaf = await makeLeaf(int, { cn: 'mx.t.test', dnsNames: ['mx.t.test'] });
    const file = join(w.dir, 'chain.pem');
    writeFileSync(file, chainPem(leaf, int, root));
    const o = sink();
    expect(await main(['tlsa', '--cert', file, '--host', 'mx.t.test'], o.stream, sink().stream)).toBe(0);
    const sha = (i: Issued) =>
      createHash('sha256')
        .update(new X509Certificate(i.certPem).publicKey.export({ type: 'spki', format: 'der' }))
        .digest('hex')
        .toUpperCase();
    const lines = o
      .text()
      .split('\n')
      .filter((l) => l.startsWith('_25._tcp'));
    expect(lines).toEqual([
      `_25._tcp.mx.t.test. IN TLSA 3 1 1 ${sha(leaf)}`,
      `_25._tcp.mx.t.test. IN TLSA 2 1 1 ${sha(int)}`,
      `_25._tcp.mx.t.test. IN TLSA 2 1 1 ${sha(root)}`,
    ]);
    // and with the test PKI's own SPKI bytes
    expect(sha(leaf)).toBe(tlsaData(leaf, 1, 1).toString('hex').toUpperCase());

    const single = join(w.dir, 'leaf.pem');
    writeFileSync(single, leaf.certPem);
    const o2 = sink();
    expect(await main(['tlsa', '--cert', single], o2.stream, sink().stream)).toBe(0);
    expect(
      o2
        .text()
        .split('\n')
        .filter((l) => /^\d/.test(l)),
    ).toEqual([`3 1 1 ${sha(leaf)}`]);

    const der = join(w.dir, 'leaf.der');
    writeFileSync(der, leaf.der);
    const o3 = sink();
    expect(await main(['tlsa', '--cert', der], o3.stream, sink().stream)).toBe(0);
    expect(o3.text()).toContain(`3 1 1 ${sha(leaf)}`);
  });

  it('issue7: bad input: exit 2 with a clear message', async () => {
    const bad = join(w.dir, 'bad.pem');
    writeFileSync(bad, 'not a certificate\n');
    const e = sink();
    expect(await main(['tlsa', '--cert', bad], sink().stream, e.stream)).toBe(2);
    expect(e.text()).toContain('no certificate found');
    writeFileSync(bad, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(await main(['tlsa', '--cert', bad], sink().stream, e.stream)).toBe(2);
    expect(await main(['tlsa'], sink().stream, e.stream)).toBe(2);
    expect(await main(['tlsa', '--cert', join(w.dir, 'nope.pem')], sink().stream, e.stream)).toBe(2);
  });
});
