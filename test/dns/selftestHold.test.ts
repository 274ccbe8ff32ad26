/**
 * Issue 13 (DANE-4): a failing DNSSEC self-test in trust-ad mode holds the deliveries that need DANE.
 * A resolver that does not validate answers every TLSA query without AD ("insecure"), which would send
 * DANE mail over unauthenticated TLS. Real relay, real loopback resolver (test/support/dnsServer.ts)
 * made to answer like a non-validating one: ietf.org without AD, dnssec-failed.org with data.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { chainPem, makeSelfSigned, tlsaData } from '../support/pki.js';
import type { Receiver } from '../support/receiver.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const send = (to: string) => submit({ port: w.ingressPort, from: 'app@sender.test', to: [to] });
const stateOf = (to: string) =>
  w
    .relay!.scheduler.list()
    .flatMap((m) => m.recipients)
    .find((r) => r.address === to);

/** The resolver stops validating: the signed name comes back without AD, the broken one with data. */
function stopValidating(): void {
  w.dns.zones = w.dns.zones.filter((z) => z.name !== 'ietf.org');
  w.dns.behave('dnssec-failed.org', 'A', undefined);
  w.dns.add({ name: 'dnssec-failed.org', type: 'A', data: '192.0.2.81' });
}
function validateAgain(): void {
  w.dns.addZone({ name: 'ietf.org', secure: true });
  w.dns.behave('dnssec-failed.org', 'A', 'servfail');
}

async function destinations(): Promise<{ daneRx: Receiver; mayRx: Receiver }> {
  const ee = await makeSelfSigned({ dnsNames: ['mx.dane.test'] });
  const daneRx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
  w.dns.addZone({ name: 'dane.test', secure: true });
  w.dns.add(
    { name: 'dane.test', type: 'MX', data: { preference: 10, exchange: 'mx.dane.test' } },
    { name: 'mx.dane.test', type: 'A', data: daneRx.host },
    { name: `_${w.port}._tcp.mx.dane.test`, type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(ee, 1, 1) } },
  );
  const other = await makeSelfSigned({ dnsNames: ['mx.plain.test'] });
  const mayRx = await w.receiver({ tls: { key: other.keyPem, cert: chainPem(other) } });
  w.dns.addZone({ name: 'plain.test', secure: true });
  w.dns.add({ name: 'plain.test', type: 'MX', data: { preference: 10, exchange: 'mx.plain.test' } }, { name: 'mx.plain.test', type: 'A', data: mayRx.host });
  return { daneRx, mayRx };
}

describe('issue13 DANE-4 a failing self-test holds DANE deliveries (dns.mode trust-ad)', () => {
  it('DANE-4 the resolver does not validate: DANE mail is deferred 4.4.3 with the self-test reason and no connection; may mail goes; after SIGHUP with a validating resolver the held mail goes with DANE', async () => {
    const { daneRx, mayRx } = await destinations();
    stopValidating();
    const policy = join(w.dir, 'tls_policy');
    writeFileSync(policy, 'plain.test may\n');
    await w.start({ policy: { tls_policy: policy } });
    await w.relay!.selfTests!.current('test');
    expect(w.relay!.selfTests!.latest).toMatchObject({ ok: false });
    expect(w.logs.find((l) => String(l.msg).startsWith('DNSSEC SELF-TEST FAILED'))?.msg).toMatch(/deliveries that need DANE are held \(4\.4\.3\)/);

    await send('a@dane.test');
    await send('b@plain.test');
    await mayRx.waitFor(1);
    await w.settle();
    expect(daneRx.connections).toBe(0);
    expect(stateOf('a@dane.test')).toMatchObject({
      state: 'deferred',
      dsnCode: '4.4.3',
      lastReason: expect.stringMatching(/DNSSEC self-test failed \(the secure probe ietf\.org came back insecure/),
    });
    expect(w.deliveries().find((l) => l.to === 'a@dane.test')).toMatchObject({ status: 'deferred' });
    expect(mayRx.messages.map((m) => m.to[0])).toEqual(['b@plain.test']);
    // The DANE destination was not even looked up: nothing about it was decided on an AD bit that proves nothing.
    expect(w.dns.queriesFor('dane.test', 'MX')).toBe(0);

    // The resolver is fixed; SIGHUP re-tests it, and the held message goes at its next attempt, with DANE.
    validateAgain();
    w.relay!.reload();
    await w.relay!.selfTests!.current('test');
    expect(w.relay!.selfTests!.latest).toMatchObject({ ok: true });
    expect(w.logs.some((l) => String(l.msg).startsWith('DNSSEC self-test passed again'))).toBe(true);
    await w.advance(31 * 60_000);
    await daneRx.waitFor(1);
    await w.settle();
    expect(
      w
        .deliveries()
        .filter((l) => l.to === 'a@dane.test')
        .at(-1),
    ).toMatchObject({ status: 'sent', dane: 'Verified' });
  });

  it('DANE-4 the self-test is repeated periodically: a resolver that starts validating releases the hold without SIGHUP', async () => {
    const { daneRx } = await destinations();
    stopValidating();
    await w.start({ metrics: { listen: '127.0.0.1:0', selftest_interval: '1s' } });
    await w.relay!.selfTests!.current('test');
    await send('a@dane.test');
    await w.settle();
    expect(stateOf('a@dane.test')).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
    validateAgain();
    // wait for a periodic run to see the fixed resolver (no timing assumption: poll the monitor's result)
    for (let i = 0; i < 200 && !w.relay!.selfTests!.latest?.ok; i++) await new Promise((r) => setTimeout(r, 50));
    expect(w.relay!.selfTests!.latest?.ok).toBe(true);
    await w.advance(31 * 60_000);
    await daneRx.waitFor(1);
    expect(daneRx.messages).toHaveLength(1);
  });

  it('DANE-4 a self-test that got no answer (the signed name timed out) is logged but holds nothing: a resolver that does not answer cannot downgrade, each lookup defers on its own', async () => {
    const { daneRx } = await destinations();
    w.dns.behave('ietf.org', 'A', 'servfail');
    await w.start();
    await w.relay!.selfTests!.current('test');
    expect(w.relay!.selfTests!.latest).toMatchObject({
      ok: false,
      failure: 'resolver-error',
      detail: expect.stringMatching(/could not answer the secure probe ietf\.org/),
    });
    expect(w.relay!.selfTests!.latest!.notValidating).toBeUndefined();
    expect(await w.relay!.selfTests!.hold()).toBeUndefined();
    await send('a@dane.test');
    await daneRx.waitFor(1);
    await w.settle();
    expect(w.deliveries().find((l) => l.to === 'a@dane.test')).toMatchObject({ status: 'sent', dane: 'Verified' });
  });

  it('DANE-4 dns.mode validate does not hold on the self-test (the relay validates itself; the trust-ad hold does not apply)', async () => {
    await destinations();
    stopValidating();
    await w.start({ dns: { mode: 'validate' } });
    await w.relay!.selfTests!.current('test');
    expect(await w.relay!.selfTests!.hold()).toBeUndefined();
  });
});
