/**
 * REQUIRETLS delivery end to end (RFC 8689 §4.2.1, §5; digest RT-20…27, RT-51): messages submitted
 * with the MAIL parameter leave only over a DNSSEC-secure MX whose certificate DANE authenticates, to
 * a server that advertises REQUIRETLS after STARTTLS, with REQUIRETLS on MAIL FROM; otherwise they
 * wait (4.7.30 / 4.7.10) and bounce with 5.7.30 / 5.7.10, headers only. Real loopback receivers with
 * and without REQUIRETLS, DANE-EE certificates, the loopback DNS server with AD per zone.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { World } from '../support/world.js';
import { SmtpTestClient } from '../support/submit.js';
import { chainPem, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { Receiver, ReceiverOptions } from '../support/receiver.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const daneEe = (cert: Issued) => ({ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(cert, 1, 1) });

/** A receiver with a DANE-EE certificate for `name`. */
async function tlsRx(name: string, extra: ReceiverOptions = {}): Promise<{ rx: Receiver; cert: Issued }> {
  const cert = await makeSelfSigned({ dnsNames: [name] });
  const rx = await w.receiver({ tls: { key: cert.keyPem, cert: chainPem(cert) }, ...extra });
  return { rx, cert };
}

/** dest.test (secure or not) with MX hosts in order, each with its address and TLSA records. */
function destination(hosts: { name: string; rx: Receiver; tlsa?: object[] }[], secure = true, domain = 'dest.test'): void {
  w.dns.addZone({ name: domain, secure });
  hosts.forEach((h, i) => {
    w.dns.add({ name: domain, type: 'MX', data: { preference: 10 * (i + 1), exchange: h.name } }, { name: h.name, type: 'A', data: h.rx.host });
    for (const t of h.tlsa ?? []) w.dns.add({ name: `_${w.port}._tcp.${h.name}`, type: 'TLSA', data: t });
  });
}

/** Submits from loopback (relay_clients: REQUIRETLS is offered in cleartext there, RT-11); `params` go on MAIL FROM. */
async function send(params: string, to = 'user@dest.test', body = 'Subject: secret\r\n\r\nthe secret body\r\n'): Promise<string> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort });
  await c.ehlo();
  const r = await c.sendMail('app@sender.test', [to], body, params);
  await c.quit();
  expect(r.end?.code).toBe(250);
  return /queued as (\S+)/.exec(r.end!.lines[0]!)![1]!;
}

const recipient = (id: string) => w.relay!.scheduler.get(id)?.recipients[0];

describe('REQUIRETLS delivery', () => {
  it('RT-22 RT-23 RT-26 secure MX, DANE-EE authenticated, REQUIRETLS advertised: delivered with REQUIRETLS on MAIL FROM', async () => {
    const { rx, cert } = await tlsRx('mx1.dest.test', { requireTls: true });
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(cert)] }]);
    await w.start();
    await send('REQUIRETLS');
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages[0]).toMatchObject({ secure: true, requireTls: true });
    expect(rx.commands.find((c) => c.startsWith('MAIL'))).toMatch(/^MAIL FROM:<app@sender\.test>.* REQUIRETLS/);
  });

  it('RT-20 RT-23 RT-25 an MX without REQUIRETLS after STARTTLS gets QUIT before MAIL, the next MX delivers', async () => {
    const one = await tlsRx('mx1.dest.test'); // authenticates, no REQUIRETLS
    const two = await tlsRx('mx2.dest.test', { requireTls: true });
    destination([
      { name: 'mx1.dest.test', rx: one.rx, tlsa: [daneEe(one.cert)] },
      { name: 'mx2.dest.test', rx: two.rx, tlsa: [daneEe(two.cert)] },
    ]);
    await w.start();
    await send('REQUIRETLS');
    await two.rx.waitFor(1);
    await w.settle();
    expect(one.rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(one.rx.commands).toContain('QUIT');
    expect(two.rx.messages[0]).toMatchObject({ requireTls: true });
    expect(w.logs.find((l) => l.msg === 'REQUIRETLS: host not used')).toMatchObject({ why: 'does not advertise REQUIRETLS after STARTTLS' });
  });

  it('RT-27 RT-3 RT-51 RT-52 no host offers REQUIRETLS: deferred 4.7.30, then at the end of the lifetime bounced 5.7.30 with the header only, although RET=FULL; the return path qualifies for no REQUIRETLS route, so the bounce goes without the parameter rather than be lost', async () => {
    const inbox = await w.mx('sender.test');
    const { rx, cert } = await tlsRx('mx1.dest.test');
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(cert)] }]);
    await w.start({ queue: { min_backoff: '30m', max_backoff: '1h', lifetime: '3h' } });
    const id = await send('REQUIRETLS RET=FULL');
    await w.settle();
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.30' });
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    await w.advance(4 * 3600_000);
    await inbox.waitFor(1);
    await w.settle();
    const dsn = inbox.messages[0]!.body.toString();
    expect(dsn).toMatch(/Status: 5\.7\.30/);
    expect(dsn).toContain('Content-Type: text/rfc822-headers');
    expect(dsn).toContain('Subject: secret');
    expect(dsn).not.toContain('the secret body');
    expect(rx.messages).toHaveLength(0);
    expect(inbox.commands.find((c) => c.startsWith('MAIL'))).toBe('MAIL FROM:<>');
    expect(w.logs.find((l) => l.msg.startsWith('REQUIRETLS: no host qualifies for this DSN'))).toMatchObject({ domain: 'sender.test', dsn: '4.7.10' });
  });

  it('RT-50 RT-51 RT-53 the delay and the failure DSN of a REQUIRETLS message are themselves sent with REQUIRETLS (MAIL FROM:<> REQUIRETLS over DANE) and return the header only', async () => {
    const back = await tlsRx('mx.sender.test', { requireTls: true });
    destination([{ name: 'mx.sender.test', rx: back.rx, tlsa: [daneEe(back.cert)] }], true, 'sender.test');
    const { rx, cert } = await tlsRx('mx1.dest.test'); // no REQUIRETLS: the message waits, then bounces
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(cert)] }]);
    await w.start({ queue: { min_backoff: '30m', max_backoff: '1h', lifetime: '3h', delay_warning: '1h' } });
    await send('REQUIRETLS RET=FULL');
    await w.settle();
    await w.advance(3600_000 + 1);
    await back.rx.waitFor(1);
    await w.advance(3 * 3600_000);
    await back.rx.waitFor(2);
    await w.settle();
    const reports = back.rx.messages.map((m) => m.body.toString());
    expect(reports.filter((r) => /Action: delayed/.test(r))).toHaveLength(1);
    expect(reports.filter((r) => /Action: failed/.test(r) && /Status: 5\.7\.30/.test(r))).toHaveLength(1);
    for (const [i, r] of reports.entries()) {
      expect(back.rx.messages[i]).toMatchObject({ requireTls: true, secure: true });
      expect(r).toContain('Content-Type: text/rfc822-headers');
      expect(r).toContain('Subject: secret');
      expect(r).not.toContain('the secret body');
    }
    expect(back.rx.commands.filter((c) => c.startsWith('MAIL'))).toEqual(['MAIL FROM:<> REQUIRETLS', 'MAIL FROM:<> REQUIRETLS']);
    expect(w.logs.some((l) => l.msg.startsWith('REQUIRETLS: no host qualifies for this DSN'))).toBe(false);
  });

  it('RT-21 RT-25 an insecure MX (no DNSSEC) is never used, even over TLS to a server with REQUIRETLS: deferred 4.7.10, no MAIL sent', async () => {
    const { rx, cert } = await tlsRx('mx1.dest.test', { requireTls: true });
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(cert)] }], false);
    await w.start();
    const id = await send('REQUIRETLS');
    await w.settle();
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.10' });
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
  });

  it('RT-25 tls_policy and danefail do not downgrade a REQUIRETLS message: with DANE failing and the destination at `may`, ordinary mail goes, the REQUIRETLS message waits', async () => {
    const { rx } = await tlsRx('mx1.dest.test', { requireTls: true });
    const other = await makeSelfSigned({ dnsNames: ['mx1.dest.test'] });
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(other)] }]); // TLSA matches no certificate the server has
    writeFileSync(join(w.dir, 'tls_policy'), 'dest.test may\n');
    writeFileSync(join(w.dir, 'danefail'), 'dest.test\n');
    await w.start({ policy: { tls_policy: join(w.dir, 'tls_policy'), danefail: join(w.dir, 'danefail') } });
    const tagged = await send('REQUIRETLS', 'a@dest.test', 'Subject: tagged\r\n\r\nx\r\n');
    const plain = await send('', 'b@dest.test', 'Subject: plain\r\n\r\ny\r\n');
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages.map((m) => m.to)).toEqual([['b@dest.test']]);
    expect(rx.messages[0]).toMatchObject({ requireTls: false });
    expect(recipient(tagged)).toMatchObject({ state: 'deferred', dsnCode: '4.7.10' });
    expect(recipient(plain)).toBeUndefined(); // delivered and forgotten
  });
});

/** A message with `TLS-Required: No` (RFC 8689 §3) and a marker body. */
const relaxed = (subject: string, extra = '') => `Subject: ${subject}\r\nTLS-Required: No\r\n${extra}\r\nbody ${subject}\r\n`;

describe('TLS-Required: No (RFC 8689 §4.2.2)', () => {
  it('RT-31 RT-72 RT-33 a failing DANE destination: the message with the field goes out over opportunistic TLS, logged as such, the field unchanged; an ordinary message waits (4.7.5)', async () => {
    const { rx } = await tlsRx('mx1.dest.test');
    const other = await makeSelfSigned({ dnsNames: ['mx1.dest.test'] });
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(other)] }]); // TLSA matches nothing the server has
    await w.start();
    const plain = await send('', 'a@dest.test', 'Subject: plain\r\n\r\nx\r\n');
    await send('', 'b@dest.test', relaxed('relaxed'));
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages.map((m) => m.to)).toEqual([['b@dest.test']]);
    expect(rx.messages[0]).toMatchObject({ secure: true, requireTls: false });
    expect(rx.messages[0]!.body.toString()).toMatch(/\r\nTLS-Required: No\r\n/);
    expect(recipient(plain)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(w.deliveries().find((d) => d.to === 'b@dest.test')).toMatchObject({
      status: 'sent',
      tls_required: 'no',
      tls_rule: expect.stringMatching(/^TLS-Required: No/),
    });
    expect(w.logs.find((l) => l.msg === 'queued' && l.tls_required === 'no')).toBeDefined();
  });

  it('RT-31 RT-34 a DANE destination whose MX does not offer STARTTLS: delivered in cleartext', async () => {
    const rx = await w.receiver(); // no TLS
    const cert = await makeSelfSigned({ dnsNames: ['mx1.dest.test'] });
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(cert)] }]);
    await w.start();
    await send('', 'b@dest.test', relaxed('clear'));
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages[0]).toMatchObject({ secure: false });
  });

  it('RT-32 RT-30 REQUIRETLS wins over the field (the message waits); two fields, or another value, are ignored (the destination policy applies)', async () => {
    const { rx } = await tlsRx('mx1.dest.test', { requireTls: true });
    const other = await makeSelfSigned({ dnsNames: ['mx1.dest.test'] });
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(other)] }]);
    await w.start();
    const both = await send('REQUIRETLS', 'a@dest.test', relaxed('both'));
    const twice = await send('', 'b@dest.test', relaxed('twice', 'TLS-Required: No\r\n'));
    const yes = await send('', 'c@dest.test', 'Subject: yes\r\nTLS-Required: Yes\r\n\r\nx\r\n');
    await w.settle();
    expect(rx.messages).toHaveLength(0);
    expect(recipient(both)).toMatchObject({ state: 'deferred', dsnCode: '4.7.10' });
    expect(recipient(twice)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(recipient(yes)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(w.logs.filter((l) => l.msg === 'TLS-Required: No ignored: MAIL FROM carried REQUIRETLS (RFC 8689 section 4.1)')).toHaveLength(1);
    expect(w.logs.filter((l) => l.msg === 'TLS-Required header field ignored').map((l) => l.why)).toEqual([
      '2 TLS-Required fields (RFC 8689 section 3 allows one)',
      'TLS-Required value is not "No" (RFC 8689 section 3)',
    ]);
  });

  it("RT-33 an explicit tls_policy dane-only entry is the operator's, not the recipient's: it stands", async () => {
    const { rx } = await tlsRx('mx1.dest.test');
    const other = await makeSelfSigned({ dnsNames: ['mx1.dest.test'] });
    destination([{ name: 'mx1.dest.test', rx, tlsa: [daneEe(other)] }]);
    writeFileSync(join(w.dir, 'tls_policy'), 'dest.test dane-only\n');
    await w.start({ policy: { tls_policy: join(w.dir, 'tls_policy') } });
    const id = await send('', 'b@dest.test', relaxed('local'));
    await w.settle();
    expect(rx.messages).toHaveLength(0);
    expect(recipient(id)).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
  });

  it('RT-31 the field waives TLS authentication, never the route: a failing TLSA lookup is ignored, a failing MX lookup still defers (4.4.3)', async () => {
    const { rx } = await tlsRx('mx1.dest.test');
    destination([{ name: 'mx1.dest.test', rx }]);
    w.dns.behave(`_${w.port}._tcp.mx1.dest.test`, 'TLSA', 'servfail');
    w.dns.addZone({ name: 'broken.test', secure: true });
    w.dns.add({ name: 'broken.test', type: 'MX', data: { preference: 10, exchange: 'mx1.dest.test' } });
    w.dns.behave('broken.test', 'MX', 'servfail');
    await w.start();
    await send('', 'b@dest.test', relaxed('tlsa'));
    const mx = await send('', 'c@broken.test', relaxed('mx'));
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages.map((m) => m.to)).toEqual([['b@dest.test']]);
    expect(recipient(mx)).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
  });
});
