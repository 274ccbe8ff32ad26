/**
 * Regression (found by the fault suite's SMTP fuzzer): MAIL/RCPT parameters the relay does not
 * implement were accepted — unknown ones ignored by smtp-server, and REQUIRETLS (RFC 8689) or the
 * DSN parameters accepted although not advertised — so what the client asked for was silently
 * dropped. RFC 5321 §4.1.1.11: 555 5.5.4; the ones we implement still work.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { SmtpTestClient } from '../support/submit.js';
import { makeSelfSigned } from '../support/pki.js';

let w: World;
beforeAll(async () => {
  w = await World.create();
  await w.receiver();
  const cert = await makeSelfSigned({ dnsNames: ['relay.test'] });
  await w.start({ ingress: { tls: { cert: cert.certPem, key: cert.keyPem } } });
});
afterAll(async () => { await w.close(); });

async function tlsClient(): Promise<SmtpTestClient> {
  const c = await SmtpTestClient.connect({ port: w.ingressPort });
  await c.ehlo();
  await c.startTls();
  await c.ehlo();
  return c;
}

describe('ESMTP parameters the relay does not implement are refused (RFC 5321 §4.1.1.11)', () => {
  for (const p of ['REQUIRETLS', 'FOO=bar', 'RET=HDRS', 'ENVID=abc', 'MT-PRIORITY=3']) {
    it(`MAIL FROM:<a@sender.test> ${p} → 555 5.5.4`, async () => {
      const c = await tlsClient();
      const r = await c.cmd(`MAIL FROM:<a@sender.test> ${p}`);
      expect({ code: r.code, enhanced: r.enhanced }).toEqual({ code: 555, enhanced: '5.5.4' });
      await c.quit();
    });
  }
  for (const p of ['NOTIFY=NEVER', 'ORCPT=rfc822;x@dest.test', 'FOO']) {
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
