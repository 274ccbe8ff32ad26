/**
 * Issue 19, 8BITMIME and line length end to end: submit → spool → real loopback receivers that do
 * and do not advertise 8BITMIME. What each receiver got is judged by its own parser (mailparser)
 * and by its command log; refusals by the DSN the sender gets.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { World } from '../support/world.js';
import { SmtpTestClient } from '../support/submit.js';
import type { Receiver, ReceiverOptions } from '../support/receiver.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const mx = (domain: string, opts: ReceiverOptions = {}): Promise<Receiver> => w.mx(domain, opts);

/** One message over a raw connection: exact bytes, exact parameters. */
async function send(from: string, rcpts: string[], body: Buffer | string, mailParams = ''): Promise<string> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort });
  await c.ehlo();
  const r = await c.sendMail(from, rcpts, body, mailParams);
  await c.quit();
  expect(r.end?.code, r.end?.raw).toBe(250);
  return /queued as (\S+)/.exec(r.end!.lines[0]!)![1]!;
}

function wireFacts(body: Buffer): { eight: boolean; longest: number } {
  return {
    eight: body.some((b) => b >= 0x80),
    longest: Math.max(
      ...body
        .toString('latin1')
        .split('\r\n')
        .map((l) => l.length),
    ),
  };
}

const MSG_8BIT =
  'From: app@sender.test\r\nTo: x@dest.test\r\nSubject: hello\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="blob.bin"\r\n\r\n\u00ff\u00fe raw\r\n--b--\r\n';

describe('8BITMIME (RFC 6152 §3)', () => {
  it('an 8-bit message to a server without 8BITMIME arrives converted to 7 bit: no BODY=8BITMIME, no SIZE, same content', async () => {
    const rx = await mx('dest.test', { eightBitMime: false });
    await w.start();
    const id = await send('app@sender.test', ['x@dest.test'], Buffer.from(MSG_8BIT, 'utf8'), 'BODY=8BITMIME');
    await rx.waitFor(1);
    await w.settle();
    const got = rx.messages[0]!;
    expect(wireFacts(got.body).eight).toBe(false);
    const mail = rx.commands.find((c) => c.startsWith('MAIL FROM'))!;
    expect(mail).not.toMatch(/BODY=|SIZE=/);
    const parsed = await simpleParser(got.body);
    expect(parsed.text).toBe('Grüße aus Köln'); // the CRLF before a boundary belongs to the boundary
    expect(parsed.attachments[0]!.content.equals(Buffer.from('\u00ff\u00fe raw', 'utf8'))).toBe(true);
    expect(got.body.toString()).toContain('Content-Transfer-Encoding: quoted-printable');
    expect(w.deliveries()[0]).toMatchObject({ queue_id: id, status: 'sent' });
    expect(w.logs.find((l) => l.msg === 'message body converted for the next hop (RFC 6152, RFC 2045)')).toMatchObject({ queue_id: id, target: '7bit' });
  });

  it('the same message to a server with 8BITMIME goes byte for byte with BODY=8BITMIME', async () => {
    const rx = await mx('dest.test');
    await w.start();
    await send('app@sender.test', ['x@dest.test'], Buffer.from(MSG_8BIT, 'utf8'), 'BODY=8BITMIME');
    await rx.waitFor(1);
    expect(rx.commands.find((c) => c.startsWith('MAIL FROM'))).toMatch(/ BODY=8BITMIME/);
    expect(rx.messages[0]!.body.toString('utf8')).toContain(MSG_8BIT);
  });

  it('a client that declared nothing and sent 8-bit octets: its message is 8-bit (BODY=8BITMIME to one hop, converted for the other)', async () => {
    const with8 = await mx('eight.test');
    const without = await mx('seven.test', { eightBitMime: false });
    await w.start();
    await send('app@sender.test', ['x@eight.test', 'y@seven.test'], 'Subject: undeclared\r\n\r\nSchöne Grüße\r\n');
    await with8.waitFor(1);
    await without.waitFor(1);
    expect(with8.commands.find((c) => c.startsWith('MAIL FROM'))).toMatch(/BODY=8BITMIME/);
    expect(wireFacts(without.messages[0]!.body).eight).toBe(false);
    expect((await simpleParser(without.messages[0]!.body)).text).toBe('Schöne Grüße\n');
  });

  it('7-bit mail declared BODY=8BITMIME goes as it is, without BODY, and nothing is converted', async () => {
    const rx = await mx('dest.test', { eightBitMime: false });
    await w.start();
    const body = 'Subject: plain\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nplain text\r\n';
    await send('app@sender.test', ['x@dest.test'], body, 'BODY=8BITMIME');
    await rx.waitFor(1);
    expect(rx.messages[0]!.body.toString()).toMatch(new RegExp(`${body.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
    expect(rx.commands.find((c) => c.startsWith('MAIL FROM'))).toBe('MAIL FROM:<app@sender.test>'); // 7-bit content: no BODY
    expect(w.logs.some((l) => String(l.msg).startsWith('message body converted'))).toBe(false);
  });

  it('delivery.mime_conversion: refuse bounces with 5.6.3 before MAIL; the sender is told why', async () => {
    const inbox = await mx('sender.test');
    const rx = await mx('dest.test', { eightBitMime: false });
    await w.start({ delivery: { mime_conversion: 'refuse' } });
    await send('app@sender.test', ['x@dest.test'], Buffer.from(MSG_8BIT, 'utf8'), 'BODY=8BITMIME');
    await inbox.waitFor(1);
    await w.settle();
    expect(rx.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(rx.messages).toHaveLength(0);
    const dsn = inbox.messages[0]!.body.toString();
    expect(dsn).toContain('Status: 5.6.3');
    expect(dsn).toMatch(/the message has 8-bit octets \(the next hop does not advertise 8BITMIME\) and delivery\.mime_conversion is refuse/);
    expect(w.deliveries().find((l) => l.to === 'x@dest.test')).toMatchObject({ status: 'bounced', dsn: '5.6.3' });
  });

  it('a multipart/signed with 8-bit content is refused (5.6.3, RFC 1847), never sent; to an 8BITMIME server it goes untouched', async () => {
    const inbox = await mx('sender.test');
    const seven = await mx('seven.test', { eightBitMime: false });
    const eight = await mx('eight.test');
    await w.start();
    const signed =
      'From: app@sender.test\r\nSubject: signed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; boundary="s"; protocol="application/pgp-signature"; micalg=pgp-sha256\r\n\r\n--s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nunterschrieben: Grüße\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nabc\r\n-----END PGP SIGNATURE-----\r\n--s--\r\n';
    await send('app@sender.test', ['x@seven.test', 'y@eight.test'], Buffer.from(signed, 'utf8'), 'BODY=8BITMIME');
    await eight.waitFor(1);
    await inbox.waitFor(1);
    await w.settle();
    expect(seven.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(eight.messages[0]!.body.toString('utf8')).toContain(signed);
    const dsn = inbox.messages[0]!.body.toString();
    expect(dsn).toContain('Final-Recipient: rfc822; x@seven.test');
    expect(dsn).toContain('Status: 5.6.3');
    expect(dsn).toMatch(/multipart\/signed \(RFC 1847/);
  });

  it('8-bit octets in a header field without SMTPUTF8 cannot be converted: refused for a 7-bit server', async () => {
    const inbox = await mx('sender.test');
    const rx = await mx('dest.test', { eightBitMime: false });
    await w.start();
    await send('app@sender.test', ['x@dest.test'], 'Subject: Grüße\r\n\r\nbody\r\n', 'BODY=8BITMIME');
    await inbox.waitFor(1);
    expect(rx.messages).toHaveLength(0);
    expect(inbox.messages[0]!.body.toString()).toMatch(/8-bit octets in a header field/);
  });
});

describe('line length (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1)', () => {
  it('the 3000-octet line of the report arrives quoted-printable: no line over 998 octets on the wire, same text', async () => {
    const rx = await mx('dest.test');
    await w.start();
    const line = 'a'.repeat(3000);
    await send('app@sender.test', ['x@dest.test'], `Subject: long\r\n\r\n${line}\r\n`);
    await rx.waitFor(1);
    const got = rx.messages[0]!.body;
    expect(wireFacts(got).longest).toBeLessThanOrEqual(998);
    expect((await simpleParser(got)).text).toBe(`${line}\n`);
  });

  it('ingress.long_lines: refuse answers 550 5.6.0 at the end of DATA', async () => {
    await mx('dest.test');
    await w.start({ ingress: { long_lines: 'refuse' } });
    const c = await SmtpTestClient.connect({ port: w.ingressPort });
    await c.ehlo();
    const r = await c.sendMail('app@sender.test', ['x@dest.test'], `Subject: long\r\n\r\n${'a'.repeat(3000)}\r\n`);
    await c.quit();
    expect(r.end?.code).toBe(550);
    expect(r.end?.enhanced).toBe('5.6.0');
  });

  it('a 20 MB 8-bit message streams through the conversion to a 7-bit server (keepBody off: hashed)', async () => {
    const rx = await mx('dest.test', { eightBitMime: false, keepBody: false });
    await w.start();
    const para = 'Grüße, Ärger, Öl und Übermut — ein Absatz mit Umlauten, der sich oft wiederholt.\r\n';
    const body = Buffer.from(
      `Subject: big\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${para.repeat(Math.ceil(20e6 / Buffer.byteLength(para)))}`,
      'utf8',
    );
    await send('app@sender.test', ['x@dest.test'], body, 'BODY=8BITMIME');
    await rx.waitFor(1, 120_000);
    await w.settle();
    expect(rx.messages[0]!.size).toBeGreaterThan(body.length); // quoted-printable is larger
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent' });
  }, 180_000);
});

describe('old spool files (format v1)', () => {
  it('an 8-bit message written by the v1 spool is scanned and converted for a 7-bit server', async () => {
    const rx = await mx('example.com', { eightBitMime: false });
    const queue = join(w.dir, 'queue');
    // 0700/0600 whatever the umask, as the relay makes them: it refuses a spool others can write
    mkdirSync(join(queue, 'msg'), { recursive: true, mode: 0o700 });
    writeFileSync(join(queue, 'msg', '01m8000000000abc'), readFileSync(join(import.meta.dirname, '..', 'spool', 'fixtures', 'v1-message')), { mode: 0o600 });
    await w.start();
    await rx.waitFor(1);
    const got = rx.messages[0]!;
    expect(wireFacts(got.body).eight).toBe(false);
    expect((await simpleParser(got.body)).text).toBe('Grüße aus dem alten Spool.\n');
  });
});
