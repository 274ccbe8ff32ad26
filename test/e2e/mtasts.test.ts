/**
 * MTA-STS enforcement through the relay (RFC 8461 §4, §5, §2; digest STS-40…52): a real HTTPS policy
 * host on loopback (test CA, given as mta_sts.ca_file, which also anchors the MX certificates), the
 * loopback DNS server (insecure zone for STS; a signed one for the DANE precedence cases), receivers
 * with WebPKI and DANE certificates. What arrived is read at the receivers, what waits in the queue.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { World, type Patch } from '../support/world.js';
import { SmtpTestClient } from '../support/submit.js';
import { chainPem, makeCa, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import { startPolicyHost, type PolicyHost } from '../support/stsHost.js';
import type { Receiver, ReceiverOptions } from '../support/receiver.js';

let w: World;
let ca: Issued;
let host: PolicyHost | undefined;
beforeEach(async () => {
  w = await World.create();
  ca = await makeCa({ cn: 'MTA-STS e2e CA' });
  writeFileSync(join(w.dir, 'sts-ca.pem'), ca.certPem);
});
afterEach(async () => {
  await w.close();
  await host?.close();
  host = undefined;
});

/** `domain` publishes an MTA-STS record with `id` and serves `policy` from a loopback HTTPS host. */
async function publish(domain: string, id: string, policy: string): Promise<void> {
  const leaf = await makeLeaf(ca, { dnsNames: [`mta-sts.${domain}`] });
  host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) }, { body: policy });
  w.dns.add({ name: `_mta-sts.${domain}`, type: 'TXT', data: `v=STSv1; id=${id}` }, { name: `mta-sts.${domain}`, type: 'A', data: '127.0.0.1' });
}
const stsConfig = (): Patch => ({ mta_sts: { ca_file: 'sts-ca.pem', port: host!.port } });

/** An MX receiver with a certificate from the test CA for `names` (default: the MX name). */
async function webpkiRx(mxName: string, names = [mxName], extra: ReceiverOptions = {}): Promise<Receiver> {
  const leaf = await makeLeaf(ca, { dnsNames: names });
  return w.receiver({ tls: { key: leaf.keyPem, cert: chainPem(leaf) }, ...extra });
}

function mxs(domain: string, hosts: { name: string; rx: Receiver; tlsa?: object[] }[], secure = false): void {
  if (secure) w.dns.addZone({ name: domain, secure: true });
  hosts.forEach((h, i) => {
    w.dns.add({ name: domain, type: 'MX', data: { preference: 10 * (i + 1), exchange: h.name } }, { name: h.name, type: 'A', data: h.rx.host });
    for (const t of h.tlsa ?? []) w.dns.add({ name: `_${w.port}._tcp.${h.name}`, type: 'TLSA', data: t });
  });
}

async function send(to: string): Promise<string> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort });
  await c.ehlo();
  const r = await c.sendMail('app@sender.test', [to], 'Subject: sts\r\n\r\nhello\r\n');
  await c.quit();
  expect(r.end?.code).toBe(250);
  return /queued as (\S+)/.exec(r.end!.lines[0]!)![1]!;
}
const recipient = (id: string) => w.relay!.scheduler.get(id)?.recipients[0];
const policy = (mode: string, mx: string[]) => `version: STSv1\nmode: ${mode}\n${mx.map((m) => `mx: ${m}\n`).join('')}max_age: 604800\n`;

describe('MTA-STS enforce', () => {
  it('STS-40 STS-43 an MX outside the mx patterns is never contacted; the next one, matching a wildcard, gets the mail over WebPKI-valid TLS', async () => {
    const rogue = await webpkiRx('mx1.backup.test');
    const good = await webpkiRx('mail.sts.test');
    mxs('sts.test', [
      { name: 'mx1.backup.test', rx: rogue },
      { name: 'mail.sts.test', rx: good },
    ]);
    await publish('sts.test', 'p1', policy('enforce', ['*.sts.test']));
    await w.start(stsConfig());
    await send('user@sts.test');
    await good.waitFor(1);
    await w.settle();
    expect(rogue.connections).toBe(0);
    expect(good.messages[0]).toMatchObject({ secure: true, servername: 'mail.sts.test' });
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'sts-webpki' });
    expect(w.logs.find((l) => l.msg === 'MX host skipped')?.skipped).toMatch(/mx1\.backup\.test matches no mx pattern/);
  });

  it('STS-41 a certificate valid for the policy pattern but not the MX name, or expired, or from another CA: not used, deferred 4.7.5 (temporary, STS-43)', async () => {
    const other = await makeCa({ cn: 'not trusted' });
    const cases: [string, () => Promise<Receiver>][] = [
      ['valid for another name of the domain only', () => webpkiRx('mx.a.test', ['other.a.test'])],
      [
        'expired',
        async () => {
          const l = await makeLeaf(ca, { dnsNames: ['mx.b.test'], notBefore: new Date(Date.now() - 2 * 86400_000), notAfter: new Date(Date.now() - 3600_000) });
          return w.receiver({ tls: { key: l.keyPem, cert: chainPem(l) } });
        },
      ],
      [
        'untrusted root',
        async () => {
          const l = await makeLeaf(other, { dnsNames: ['mx.c.test'] });
          return w.receiver({ tls: { key: l.keyPem, cert: chainPem(l) } });
        },
      ],
    ];
    const domains = ['a.test', 'b.test', 'c.test'];
    const rxs: Receiver[] = [];
    for (const [i, [, make]] of cases.entries()) {
      const rx = await make();
      rxs.push(rx);
      mxs(domains[i]!, [{ name: `mx.${domains[i]}`, rx }]);
    }
    // one policy host serves all three domains' policies (each names its own MX)
    const leaf = await makeLeaf(ca, { dnsNames: domains.map((d) => `mta-sts.${d}`) });
    host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) });
    host.set((req, res) => {
      const d = String(req.headers.host)
        .replace(/^mta-sts\./, '')
        .replace(/:\d+$/, '');
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end(policy('enforce', [`mx.${d}`]));
    });
    for (const d of domains) w.dns.add({ name: `_mta-sts.${d}`, type: 'TXT', data: 'v=STSv1; id=x' }, { name: `mta-sts.${d}`, type: 'A', data: '127.0.0.1' });
    await w.start(stsConfig());
    const ids = [];
    for (const d of domains) ids.push(await send(`user@${d}`));
    await w.settle();
    for (const [i, [what]] of cases.entries()) {
      expect(recipient(ids[i]!), what).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
      expect(
        rxs[i]!.commands.some((c) => c.startsWith('MAIL')),
        what,
      ).toBe(false);
    }
    expect(recipient(ids[0]!)!.lastReason).toMatch(/not valid for mx\.a\.test/);
  });

  it('STS-42 no STARTTLS under enforce: no cleartext retry, deferred', async () => {
    const rx = await w.receiver(); // no TLS at all
    mxs('plain.test', [{ name: 'mx.plain.test', rx }]);
    await publish('plain.test', 'q', policy('enforce', ['mx.plain.test']));
    await w.start(stsConfig());
    const id = await send('user@plain.test');
    await w.settle();
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
  });

  it('STS-45 testing: delivered as without a policy (opportunistic, no MX filtering), the mismatch logged', async () => {
    const rx = await w.receiver(); // cleartext, and not in the patterns
    mxs('testing.test', [{ name: 'mx.elsewhere.test', rx }]);
    await publish('testing.test', 't', policy('testing', ['mx.testing.test']));
    await w.start(stsConfig());
    await send('user@testing.test');
    await rx.waitFor(1);
    await w.settle();
    expect(w.logs.find((l) => l.msg === 'MTA-STS testing: MX host matches no mx pattern (delivered anyway)')).toMatchObject({ mx: 'mx.elsewhere.test' });
  });

  it('STS-16 STS-46 no policy (fetch fails, nothing cached) or mode none: delivered as without MTA-STS', async () => {
    const rx = await w.receiver();
    mxs('none.test', [{ name: 'mx.none.test', rx }]);
    await publish('none.test', 'n', 'version: STSv1\nmode: none\nmax_age: 86400\n');
    await w.start(stsConfig());
    await send('user@none.test');
    await rx.waitFor(1);
    host!.set({ status: 500 });
    w.dns.remove('_mta-sts.none.test', 'TXT');
    w.dns.add({ name: '_mta-sts.none.test', type: 'TXT', data: 'v=STSv1; id=n2' });
    const rx2 = await w.receiver();
    mxs('fail.test', [{ name: 'mx.fail.test', rx: rx2 }]);
    w.dns.add({ name: '_mta-sts.fail.test', type: 'TXT', data: 'v=STSv1; id=f' }, { name: 'mta-sts.fail.test', type: 'A', data: '127.0.0.1' });
    await send('user@fail.test');
    await rx2.waitFor(1);
    await w.settle();
    expect(rx.messages).toHaveLength(1);
    expect(rx2.messages).toHaveLength(1);
    expect(w.logs.some((l) => l.msg === 'mta-sts: policy fetch failed; no cached policy, delivering as without MTA-STS' && l.domain === 'fail.test')).toBe(
      true,
    );
  });

  it('tls_policy: an explicit entry wins over the policy, logged as an exception', async () => {
    const rx = await w.receiver();
    mxs('override.test', [{ name: 'mx.override.test', rx }]);
    await publish('override.test', 'o', policy('enforce', ['mx.override.test']));
    writeFileSync(join(w.dir, 'tls_policy'), 'override.test may\n');
    await w.start({ ...stsConfig(), policy: { tls_policy: join(w.dir, 'tls_policy') } });
    await send('user@override.test');
    await rx.waitFor(1);
    await w.settle();
    expect(w.logs.find((l) => l.msg === 'MTA-STS exception applied: tls_policy entry wins over the MTA-STS policy')).toMatchObject({
      domain: 'override.test',
      sts_mode: 'enforce',
      queue_id: expect.any(String),
    });
  });
});

describe('issue15 sts-ignore in tls_policy', () => {
  it('STS-43 issue15 an enforce policy whose MX does not match defers; with sts-ignore the same setup goes out under the ordinary level, logged as an exception on every delivery', async () => {
    // one policy host for both domains: each names an MX that is not the domain's real one
    const leaf = await makeLeaf(ca, { dnsNames: ['mta-sts.held.test', 'mta-sts.ignored.test'] });
    host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) }, { body: policy('enforce', ['mx.elsewhere.test']) });
    const held = await w.receiver();
    const ignored = await w.receiver();
    mxs('held.test', [{ name: 'mx.held.test', rx: held }]);
    mxs('ignored.test', [{ name: 'mx.ignored.test', rx: ignored }]);
    for (const d of ['held.test', 'ignored.test'])
      w.dns.add({ name: `_mta-sts.${d}`, type: 'TXT', data: 'v=STSv1; id=i1' }, { name: `mta-sts.${d}`, type: 'A', data: '127.0.0.1' });
    writeFileSync(join(w.dir, 'tls_policy'), 'ignored.test sts-ignore\n');
    await w.start({ ...stsConfig(), policy: { tls_policy: join(w.dir, 'tls_policy') } });
    const h = await send('user@held.test');
    const a = await send('user@ignored.test');
    const b = await send('other@ignored.test');
    await ignored.waitFor(2);
    await w.settle();
    expect(recipient(h)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(held.connections).toBe(0);
    expect(ignored.messages).toHaveLength(2);
    const exceptions = w.logs.filter((l) => l.msg === 'MTA-STS exception applied: tls_policy entry wins over the MTA-STS policy');
    expect(exceptions.map((l) => l.queue_id).sort()).toEqual([a, b].sort());
    expect(exceptions[0]).toMatchObject({ domain: 'ignored.test', sts_mode: 'enforce', sts_id: 'i1' });
    expect(exceptions[0]!.tls_rule).toMatch(/tls_policy:1 ignored\.test sts-ignore \(level: delivery\.tls_level=/);
    expect(w.deliveries().filter((d) => String(d.to).endsWith('@ignored.test'))).toHaveLength(2);
    expect(w.deliveries().every((d) => d.dane !== 'sts-webpki')).toBe(true);
  });
  it('RT-25 issue15 sts-ignore never reaches a REQUIRETLS message: it is not sent over unauthenticated TLS and no exception is applied to it', async () => {
    const rx = await webpkiRx('mx.rt.test', ['mx.rt.test'], { requireTls: true });
    mxs('rt.test', [{ name: 'mx.rt.test', rx }]);
    await publish('rt.test', 'r1', policy('enforce', ['mx.rt.test']));
    writeFileSync(join(w.dir, 'tls_policy'), 'rt.test sts-ignore\n');
    await w.start({ ...stsConfig(), policy: { tls_policy: join(w.dir, 'tls_policy') } });
    const c = await SmtpTestClient.connect({ port: w.ingressPort });
    await c.ehlo();
    const r = await c.sendMail('app@sender.test', ['user@rt.test'], 'Subject: secret\r\n\r\nsecret\r\n', 'REQUIRETLS');
    await c.quit();
    expect(r.end?.code).toBe(250);
    const id = /queued as (\S+)/.exec(r.end!.lines[0]!)![1]!;
    await w.settle();
    expect(w.logs.filter((l) => l.msg?.startsWith('MTA-STS exception applied') && l.queue_id === id)).toEqual([]);
    // Today a REQUIRETLS message needs DANE (it waits); an MTA-STS route may carry it, never an unauthenticated one.
    const sent = w.deliveries().filter((d) => d.to === 'user@rt.test' && d.status === 'sent');
    if (sent.length) expect(sent.every((d) => d.dane === 'sts-webpki')).toBe(true);
    else expect(recipient(id)).toMatchObject({ state: 'deferred' });
  });
});

describe('DANE takes precedence (RFC 8461 §2)', () => {
  it('STS-50 DANE-80 a host with usable TLSA that fails DANE is not used, although its certificate is WebPKI-valid and matches the enforce policy', async () => {
    const rx = await webpkiRx('mx.both.test');
    const unrelated = await makeSelfSigned({ dnsNames: ['mx.both.test'] });
    mxs('both.test', [{ name: 'mx.both.test', rx, tlsa: [{ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(unrelated, 1, 1) }] }], true);
    await publish('both.test', 'b', policy('enforce', ['mx.both.test']));
    await w.start(stsConfig());
    const id = await send('user@both.test');
    await w.settle();
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
  });

  it('STS-51 STS-52 DANE-80 a host that passes DANE is used although not in the mx patterns; a bogus TLSA answer defers (never an STS fallback)', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dane.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    mxs('dane.test', [{ name: 'mx.dane.test', rx, tlsa: [{ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(ee, 1, 1) }] }], true);
    await publish('dane.test', 'd', policy('enforce', ['mx.elsewhere.test']));
    const rx2 = await webpkiRx('mx.bogus.test');
    mxs('bogus.test', [{ name: 'mx.bogus.test', rx: rx2 }], true);
    w.dns.behave(`_${w.port}._tcp.mx.bogus.test`, 'TLSA', 'servfail');
    w.dns.add({ name: '_mta-sts.bogus.test', type: 'TXT', data: 'v=STSv1; id=d' }, { name: 'mta-sts.bogus.test', type: 'A', data: '127.0.0.1' });
    await w.start(stsConfig());
    await send('user@dane.test');
    const bogus = await send('user@bogus.test');
    await rx.waitFor(1);
    await w.settle();
    expect(w.deliveries().find((d) => d.to === 'user@dane.test')).toMatchObject({ status: 'sent', dane: 'verified' });
    expect(rx2.connections).toBe(0);
    expect(recipient(bogus)).toMatchObject({ state: 'deferred' });
  });
});
