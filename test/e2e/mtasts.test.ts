/**
 * MTA-STS enforcement through the relay (RFC 8461 §4, §5, §2; digest STS-40…52): a real HTTPS policy
 * host on loopback (test CA, given as mta_sts.ca_file, which also anchors the MX certificates), the
 * loopback DNS server (insecure zone for STS; a signed one for the DANE precedence cases), receivers
 * with WebPKI and DANE certificates. What arrived is read at the receivers, what waits in the queue.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { World, type Patch } from '../support/world.js';
import { dayOf } from '../../src/reporting/tlsrpt/report.js';
import { SmtpTestClient } from '../support/submit.js';
import { chainPem, makeCa, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import { policyByHost, startPolicyHost, type PolicyHost } from '../support/stsHost.js';
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
/** One policy host serving each of `domains` a `mode` policy that names its own MX (`mx.<domain>`), with TXT records. */
async function publishEach(domains: string[], mode: string): Promise<void> {
  const leaf = await makeLeaf(ca, { dnsNames: domains.map((d) => `mta-sts.${d}`) });
  host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) });
  host.set(policyByHost((d) => policy(mode, [`mx.${d}`])));
  for (const d of domains) w.dns.add({ name: `_mta-sts.${d}`, type: 'TXT', data: 'v=STSv1; id=x' }, { name: `mta-sts.${d}`, type: 'A', data: '127.0.0.1' });
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

/** `params` on MAIL FROM (REQUIRETLS is offered in cleartext to relay_clients on loopback, RT-11). */
async function send(to: string, params = ''): Promise<string> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort });
  await c.ehlo();
  const r = await c.sendMail('app@sender.test', [to], 'Subject: sts\r\n\r\nhello\r\n', params);
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
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Verified' });
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
    await publishEach(domains, 'enforce');
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

describe('MTA-STS in TLSRPT', () => {
  it('STS-62 TLSRPT-22 STS-32 a failed hourly refresh counts once as sts-policy-fetch-error under the policy kept in force; a delivery that fetches nothing adds no failure', async () => {
    const rx = await webpkiRx('mx.rep.test');
    mxs('rep.test', [{ name: 'mx.rep.test', rx }]);
    const lines = policy('enforce', ['mx.rep.test']);
    await publish('rep.test', 'r1', lines);
    w.dns.add({ name: '_smtp._tls.rep.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tlsrpt@rep.test' });
    const relay = await w.start(stsConfig());
    await send('user@rep.test');
    await rx.waitFor(1);
    await w.settle();
    const stsPolicyOf = { type: 'sts', strings: lines.trimEnd().split('\n'), domain: 'rep.test', mxHost: ['mx.rep.test'] };
    const counted = async () => {
      await relay.tlsrpt!.store.flush();
      return (await relay.tlsrpt!.store.read(dayOf(w.clock.t))).get('rep.test') ?? [];
    };
    expect(await counted()).toEqual([{ policy: stsPolicyOf, success: 1, failure: 0, details: [] }]);
    // a day later (jitter at most +10 %) the hourly maintenance refreshes it; the policy host answers 500
    w.clock.advance(1.1 * 24 * 3600_000 + 1);
    host!.set({ status: 500 });
    expect(await relay.sts!.maintain()).toMatchObject({ failed: ['rep.test'] });
    // a delivery now uses the cached policy (same TXT id: no fetch, nothing more to count than its session)
    await send('user@rep.test');
    await rx.waitFor(2);
    await w.settle();
    expect(await counted()).toEqual([
      { policy: stsPolicyOf, success: 1, failure: 1, details: [{ detail: { resultType: 'sts-policy-fetch-error' }, count: 1 }] },
    ]);
  });
});

describe('MTA-STS testing: WebPKI failures are delivered and reported', () => {
  it('STS-45 STS-62 STS-41 testing: MX certificates for the wrong name or from an untrusted CA are delivered over TLS under the ordinary plan; TLSRPT counts certificate-host-mismatch / certificate-not-trusted / success under the sts policy', async () => {
    const other = await makeCa({ cn: 'not trusted' });
    const untrusted = await makeLeaf(other, { dnsNames: ['mx.c.test'] });
    const rxs = {
      'a.test': await webpkiRx('mx.a.test', ['other.a.test']), // valid chain, wrong name
      'b.test': await webpkiRx('mx.b.test'), // valid
      'c.test': await w.receiver({ tls: { key: untrusted.keyPem, cert: chainPem(untrusted) } }),
    };
    const domains = Object.keys(rxs) as (keyof typeof rxs)[];
    for (const d of domains) mxs(d, [{ name: `mx.${d}`, rx: rxs[d] }]);
    await publishEach(domains, 'testing');
    for (const d of domains) w.dns.add({ name: `_smtp._tls.${d}`, type: 'TXT', data: `v=TLSRPTv1; rua=mailto:tlsrpt@${d}` });
    const relay = await w.start(stsConfig());
    for (const d of domains) await send(`user@${d}`);
    for (const d of domains) await rxs[d].waitFor(1);
    await w.settle();
    for (const d of domains) expect(rxs[d].messages[0], d).toMatchObject({ secure: true, servername: `mx.${d}` });
    await relay.tlsrpt!.store.flush();
    const day = await relay.tlsrpt!.store.read(dayOf(w.clock.t));
    const counts = (d: string) => day.get(d)?.map((c) => [c.policy.type, c.policy.domain, c.success, c.failure, c.details.map((x) => x.detail.resultType)]);
    expect(counts('a.test')).toEqual([['sts', 'a.test', 0, 1, ['certificate-host-mismatch']]]);
    expect(counts('b.test')).toEqual([['sts', 'b.test', 1, 0, []]]);
    expect(counts('c.test')).toEqual([['sts', 'c.test', 0, 1, ['certificate-not-trusted']]]);
    expect(day.get('a.test')![0]!.policy).toMatchObject({ strings: policy('testing', ['mx.a.test']).trimEnd().split('\n'), mxHost: ['mx.a.test'] });
    expect(day.get('a.test')![0]!.details[0]!.detail).toMatchObject({ receivingMx: 'mx.a.test', receivingIp: rxs['a.test'].host });
    expect(
      w.logs
        .filter((l) => l.msg === 'MTA-STS testing: MX certificate fails WebPKI validation (delivered anyway)')
        .map((l) => l.mx)
        .sort(),
    ).toEqual(['mx.a.test', 'mx.c.test']);
  });
});

describe('MTA-STS state that cannot be read or written locally (never a downgrade)', () => {
  it('STS-33 STS-16 after a restart the cached enforce policy file is unreadable, the fetch blocked and the MX redirected to a cleartext host: deferred 4.7.0, never delivered there; readable again: delivered under the policy', async () => {
    const good = await webpkiRx('mx.locked.test');
    mxs('locked.test', [{ name: 'mx.locked.test', rx: good }]);
    await publish('locked.test', 'l1', policy('enforce', ['mx.locked.test']));
    await w.start(stsConfig());
    await send('user@locked.test');
    await good.waitFor(1);
    await w.settle();
    await w.relay!.stop(1000);
    // the attacker: blocks the policy fetch and points the MX at a cleartext host of its own
    const file = join(w.dir, 'queue', 'mta-sts', 'locked.test.json');
    const saved = readFileSync(file);
    rmSync(file);
    mkdirSync(file); // EISDIR on read (a disk/operator accident the attacker did not need to cause, but may use)
    host!.set({ status: 500 });
    const rogue = await w.receiver();
    w.dns.remove('locked.test', 'MX');
    mxs('locked.test', [{ name: 'mx.rogue.test', rx: rogue }]);
    await w.start(stsConfig());
    const id = await send('user@locked.test');
    await w.settle();
    expect(rogue.connections).toBe(0);
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.0' });
    expect(recipient(id)!.lastReason).toMatch(/^MTA-STS policy state for locked\.test unavailable/);
    expect(w.logs.find((l) => l.msg === 'MTA-STS policy state unavailable; messages wait (never delivered as without MTA-STS)')).toMatchObject({
      domain: 'locked.test',
    });
    expect(w.deliveries().at(-1)).toMatchObject({ status: 'deferred', dsn: '4.7.0' });
    // the file is readable again (the operator repaired the disk): the enforce policy applies, the rogue MX is skipped (4.7.5)
    rmSync(file, { recursive: true });
    writeFileSync(file, saved, { mode: 0o600 });
    await w.advance(3600_000);
    expect(rogue.connections).toBe(0);
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
  });

  it('STS-30 STS-33 a policy fetched while the cache cannot be written (a file where queue_dir/mta-sts should be) is enforced all the same', async () => {
    const rogue = await w.receiver(); // cleartext, first in MX order, outside the policy
    const good = await webpkiRx('mx.ro.test');
    mxs('ro.test', [
      { name: 'mx.rogue.test', rx: rogue },
      { name: 'mx.ro.test', rx: good },
    ]);
    await publish('ro.test', 'r1', policy('enforce', ['mx.ro.test']));
    mkdirSync(join(w.dir, 'queue'), { recursive: true, mode: 0o700 });
    writeFileSync(join(w.dir, 'queue', 'mta-sts'), 'not a directory');
    await w.start(stsConfig());
    await send('user@ro.test');
    await good.waitFor(1);
    await w.settle();
    expect(w.logs.some((l) => l.msg === 'mta-sts: cannot write the policy cache; the policy applies from memory and the write is retried')).toBe(true);
    // the policy host is blocked now: the next message still goes under the policy held in memory
    host!.set({ status: 500 });
    await send('user@ro.test');
    await good.waitFor(2);
    await w.settle();
    expect(rogue.connections).toBe(0);
    expect(good.messages.map((m) => [m.secure, m.servername])).toEqual([
      [true, 'mx.ro.test'],
      [true, 'mx.ro.test'],
    ]);
    expect(w.deliveries().map((d) => d.dane)).toEqual(['Verified', 'Verified']);
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
    expect(w.deliveries().every((d) => d.dane !== 'Verified')).toBe(true);
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
    if (sent.length) expect(sent.every((d) => d.dane === 'Verified')).toBe(true);
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
    expect(w.deliveries().find((d) => d.to === 'user@dane.test')).toMatchObject({ status: 'sent', dane: 'Verified' });
    expect(rx2.connections).toBe(0);
    expect(recipient(bogus)).toMatchObject({ state: 'deferred' });
  });
});

describe('REQUIRETLS over an MTA-STS enforce route (RFC 8689 §4.2.1)', () => {
  it('RT-21 RT-22 RT-23 RT-26 insecure MX matched by an enforce policy, WebPKI-valid for the MX name, REQUIRETLS advertised: delivered with REQUIRETLS on MAIL FROM; the MX outside the patterns is never contacted', async () => {
    const rogue = await webpkiRx('mx.rogue.test', ['mx.rogue.test'], { requireTls: true });
    const rx = await webpkiRx('mx.rt.test', ['mx.rt.test'], { requireTls: true });
    mxs('rt.test', [
      { name: 'mx.rogue.test', rx: rogue },
      { name: 'mx.rt.test', rx },
    ]);
    await publish('rt.test', 'r1', policy('enforce', ['mx.rt.test']));
    await w.start(stsConfig());
    await send('user@rt.test', 'REQUIRETLS');
    await rx.waitFor(1);
    await w.settle();
    expect(rogue.connections).toBe(0);
    expect(rx.messages[0]).toMatchObject({ secure: true, requireTls: true, servername: 'mx.rt.test' });
    expect(rx.commands.find((c) => c.startsWith('MAIL'))).toMatch(/^MAIL FROM:<app@sender\.test>.* REQUIRETLS/);
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Verified' });
  });

  it('RT-23 RT-27 the enforce route holds but the MX does not advertise REQUIRETLS after STARTTLS: QUIT before MAIL, deferred 4.7.30; ordinary mail to it still goes', async () => {
    const rx = await webpkiRx('mx.nort.test');
    mxs('nort.test', [{ name: 'mx.nort.test', rx }]);
    await publish('nort.test', 'n1', policy('enforce', ['mx.nort.test']));
    await w.start(stsConfig());
    const tagged = await send('a@nort.test', 'REQUIRETLS');
    await send('b@nort.test');
    await rx.waitFor(1);
    await w.settle();
    expect(recipient(tagged)).toMatchObject({ state: 'deferred', dsnCode: '4.7.30' });
    expect(rx.messages.map((m) => m.to)).toEqual([['b@nort.test']]);
    expect(rx.messages[0]).toMatchObject({ requireTls: false, secure: true });
  });

  it('RT-21 a testing or none policy, or a policy that could not be fetched (nothing cached), authenticates nothing: the MX is never contacted, deferred 4.7.10', async () => {
    const cases: [string, string | { status: number }][] = [
      ['testing', policy('testing', ['mx.testing.test'])],
      ['none', 'version: STSv1\nmode: none\nmax_age: 86400\n'],
      ['failed', { status: 500 }],
    ];
    const rxs: Receiver[] = [];
    for (const [name] of cases) {
      const rx = await webpkiRx(`mx.${name}.test`, [`mx.${name}.test`], { requireTls: true });
      rxs.push(rx);
      mxs(`${name}.test`, [{ name: `mx.${name}.test`, rx }]);
      w.dns.add({ name: `_mta-sts.${name}.test`, type: 'TXT', data: 'v=STSv1; id=x' }, { name: `mta-sts.${name}.test`, type: 'A', data: '127.0.0.1' });
    }
    const leaf = await makeLeaf(ca, { dnsNames: cases.map(([n]) => `mta-sts.${n}.test`) });
    host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) });
    host.set((req, res) => {
      const name = String(req.headers.host)
        .replace(/^mta-sts\./, '')
        .replace(/\.test(:\d+)?$/, '');
      const answer = cases.find(([n]) => n === name)![1];
      if (typeof answer === 'string') res.writeHead(200, { 'Content-Type': 'text/plain' }).end(answer);
      else res.writeHead(answer.status).end();
    });
    await w.start(stsConfig());
    const ids = [];
    for (const [name] of cases) ids.push(await send(`user@${name}.test`, 'REQUIRETLS'));
    await w.settle();
    for (const [i, [name]] of cases.entries()) {
      expect(recipient(ids[i]!), name).toMatchObject({ state: 'deferred', dsnCode: '4.7.10' });
      expect(rxs[i]!.connections, name).toBe(0);
    }
    expect(host.requests.length).toBeGreaterThanOrEqual(3); // each policy was asked for: the refusals are the policies', not a missing fetch
  });

  it('RT-22 RT-25 under the enforce route a certificate not valid for the MX name is refused before EHLO: deferred 4.7.10, no MAIL, never a weaker copy', async () => {
    const rx = await webpkiRx('mx.badcert.test', ['other.badcert.test'], { requireTls: true });
    mxs('badcert.test', [{ name: 'mx.badcert.test', rx }]);
    await publish('badcert.test', 'b1', policy('enforce', ['mx.badcert.test']));
    await w.start(stsConfig());
    const id = await send('user@badcert.test', 'REQUIRETLS');
    await w.settle();
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.10' });
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
  });

  it('RT-21 STS-50 DANE takes precedence: a host with usable TLSA that fails DANE is not used for a REQUIRETLS message, although the enforce policy matches and its certificate is WebPKI-valid', async () => {
    const rx = await webpkiRx('mx.dboth.test', ['mx.dboth.test'], { requireTls: true });
    const unrelated = await makeSelfSigned({ dnsNames: ['mx.dboth.test'] });
    mxs('dboth.test', [{ name: 'mx.dboth.test', rx, tlsa: [{ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(unrelated, 1, 1) }] }], true);
    await publish('dboth.test', 'b', policy('enforce', ['mx.dboth.test']));
    await w.start(stsConfig());
    const id = await send('user@dboth.test', 'REQUIRETLS');
    await w.settle();
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.10' });
  });
});

describe('TLS-Required: No over an MTA-STS enforce destination (RFC 8689 §4.2.2)', () => {
  it('RT-31 an MX outside the enforce patterns with a certificate for another name still gets a message carrying the field (opportunistic TLS); ordinary mail waits', async () => {
    const rx = await webpkiRx('mx.lax.test', ['other.lax.test']);
    mxs('lax.test', [{ name: 'mx.lax.test', rx }]);
    await publish('lax.test', 'l1', policy('enforce', ['mx.elsewhere.test']));
    await w.start(stsConfig());
    const plain = await send('a@lax.test');
    const c = await SmtpTestClient.connect({ port: w.ingressPort });
    await c.ehlo();
    const r = await c.sendMail('app@sender.test', ['b@lax.test'], 'Subject: lax\r\nTLS-Required: No\r\n\r\nhello\r\n');
    await c.quit();
    expect(r.end?.code).toBe(250);
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages.map((m) => m.to)).toEqual([['b@lax.test']]);
    expect(rx.messages[0]).toMatchObject({ secure: true });
    expect(recipient(plain)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(w.deliveries().find((d) => d.to === 'b@lax.test')).toMatchObject({ status: 'sent', tls_required: 'no' });
  });
});
