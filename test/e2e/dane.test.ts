/**
 * RFC 7672 end to end: the digest's "ten test cases" through the whole relay. A loopback DNS
 * server sets AD per zone as a validating resolver would; receivers present real certificate
 * chains. Outcomes are read at the receivers (what arrived, over what, with which SNI) and in the
 * queue (what stayed, with which reason).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { chainPem, makeCa, makeIntermediate, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { Receiver } from '../support/receiver.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const tlsa = (usage: number, selector: 0 | 1, matchingType: 0 | 1 | 2, cert: Issued) => ({
  usage,
  selector,
  matchingType,
  certificate: tlsaData(cert, selector, matchingType),
});
const raw = (usage: number, selector: number, matchingType: number, certificate: Buffer) => ({ usage, selector, matchingType, certificate });

async function tlsReceiver(chain: Issued[], key: Issued, extra: Parameters<World['receiver']>[0] = {}): Promise<Receiver> {
  return w.receiver({ tls: { key: key.keyPem, cert: chainPem(...chain) }, ...extra });
}

/** A signed destination: dest.test MX → given hosts, each with address and TLSA records. */
function signedDomain(hosts: { name: string; pref: number; rx?: Receiver; address?: string; tlsa?: object[] }[], domain = 'dest.test', secure = true) {
  w.dns.addZone({ name: domain, secure });
  for (const h of hosts) {
    w.dns.add({ name: domain, type: 'MX', data: { preference: h.pref, exchange: h.name } });
    w.dns.add({ name: h.name, type: 'A', data: h.address ?? h.rx!.host });
    for (const t of h.tlsa ?? []) w.dns.add({ name: `_${w.port}._tcp.${h.name}`, type: 'TLSA', data: t });
  }
}

const queued = () => w.relay!.scheduler.list();
const reasonOf = (addr: string) =>
  queued()
    .flatMap((m) => m.recipients)
    .find((r) => r.address === addr)?.lastReason ?? '';
const send = (to = 'user@dest.test') => submit({ port: w.ingressPort, from: 'app@sender.test', to: [to] });

describe('RFC 7672 through the relay (digest ten cases)', () => {
  it('DANE-11 (case 1): bogus MX → deferred 4.4.3, zero TCP connections', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const rx = await tlsReceiver([ee], ee);
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx, tlsa: [tlsa(3, 1, 1, ee)] }]);
    w.dns.behave('dest.test', 'MX', 'servfail'); // what a validating resolver answers for a bogus RRset
    await w.start();
    await send();
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
    expect(reasonOf('user@dest.test')).toContain('MX lookup for dest.test');
  });

  it('DANE-33 (case 2): TLSA SERVFAIL on MX1 → MX1 never contacted, MX2 delivers authenticated; both failing → deferred', async () => {
    const ee1 = await makeSelfSigned({ dnsNames: ['mx1.dest.test'] });
    const ee2 = await makeSelfSigned({ dnsNames: ['mx2.dest.test'] });
    const rx1 = await tlsReceiver([ee1], ee1);
    const rx2 = await tlsReceiver([ee2], ee2);
    signedDomain([
      { name: 'mx1.dest.test', pref: 10, rx: rx1, tlsa: [tlsa(3, 1, 1, ee1)] },
      { name: 'mx2.dest.test', pref: 20, rx: rx2, tlsa: [tlsa(3, 1, 1, ee2)] },
    ]);
    w.dns.behave(`_${w.port}._tcp.mx1.dest.test`, 'TLSA', 'servfail');
    await w.start();
    await send();
    await rx2.waitFor(1);
    await w.settle();
    expect(rx1.connections).toBe(0);
    expect(rx2.messages[0]!.secure).toBe(true);
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Verified' });
    expect(w.logs.find((l) => l.msg === 'MX host skipped')).toMatchObject({ skipped: `TLSA lookup for _${w.port}._tcp.mx1.dest.test: SERVFAIL` });

    // Both hosts failing their TLSA lookups (another domain, so no cached answer helps).
    signedDomain(
      [
        { name: 'mx1.both.test', pref: 10, rx: rx1, tlsa: [tlsa(3, 1, 1, ee1)] },
        { name: 'mx2.both.test', pref: 20, rx: rx2, tlsa: [tlsa(3, 1, 1, ee2)] },
      ],
      'both.test',
    );
    w.dns.behave(`_${w.port}._tcp.mx1.both.test`, 'TLSA', 'servfail');
    w.dns.behave(`_${w.port}._tcp.mx2.both.test`, 'TLSA', 'timeout');
    await send('second@both.test');
    await w.settle();
    expect(rx1.connections).toBe(0);
    expect(rx2.messages).toHaveLength(1);
    expect(reasonOf('second@both.test')).toContain(`TLSA lookup for _${w.port}._tcp.mx1.both.test: SERVFAIL`);
    expect(reasonOf('second@both.test')).toContain(`TLSA lookup for _${w.port}._tcp.mx2.both.test: timeout`);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
  });

  it('DANE-43 (case 3): usable TLSA and no STARTTLS → deferred 4.7.5, MAIL FROM never sent', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const rx = await tlsReceiver([ee], ee, { starttls: false });
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx, tlsa: [tlsa(3, 1, 1, ee)] }]);
    await w.start();
    await send();
    await w.settle();
    expect(rx.connections).toBe(1);
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
  });

  it('DANE-42 (case 4): only unusable records → TLS without authentication is accepted; without STARTTLS → deferred', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const rx = await tlsReceiver([ee], ee);
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx, tlsa: [raw(1, 1, 1, tlsaData(ee, 1, 1)), raw(3, 9, 1, tlsaData(ee, 1, 1))] }]);
    await w.start();
    await send();
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages[0]!.secure).toBe(true);
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Untrusted' });

    const plain = await w.receiver({ starttls: false });
    signedDomain([{ name: 'mx.plain.test', pref: 10, rx: plain, tlsa: [raw(1, 1, 1, tlsaData(ee, 1, 1))] }], 'plain.test');
    await send('user@plain.test');
    await w.settle();
    expect(plain.messages).toHaveLength(0);
    expect(plain.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(reasonOf('user@plain.test')).toMatch(/STARTTLS/i);
  });

  it('DANE-52 (case 5): 3 1 1 matches an expired self-signed leaf with a wrong name; a different key fails', async () => {
    const ee = await makeSelfSigned({
      dnsNames: ['wrong.example'],
      notBefore: new Date(Date.now() - 400 * 86_400_000),
      notAfter: new Date(Date.now() - 30 * 86_400_000),
    });
    const rx = await tlsReceiver([ee], ee);
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx, tlsa: [tlsa(3, 1, 1, ee)] }]);
    const other = await makeSelfSigned({ dnsNames: ['mx.other.test'] });
    const rx2 = await tlsReceiver([other], other);
    signedDomain([{ name: 'mx.other.test', pref: 10, rx: rx2, tlsa: [tlsa(3, 1, 1, ee)] }], 'other.test');
    await w.start();
    await send();
    await rx.waitFor(1);
    await w.settle();
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Verified' });
    await send('user@other.test');
    await w.settle();
    expect(rx2.messages).toHaveLength(0);
    expect(rx2.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
  });

  it('DANE-53..56 (case 6): 2 0 1 with the anchor in the chain and SAN = next hop passes; unrelated SAN fails; anchor missing fails', async () => {
    const ca = await makeCa({ cn: 'Test Root' });
    const good = await makeLeaf(ca, { dnsNames: ['dest.test'] });
    const bad = await makeLeaf(ca, { dnsNames: ['unrelated.example'] });
    const rxGood = await tlsReceiver([good, ca], good);
    const rxBad = await tlsReceiver([bad, ca], bad);
    const rxNoAnchor = await tlsReceiver([good], good);
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx: rxGood, tlsa: [tlsa(2, 0, 1, ca)] }]);
    signedDomain([{ name: 'mx.bad.test', pref: 10, rx: rxBad, tlsa: [tlsa(2, 0, 1, ca)] }], 'bad.test');
    signedDomain([{ name: 'mx.noanchor.test', pref: 10, rx: rxNoAnchor, tlsa: [tlsa(2, 0, 1, ca)] }], 'noanchor.test');
    await w.start();
    await send();
    await send('user@bad.test');
    await send('user@noanchor.test');
    await w.settle();
    await rxGood.waitFor(1);
    await w.settle();
    expect(rxBad.messages).toHaveLength(0);
    expect(rxNoAnchor.messages).toHaveLength(0);
    expect(reasonOf('user@bad.test')).toMatch(/name|host/i);
    expect(reasonOf('user@noanchor.test')).toMatch(/match/i);
  });

  it('DANE-22, DANE-31, DANE-60 (case 7): CNAME rules decide the TLSA base domain and the SNI', async () => {
    // Secure CNAME mx.dest.test → host.provider.test: TLSA at the expanded name first.
    const ee = await makeSelfSigned({ dnsNames: ['host.provider.test'] });
    const rx = await tlsReceiver([ee], ee);
    w.dns.addZone({ name: 'dest.test', secure: true });
    w.dns.addZone({ name: 'provider.test', secure: true });
    w.dns.add(
      { name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } },
      { name: 'mx.dest.test', type: 'CNAME', data: 'host.provider.test' },
      { name: 'host.provider.test', type: 'A', data: rx.host },
      { name: `_${w.port}._tcp.host.provider.test`, type: 'TLSA', data: tlsa(3, 1, 1, ee) },
    );
    // Insecure first CNAME: mx.ins.test (unsigned zone) → host in a signed zone: no TLSA query at all.
    const rx2 = await w.receiver({ starttls: false });
    w.dns.addZone({ name: 'ins.test', secure: false });
    w.dns.add(
      { name: 'ins.test', type: 'MX', data: { preference: 10, exchange: 'mx.ins.test' } },
      { name: 'mx.ins.test', type: 'CNAME', data: 'h2.provider.test' },
      { name: 'h2.provider.test', type: 'A', data: rx2.host },
      { name: `_${w.port}._tcp.h2.provider.test`, type: 'TLSA', data: tlsa(3, 1, 1, ee) },
    );
    // CNAME at the TLSA name keeps the base domain (and the SNI) of the MX host.
    const ee3 = await makeSelfSigned({ dnsNames: ['x'] });
    const rx3 = await tlsReceiver([ee3], ee3);
    w.dns.addZone({ name: 'tc.test', secure: true });
    w.dns.add(
      { name: 'tc.test', type: 'MX', data: { preference: 10, exchange: 'mx.tc.test' } },
      { name: 'mx.tc.test', type: 'A', data: rx3.host },
      { name: `_${w.port}._tcp.mx.tc.test`, type: 'CNAME', data: 'tlsa.provider.test' },
      { name: 'tlsa.provider.test', type: 'TLSA', data: tlsa(3, 1, 1, ee3) },
    );
    await w.start();
    await send();
    await send('user@ins.test');
    await send('user@tc.test');
    await rx.waitFor(1);
    await w.settle();
    await rx2.waitFor(1);
    await w.settle();
    await rx3.waitFor(1);
    await w.settle();
    expect(rx.messages[0]!.servername).toBe('host.provider.test');
    expect(w.dns.queriesFor(`_${w.port}._tcp.h2.provider.test`, 'TLSA')).toBe(0);
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.ins.test`, 'TLSA')).toBe(0);
    expect(rx2.messages[0]!.secure).toBe(false);
    expect(rx3.messages[0]!.servername).toBe('mx.tc.test');
    expect(w.deliveries().filter((l) => l.dane === 'Verified')).toHaveLength(2);
  });

  it('DANE-21 (case 8): insecure address records → no TLSA query; cleartext allowed without STARTTLS', async () => {
    const rx = await w.receiver({ starttls: false });
    w.dns.addZone({ name: 'dest.test', secure: true });
    w.dns.addZone({ name: 'unsigned.test', secure: false });
    w.dns.add(
      { name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.unsigned.test' } },
      { name: 'mx.unsigned.test', type: 'A', data: rx.host },
    );
    await w.start();
    await send();
    await rx.waitFor(1);
    await w.settle();
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.unsigned.test`, 'TLSA')).toBe(0);
    expect(rx.messages[0]!.secure).toBe(false);
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Cleartext' });
  });

  it('DANE-12 (case 9): MX NODATA → implicit MX, TLSA looked up at the domain itself', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['dest.test'] });
    const rx = await tlsReceiver([ee], ee);
    w.dns.addZone({ name: 'dest.test', secure: true });
    w.dns.add({ name: 'dest.test', type: 'A', data: rx.host }, { name: `_${w.port}._tcp.dest.test`, type: 'TLSA', data: tlsa(3, 1, 1, ee) });
    await w.start();
    await send();
    await rx.waitFor(1);
    await w.settle();
    expect(w.dns.queriesFor(`_${w.port}._tcp.dest.test`, 'TLSA')).toBeGreaterThan(0);
    expect(w.deliveries()[0]).toMatchObject({ dane: 'Verified' });
  });

  it('DANE-51, DANE-14 (case 10): 3 1 2 mismatch next to a 3 1 1 match fails; MX order is not changed by security', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const other = await makeSelfSigned({ dnsNames: ['x'] });
    const rx = await tlsReceiver([ee], ee);
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx, tlsa: [tlsa(3, 1, 1, ee), tlsa(3, 1, 2, other)] }]);
    // MX10 without TLSA, MX20 with TLSA → MX10 first.
    const plain = await w.receiver();
    const dane = await tlsReceiver([ee], ee);
    signedDomain(
      [
        { name: 'mx10.order.test', pref: 10, rx: plain },
        { name: 'mx20.order.test', pref: 20, rx: dane, tlsa: [tlsa(3, 1, 1, ee)] },
      ],
      'order.test',
    );
    await w.start();
    await send();
    await send('user@order.test');
    await plain.waitFor(1);
    await w.settle();
    expect(rx.messages).toHaveLength(0);
    expect(reasonOf('user@dest.test')).toMatch(/match/i);
    expect(dane.connections).toBe(0);
  });

  it('DANE-15, DANE-16 insecure MX RRset → no TLSA query for its hosts, opportunistic TLS, never logged as verified', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.signed.test'] });
    const rx = await tlsReceiver([ee], ee);
    w.dns.addZone({ name: 'dest.test', secure: false });
    w.dns.addZone({ name: 'signed.test', secure: true });
    w.dns.add(
      { name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.signed.test' } },
      { name: 'mx.signed.test', type: 'A', data: rx.host },
      { name: `_${w.port}._tcp.mx.signed.test`, type: 'TLSA', data: tlsa(3, 1, 1, ee) },
    );
    await w.start();
    await send();
    await rx.waitFor(1);
    await w.settle();
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.signed.test`, 'TLSA')).toBe(0);
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Untrusted', relay: `mx.signed.test[${rx.host}]:${w.port}` });
  });

  it('DANE-15 mandatory DANE (dane-only) and an insecure MX → deferred, no connection', async () => {
    const rx = await w.receiver();
    w.dns.addZone({ name: 'dest.test', secure: false });
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: rx.host });
    await w.start({ delivery: { tls_level: 'dane-only' } });
    await send();
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(reasonOf('user@dest.test')).toContain('MX lookup for dest.test is insecure');
  });

  it('DANE-23 one address family errors while the other answers → the host is skipped', async () => {
    const rx1 = await w.receiver();
    const rx2 = await w.receiver();
    signedDomain([
      { name: 'mx1.dest.test', pref: 10, rx: rx1 },
      { name: 'mx2.dest.test', pref: 20, rx: rx2 },
    ]);
    w.dns.behave('mx1.dest.test', 'AAAA', 'servfail');
    await w.start();
    await send();
    await rx2.waitFor(1);
    await w.settle();
    expect(rx1.connections).toBe(0);
    expect(w.logs.find((l) => l.msg === 'MX host skipped')).toMatchObject({ mx: 'mx1.dest.test', skipped: 'AAAA lookup for mx1.dest.test: SERVFAIL' });
  });

  it('DANE-30: the TLSA owner uses the port actually connected to', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const rx = await tlsReceiver([ee], ee);
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx, tlsa: [tlsa(3, 1, 1, ee)] }]);
    await w.start();
    await send();
    await rx.waitFor(1);
    await w.settle();
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.dest.test`, 'TLSA')).toBe(1);
    expect(w.dns.queriesFor('_25._tcp.mx.dest.test', 'TLSA')).toBe(0);
  });

  it('DANE-45: dane-only defers a destination without DANE instead of sending opportunistically', async () => {
    const rx = await w.receiver();
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: rx.host });
    await w.start({ delivery: { tls_level: 'dane-only' } });
    await send();
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(reasonOf('user@dest.test')).toContain('dane-only');
  });

  it('DANE-53 a 2 1 1 pinned to an intermediate that was replaced → fails (stale TLSA after rollover)', async () => {
    const ca = await makeCa();
    const oldInt = await makeIntermediate(ca, { cn: 'R3' });
    const newInt = await makeIntermediate(ca, { cn: 'R10' });
    const leaf = await makeLeaf(newInt, { dnsNames: ['mx.dest.test'] });
    const rx = await tlsReceiver([leaf, newInt], leaf);
    signedDomain([{ name: 'mx.dest.test', pref: 10, rx, tlsa: [tlsa(2, 1, 1, oldInt)] }]);
    await w.start();
    await send();
    await w.settle();
    expect(rx.messages).toHaveLength(0);
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(queued()[0]!.recipients[0]).toMatchObject({ dsnCode: '4.7.5' });
  });
});

describe('queue listing', () => {
  it('DANE-71 `dane-relay queue list` shows each waiting recipient with the exact deferral reason', async () => {
    const { main } = await import('../../src/cli.js');
    const { Writable } = await import('node:stream');
    const { writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const ee = await makeSelfSigned({ dnsNames: ['mx1.dest.test'] });
    const rx = await tlsReceiver([ee], ee);
    signedDomain([{ name: 'mx1.dest.test', pref: 10, rx, tlsa: [tlsa(3, 1, 1, ee)] }]);
    w.dns.behave(`_${w.port}._tcp.mx1.dest.test`, 'TLSA', 'servfail');
    await w.start();
    const { queueId } = await send();
    await w.settle();
    const cfgFile = join(w.dir, 'list.yml');
    writeFileSync(cfgFile, `queue_dir: ${w.relay!.config.queue_dir}\ndns:\n  resolvers: ["127.0.0.1:53"]\n`);
    let text = '';
    const out = new Writable({
      write(c, _e, cb) {
        text += c.toString();
        cb();
      },
    });
    expect(await main(['queue', 'list', '--config', cfgFile], out, out)).toBe(0);
    expect(text).toContain(queueId);
    expect(text).toContain('<user@dest.test>  deferred  attempts 1');
    expect(text).toContain(`TLSA lookup for _${w.port}._tcp.mx1.dest.test: SERVFAIL`);
    expect(text).toContain('1 recipient(s) waiting');
  });
});
