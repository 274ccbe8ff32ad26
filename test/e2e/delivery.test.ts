/**
 * The whole path on loopback: submit → spool → schedule → MX → SMTP → receiver, with
 * retries, bounces and DSNs. Outcomes are checked at the receivers and in the spool.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { simpleParser } from 'mailparser';
import { World } from '../support/world.js';
import { dsnProblems } from '../support/dsnGrammar.js';
import { submit } from '../support/mail.js';
import { makeSelfSigned } from '../support/pki.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const MIN = 60_000;

/** The sender's own domain receives DSNs. */
async function senderMailbox() {
  const r = await w.receiver();
  w.dns.add({ name: 'sender.test', type: 'MX', data: { preference: 10, exchange: 'mx.sender.test' } }, { name: 'mx.sender.test', type: 'A', data: r.host });
  return r;
}

async function dsnFrom(r: { messages: { body: Buffer; from: string }[] }, i = 0) {
  const m = r.messages[i]!;
  expect(m.from).toBe(''); // DSNs come from the null sender (RFC 5321 §4.5.5)
  const raw = m.body.toString();
  const status = raw.slice(raw.indexOf('message/delivery-status'));
  return { raw, status, parsed: await simpleParser(m.body) };
}

describe('delivery path (issue 3)', () => {
  it('delivers to the MX over opportunistic TLS with all recipients of a domain in one transaction', async () => {
    const cert = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const rx = await w.receiver({ tls: { key: cert.keyPem, cert: cert.certPem } });
    w.dns.addZone({ name: 'dest.test', secure: false });
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: rx.host });
    await w.start();
    const { queueId } = await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['a@dest.test', 'b@dest.test'], text: 'body line\n.leading dot\n' });
    expect(queueId).toMatch(/\S/);
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages).toHaveLength(1);
    expect(rx.messages[0]!.to.sort()).toEqual(['a@dest.test', 'b@dest.test']);
    expect(rx.messages[0]!.secure).toBe(true);
    expect(rx.messages[0]!.body.toString()).toMatch(/^Received: from /);
    expect(rx.messages[0]!.body.toString()).toContain('\r\n.leading dot\r\n');
    const lines = w.deliveries();
    expect(lines.map((l) => l.status)).toEqual(['sent', 'sent']);
    expect(lines[0]).toMatchObject({ queue_id: queueId, relay: `mx.dest.test[${rx.host}]:${w.port}`, dane: 'Untrusted' });
    expect(w.relay!.scheduler.size).toBe(0);
  });

  it('DANE-14 tries MX hosts in preference order and falls back on connection failure and 4xx greeting', async () => {
    const busy = await w.receiver({ greeting: { code: 421, text: 'busy' } });
    const good = await w.receiver();
    w.dns.add(
      { name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx1.dest.test' } },
      { name: 'dest.test', type: 'MX', data: { preference: 20, exchange: 'mx2.dest.test' } },
      { name: 'dest.test', type: 'MX', data: { preference: 30, exchange: 'mx3.dest.test' } },
      { name: 'mx1.dest.test', type: 'A', data: w.deadHost() },
      { name: 'mx2.dest.test', type: 'A', data: busy.host },
      { name: 'mx3.dest.test', type: 'A', data: good.host },
    );
    await w.start();
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['x@dest.test'] });
    await good.waitFor(1);
    expect(busy.messages).toHaveLength(0);
    expect(busy.connections).toBeGreaterThan(0);
  });

  it('DANE-12 implicit MX: a domain without MX records receives at its own address', async () => {
    const rx = await w.receiver();
    w.dns.add({ name: 'bare.test', type: 'A', data: rx.host });
    await w.start();
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['x@bare.test'] });
    await rx.waitFor(1);
    expect(rx.messages[0]!.to).toEqual(['x@bare.test']);
  });

  it('DANE-13 null MX bounces at once with 5.1.10 and no address lookup', async () => {
    const inbox = await senderMailbox();
    w.dns.add({ name: 'nomail.test', type: 'MX', data: { preference: 0, exchange: '.' } }, { name: 'nomail.test', type: 'A', data: '127.0.0.99' });
    await w.start();
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['x@nomail.test'] });
    await inbox.waitFor(1);
    const { status, parsed } = await dsnFrom(inbox);
    expect(status).toContain('Action: failed');
    expect(status).toContain('Status: 5.1.10');
    expect(parsed.subject).toBe('Undelivered Mail Returned to Sender');
    expect(w.dns.queriesFor('nomail.test', 'A')).toBe(0);
  });

  it('DANE-11 NXDOMAIN bounces with 5.1.2; issue21: the Diagnostic-Code of a local failure carries the X-Dane-Relay type (RFC 3464 §2.3.6)', async () => {
    const inbox = await senderMailbox();
    await w.start();
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['x@does-not-exist.test'] });
    await inbox.waitFor(1);
    const { status, raw } = await dsnFrom(inbox);
    expect(status).toContain('Status: 5.1.2');
    expect(status).toContain('Diagnostic-Code: X-Dane-Relay; domain does-not-exist.test does not exist (NXDOMAIN)');
    expect(dsnProblems(raw).problems).toEqual([]);
  });

  it('per-recipient results: 250 delivered, 450 deferred with backoff, 550 bounced with a DSN', async () => {
    const inbox = await senderMailbox();
    let busy = true; // the mailbox is busy on the first attempt only
    const rx = await w.receiver({
      rcpt: (a) =>
        a.startsWith('later') && busy
          ? { code: 450, message: '4.2.1 mailbox busy' }
          : a.startsWith('nobody')
            ? { code: 550, message: '5.1.1 no such user' }
            : undefined,
    });
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: rx.host });
    await w.start();
    const { queueId } = await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['ok@dest.test', 'later@dest.test', 'nobody@dest.test'] });
    await rx.waitFor(1);
    await inbox.waitFor(1);
    await w.settle();
    expect(rx.messages[0]!.to).toEqual(['ok@dest.test']);
    const { status } = await dsnFrom(inbox);
    expect(status).toContain('Final-Recipient: rfc822; nobody@dest.test');
    expect(status).toContain('Status: 5.1.1');
    expect(status).toMatch(/Diagnostic-Code: smtp; 550 5\.1\.1 .*no such user/);
    expect(status).not.toContain('Final-Recipient: rfc822; later@dest.test');
    const msg = w.relay!.scheduler.get(queueId)!;
    const later = msg.recipients.find((r) => r.address === 'later@dest.test')!;
    expect(later).toMatchObject({ state: 'deferred', attempts: 1, dsnCode: '4.2.1' });
    expect(later.nextAttempt - w.clock.now()).toBe(30 * MIN);
    expect(later.lastReason).toMatch(/450 4\.2\.1 .*mailbox busy/);

    // Not yet due: nothing happens. Due: retried, and only the deferred recipient.
    await w.advance(29 * MIN);
    expect(rx.messages).toHaveLength(1);
    busy = false;
    await w.advance(2 * MIN);
    await rx.waitFor(2);
    expect(rx.messages[1]!.to).toEqual(['later@dest.test']);
  });

  it('backoff doubles, a delayed DSN goes out after delay_warning, and expiry bounces with the last reason', async () => {
    const inbox = await senderMailbox();
    const rx = await w.receiver({ rcpt: () => ({ code: 451, message: '4.3.0 try later' }) });
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: rx.host });
    await w.start({ queue: { min_backoff: '30m', max_backoff: '4h', lifetime: '1d', delay_warning: '2h' } });
    const { queueId } = await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['x@dest.test'] });
    await w.settle();
    const r = () => w.relay!.scheduler.get(queueId)?.recipients[0];
    const gaps: number[] = [];
    let last = w.clock.now();
    for (let i = 0; i < 4; i++) {
      const next = r()!.nextAttempt;
      gaps.push(next - last);
      w.clock.t = next;
      last = next;
      await w.settle();
    }
    expect(gaps).toEqual([30 * MIN, 60 * MIN, 120 * MIN, 240 * MIN]);
    expect(r()!.attempts).toBe(5);
    await inbox.waitFor(1); // delayed DSN after 2 h
    const delayed = await dsnFrom(inbox, 0);
    expect(delayed.status).toContain('Action: delayed');
    expect(delayed.status).toContain('Will-Retry-Until:');
    // Run out the lifetime.
    while (r()) {
      w.clock.t = Math.max(w.clock.t, r()!.nextAttempt);
      await w.settle();
    }
    await inbox.waitFor(2);
    const bounce = await dsnFrom(inbox, 1);
    expect(bounce.status).toContain('Action: failed');
    expect(bounce.status).toContain('Status: 5.3.0');
    expect(bounce.raw).toMatch(/451 4\.3\.0 .*try later/);
    expect(inbox.messages).toHaveLength(2); // exactly one delayed and one failed DSN
  });

  it('a DSN that cannot be delivered is never answered with another DSN', async () => {
    await w.receiver(); // fixes the destination port
    await w.start();
    // Null-sender message to a null MX domain: bounced, but no DSN is generated.
    w.dns.add({ name: 'nomail.test', type: 'MX', data: { preference: 0, exchange: '.' } });
    await submit({ port: w.ingressPort, from: '', to: ['x@nomail.test'] });
    await w.settle();
    expect(w.logs.filter((l) => l.msg === 'DSN queued')).toHaveLength(0);
    expect(w.deliveries()[0]).toMatchObject({ status: 'bounced', dsn: '5.1.10' });
    expect(w.relay!.scheduler.size).toBe(0);
  });

  it('connections are reused for several messages to one destination', async () => {
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } });
    const host = w.deadHost();
    w.dns.add({ name: 'mx.dest.test', type: 'A', data: host });
    await w.receiver(); // fixes the port
    await w.start({ delivery: { per_destination: 1 } });
    for (let i = 0; i < 3; i++) await submit({ port: w.ingressPort, from: 'app@sender.test', to: [`u${i}@dest.test`] });
    await w.settle();
    expect(w.deliveries().filter((l) => l.status === 'deferred')).toHaveLength(3);
    const rx = await w.receiver({ host });
    await w.advance(31 * MIN);
    await rx.waitFor(3);
    expect(rx.connections).toBeLessThan(3);
  });

  it('DANE-20 an MX whose address lookup fails is skipped; the next one is used', async () => {
    const rx = await w.receiver();
    w.dns.add(
      { name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx1.dest.test' } },
      { name: 'dest.test', type: 'MX', data: { preference: 20, exchange: 'mx2.dest.test' } },
      { name: 'mx1.dest.test', type: 'A', data: '127.0.0.250' },
      { name: 'mx2.dest.test', type: 'A', data: rx.host },
    );
    w.dns.behave('mx1.dest.test', 'A', 'servfail');
    await w.start();
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['x@dest.test'] });
    await rx.waitFor(1);
    expect(w.logs.find((l) => l.msg === 'MX host skipped')).toMatchObject({ mx: 'mx1.dest.test', skipped: 'A lookup for mx1.dest.test: SERVFAIL' });
  });
});
