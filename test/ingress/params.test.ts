/**
 * Regression (found by the fault suite's SMTP fuzzer): MAIL/RCPT parameters the relay does not
 * implement were accepted — unknown ones ignored by smtp-server, and REQUIRETLS (RFC 8689)
 * accepted although not advertised — so what the client asked for was silently dropped.
 * RFC 5321 §4.1.1.11: 555 5.5.4; the ones we implement still work. Since issue 19 the DSN
 * parameters (RFC 3461) are implemented: checked on the raw line, kept with the message.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { SmtpTestClient } from '../support/submit.js';
import { makeSelfSigned } from '../support/pki.js';

let w: World;
beforeAll(async () => {
  w = await World.create();
  await w.receiver();
  // dest.test's MX refuses connections: its messages stay queued (deferred), where the tests read their envelopes
  w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: w.deadHost() });
  const cert = await makeSelfSigned({ dnsNames: ['relay.test'] });
  await w.start({ ingress: { tls: { cert: cert.certPem, key: cert.keyPem } } });
});
afterAll(async () => {
  await w.close();
});

async function tlsClient(): Promise<SmtpTestClient> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort });
  await c.ehlo();
  await c.startTls();
  await c.ehlo();
  return c;
}

describe('ESMTP parameters the relay does not implement are refused (RFC 5321 §4.1.1.11)', () => {
  // REQUIRETLS is implemented since issue 15 (test/ingress/requiretls.test.ts)
  for (const p of ['FOO=bar', 'MT-PRIORITY=3', 'NOTIFY=NEVER', 'ORCPT=rfc822;a@b']) {
    it(`MAIL FROM:<a@sender.test> ${p} → 555 5.5.4`, async () => {
      const c = await tlsClient();
      const r = await c.cmd(`MAIL FROM:<a@sender.test> ${p}`);
      expect({ code: r.code, enhanced: r.enhanced }).toEqual({ code: 555, enhanced: '5.5.4' });
      await c.quit();
    });
  }
  for (const p of ['FOO', 'RET=HDRS', 'ENVID=abc']) {
    it(`RCPT TO:<x@dest.test> ${p} → 555 5.5.4`, async () => {
      const c = await tlsClient();
      expect((await c.cmd('MAIL FROM:<a@sender.test>')).code).toBe(250);
      const r = await c.cmd(`RCPT TO:<x@dest.test> ${p}`);
      expect({ code: r.code, enhanced: r.enhanced }).toEqual({ code: 555, enhanced: '5.5.4' });
      await c.quit();
    });
  }
  it('SIZE, BODY, SMTPUTF8 and AUTH=<> still work', async () => {
    const c = await tlsClient();
    expect((await c.cmd('MAIL FROM:<a@sender.test> SIZE=100 BODY=8BITMIME SMTPUTF8 AUTH=<>')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<x@dest.test>')).code).toBe(250);
    await c.quit();
  });
});

describe('DSN parameters at ingress (RFC 3461 §4)', () => {
  it('EHLO advertises DSN', async () => {
    const c = await SmtpTestClient.connect({ port: w.ingressPort });
    expect((await c.ehlo()).extensions).toContain('DSN');
    await c.quit();
  });

  const refused: [string, string, RegExp][] = [
    ['MAIL FROM:<a@sender.test> RET=BODY', 'MAIL', /^5\.5\.4 Bad RET parameter syntax/],
    ['MAIL FROM:<a@sender.test> ENVID=a+0D+0Ab', 'MAIL', /^5\.5\.4 Bad ENVID parameter syntax/],
    [`MAIL FROM:<a@sender.test> ENVID=${'x'.repeat(101)}`, 'MAIL', /^5\.5\.4 ENVID longer than 100 characters/],
    ['MAIL FROM:<a@sender.test> RET=FULL RET=HDRS', 'MAIL', /^5\.5\.4 RET given more than once/],
    ['RCPT TO:<x@dest.test> NOTIFY=NEVER,SUCCESS', 'RCPT', /^5\.5\.4 NOTIFY=NEVER cannot be combined/],
    ['RCPT TO:<x@dest.test> NOTIFY=SOMETIMES', 'RCPT', /^5\.5\.4 Bad NOTIFY parameter syntax/],
    ['RCPT TO:<x@dest.test> ORCPT=rfc822', 'RCPT', /^5\.5\.4 Bad ORCPT parameter syntax/],
    ['RCPT TO:<x@dest.test> ORCPT=rfc822;a+0Ab@c', 'RCPT', /^5\.5\.4 Bad ORCPT parameter syntax/],
    [`RCPT TO:<x@dest.test> ORCPT=rfc822;${'a'.repeat(500)}`, 'RCPT', /^5\.5\.4 ORCPT longer than 500 characters/],
  ];
  for (const [line, at, text] of refused) {
    it(`${line.slice(0, 70)} → 501 5.5.4 with the reason`, async () => {
      const c = await SmtpTestClient.connect({ port: w.ingressPort });
      await c.ehlo();
      if (at === 'RCPT') expect((await c.cmd('MAIL FROM:<a@sender.test>')).code).toBe(250);
      const r = await c.cmd(line);
      expect(r.code).toBe(501);
      expect(r.lines[0]).toMatch(text);
      // the session goes on: the command can be repeated without the bad parameter
      expect((await c.cmd(at === 'MAIL' ? 'MAIL FROM:<a@sender.test>' : 'RCPT TO:<x@dest.test>')).code).toBe(250);
      await c.quit();
    });
  }

  it('accepted ones are kept with the message, xtext-decoded, per recipient; a recipient without any has none', async () => {
    const c = await SmtpTestClient.connect({ port: w.ingressPort });
    await c.ehlo();
    expect((await c.cmd('MAIL FROM:<a@sender.test> RET=HDRS ENVID=QQ+2B314159')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<x@dest.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Alias+40Client.example')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<y@dest.test> NOTIFY=never')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<z@dest.test>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    c.write(SmtpTestClient.dataPayload(Buffer.from('Subject: dsn\r\n\r\nhi\r\n')));
    const end = await c.reply();
    expect(end.code).toBe(250);
    await c.quit();
    const id = /queued as (\S+)/.exec(end.lines[0]!)![1]!;
    const m = w.relay!.scheduler.get(id)!;
    expect(m.envelope.dsn).toEqual({ ret: 'HDRS', envid: 'QQ+314159' });
    expect(m.envelope.rcptDsn).toEqual({
      'x@dest.test': { notify: ['SUCCESS', 'DELAY'], orcpt: { type: 'rfc822', address: 'Alias@Client.example' } },
      'y@dest.test': { notify: ['NEVER'] },
    });
  });

  it('a MAIL without DSN parameters after one with them (RSET) keeps none', async () => {
    const c = await SmtpTestClient.connect({ port: w.ingressPort });
    await c.ehlo();
    expect((await c.cmd('MAIL FROM:<a@sender.test> ENVID=first')).code).toBe(250);
    expect((await c.cmd('RSET')).code).toBe(250);
    expect((await c.cmd('MAIL FROM:<a@sender.test>')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<x@dest.test>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    c.write(SmtpTestClient.dataPayload(Buffer.from('Subject: dsn\r\n\r\nhi\r\n')));
    const end = await c.reply();
    await c.quit();
    const m = w.relay!.scheduler.get(/queued as (\S+)/.exec(end.lines[0]!)![1]!)!;
    expect(m.envelope.dsn).toBeUndefined();
    expect(m.envelope.rcptDsn).toBeUndefined();
  });
});
