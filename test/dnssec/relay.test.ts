/**
 * The whole relay in dns.mode validate: the DNSSEC verdicts of the in-process
 * validator drive DANE (RFC 7672) exactly as the AD bit did in trust-ad mode.
 * Signed zones come from test/support/signer.ts; the receivers are real TLS
 * servers on 127.0.0.x.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { chainPem, makeSelfSigned, tlsaData } from '../support/pki.js';
import { Zone, rd } from '../support/signer.js';
import { buildTree, key, type Tree } from './fixture.js';

let w: World;
let t: Tree | undefined;
beforeEach(async () => { w = await World.create(); });
afterEach(async () => {
  await w.close();
  await t?.close();
  t = undefined;
});

const now = Math.floor(Date.now() / 1000);
const send = (to: string) => submit({ port: w.ingressPort, from: 'app@sender.test', to: [to] });
const queued = () => w.relay!.scheduler.list();

async function start(zones: Zone[]) {
  t = await buildTree(zones);
  const anchors = join(w.dir, 'anchors.key');
  writeFileSync(anchors, t.anchors);
  await w.start({ dns: { mode: 'validate', resolvers: [t.dns.server], trust_anchors: anchors } });
}

describe('relay in dns.mode validate', () => {
  it('DANE-1 DANE-33 signed MX + TLSA validated in-process → delivered with the certificate verified against TLSA', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const dest = new Zone({ name: 'dest.test', keys: [key('relay-dest', 13)] });
    dest.add('dest.test', 'MX', rd.MX(10, 'mx.dest.test'));
    dest.add('mx.dest.test', 'A', rd.A(rx.host));
    dest.add(`_${w.port}._tcp.mx.dest.test`, 'TLSA', rd.TLSA(3, 1, 1, tlsaData(ee, 1, 1)));
    await start([dest]);
    await send('user@dest.test');
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages[0]!.secure).toBe(true);
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'verified' });
  });

  it('DANE-11 a bogus (expired) signed MX → deferred 4.4.3 with no connection', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.stale.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const stale = new Zone({ name: 'stale.test', keys: [key('relay-stale', 13)], inception: now - 30 * 86400, expiration: now - 86400 });
    stale.add('stale.test', 'MX', rd.MX(10, 'mx.stale.test'));
    stale.add('mx.stale.test', 'A', rd.A(rx.host));
    await start([stale]);
    await send('user@stale.test');
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
  });

  it('DANE-15 an unsigned delegation (proven by NSEC) → opportunistic TLS, never logged as verified', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.plain.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const plain = new Zone({ name: 'plain.test' });
    plain.add('plain.test', 'MX', rd.MX(10, 'mx.plain.test'));
    plain.add('mx.plain.test', 'A', rd.A(rx.host));
    await start([plain]);
    await send('user@plain.test');
    await rx.waitFor(1);
    await w.settle();
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'untrusted' });
  });
});
