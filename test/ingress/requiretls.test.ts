/**
 * REQUIRETLS at ingress (RFC 8689 §2, §4.1; digest RT-1, RT-2, RT-10…12): advertised after STARTTLS,
 * and without TLS only to relay_clients on loopback; the MAIL parameter's syntax; the tag kept with
 * the message. Real loopback sockets, real STARTTLS, the relay in-process.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { SmtpTestClient } from '../support/submit.js';
import { makeSelfSigned } from '../support/pki.js';

let w: World;
const RELAY_CLIENT = '127.0.0.2';
beforeAll(async () => {
  w = await World.create();
  await w.receiver();
  // dest.test's MX refuses connections: messages stay queued, where the tests read their envelopes
  w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: w.deadHost() });
  const cert = await makeSelfSigned({ dnsNames: ['relay.test'] });
  await w.start({ relay_clients: [`${RELAY_CLIENT}/32`], ingress: { tls: { cert: cert.certPem, key: cert.keyPem } } });
});
afterAll(async () => {
  await w.close();
});

async function client(o: { from?: string; tls?: boolean } = {}): Promise<{ c: SmtpTestClient; extensions: string[] }> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort, ...(o.from ? { localAddress: o.from } : {}) });
  let { extensions } = await c.ehlo();
  if (o.tls) {
    await c.startTls();
    ({ extensions } = await c.ehlo());
  }
  return { c, extensions };
}

async function queue(c: SmtpTestClient, mail: string): Promise<string> {
  expect((await c.cmd(mail)).code).toBe(250);
  expect((await c.cmd('RCPT TO:<x@dest.test>')).code).toBe(250);
  expect((await c.cmd('DATA')).code).toBe(354);
  c.write(SmtpTestClient.dataPayload(Buffer.from('Subject: secret\r\n\r\nhi\r\n')));
  const end = await c.reply();
  expect(end.code).toBe(250);
  return /queued as (\S+)/.exec(end.lines[0]!)![1]!;
}

describe('REQUIRETLS at ingress', () => {
  it('RT-10 RT-1 advertised (without parameters) in the EHLO reply after STARTTLS, not before, to a client outside relay_clients', async () => {
    const { c, extensions } = await client();
    expect(extensions).not.toContain('REQUIRETLS');
    await c.startTls();
    const after = (await c.ehlo()).extensions;
    expect(after).toContain('REQUIRETLS');
    expect(after.filter((e) => /^REQUIRETLS/i.test(e))).toEqual(['REQUIRETLS']);
    expect((await c.cmd('MAIL FROM:<a@sender.test> REQUIRETLS')).code).toBe(250);
    await c.quit();
  });

  it('RT-2 RT-10 RT-40 in cleartext outside the exception the parameter is refused 555 5.5.4 (never silently dropped)', async () => {
    const { c } = await client();
    const r = await c.cmd('MAIL FROM:<a@sender.test> REQUIRETLS');
    expect({ code: r.code, enhanced: r.enhanced }).toEqual({ code: 555, enhanced: '5.5.4' });
    expect(r.lines[0]).toMatch(/only after STARTTLS/);
    expect((await c.cmd('MAIL FROM:<a@sender.test>')).code).toBe(250); // the session goes on
    await c.quit();
  });

  it('RT-2 syntax: a value or a repeat is 555 5.5.4; the keyword is case-insensitive; other parameters around it still work', async () => {
    const { c } = await client({ tls: true });
    for (const bad of ['REQUIRETLS=YES', 'REQUIRETLS=', 'REQUIRETLS REQUIRETLS', 'requiretls RequireTLS']) {
      const r = await c.cmd(`MAIL FROM:<a@sender.test> ${bad}`);
      expect({ code: r.code, enhanced: r.enhanced }, bad).toEqual({ code: 555, enhanced: '5.5.4' });
    }
    expect((await c.cmd('MAIL FROM:<a@sender.test> SIZE=10 requiretls BODY=8BITMIME RET=HDRS')).code).toBe(250);
    await c.quit();
  });

  it('RT-11 the documented exception: a relay_clients client on loopback gets REQUIRETLS in cleartext, and the tag is kept', async () => {
    const { c, extensions } = await client({ from: RELAY_CLIENT });
    expect(extensions).toContain('REQUIRETLS');
    const id = await queue(c, 'MAIL FROM:<app@sender.test> REQUIRETLS');
    await c.quit();
    expect(w.relay!.scheduler.get(id)!.envelope.requireTls).toBe(true);
    expect(w.logs.find((l) => l.msg === 'queued' && l.queue_id === id)).toMatchObject({ require_tls: true });
  });

  it('RT-12 the tag is stored with the message over STARTTLS; the next transaction on the session (RSET) is untagged', async () => {
    const { c } = await client({ from: RELAY_CLIENT, tls: true });
    const tagged = await queue(c, 'MAIL FROM:<app@sender.test> REQUIRETLS');
    const plain = await queue(c, 'MAIL FROM:<app@sender.test>');
    expect((await c.cmd('MAIL FROM:<app@sender.test> REQUIRETLS')).code).toBe(250);
    expect((await c.cmd('RSET')).code).toBe(250);
    const afterRset = await queue(c, 'MAIL FROM:<app@sender.test> SIZE=20');
    await c.quit();
    expect(w.relay!.scheduler.get(tagged)!.envelope.requireTls).toBe(true);
    expect(w.relay!.scheduler.get(plain)!.envelope.requireTls).toBeUndefined();
    expect(w.relay!.scheduler.get(afterRset)!.envelope.requireTls).toBeUndefined();
  });
});
