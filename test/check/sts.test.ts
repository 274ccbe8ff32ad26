/**
 * `dane-relay check` for MTA-STS (issue 15) and for scripts (issue 21 item 10): a real HTTPS policy host on
 * loopback with a test CA (given as mta_sts.ca_file, which also anchors the MX certificates), the loopback DNS
 * server of the DANE tests, SMTP receivers with WebPKI and DANE certificates. One case per row: the exit code,
 * the status, the mechanism and the owner advice (STS-70…74) it must give; then the text rules (one reason per
 * host, the effective verdict last) and the documented --json object.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sink } from '../support/sink.js';
import { World } from '../support/world.js';
import { chainPem, makeCa, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import { startPolicyHost, type PolicyHost } from '../support/stsHost.js';
import type { Receiver } from '../support/receiver.js';
import { main } from '../../src/cli.js';

let w: World;
let ca: Issued;
let host: PolicyHost;
/** what each policy domain serves (the Host header picks it) */
let served: Map<string, string>;
beforeEach(async () => {
  w = await World.create();
  ca = await makeCa({ cn: 'check STS CA' });
  writeFileSync(join(w.dir, 'sts-ca.pem'), ca.certPem);
  served = new Map();
  const names = ['enf', 'backup', 'badcert', 'notxt', 'short', 'stale', 'wild', 'dane', 'testing', 'ignored'].map((d) => `mta-sts.${d}.test`);
  const leaf = await makeLeaf(ca, { dnsNames: names });
  host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) });
  host.set((req, res) => {
    const d = String(req.headers.host)
      .replace(/^mta-sts\./, '')
      .replace(/:\d+$/, '');
    const body = served.get(d);
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'Content-Type': 'text/plain' }).end(body);
  });
});
afterEach(async () => {
  await w.close();
  await host.close();
});

function configFile(extra = ''): string {
  const file = join(w.dir, 'relay.yml');
  writeFileSync(
    file,
    `hostname: relay.test\nqueue_dir: queue\ndns:\n  mode: trust-ad\n  resolvers: ["${w.dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
      `delivery:\n  port: ${w.port}\n  timeouts: { connect: 2s, greeting: 3s, ehlo: 3s, starttls: 3s }\n` +
      `mta_sts:\n  ca_file: sts-ca.pem\n  port: ${host.port}\n  fetch_timeout: 10s\n${extra}`,
  );
  return file;
}

async function run(args: string[], extra = ''): Promise<{ code: number; out: string; err: string }> {
  const o = sink();
  const e = sink();
  const code = await main([...args, '--config', configFile(extra)], o.stream, e.stream);
  return { code, out: o.text(), err: e.text() };
}

interface Json {
  format: number;
  status: string;
  exitCode: number;
  mechanism: { kind: string; why: string };
  verdict: { kind: string; host?: string };
  hosts: {
    host: string;
    verdict: string;
    reason?: string;
    mechanism: string;
    sts?: { pattern?: string; mismatch?: string; webpki?: { ok: boolean; diagnostic: boolean } };
  }[];
  advice: { code: string; severity: string; host?: string; text: string }[];
  sts: {
    record: { kind: string; id?: string; status?: string };
    cached?: { id: string; lines: string[] };
    fetched?: { ok: boolean; diagnostic: boolean };
    applied?: { id: string; mode: string; source: string };
    idMatchesCache?: boolean;
    gate: { kind: string; why: string };
  };
}

async function checkJson(domain: string, extra = ''): Promise<Json & { code: number }> {
  const r = await run(['check', domain, '--json'], extra);
  expect(r.err).toBe('');
  return { ...(JSON.parse(r.out) as Json), code: r.code };
}

const policy = (mode: string, mx: string[], maxAge = 604800) => `version: STSv1\nmode: ${mode}\n${mx.map((m) => `mx: ${m}\n`).join('')}max_age: ${maxAge}\n`;

/** `domain` publishes `_mta-sts` with `id` (unless `txt` is false) and serves `body`. */
function publish(domain: string, id: string, body: string, txt = true): void {
  served.set(domain, body);
  if (txt) w.dns.add({ name: `_mta-sts.${domain}`, type: 'TXT', data: `v=STSv1; id=${id}` });
  w.dns.add({ name: `mta-sts.${domain}`, type: 'A', data: '127.0.0.1' });
}

/** An MX receiver with a certificate from the test CA for `names` (default: the MX name). */
async function webpkiRx(mxName: string, names = [mxName]): Promise<Receiver> {
  const leaf = await makeLeaf(ca, { dnsNames: names });
  return w.receiver({ tls: { key: leaf.keyPem, cert: chainPem(leaf) } });
}

function mxs(domain: string, hosts: { name: string; rx: Receiver; tlsa?: object[] }[], secure = false): void {
  if (secure) w.dns.addZone({ name: domain, secure: true });
  hosts.forEach((h, i) => {
    w.dns.add({ name: domain, type: 'MX', data: { preference: 10 * (i + 1), exchange: h.name } }, { name: h.name, type: 'A', data: h.rx.host });
    for (const t of h.tlsa ?? []) w.dns.add({ name: `_${w.port}._tcp.${h.name}`, type: 'TLSA', data: t });
  });
}
const codes = (j: Json) => j.advice.map((a) => a.code);

describe('check: MTA-STS (issue 15)', () => {
  it('STS-40 STS-41 an enforce policy covering the MX, certificate valid for the MX name: exit 0, mechanism sts, verdict sts, no mail', async () => {
    const rx = await webpkiRx('mx.enf.test');
    mxs('enf.test', [{ name: 'mx.enf.test', rx }]);
    publish('enf.test', 'e1', policy('enforce', ['mx.enf.test']));
    const j = await checkJson('enf.test');
    expect(j.code).toBe(0);
    expect(j).toMatchObject({ status: 'ok', exitCode: 0, format: 1, mechanism: { kind: 'sts' }, verdict: { kind: 'sts', host: 'mx.enf.test' } });
    expect(j.sts.record).toMatchObject({ kind: 'record', id: 'e1', status: 'insecure' });
    expect(j.sts.applied).toMatchObject({ id: 'e1', mode: 'enforce', source: 'fetch' });
    expect(j.sts.gate.kind).toBe('apply');
    expect(j.hosts[0]).toMatchObject({ verdict: 'ok', mechanism: 'sts-enforce', sts: { pattern: 'mx.enf.test', webpki: { ok: true, diagnostic: false } } });
    expect(j.advice).toEqual([]);
    expect(rx.commands.some((c) => /^MAIL/i.test(c))).toBe(false);
    // check never writes the cache a running relay uses
    expect((await run(['mta-sts', 'show', 'enf.test'])).code).toBe(1);
  });

  it('STS-72 STS-43 a backup MX no pattern covers: skipped as delivery would (4.7.5), the primary delivers: exit 4 degraded, advice names it', async () => {
    const good = await webpkiRx('mx.backup.test');
    const backup = await webpkiRx('mx2.elsewhere.test');
    mxs('backup.test', [
      { name: 'mx.backup.test', rx: good },
      { name: 'mx2.elsewhere.test', rx: backup },
    ]);
    publish('backup.test', 'b1', policy('enforce', ['mx.backup.test']));
    const j = await checkJson('backup.test');
    expect(j.code).toBe(4);
    expect(j.status).toBe('degraded');
    expect(j.verdict).toMatchObject({ kind: 'sts', host: 'mx.backup.test' });
    expect(j.hosts[1]).toMatchObject({ host: 'mx2.elsewhere.test', verdict: 'skipped', mechanism: 'sts-enforce' });
    expect(j.hosts[1]!.reason).toMatch(/matches no mx pattern \(mx\.backup\.test\)/);
    expect(j.advice.find((a) => a.code === 'sts-mx-uncovered')).toMatchObject({ host: 'mx2.elsewhere.test', severity: 'warning' });
    expect(backup.connections).toBe(0);
  });

  it('STS-73 STS-41 the only MX has a certificate for another name: would defer (exit 1), advice names the WebPKI failure', async () => {
    const rx = await webpkiRx('mx.badcert.test', ['other.badcert.test']);
    mxs('badcert.test', [{ name: 'mx.badcert.test', rx }]);
    publish('badcert.test', 'c1', policy('enforce', ['mx.badcert.test']));
    const j = await checkJson('badcert.test');
    expect(j.code).toBe(1);
    expect(j.status).toBe('defer');
    expect(j.hosts[0]).toMatchObject({ verdict: 'failed', sts: { webpki: { ok: false, diagnostic: false } } });
    expect(j.hosts[0]!.reason).toMatch(/not valid for mx\.badcert\.test/);
    expect(codes(j)).toContain('sts-cert-invalid');
  });

  it('STS-73 a policy served without its TXT record: never discovered, delivered as without MTA-STS; exit 4 with the advice', async () => {
    const rx = await webpkiRx('mx.notxt.test');
    mxs('notxt.test', [{ name: 'mx.notxt.test', rx }]);
    publish('notxt.test', '', policy('enforce', ['mx.notxt.test']), false);
    const j = await checkJson('notxt.test');
    expect(j.code).toBe(4);
    expect(j.sts.record.kind).toBe('none');
    expect(j.sts.fetched).toMatchObject({ ok: true, diagnostic: true });
    expect(j.sts.applied).toBeUndefined();
    expect(j.mechanism.kind).toBe('none');
    expect(j.verdict.kind).toBe('tls');
    expect(codes(j)).toEqual(['sts-no-txt']);
  });

  it('STS-70 enforce with max_age under a day: deliverable with MTA-STS but exit 4 (warning sts-max-age-short)', async () => {
    const rx = await webpkiRx('mx.short.test');
    mxs('short.test', [{ name: 'mx.short.test', rx }]);
    publish('short.test', 's1', policy('enforce', ['mx.short.test'], 3600));
    const j = await checkJson('short.test');
    expect(j.code).toBe(4);
    expect(j.verdict.kind).toBe('sts');
    expect(codes(j)).toEqual(['sts-max-age-short']);
  });

  it('STS-71 the policy was edited but the TXT id kept: the cached policy (mta-sts refresh) differs from the one served under the same id', async () => {
    const rx = await webpkiRx('mx.stale.test');
    const rx2 = await webpkiRx('mx2.stale.test');
    mxs('stale.test', [
      { name: 'mx.stale.test', rx },
      { name: 'mx2.stale.test', rx: rx2 },
    ]);
    publish('stale.test', 'same1', policy('enforce', ['mx.stale.test', 'mx2.stale.test']));
    expect((await run(['mta-sts', 'refresh', 'stale.test'])).code).toBe(0);
    served.set('stale.test', policy('enforce', ['mx.stale.test']));
    const j = await checkJson('stale.test');
    expect(j.sts.idMatchesCache).toBe(true);
    expect(j.sts.cached?.id).toBe('same1');
    expect(j.sts.applied).toMatchObject({ id: 'same1', source: 'cache' }); // delivery keeps the cached one: no refetch is due
    expect(j.sts.fetched).toMatchObject({ ok: true, diagnostic: true });
    expect(codes(j)).toContain('sts-id-unchanged');
    expect(j.code).toBe(4);
    const t = await run(['check', 'stale.test']);
    expect(t.out).toContain('cache id vs TXT id: same (no refetch due)');
  });

  it('STS-74 a wildcard pattern: structural advice only (severity advice): exit 0', async () => {
    const rx = await webpkiRx('mx.wild.test');
    mxs('wild.test', [{ name: 'mx.wild.test', rx }]);
    publish('wild.test', 'w1', policy('enforce', ['*.wild.test']));
    const j = await checkJson('wild.test');
    expect(j.advice).toMatchObject([{ code: 'sts-wildcard', severity: 'advice' }]);
    expect(j.code).toBe(0);
  });

  it('STS-51 DANE-80 DANE takes precedence: usable TLSA → mechanism dane although the enforce policy does not cover the MX; exit 0', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dane.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    mxs('dane.test', [{ name: 'mx.dane.test', rx, tlsa: [{ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(ee, 1, 1) }] }], true);
    publish('dane.test', 'd1', policy('enforce', ['mx.elsewhere.test']));
    const j = await checkJson('dane.test');
    expect(j.sts.gate.kind).toBe('apply');
    expect(j.mechanism.kind).toBe('dane');
    expect(j.mechanism.why).toMatch(/RFC 8461 §2/);
    expect(j.hosts[0]).toMatchObject({ mechanism: 'dane', verdict: 'ok' });
    expect(j.hosts[0]!.sts).toBeUndefined();
    expect(j.verdict.kind).toBe('dane');
    expect(codes(j)).not.toContain('sts-mx-uncovered');
  });

  it('STS-45 STS-73 testing with a certificate for another name: delivered as without a policy; the diagnostic WebPKI check warns: exit 4', async () => {
    const rx = await webpkiRx('mx.testing.test', ['wrong.testing.test']);
    mxs('testing.test', [{ name: 'mx.testing.test', rx }]);
    publish('testing.test', 't1', policy('testing', ['mx.testing.test']));
    const j = await checkJson('testing.test');
    expect(j.verdict.kind).toBe('tls');
    expect(j.hosts[0]).toMatchObject({ mechanism: 'sts-testing', sts: { webpki: { ok: false, diagnostic: true } } });
    expect(codes(j)).toEqual(['sts-cert-invalid']);
    expect(j.code).toBe(4);
  });

  it('issue15 sts-ignore: check shows the policy set aside by the rule (mechanism none), as delivery does', async () => {
    const rx = await w.receiver();
    mxs('ignored.test', [{ name: 'mx.ignored.test', rx }]);
    publish('ignored.test', 'i1', policy('enforce', ['mx.other.test']));
    writeFileSync(join(w.dir, 'tls_policy'), 'ignored.test sts-ignore\n');
    const j = await checkJson('ignored.test', 'policy:\n  tls_policy: tls_policy\n');
    expect(j.sts.gate).toMatchObject({ kind: 'exception' });
    expect(j.sts.gate.why).toMatch(/tls_policy:1 ignored\.test sts-ignore.*logged as an exception/);
    expect(j.mechanism.kind).toBe('none');
    expect(j.hosts[0]).toMatchObject({ verdict: 'ok', mechanism: 'none', sts: { mismatch: expect.stringMatching(/matches no mx pattern/) } });
    expect(j.verdict.kind).not.toBe('defer');
  });
});

describe('check for scripts (issue 21 item 10)', () => {
  it('issue21 mx1-stale-mx2-good: the primary fails DANE, the secondary verifies: exit 4 (degraded), one reason per host, the effective verdict last', async () => {
    const old = await makeSelfSigned({ cn: 'old key' });
    const k1 = await makeSelfSigned({ dnsNames: ['mx1.pair.test'] });
    const k2 = await makeSelfSigned({ dnsNames: ['mx2.pair.test'] });
    const rx1 = await w.receiver({ tls: { key: k1.keyPem, cert: chainPem(k1) } });
    const rx2 = await w.receiver({ tls: { key: k2.keyPem, cert: chainPem(k2) } });
    const rec = (c: Issued) => ({ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(c, 1, 1) });
    mxs(
      'pair.test',
      [
        { name: 'mx1.pair.test', rx: rx1, tlsa: [rec(old)] },
        { name: 'mx2.pair.test', rx: rx2, tlsa: [rec(k2)] },
      ],
      true,
    );
    const t = await run(['check', 'pair.test']);
    expect(t.code).toBe(4);
    // the failure reason of mx1 once, on its result line
    expect(t.out.match(/no TLSA record matched/g)).toHaveLength(1);
    expect(t.out).toMatch(/\n {2}result: failed: 127\.0\.0\.\d+: TLS peer authentication failed: dane-no-match/);
    const lines = t.out.trimEnd().split('\n');
    expect(lines.at(-1)).toMatch(/^verdict: deliverable with DANE: mx2\.pair\.test/);
    expect(lines.at(-2)).toBe('status: degraded (exit 4)');
    const j = await checkJson('pair.test');
    expect(j.hosts.map((h) => [h.host, h.verdict])).toEqual([
      ['mx1.pair.test', 'failed'],
      ['mx2.pair.test', 'ok'],
    ]);
    expect(j).toMatchObject({ status: 'degraded', exitCode: 4, mechanism: { kind: 'dane' }, verdict: { kind: 'dane', host: 'mx2.pair.test' } });
  });

  it('issue21 DANE-70 with a danefail entry the last verdict printed is the effective one, after the hypothetical section', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.listed2.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    mxs('listed2.test', [{ name: 'mx.listed2.test', rx, tlsa: [{ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(ee, 1, 1) }] }], true);
    writeFileSync(join(w.dir, 'danefail'), 'listed2.test\n');
    const t = await run(['check', 'listed2.test'], 'policy:\n  danefail: danefail\n');
    expect(t.code).toBe(3);
    const lines = t.out.trimEnd().split('\n');
    expect(lines.filter((l) => l.startsWith('verdict: '))).toEqual([lines.at(-1)]);
    expect(lines.at(-1)).toMatch(/^verdict: deliverable without DANE \(TLS, not authenticated\)/);
    expect(t.out).toMatch(/hypothetical verdict without the exception: deliverable with DANE/);
    expect(t.out.indexOf('hypothetical verdict')).toBeLessThan(t.out.lastIndexOf('verdict: '));
  });

  it('issue21 exit codes and statuses: a table over ok / unauthenticated / degraded / defer / usage', async () => {
    // unauthenticated: no DANE, no policy, TLS ok
    const self = await makeSelfSigned({ dnsNames: ['mx.plain.test'] });
    const plain = await w.receiver({ tls: { key: self.keyPem, cert: chainPem(self) } });
    mxs('plain.test', [{ name: 'mx.plain.test', rx: plain }]);
    // defer: the only MX refuses connections (a receiver closed at once)
    const gone = await w.receiver();
    mxs('gone.test', [{ name: 'mx.gone.test', rx: gone }]);
    await gone.close();
    const rows: [string, number, string][] = [
      ['plain.test', 3, 'unauthenticated'],
      ['gone.test', 1, 'defer'],
    ];
    for (const [d, code, status] of rows) {
      const j = await checkJson(d);
      expect([d, j.code, j.status, j.exitCode]).toEqual([d, code, status, code]);
    }
    expect((await run(['check'])).code).toBe(2);
    // a configuration error (an mta_sts.ca_file without a certificate): 2, named
    writeFileSync(join(w.dir, 'bad-ca.pem'), 'not a certificate\n');
    const o = sink();
    const e = sink();
    const file = configFile().replace(/relay\.yml$/, 'bad.yml');
    writeFileSync(file, `hostname: relay.test\nqueue_dir: queue\nmta_sts:\n  ca_file: bad-ca.pem\n`);
    expect(await main(['check', 'plain.test', '--config', file], o.stream, e.stream)).toBe(2);
    expect(e.text()).toMatch(/mta_sts\.ca_file: .*no PEM certificate/);
  });
});
