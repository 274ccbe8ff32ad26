/**
 * TLSRPT through the whole relay (test/support/world.ts): a delivery to a domain whose DANE MX fails,
 * the count on disk, the daily job after UTC midnight, the DKIM-signed multipart/report queued in the
 * relay's own spool and delivered by its own delivery code to that same failing MX (no DANE for reports,
 * TLSRPT-45), verified at the receiver with mailauth over real DNS, and absent from the next day's counts.
 */
import { readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { makeSelfSigned, tlsaData, chainPem } from '../support/pki.js';
import { publishDkim, readMailedReport, startHttpsEndpoint, type HttpsEndpoint } from '../support/tlsrpt.js';
import { dkimKeygen } from '../../src/reporting/tlsrpt/mail.js';
import { dayOf, nextDay, dayRange } from '../../src/reporting/tlsrpt/report.js';

const schema = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'rfc8460-report.schema.json'), 'utf8'));
const validate = new Ajv({ allErrors: true }).compile(schema);

let w: World;
let endpoints: HttpsEndpoint[] = [];
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
  await Promise.all(endpoints.map((e) => e.close()));
  endpoints = [];
});

const HOUR = 3_600_000;

/** fail.test: signed, MX with a certificate that matches none of its TLSA records. */
async function failingDaneDomain(txt: string) {
  const ee = await makeSelfSigned({ dnsNames: ['mx.fail.test'] });
  const other = await makeSelfSigned({ dnsNames: ['mx.fail.test'] });
  const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
  w.dns.addZone({ name: 'fail.test', secure: true });
  w.dns.add({ name: 'fail.test', type: 'MX', data: { preference: 10, exchange: 'mx.fail.test' } });
  w.dns.add({ name: 'mx.fail.test', type: 'A', data: rx.host });
  w.dns.add({ name: `_${w.port}._tcp.mx.fail.test`, type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(other, 1, 1) } });
  w.dns.add({ name: '_smtp._tls.fail.test', type: 'TXT', data: txt });
  return { rx, tlsa: `3 1 1 ${tlsaData(other, 1, 1).toString('hex').toUpperCase()}` };
}

function dkimSetup() {
  const k = dkimKeygen({ selector: 'tlsrpt', domain: 'relay.test' });
  const keyFile = join(w.dir, 'dkim.pem');
  writeFileSync(keyFile, k.privateKeyPem, { mode: 0o600 }); // a secret: 0600 whatever the umask
  publishDkim(w.dns, k.name, k.txt);
  return { domain: 'relay.test', selector: 'tlsrpt', key_file: keyFile };
}

describe('TLSRPT end to end', () => {
  it('TLSRPT-45 TLSRPT-42 TLSRPT-43 TLSRPT-44 TLSRPT-34 TLSRPT-41 TLSRPT-50 RT-35 (cases 7, 9): a DANE failure is counted, reported after midnight by DKIM-signed mail over the same failing MX, and the report adds no session', async () => {
    const { rx, tlsa } = await failingDaneDomain('v=TLSRPTv1; rua=mailto:tlsrpt@fail.test');
    const dkim = dkimSetup();
    await w.start({ tlsrpt: { organization_name: 'Test Relay', contact_info: 'tlsrpt@relay.test', max_delay: '1h', dkim } });
    const day1 = dayOf(w.clock.t);
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@fail.test'] });
    await w.settle();
    expect(rx.messages).toHaveLength(0); // DANE held
    const relay = w.relay!;
    await relay.tlsrpt!.store.flush();
    const counted = (await relay.tlsrpt!.store.read(day1)).get('fail.test')!;
    expect(counted).toHaveLength(1);
    expect(counted[0]).toMatchObject({ policy: { type: 'tlsa', strings: [tlsa], domain: 'mx.fail.test' }, success: 0, failure: 1 });
    expect(counted[0]!.details[0]!.detail).toMatchObject({
      resultType: 'certificate-not-trusted',
      reasonCode: 'dane-no-match',
      receivingIp: rx.host,
      receivingMx: 'mx.fail.test',
      sendingIp: '127.0.0.1',
    });

    // Keep day 2 free of ordinary traffic, so anything counted then would come from the report itself.
    for (const m of relay.scheduler.list()) await relay.scheduler.remove(m.id);
    const day2 = nextDay(day1);
    w.clock.t = dayRange(day2).begin * 1000 + 10 * 60_000; // after midnight, before the random delay (rand 0.5 × 1 h)
    await relay.tlsrpt!.tick();
    expect(await relay.tlsrpt!.readPlan(day1)).toEqual({ 'fail.test': dayRange(day2).begin * 1000 + HOUR / 2 });
    expect(relay.scheduler.size).toBe(0); // TLSRPT-34: not before the delay
    w.clock.t = dayRange(day2).begin * 1000 + HOUR;
    await relay.tlsrpt!.tick();
    expect(relay.scheduler.list().map((m) => m.envelope.kind)).toEqual(['tlsrpt']);
    await w.settle();
    await rx.waitFor(1);
    const got = rx.messages[0]!;
    expect(got.from).toBe(''); // null reverse-path: bounces of reports go nowhere
    expect(got.to).toEqual(['tlsrpt@fail.test']);
    // issue 19: and no DSN is asked for (RFC 3461, the receiver advertises DSN)
    expect(rx.commands.filter((c) => c.startsWith('RCPT'))).toEqual(['RCPT TO:<tlsrpt@fail.test> NOTIFY=NEVER']);
    expect(got.secure).toBe(true); // opportunistic TLS was used, without DANE authentication
    const rep = await readMailedReport(got.body, w.dns);

    // TLSRPT-44: valid DKIM signature from the reporting domain, covering both TLS-Report-* headers, no l=.
    expect(rep.dkim.results.map((r) => r.status.result)).toEqual(['pass']);
    expect(rep.dkim.results[0]!.signingDomain).toBe('relay.test');
    const h = /\bh=([^;]+)/.exec(rep.signatureHeader)![1]!.replace(/\s+/g, '').toLowerCase().split(':');
    expect(h).toEqual(expect.arrayContaining(['tls-report-domain', 'tls-report-submitter', 'subject', 'from']));
    expect(rep.signatureHeader).not.toMatch(/(^|;)\s*l=/);

    // TLSRPT-42: multipart/report; report-type=tlsrpt with a text part and the gzip attachment.
    expect(rep.parsed.headers.get('content-type')).toMatchObject({ value: 'multipart/report', params: { 'report-type': 'tlsrpt' } });
    expect(rep.parsed.text).toContain('aggregate TLS report');
    expect(rep.parsed.attachments).toHaveLength(1);
    expect(rep.contentType).toBe('application/tlsrpt+gzip');
    expect(rep.parsed.attachments[0]!.contentDisposition).toBe('attachment');
    expect(rep.gz.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b])); // TLSRPT-41
    const { begin, end } = dayRange(day1);
    expect(rep.filename).toBe(`relay.test!fail.test!${begin}!${end}.json.gz`); // TLSRPT-40

    // TLSRPT-43: both headers, the submitter equals the domain of contact-info; Subject grammar.
    expect(rep.parsed.headers.get('tls-report-domain')).toBe('fail.test');
    expect(got.body.toString('latin1')).toMatch(/^TLS-Report-Domain: fail\.test\r$/m);
    expect(got.body.toString('latin1')).toMatch(/^TLS-Report-Submitter: relay\.test\r$/m);
    expect(rep.parsed.headers.get('tls-report-submitter')).toBe('relay.test');
    expect(rep.parsed.headers.get('auto-submitted')).toBe('auto-generated');
    // RT-35: the report asks every relay on its way not to enforce the recipient's DANE/MTA-STS (RFC 8689 §3), signed
    expect(got.body.toString('latin1')).toMatch(/^TLS-Required: No\r$/m);
    expect(h).toContain('tls-required');
    const json = rep.json as { 'report-id': string; 'contact-info': string; policies: { policy: object; summary: object; 'failure-details': object[] }[] };
    expect(json['contact-info'].split('@')[1]).toBe(rep.parsed.headers.get('tls-report-submitter'));
    expect(rep.parsed.subject).toBe(`Report Domain: fail.test Submitter: relay.test Report-ID: <${json['report-id']}@relay.test>`);

    // The report content: validates against §4.4 and shows the failure with the right result type.
    expect(validate(json), JSON.stringify(validate.errors)).toBe(true);
    expect(json.policies).toEqual([
      {
        policy: { 'policy-type': 'tlsa', 'policy-string': [tlsa], 'policy-domain': 'mx.fail.test' },
        summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 1 },
        'failure-details': [
          {
            'result-type': 'certificate-not-trusted',
            'sending-mta-ip': '127.0.0.1',
            'receiving-mx-hostname': 'mx.fail.test',
            'receiving-mx-helo': 'mx.test.invalid',
            'receiving-ip': rx.host,
            'failed-session-count': 1,
            'failure-reason-code': 'dane-no-match',
          },
        ],
      },
    ]);

    // TLSRPT-50: a receiver ignores a report whose signature does not verify (one changed byte).
    const tampered = Buffer.from(got.body);
    const at = tampered.indexOf('Sessions: 0 successful');
    tampered[at + 10] = '9'.charCodeAt(0);
    expect((await readMailedReport(tampered, w.dns)).dkim.results[0]!.status.result).not.toBe('pass');

    // TLSRPT-45: the report's own session is not counted; the day's report is never sent twice.
    await relay.tlsrpt!.store.flush();
    expect((await relay.tlsrpt!.store.read(day2)).size).toBe(0);
    expect(await relay.tlsrpt!.wasSent(day1, 'fail.test')).toBe(true);
    w.clock.t += 2 * HOUR;
    await relay.tlsrpt!.tick();
    expect(relay.scheduler.size).toBe(0);
  });

  it('TLSRPT-6 TLSRPT-46 TLSRPT-41 (case 8 through the relay): a domain without a record gets no report (pruned when reports are sent); an https rua gets the gzip POST', async () => {
    const ep = await startHttpsEndpoint(201);
    endpoints.push(ep);
    const { rx } = await failingDaneDomain(`v=TLSRPTv1; rua=${ep.url('/v1/tlsrpt')}`);
    // A second destination without TLSRPT record. Its first session is stored before discovery answers
    // (a miss never drops a count); the report step looks rua up again and sends nothing for it.
    const plain = await w.receiver();
    w.dns.add({ name: 'plain.test', type: 'MX', data: { preference: 10, exchange: 'mx.plain.test' } });
    w.dns.add({ name: 'mx.plain.test', type: 'A', data: plain.host });
    // The endpoint is https://localhost:port on loopback: a test world, so private targets are allowed (issue 13).
    const relay = await w.start(
      { tlsrpt: { contact_info: 'tlsrpt@relay.test', max_delay: 0, allow_private_targets: true } },
      { tlsrptHttps: { ca: ep.ca, timeoutMs: 2000 } },
    );
    const day1 = dayOf(w.clock.t);
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@fail.test'] });
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@plain.test'] });
    await w.settle();
    await plain.waitFor(1);
    expect(rx.messages).toHaveLength(0);
    await relay.tlsrpt!.store.flush();
    expect([...(await relay.tlsrpt!.store.read(day1)).keys()].sort()).toEqual(['fail.test', 'plain.test']);
    for (const m of relay.scheduler.list()) await relay.scheduler.remove(m.id);
    w.clock.t = dayRange(nextDay(day1)).begin * 1000 + 1000;
    await relay.tlsrpt!.tick();
    expect(ep.requests).toHaveLength(1);
    expect(ep.requests[0]).toMatchObject({ path: '/v1/tlsrpt', contentType: 'application/tlsrpt+gzip' });
    expect(ep.requests[0]!.body.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(await relay.tlsrpt!.wasSent(day1, 'fail.test')).toBe(true);
    expect(JSON.parse(readFileSync(join(w.dir, 'queue', 'tlsrpt', 'sent', day1, 'plain.test'), 'utf8'))).toMatchObject({
      result: 'dropped',
      detail: expect.stringContaining('no TLSRPT policy now'),
    });
    expect(existsSync(join(w.dir, 'queue', 'tlsrpt', 'pending')) ? readdirSync(join(w.dir, 'queue', 'tlsrpt', 'pending')) : []).toEqual([]);
  });

  it("TLSRPT-46 issue13 (through the relay): a rua pointing into the operator's network (https name resolving to loopback, mailto to an address literal) is refused with a log line; nothing is POSTed or queued", async () => {
    const ep = await startHttpsEndpoint(201);
    endpoints.push(ep);
    const port = new URL(ep.url()).port;
    // The name resolves (through the relay's own DNS) to the loopback collector.
    w.dns.add({ name: 'internal.test', type: 'A', data: '127.0.0.1' });
    await failingDaneDomain(`v=TLSRPTv1; rua=https://internal.test:${port}/r,mailto:tlsrpt@[127.0.0.1]`);
    const relay = await w.start(
      { tlsrpt: { contact_info: 'tlsrpt@relay.test', max_delay: 0, dkim: dkimSetup() } },
      { tlsrptHttps: { ca: ep.ca, timeoutMs: 2000 } },
    );
    const day1 = dayOf(w.clock.t);
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@fail.test'] });
    await w.settle();
    for (const m of relay.scheduler.list()) await relay.scheduler.remove(m.id);
    w.clock.t = dayRange(nextDay(day1)).begin * 1000 + 1000;
    await relay.tlsrpt!.tick();
    expect(ep.requests).toHaveLength(0);
    expect(relay.scheduler.size).toBe(0); // no mailed report queued either
    const refused = w.logs.filter((l) => l.msg === 'tlsrpt: rua target refused');
    expect(refused.map((l) => String(l.reason))).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/mailto:tlsrpt@\[127\.0\.0\.1\] is an address literal/),
        expect.stringMatching(/internal\.test resolves to 127\.0\.0\.1 \(loopback\)/),
      ]),
    );
    expect(JSON.parse(readFileSync(join(w.dir, 'queue', 'tlsrpt', 'sent', day1, 'fail.test'), 'utf8'))).toMatchObject({
      result: 'dropped',
      detail: expect.stringContaining('refused'),
    });
  });

  it('TLSRPT-16 a session that never reached a policy decision (connection refused) is not counted; an MX whose TLSA lookup fails is (dnssec-invalid)', async () => {
    w.dns.addZone({ name: 'dead.test', secure: true });
    w.dns.add({ name: 'dead.test', type: 'MX', data: { preference: 10, exchange: 'mx1.dead.test' } });
    w.dns.add({ name: 'dead.test', type: 'MX', data: { preference: 20, exchange: 'mx2.dead.test' } });
    w.dns.add({ name: 'mx1.dead.test', type: 'A', data: w.deadHost() });
    w.dns.add({ name: 'mx2.dead.test', type: 'A', data: w.deadHost() });
    await w.receiver(); // fixes the world's port
    w.dns.behave(`_${w.port}._tcp.mx2.dead.test`, 'TLSA', 'servfail');
    w.dns.add({ name: '_smtp._tls.dead.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:r@dead.test' });
    const relay = await w.start({ tlsrpt: { contact_info: 'tlsrpt@relay.test' } });
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@dead.test'] });
    await w.settle();
    await relay.tlsrpt!.store.flush();
    const counted = (await relay.tlsrpt!.store.read(dayOf(w.clock.t))).get('dead.test')!;
    // mx1 refused the TCP connection: nothing. mx2 was skipped for its TLSA SERVFAIL: one dnssec-invalid.
    expect(counted).toHaveLength(1);
    expect(counted[0]).toMatchObject({ policy: { type: 'tlsa', strings: [], domain: 'mx2.dead.test' }, success: 0, failure: 1 });
    expect(counted[0]!.details).toEqual([
      { detail: { resultType: 'dnssec-invalid', receivingMx: 'mx2.dead.test', reasonCode: 'tlsa-lookup-servfail' }, count: 1 },
    ]);
  });

  it('TLSRPT-45 loop guard in the scheduler: under dane-only, an ordinary message waits on a TLSA SERVFAIL while a tlsrpt-kind message to the same domain is delivered and not counted', async () => {
    const rx = await w.receiver();
    w.dns.addZone({ name: 'guard.test', secure: true });
    w.dns.add({ name: 'guard.test', type: 'MX', data: { preference: 10, exchange: 'mx.guard.test' } });
    w.dns.add({ name: 'mx.guard.test', type: 'A', data: rx.host });
    w.dns.behave(`_${w.port}._tcp.mx.guard.test`, 'TLSA', 'servfail');
    w.dns.add({ name: '_smtp._tls.guard.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:r@guard.test' });
    const relay = await w.start({ delivery: { tls_level: 'dane-only' } });
    const env = { from: '', recipients: ['r@guard.test'], smtputf8: false, eightBit: false, client: { address: '127.0.0.1' }, received: w.clock.t };
    relay.scheduler.add(await relay.spool.enqueue({ ...env, kind: 'normal' }, Buffer.from('Subject: ordinary\r\n\r\nhello\r\n')));
    relay.scheduler.add(await relay.spool.enqueue({ ...env, kind: 'tlsrpt' }, Buffer.from('Subject: report\r\n\r\nreport\r\n')));
    await w.settle();
    await rx.waitFor(1);
    expect(rx.messages).toHaveLength(1);
    expect(rx.messages[0]!.body.toString()).toContain('Subject: report');
    expect(relay.scheduler.list().map((m) => m.envelope.kind)).toEqual(['normal']);
    await relay.tlsrpt!.store.flush();
    // Only the ordinary message's skipped host was counted; the report's session was not.
    const counted = (await relay.tlsrpt!.store.read(dayOf(w.clock.t))).get('guard.test')!;
    expect(counted.map((p) => [p.success, p.failure])).toEqual([[0, 1]]);
    expect(counted[0]!.details[0]!.detail.resultType).toBe('dnssec-invalid');
  });
});
