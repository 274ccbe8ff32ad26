/**
 * What the delivery code (src/delivery/deliver.ts through the shared attempt loop) hands to TLSRPT,
 * end to end: a real relay (test/support/world.ts), real DNS, real SMTP receivers with real TLS, and
 * the counts as the store has them on disk. RFC 8460 §4.3: a success is a policy-compliant TLS
 * session; one result per connection (TLSRPT-10), whatever the number of messages it carried.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { deliveryDeps } from '../support/deliveryDeps.js';
import { chainPem, makeCa, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { Receiver } from '../support/receiver.js';
import { dayOf } from '../../src/reporting/tlsrpt/report.js';
import type { Relay } from '../../src/relay.js';
import { DestinationRun } from '../../src/delivery/deliver.js';
import { tlsrptSubscriber, type TlsSessionResult } from '../../src/reporting/tlsrpt/results.js';
import { StubResolver } from '../../src/dns/stub.js';
import { Readable } from 'node:stream';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const TLSRPT = { contact_info: 'tlsrpt@relay.test' };

/** A domain with one MX per receiver (in order), its TLSRPT record, and optionally a signed zone with TLSA per MX. */
function domain(name: string, rxs: Receiver[], opts: { secure?: boolean; tlsa?: (Buffer | undefined)[]; usage?: 2 | 3 } = {}): void {
  if (opts.secure) w.dns.addZone({ name, secure: true });
  rxs.forEach((rx, i) => {
    const mx = `mx${i + 1}.${name}`;
    w.dns.add({ name, type: 'MX', data: { preference: 10 * (i + 1), exchange: mx } });
    w.dns.add({ name: mx, type: 'A', data: rx.host });
    const t = opts.tlsa?.[i];
    if (t) w.dns.add({ name: `_${w.port}._tcp.${mx}`, type: 'TLSA', data: { usage: opts.usage ?? 3, selector: 1, matchingType: 1, certificate: t } });
  });
  w.dns.add({ name: `_smtp._tls.${name}`, type: 'TXT', data: `v=TLSRPTv1; rua=mailto:r@${name}` });
}

async function counts(relay: Relay, name: string, day = dayOf(w.clock.t)) {
  await relay.tlsrpt!.store.flush();
  return (await relay.tlsrpt!.store.read(day)).get(name) ?? [];
}

const tlsRx = (c: Issued, ...chain: Issued[]) => w.receiver({ tls: { key: c.keyPem, cert: chainPem(c, ...chain) } });
const send = (to: string) => submit({ port: w.ingressPort, from: 'app@sender.test', to: [to] });

describe('TLSRPT through the delivery code', () => {
  it('TLSRPT-10 a may session whose MX offers no STARTTLS is a starttls-not-supported failure under no-policy-found, never a success', async () => {
    const rx = await w.receiver({ name: 'mx1.plain.test' });
    domain('plain.test', [rx]);
    const relay = await w.start({ tlsrpt: TLSRPT, delivery: { tls_level: 'may' } });
    await send('u@plain.test');
    await w.settle();
    expect(rx.messages).toHaveLength(1); // delivered in cleartext, as `may` allows
    const c = await counts(relay, 'plain.test');
    expect(c).toEqual([
      {
        policy: { type: 'no-policy-found', strings: [], domain: 'plain.test' },
        success: 0,
        failure: 1,
        details: [
          {
            count: 1,
            detail: {
              resultType: 'starttls-not-supported',
              sendingIp: '127.0.0.1',
              receivingMx: 'mx1.plain.test',
              receivingHelo: 'mx1.plain.test',
              receivingIp: rx.host,
              reasonCode: 'starttls-not-offered',
            },
          },
        ],
      },
    ]);
  });

  it('TLSRPT-21 TLSA present but no STARTTLS: starttls-not-supported under the tlsa policy, and the message is not sent in cleartext', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx1.nostarttls.test'] });
    const rx = await w.receiver({ name: 'mx1.nostarttls.test' });
    domain('nostarttls.test', [rx], { secure: true, tlsa: [tlsaData(ee, 1, 1)] });
    const relay = await w.start({ tlsrpt: TLSRPT });
    await send('u@nostarttls.test');
    await w.settle();
    expect(rx.messages).toHaveLength(0);
    const c = await counts(relay, 'nostarttls.test');
    expect(c).toEqual([
      {
        policy: { type: 'tlsa', strings: [`3 1 1 ${tlsaData(ee, 1, 1).toString('hex').toUpperCase()}`], domain: 'mx1.nostarttls.test' },
        success: 0,
        failure: 1,
        details: [
          {
            count: 1,
            detail: {
              resultType: 'starttls-not-supported',
              sendingIp: '127.0.0.1',
              receivingMx: 'mx1.nostarttls.test',
              receivingHelo: 'mx1.nostarttls.test',
              receivingIp: rx.host,
            },
          },
        ],
      },
    ]);
  });

  it('TLSRPT-10 TLSRPT-20 a failed may handshake is recorded once (validation-failure + reason); its cleartext retry records nothing', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx1.old.test'] });
    // The receiver speaks only TLS 1.0, which the client refuses: the handshake fails, DANE-44 retries in cleartext.
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee), minVersion: 'TLSv1', maxVersion: 'TLSv1' } });
    domain('old.test', [rx]);
    const relay = await w.start({ tlsrpt: TLSRPT, delivery: { tls_level: 'may' } });
    await send('u@old.test');
    await w.settle();
    expect(rx.messages).toHaveLength(1);
    expect(rx.messages[0]!.secure).toBe(false);
    expect(rx.connections).toBe(2);
    const [c, ...more] = await counts(relay, 'old.test');
    expect(more).toEqual([]);
    expect(c).toMatchObject({ policy: { type: 'no-policy-found' }, success: 0, failure: 1 });
    expect(c!.details).toHaveLength(1);
    expect(c!.details[0]!.detail).toMatchObject({ resultType: 'validation-failure', receivingMx: 'mx1.old.test', receivingIp: rx.host });
    expect(c!.details[0]!.detail.reasonCode).toBeTruthy();
  });

  it('TLSRPT-10 a may session with TLS is one success per connection: N messages over a reused connection count once (one result per connection)', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx1.many.test'] });
    const rx = await tlsRx(ee);
    domain('many.test', [rx]);
    const relay = await w.start({ tlsrpt: TLSRPT, delivery: { tls_level: 'may' } });
    const env = { from: 'app@sender.test', smtputf8: false, eightBit: false, client: { address: '127.0.0.1' }, received: w.clock.t, kind: 'normal' as const };
    const msgs = [];
    for (let i = 0; i < 4; i++)
      msgs.push(await relay.spool.enqueue({ ...env, recipients: [`u${i}@many.test`] }, Buffer.from(`Subject: ${i}\r\n\r\nhello\r\n`)));
    for (const m of msgs) relay.scheduler.add(m);
    await w.settle();
    await rx.waitFor(4);
    // The scheduler may open more than one connection; at least one carried several messages.
    expect(rx.connections).toBeLessThan(4);
    expect(rx.tlsHandshakes).toBe(rx.connections);
    expect(await counts(relay, 'many.test')).toEqual([
      { policy: { type: 'no-policy-found', strings: [], domain: 'many.test' }, success: rx.connections, failure: 0, details: [] },
    ]);
  });

  it('TLSRPT-21 DANE-TA: a leaf whose name does not match is certificate-host-mismatch; an expired chain is certificate-expired; the next MX is a success (MX fallback)', async () => {
    const ca = await makeCa();
    const wrongName = await makeLeaf(ca, { dnsNames: ['elsewhere.test'] });
    const expired = await makeLeaf(ca, {
      dnsNames: ['mx2.ta.test'],
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    const good = await makeLeaf(ca, { dnsNames: ['mx3.ta.test'] });
    const rxs = [await tlsRx(wrongName, ca), await tlsRx(expired, ca), await tlsRx(good, ca)];
    const ta = tlsaData(ca, 1, 1);
    domain('ta.test', rxs, { secure: true, tlsa: [ta, ta, ta], usage: 2 });
    const relay = await w.start({ tlsrpt: TLSRPT });
    await send('u@ta.test');
    await w.settle();
    expect(rxs.map((r) => r.messages.length)).toEqual([0, 0, 1]);
    const c = await counts(relay, 'ta.test');
    const by = (mx: string) => c.find((p) => p.policy.domain === mx)!;
    const rr = `2 1 1 ${ta.toString('hex').toUpperCase()}`;
    expect(by('mx1.ta.test')).toMatchObject({
      policy: { type: 'tlsa', strings: [rr] },
      success: 0,
      failure: 1,
      details: [{ count: 1, detail: { resultType: 'certificate-host-mismatch', receivingMx: 'mx1.ta.test' } }],
    });
    expect(by('mx2.ta.test')).toMatchObject({
      success: 0,
      failure: 1,
      details: [{ count: 1, detail: { resultType: 'certificate-expired', receivingMx: 'mx2.ta.test' } }],
    });
    expect(by('mx3.ta.test')).toMatchObject({ policy: { type: 'tlsa', strings: [rr] }, success: 1, failure: 0 });
    expect(c).toHaveLength(3);
  });

  it('TLSRPT-21 dane-only without a secure TLSA RRset is dane-required', async () => {
    const rx = await w.receiver({ name: 'mx1.nodane.test' });
    domain('nodane.test', [rx]); // unsigned zone: no DNSSEC, no TLSA
    const relay = await w.start({ tlsrpt: TLSRPT, delivery: { tls_level: 'dane-only' } });
    await send('u@nodane.test');
    await w.settle();
    expect(rx.messages).toHaveLength(0);
    const c = await counts(relay, 'nodane.test');
    expect(c.map((p) => [p.success, p.failure])).toEqual([[0, 1]]);
    expect(c[0]!.details[0]!.detail).toMatchObject({ resultType: 'dane-required', receivingMx: 'mx1.nodane.test' });
  });

  it('TLSRPT-21 DANE-46 the audit-only retry records nothing: the failed verification is one certificate-not-trusted, no success', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx1.audit.test'] });
    const stale = await makeSelfSigned();
    const rx = await tlsRx(ee);
    domain('audit.test', [rx], { secure: true, tlsa: [tlsaData(stale, 1, 1)] });
    const file = join(w.dir, 'tls_policy');
    writeFileSync(file, 'audit.test dane audit\n');
    const relay = await w.start({ tlsrpt: TLSRPT, policy: { tls_policy: file } });
    await send('u@audit.test');
    await w.settle();
    expect(rx.messages).toHaveLength(1); // delivered over unauthenticated TLS (DANE-46)
    const c = await counts(relay, 'audit.test');
    expect(c).toHaveLength(1);
    expect(c[0]).toMatchObject({
      policy: { type: 'tlsa', domain: 'mx1.audit.test' },
      success: 0,
      failure: 1,
      details: [{ count: 1, detail: { resultType: 'certificate-not-trusted', reasonCode: 'dane-no-match' } }],
    });
  });

  it('TLSRPT-25 an MX lookup failure is dnssec-invalid without receiving-mx-hostname (not the recipient domain)', async () => {
    w.dns.add({ name: '_smtp._tls.mxfail.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:r@mxfail.test' });
    w.dns.behave('mxfail.test', 'MX', 'servfail');
    await w.receiver(); // fixes the world's port
    const relay = await w.start({ tlsrpt: TLSRPT });
    await send('u@mxfail.test');
    await w.settle();
    const c = await counts(relay, 'mxfail.test');
    expect(c).toEqual([
      {
        policy: { type: 'no-policy-found', strings: [], domain: 'mxfail.test' },
        success: 0,
        failure: 1,
        details: [{ count: 1, detail: { resultType: 'dnssec-invalid', reasonCode: expect.stringMatching(/^mx-lookup-/) } }],
      },
    ]);
  });

  it('TLSRPT-31 a day boundary through recorder → store → report: sessions at 23:59:59Z and 00:00:00Z land in two reports', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx1.days.test'] });
    const rx = await tlsRx(ee);
    domain('days.test', [rx]);
    w.clock.t = Date.parse('2025-03-01T23:59:59.000Z');
    const relay = await w.start({ tlsrpt: TLSRPT, delivery: { tls_level: 'may', max_messages_per_connection: 1 } });
    await send('a@days.test');
    await w.settle();
    w.clock.t = Date.parse('2025-03-02T00:00:00.000Z');
    await send('b@days.test');
    await w.settle();
    await rx.waitFor(2);
    await relay.tlsrpt!.store.flush();
    const [d1] = await relay.tlsrpt!.build('2025-03-01', ['days.test']);
    const [d2] = await relay.tlsrpt!.build('2025-03-02', ['days.test']);
    for (const [r, day] of [
      [d1, '2025-03-01'],
      [d2, '2025-03-02'],
    ] as const) {
      expect(r!.json['date-range']).toEqual({ 'start-datetime': `${day}T00:00:00Z`, 'end-datetime': `${day}T23:59:59Z` });
      expect(r!.json.policies.map((p) => p.summary)).toEqual([{ 'total-successful-session-count': 1, 'total-failure-session-count': 0 }]);
    }
  });

  it('TLSRPT-10 a skipped MX is recorded once per DestinationRun, not on every reconnect; each new connection is one success', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx2.skip.test'] });
    const rx = await tlsRx(ee);
    domain('skip.test', [await w.receiver(), rx], { secure: true });
    w.dns.behave(`_${w.port}._tcp.mx1.skip.test`, 'TLSA', 'servfail'); // mx1 is skipped (dnssec-invalid)
    const resolver = new StubResolver({ servers: [w.dns.server], timeoutMs: 1000, attempts: 1 });
    const results: TlsSessionResult[] = [];
    const t = 3000;
    const run = new DestinationRun(
      deliveryDeps({
        resolver,
        port: w.port,
        timeout: t,
        tlsLevel: () => ({ level: 'dane', rule: 'test' }),
        maxMessagesPerConnection: 1,
        subscribers: [tlsrptSubscriber((r) => results.push(r))],
      }),
      'skip.test',
    );
    try {
      for (let i = 0; i < 3; i++) {
        const out = await run.deliver({
          id: `m${i}`,
          envelope: {
            kind: 'normal',
            from: 'a@sender.test',
            recipients: [`u${i}@skip.test`],
            smtputf8: false,
            eightBit: false,
            client: { address: '127.0.0.1' },
            received: Date.now(),
          },
          size: 20,
          recipients: [`u${i}@skip.test`],
          body: () => Readable.from([Buffer.from('Subject: x\r\n\r\nhi\r\n')]),
        });
        expect(out.map((o) => o.result)).toEqual(['sent']);
      }
    } finally {
      await run.close();
      await resolver.close();
    }
    expect(rx.connections).toBe(3); // one message per connection: three opens, mx1 skipped each time
    expect(results.filter((r) => !r.ok).map((r) => [r.host, r.resultType])).toEqual([['mx1.skip.test', 'dnssec-invalid']]);
    expect(results.filter((r) => r.ok).map((r) => r.host)).toEqual(['mx2.skip.test', 'mx2.skip.test', 'mx2.skip.test']);
  });

  it('TLSRPT-48 a mailed report is retried for up to 24 hours and then dropped, while an ordinary message keeps the queue lifetime', async () => {
    await w.receiver(); // fixes the world's port
    w.dns.add({ name: 'down.test', type: 'MX', data: { preference: 10, exchange: 'mx.down.test' } });
    w.dns.add({ name: 'mx.down.test', type: 'A', data: w.deadHost() }); // connection refused: deferred each time
    const relay = await w.start({ tlsrpt: TLSRPT });
    const env = { smtputf8: false, eightBit: false, client: { address: '127.0.0.1' }, received: w.clock.t };
    relay.scheduler.add(
      await relay.spool.enqueue({ ...env, from: '', recipients: ['report@down.test'], kind: 'tlsrpt' }, Buffer.from('Subject: report\r\n\r\nr\r\n')),
    );
    relay.scheduler.add(
      await relay.spool.enqueue(
        { ...env, from: 'app@sender.test', recipients: ['user@down.test'], kind: 'normal' },
        Buffer.from('Subject: normal\r\n\r\nn\r\n'),
      ),
    );
    await w.settle();
    const state = (a: string) =>
      relay.scheduler
        .list()
        .flatMap((m) => m.recipients)
        .find((r) => r.address === a)?.state;
    for (let h = 4; h <= 20; h += 4) await w.advance(4 * 3_600_000);
    expect(state('report@down.test')).toBe('deferred'); // 20 h: still retried
    for (let h = 24; h <= 28; h += 4) await w.advance(4 * 3_600_000);
    expect(state('report@down.test')).toBeUndefined(); // past 24 h: given up, no DSN (null reverse-path)
    expect(state('user@down.test')).toBe('deferred'); // the ordinary queue lifetime (5 d) still runs
  });
});
