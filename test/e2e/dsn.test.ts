/**
 * Issue 19, the DSN extension end to end (RFC 3461, RFC 3464): parameters given at ingress, kept
 * with the message, passed on to a next hop that advertises DSN, and honoured by the relay itself
 * toward one that does not. Real loopback receivers with and without DSN; the sender's own MX
 * receives what we report.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
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

/** MAIL with `mailParams`, one RCPT line per entry ("addr PARAMS"), the body; returns the queue id. */
async function send(mail: string, rcpts: string[], body = 'Subject: dsn test\r\nMessage-ID: <m1@sender.test>\r\n\r\nthe body text\r\n'): Promise<string> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort });
  await c.ehlo();
  expect((await c.cmd(`MAIL FROM:${mail}`)).code).toBe(250);
  for (const r of rcpts) {
    const [addr, ...params] = r.split(' ');
    const reply = await c.cmd(`RCPT TO:<${addr}>${params.length ? ' ' + params.join(' ') : ''}`);
    expect(reply.code, reply.raw).toBe(250);
  }
  expect((await c.cmd('DATA')).code).toBe(354);
  c.write(SmtpTestClient.dataPayload(body));
  const end = await c.reply();
  await c.quit();
  expect(end.code).toBe(250);
  return /queued as (\S+)/.exec(end.lines[0]!)![1]!;
}

function statusPart(raw: string): string {
  return raw.slice(raw.indexOf('Content-Type: message/delivery-status'));
}

describe('passed on to a next hop that advertises DSN (RFC 3461 §5.2.1)', () => {
  it('MAIL gets RET and ENVID, each RCPT its NOTIFY and ORCPT, exactly as received; nothing is added; no DSN from us', async () => {
    const inbox = await mx('sender.test');
    const rx = await mx('dest.test'); // smtp-server advertises DSN
    await w.start();
    await send('<app@sender.test> RET=HDRS ENVID=QQ+2B314159', ['a@dest.test NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alias+40Client.example', 'b@dest.test']);
    await rx.waitFor(1);
    await w.settle();
    expect(rx.commands.find((c) => c.startsWith('MAIL'))).toMatch(
      /^MAIL FROM:<app@sender\.test> SIZE=\d+ RET=HDRS ENVID=QQ\+2B314159$|^MAIL FROM:<app@sender\.test> RET=HDRS ENVID=QQ\+2B314159$/,
    );
    const rcpts = rx.commands.filter((c) => c.startsWith('RCPT'));
    expect(rcpts).toContain('RCPT TO:<a@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Alias@Client.example');
    expect(rcpts).toContain('RCPT TO:<b@dest.test>'); // §5.2.1 (c): no NOTIFY made up
    expect(inbox.messages).toHaveLength(0);
  });
});

describe('relayed to a next hop without DSN (RFC 3461 §5.2.2)', () => {
  it('NOTIFY=SUCCESS gets a "relayed" DSN with Original-Envelope-Id and Original-Recipient; a recipient without SUCCESS gets none; no parameter reaches that hop', async () => {
    const inbox = await mx('sender.test');
    const rx = await mx('dest.test', { dsn: false });
    await w.start();
    await send('<app@sender.test> ENVID=QQ+2B314159', ['asked@dest.test NOTIFY=SUCCESS ORCPT=rfc822;Alias+40Client.example', 'quiet@dest.test NOTIFY=FAILURE']);
    await rx.waitFor(1);
    await inbox.waitFor(1);
    await w.settle();
    expect(rx.commands.filter((c) => /^(MAIL|RCPT)/.test(c)).join('\n')).not.toMatch(/NOTIFY|ORCPT|ENVID|RET=/);
    expect(inbox.messages).toHaveLength(1);
    const raw = inbox.messages[0]!.body.toString();
    const status = statusPart(raw);
    expect(status).toContain('Original-Envelope-Id: QQ+314159');
    expect(status).toContain('Original-Recipient: rfc822; Alias@Client.example');
    expect(status).toContain('Final-Recipient: rfc822; asked@dest.test');
    expect(status).toContain('Action: relayed');
    expect(status).toMatch(/Status: 2\.\d+\.\d+\r\n/); // the next hop's own code (smtp-server: 2.6.0)
    expect(status).toContain(`Remote-MTA: dns; mx.dest.test`);
    expect(status).not.toContain('quiet@dest.test');
    expect((await simpleParser(inbox.messages[0]!.body)).subject).toBe('Successful Mail Delivery Report');
    expect(inbox.messages[0]!.from).toBe('');
  });

  it('no NOTIFY and NOTIFY=FAILURE,DELAY: a success is not reported (the default stays as before)', async () => {
    const inbox = await mx('sender.test');
    const rx = await mx('dest.test', { dsn: false });
    await w.start();
    await send('<app@sender.test>', ['a@dest.test', 'b@dest.test NOTIFY=FAILURE,DELAY']);
    await rx.waitFor(1);
    await w.settle();
    expect(inbox.messages).toHaveLength(0);
  });
});

describe('what NOTIFY suppresses (RFC 3461 §5.2.5, §5.2.6)', () => {
  it('NOTIFY=NEVER: a 550 bounces without a DSN; the recipient beside it without NOTIFY gets its DSN', async () => {
    const inbox = await mx('sender.test');
    await mx('dest.test', { dsn: false, rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) });
    await w.start();
    await send('<app@sender.test>', ['never@dest.test NOTIFY=NEVER', 'plain@dest.test']);
    await inbox.waitFor(1);
    await w.settle();
    expect(inbox.messages).toHaveLength(1);
    const status = statusPart(inbox.messages[0]!.body.toString());
    expect(status).toContain('Final-Recipient: rfc822; plain@dest.test');
    expect(status).not.toContain('never@dest.test');
    expect(
      w
        .deliveries()
        .filter((l) => String(l.to).endsWith('@dest.test'))
        .map((l) => l.status),
    ).toEqual(['bounced', 'bounced']);
  });

  it('NOTIFY=FAILURE: no delayed DSN; NOTIFY=DELAY: a delayed DSN but no failed one when it expires', async () => {
    const inbox = await mx('sender.test');
    await mx('dest.test', { dsn: false, rcpt: () => ({ code: 451, message: '4.3.0 try later' }) });
    await w.start({ queue: { min_backoff: '30m', max_backoff: '1h', lifetime: '3h', delay_warning: '1h' } });
    const id = await send('<app@sender.test>', ['fail@dest.test NOTIFY=FAILURE', 'delay@dest.test NOTIFY=DELAY']);
    await w.settle();
    const msg = () => w.relay!.scheduler.get(id);
    while (msg()) {
      w.clock.t = Math.max(
        w.clock.t,
        ...msg()!
          .recipients.filter((r) => r.state !== 'failed')
          .map((r) => r.nextAttempt),
      );
      await w.settle();
    }
    await w.settle();
    const reports = inbox.messages.map((m) => statusPart(m.body.toString()));
    expect(reports.filter((s) => s.includes('Action: delayed'))).toHaveLength(1);
    expect(reports.find((s) => s.includes('Action: delayed'))).toContain('Final-Recipient: rfc822; delay@dest.test');
    expect(reports.filter((s) => s.includes('Action: failed'))).toHaveLength(1);
    expect(reports.find((s) => s.includes('Action: failed'))).toContain('Final-Recipient: rfc822; fail@dest.test');
    expect(reports.join('\n')).not.toMatch(/Final-Recipient: rfc822; delay@dest\.test\r\nAction: failed/);
  });
});

describe('RET (RFC 3461 §4.3)', () => {
  it('RET=HDRS returns the header only; RET=FULL the whole message as message/rfc822', async () => {
    const inbox = await mx('sender.test');
    await mx('dest.test', { dsn: false, rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) });
    await w.start();
    await send('<app@sender.test> RET=HDRS', ['a@dest.test'], 'Subject: hdrs\r\n\r\nthe body stays home\r\n');
    await send('<app@sender.test> RET=FULL', ['b@dest.test'], 'Subject: full\r\n\r\nthe body comes back\r\n');
    await inbox.waitFor(2);
    const hdrs = inbox.messages.find((m) => m.body.toString().includes('Subject: hdrs'))!.body.toString();
    const full = inbox.messages.find((m) => m.body.toString().includes('Subject: full'))!.body.toString();
    expect(hdrs).toContain('Content-Type: text/rfc822-headers');
    expect(hdrs).not.toContain('the body stays home');
    expect(full).toContain('Content-Type: message/rfc822');
    expect(full).toContain('the body comes back');
    const parsed = await simpleParser(Buffer.from(full));
    expect(parsed.attachments.find((a) => a.contentType === 'message/rfc822')!.content.toString()).toContain('the body comes back');
  });
});

describe("the relay's own mail asks for no notification (RFC 3461 §6.1)", () => {
  it('a DSN goes to a DSN-capable MX with NOTIFY=NEVER and no RET/ENVID', async () => {
    const inbox = await mx('sender.test'); // advertises DSN
    await mx('dest.test', { rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) });
    await w.start();
    await send('<app@sender.test> ENVID=abc RET=FULL', ['a@dest.test NOTIFY=FAILURE']);
    await inbox.waitFor(1);
    expect(inbox.commands.find((c) => c.startsWith('MAIL'))).toMatch(/^MAIL FROM:<>( SIZE=\d+)?$/);
    expect(inbox.commands.find((c) => c.startsWith('RCPT'))).toBe('RCPT TO:<app@sender.test> NOTIFY=NEVER');
  });

  it('…and the same DSN to an MX without DSN carries no parameter', async () => {
    const inbox = await mx('sender.test', { dsn: false });
    await mx('dest.test', { rcpt: () => ({ code: 550, message: '5.1.1 no such user' }) });
    await w.start();
    await send('<app@sender.test>', ['a@dest.test']);
    await inbox.waitFor(1);
    expect(inbox.commands.find((c) => c.startsWith('RCPT'))).toBe('RCPT TO:<app@sender.test>');
  });
});
