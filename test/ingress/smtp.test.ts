/**
 * Ingress protocol behaviour over real loopback sockets, real STARTTLS and the real
 * spool: relay access, AUTH, malformed input, pipelining, limits.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { pino } from 'pino';
import nodemailer from 'nodemailer';
import { configSchema } from '../../src/config/schema.js';
import { Ingress, AUTH_FAILURE_LIMIT, AUTH_FAILURE_WINDOW_MS, type IngressOptions } from '../../src/ingress/server.js';
import { hashPassword } from '../../src/ingress/users.js';
import { Spool } from '../../src/spool/spool.js';
import { SmtpTestClient } from '../support/submit.js';
import { closeIngresses, startIngress, type IngressHarness } from '../support/ingress.js';
import { makeSelfSigned } from '../support/pki.js';

const root = mkdtempSync(join(tmpdir(), 'ingress-smtp-'));
let certFile = '';
let keyFile = '';
let usersFile = '';
const PLAIN_OK = Buffer.from('\0alice\0wonderland').toString('base64');
const PLAIN_BAD = Buffer.from('\0alice\0looking-glass').toString('base64');

type Harness = IngressHarness;
let seq = 0;
const start = (patch: Partial<IngressOptions['config']> = {}): Promise<Harness> => startIngress(root, patch);

beforeAll(async () => {
  const { certPem, keyPem } = await makeSelfSigned({ dnsNames: ['relay.test'] });
  certFile = join(root, 'cert.pem');
  keyFile = join(root, 'key.pem');
  writeFileSync(certFile, certPem);
  // secrets 0600 whatever the umask: the relay refuses ones others can write (umask 000 makes 0666)
  writeFileSync(keyFile, keyPem, { mode: 0o600 });
  usersFile = join(root, 'users');
  writeFileSync(usersFile, `# test users\nalice:${await hashPassword('wonderland')}\n`, { mode: 0o600 });
});

afterEach(closeIngresses);

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('greeting and EHLO', () => {
  it('greets as the configured host and advertises the extensions; no AUTH or STARTTLS without TLS', async () => {
    const h = await start({ max_message_size: 123456 });
    const c = await h.connect();
    expect(c.greeting!.code).toBe(220);
    expect(c.greeting!.lines[0]).toBe('relay.test ESMTP dane-relay');
    const { reply, extensions } = await c.ehlo();
    expect(reply.code).toBe(250);
    expect(extensions).toEqual(expect.arrayContaining(['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES', 'SIZE 123456']));
    expect(extensions.some((e) => e.startsWith('AUTH'))).toBe(false);
    expect(extensions).not.toContain('STARTTLS');
    expect(extensions).toContain('DSN'); // RFC 3461, since issue 19
    // enhanced status codes on ordinary replies (RFC 2034 §3)
    expect((await c.cmd('NOOP')).enhanced).toBe('2.0.0');
    expect((await c.cmd('STARTTLS')).code).toBe(500);
    await c.quit();
  });
});

describe('relay access', () => {
  it('relays for a client inside relay_clients', async () => {
    const h = await start();
    const c = await h.connect();
    await c.ehlo();
    const r = await c.sendMail('sender@example.com', ['rcpt@example.org'], 'Subject: t\r\n\r\nhi\r\n');
    expect(r.rcpts[0]!.code).toBe(250);
    expect(r.end!.code).toBe(250);
    expect(h.queued).toHaveLength(1);
    await c.quit();
  });

  it('refuses RCPT with 554 5.7.1 outside relay_clients, queues nothing, keeps answering', async () => {
    // Listener on 127.0.0.1 and relay_clients elsewhere: the only way to be "outside" on loopback.
    const h = await start({ relayClients: ['10.0.0.0/8'] });
    const c = await h.connect();
    await c.ehlo();
    expect((await c.cmd('MAIL FROM:<sender@example.com>')).code).toBe(250);
    const rcpt = await c.cmd('RCPT TO:<victim@example.org>');
    expect(rcpt.code).toBe(554);
    expect(rcpt.lines[0]).toBe('5.7.1 Relay access denied');
    // no accepted recipient, so no DATA
    expect((await c.cmd('DATA')).code).toBe(503);
    expect((await c.cmd('NOOP')).code).toBe(250);
    expect(h.queued).toHaveLength(0);
    expect(h.logs.some((l) => l.msg === 'relay denied' && l.client === '127.0.0.1')).toBe(true);
    await c.quit();
  });

  it('relays for an authenticated user over STARTTLS from outside relay_clients', async () => {
    const h = await start({ relayClients: ['10.0.0.0/8'], tls: { cert: certFile, key: keyFile }, users_file: usersFile });
    const c = await h.connect();
    await c.ehlo();
    expect((await c.startTls({ servername: 'relay.test' })).code).toBe(220);
    await c.ehlo();
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_OK}`)).code).toBe(235);
    const r = await c.sendMail('alice@example.com', ['rcpt@example.org'], 'Subject: t\r\n\r\nhi\r\n');
    expect(r.rcpts[0]!.code).toBe(250);
    expect(r.end!.code).toBe(250);
    expect(h.queued).toHaveLength(1);
    expect(h.queued[0]!.envelope.client).toMatchObject({ address: '127.0.0.1', user: 'alice' });
    const body = (await h.spool.readBody(h.queued[0]!.id)).toString('latin1');
    expect(body).toMatch(/^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby relay\.test with ESMTPSA \(TLSv1\.[23] [A-Z0-9_]+\) id /);
    await c.quit();
  });
});

describe('postmaster (RFC 5321 §4.5.1)', () => {
  it('a bare <Postmaster> and postmaster@<hostname> are accepted from any client and go to ingress.postmaster; other postmasters are relayed as usual', async () => {
    const h = await start({ relayClients: ['10.0.0.0/8'], postmaster: 'ops@example.org' });
    const c = await h.connect();
    await c.ehlo();
    const r = await c.sendMail('someone@example.net', ['Postmaster', 'POSTMASTER@relay.test'], 'Subject: hello postmaster\r\n\r\nhi\r\n');
    expect(r.rcpts.map((x) => x.code)).toEqual([250, 250]);
    expect(r.end!.code).toBe(250);
    expect(h.queued[0]!.envelope.recipients).toEqual(['ops@example.org']);
    await c.cmd('MAIL FROM:<someone@example.net>');
    expect((await c.cmd('RCPT TO:<postmaster@example.org>')).code).toBe(554); // someone else's postmaster: relaying
    await c.quit();
  });

  it('without ingress.postmaster such a RCPT gets 550 5.1.1 naming the key', async () => {
    const h = await start();
    const c = await h.connect();
    await c.ehlo();
    await c.cmd('MAIL FROM:<someone@example.net>');
    const r = await c.cmd('RCPT TO:<Postmaster>');
    expect(r.code).toBe(550);
    expect(r.lines[0]).toBe('5.1.1 No postmaster address is configured here (ingress.postmaster)');
    await c.quit();
  });
});

describe('listeners', () => {
  it('listens on IPv4 and IPv6 loopback at once; an IPv6 client is judged against IPv6 prefixes', async () => {
    const h = await start({ listen: ['127.0.0.1:0', '[::1]:0'], relayClients: ['127.0.0.0/8'] });
    expect(h.ingress.addresses.map((a) => a.address)).toEqual(['127.0.0.1', '::1']);
    const v4 = await SmtpTestClient.connect({ host: '127.0.0.1', port: h.ingress.addresses[0]!.port });
    const v6 = await SmtpTestClient.connect({ host: '::1', port: h.ingress.addresses[1]!.port });
    await v4.ehlo();
    await v6.ehlo();
    expect((await v4.sendMail('a@example.com', ['b@example.org'], 'x\r\n')).end!.code).toBe(250);
    await v6.cmd('MAIL FROM:<a@example.com>');
    expect((await v6.cmd('RCPT TO:<b@example.org>')).code).toBe(554); // ::1 is not in 127.0.0.0/8
    await Promise.all([v4.quit(), v6.quit()]);
  });

  it('start() fails cleanly when an address is taken, releasing the listeners it had opened', async () => {
    const h = await start();
    const spool = await Spool.open(join(root, `spool-own-${++seq}`), { log: pino({ level: 'silent' }) });
    const free = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => r(p));
      });
    });
    const opts = { ...configSchema.parse({}).ingress, relayClients: [], hostname: 'relay.test' };
    const err = await Ingress.start({ config: { ...opts, listen: [`127.0.0.1:${free}`, `127.0.0.1:${h.port}`] }, spool, log: pino({ level: 'silent' }) }).catch(
      (e: unknown) => e,
    );
    expect((err as { code?: string }).code).toBe('EADDRINUSE');
    // the first listener was closed again: the port can be bound anew
    const again = await Ingress.start({ config: { ...opts, listen: [`127.0.0.1:${free}`] }, spool, log: pino({ level: 'silent' }) });
    expect(again.addresses[0]!.port).toBe(free);
    await again.close();
    await spool.close();
  });
});

describe('AUTH', () => {
  const tlsCfg = () => ({ tls: { cert: certFile, key: keyFile }, users_file: usersFile });

  it('is neither advertised nor accepted in cleartext: 538 5.7.11', async () => {
    const h = await start(tlsCfg());
    const c = await h.connect();
    const { extensions } = await c.ehlo();
    expect(extensions).toContain('STARTTLS');
    expect(extensions.some((e) => e.startsWith('AUTH'))).toBe(false);
    const r = await c.cmd(`AUTH PLAIN ${PLAIN_OK}`);
    expect(r.code).toBe(538);
    expect(r.lines[0]).toBe('5.7.11 Encryption required for requested authentication mechanism');
    expect((await c.cmd('AUTH LOGIN')).code).toBe(538);
    // still not authenticated: a relay attempt from outside relay_clients would fail; here just check the session goes on
    expect((await c.cmd('NOOP')).code).toBe(250);
    await c.quit();
  });

  it('is refused in cleartext even when STARTTLS is not configured at all', async () => {
    const h = await start({ users_file: usersFile, relayClients: ['10.0.0.0/8'] });
    const c = await h.connect();
    await c.ehlo();
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_OK}`)).code).toBe(538);
    await c.cmd('MAIL FROM:<a@example.com>');
    expect((await c.cmd('RCPT TO:<b@example.org>')).code).toBe(554);
    await c.quit();
  });

  it('over TLS: advertised; good password 235 2.7.0, bad password 535 5.7.8; LOGIN works too', async () => {
    const h = await start(tlsCfg());
    const c = await h.connect();
    await c.ehlo();
    await c.startTls();
    const { extensions } = await c.ehlo();
    expect(extensions).toContain('AUTH PLAIN LOGIN');
    const bad = await c.cmd(`AUTH PLAIN ${PLAIN_BAD}`);
    expect(bad.code).toBe(535);
    expect(bad.lines[0]).toBe('5.7.8 Authentication credentials invalid');
    // unknown user looks the same
    expect((await c.cmd(`AUTH PLAIN ${Buffer.from('\0mallory\0wonderland').toString('base64')}`)).lines[0]).toBe('5.7.8 Authentication credentials invalid');
    // authzid naming someone else (RFC 4616 §2) is refused even with the right password
    expect((await c.cmd(`AUTH PLAIN ${Buffer.from('bob\0alice\0wonderland').toString('base64')}`)).code).toBe(535);
    const good = await c.cmd(`AUTH PLAIN ${PLAIN_OK}`);
    expect(good.code).toBe(235);
    expect(good.enhanced).toBe('2.7.0');
    // RFC 4954 §4: no second AUTH in a session
    expect((await c.cmd(`AUTH PLAIN ${PLAIN_OK}`)).code).toBe(503);
    await c.quit();

    const l = await h.connect();
    await l.ehlo();
    await l.startTls();
    await l.ehlo();
    expect((await l.cmd('AUTH LOGIN')).code).toBe(334);
    expect((await l.cmd(Buffer.from('alice').toString('base64'))).code).toBe(334);
    expect((await l.cmd(Buffer.from('wonderland').toString('base64'))).code).toBe(235);
    await l.quit();
  });

  it('rate-limits failures per client: after the limit even the right password gets 454 4.7.0 until the window passes', async () => {
    const h = await start(tlsCfg());
    const c = await h.connect();
    await c.ehlo();
    await c.startTls();
    await c.ehlo();
    for (let i = 0; i < AUTH_FAILURE_LIMIT; i++) expect((await c.cmd(`AUTH PLAIN ${PLAIN_BAD}`)).code).toBe(535);
    const blocked = await c.cmd(`AUTH PLAIN ${PLAIN_OK}`);
    expect(blocked.code).toBe(454);
    expect(blocked.lines[0]).toMatch(/^4\.7\.0 /);
    await c.quit();
    // the limit is per client address, not per connection
    const d = await h.connect();
    await d.ehlo();
    await d.startTls();
    await d.ehlo();
    expect((await d.cmd(`AUTH PLAIN ${PLAIN_OK}`)).code).toBe(454);
    h.clock.t += AUTH_FAILURE_WINDOW_MS + 1;
    expect((await d.cmd(`AUTH PLAIN ${PLAIN_OK}`)).code).toBe(235);
    await d.quit();
  });

  it('SIGHUP reload of the users file: a good file takes effect at once, a bad one is rejected whole and the previous users stay', async () => {
    const file = join(root, `users-reload-${++seq}`);
    writeFileSync(file, `alice:${await hashPassword('wonderland')}\n`, { mode: 0o600 });
    const h = await start({ ...tlsCfg(), users_file: file });
    const auth = async (b64: string) => {
      const c = await h.connect();
      await c.ehlo();
      await c.startTls();
      await c.ehlo();
      const r = await c.cmd(`AUTH PLAIN ${b64}`);
      await c.quit();
      return r.code;
    };
    const CAROL = Buffer.from('\0carol\0tea-party').toString('base64');
    expect(await auth(CAROL)).toBe(535);
    writeFileSync(file, `carol:${await hashPassword('tea-party')}\n`);
    expect(await h.ingress.reloadUsers()).toEqual({ file, users: 1 });
    expect(await auth(CAROL)).toBe(235);
    expect(await auth(PLAIN_OK)).toBe(535); // alice was removed
    writeFileSync(file, `carol:${await hashPassword('tea-party')}\nbroken line\n`);
    const bad = await h.ingress.reloadUsers();
    expect(bad.error).toMatch(/line 2/);
    expect(await auth(CAROL)).toBe(235); // previous version still in force
  });
});

describe('a real submitting client (nodemailer)', () => {
  it('STARTTLS (required, certificate verified), AUTH PLAIN, message queued', async () => {
    const { certPem, keyPem } = await makeSelfSigned({ dnsNames: ['relay.test'] });
    const h = await start({ relayClients: ['10.0.0.0/8'], tls: { cert: certPem, key: keyPem }, users_file: usersFile });
    const t = nodemailer.createTransport({
      host: '127.0.0.1',
      port: h.port,
      secure: false,
      requireTLS: true,
      tls: { ca: [certPem], servername: 'relay.test' },
      auth: { user: 'alice', pass: 'wonderland' },
    });
    try {
      const info = await t.sendMail({ from: 'alice@example.com', to: ['x@example.org', 'y@example.net'], subject: 'interop', text: 'hello\n' });
      expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as \S+$/);
      expect(h.queued).toHaveLength(1);
      expect(h.queued[0]!.envelope).toMatchObject({ from: 'alice@example.com', recipients: ['x@example.org', 'y@example.net'], client: { user: 'alice' } });
    } finally {
      t.close();
    }
  });
});

describe('malformed input', () => {
  const cases: [string, number, string | undefined, string | Buffer][] = [
    ['MAIL with nested brackets', 501, '5.1.7', 'MAIL FROM:<<>>'],
    ['MAIL with garbage address', 501, '5.1.7', 'MAIL FROM:<a b@example.com>'],
    ['MAIL with a NUL in the address', 501, '5.1.7', Buffer.from('MAIL FROM:<a\0b@example.com>')],
    ['MAIL with a 2000-byte address', 501, '5.1.7', `MAIL FROM:<${'a'.repeat(2000)}@example.com>`],
    ['a 2000-byte unknown command', 500, '5.5.2', 'X'.repeat(2000)],
    ['a NUL inside the verb', 500, '5.5.2', Buffer.from('NO\0OP')],
    ['an unknown verb', 500, '5.5.2', 'FROB nicate'],
    ['RCPT before MAIL', 503, '5.5.1', 'RCPT TO:<a@example.org>'],
    ['DATA before MAIL', 503, '5.5.1', 'DATA'],
    ['EHLO with a 2000-byte name', 501, undefined, `EHLO ${'h'.repeat(2000)}`],
  ];
  it.each(cases)('%s → %i %s, and the session goes on', async (_name, code, enhanced, line) => {
    const h = await start();
    const c = await h.connect();
    await c.ehlo();
    const r = await c.cmd(line);
    expect(r.code).toBe(code);
    if (enhanced) expect(r.enhanced).toBe(enhanced);
    // still serving, and still able to take a message
    const m = await c.sendMail('a@example.com', ['b@example.org'], 'x\r\n');
    expect(m.end?.code).toBe(250);
    await c.quit();
  });

  it('answers the transaction-state errors in sequence: RCPT syntax, DATA before RCPT, postmaster', async () => {
    const h = await start();
    const c = await h.connect();
    expect((await c.cmd('MAIL FROM:<a@example.com>')).code).toBe(503); // before EHLO
    await c.ehlo();
    expect((await c.cmd('MAIL FROM:<a@example.com>')).code).toBe(250);
    expect((await c.cmd('MAIL FROM:<a@example.com>')).code).toBe(503); // nested MAIL
    const noDomain = await c.cmd('RCPT TO:<a@>');
    expect([noDomain.code, noDomain.enhanced]).toEqual([501, '5.1.3']);
    const pm = await c.cmd('RCPT TO:<postmaster>'); // no ingress.postmaster configured
    expect([pm.code, pm.enhanced]).toEqual([550, '5.1.1']);
    const badDomain = await c.cmd('RCPT TO:<a@-bad-.example>');
    expect([badDomain.code, badDomain.enhanced]).toEqual([501, '5.1.3']);
    const data = await c.cmd('DATA');
    expect([data.code, data.enhanced]).toEqual([503, '5.5.1']);
    expect((await c.cmd('RCPT TO:<ok@example.org>')).code).toBe(250);
    expect((await c.cmd('RSET')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<ok@example.org>')).code).toBe(503);
    await c.quit();
  });

  it('UTF-8 addresses need SMTPUTF8 (RFC 6531 §3.5: 553 5.6.7)', async () => {
    const h = await start();
    const c = await h.connect();
    await c.ehlo();
    const r = await c.cmd('MAIL FROM:<jörg@example.com>');
    expect([r.code, r.enhanced]).toEqual([553, '5.6.7']);
    const m = await c.sendMail('jörg@example.com', ['zoë@bücher.example'], 'Subject: ü\r\n\r\nü\r\n', 'SMTPUTF8 BODY=8BITMIME');
    expect(m.end?.code).toBe(250);
    expect(h.queued[0]!.envelope).toMatchObject({ from: 'jörg@example.com', recipients: ['zoë@xn--bcher-kva.example'], smtputf8: true, eightBit: true });
    await c.quit();
  });

  it('survives a client that sends garbage bytes and hangs up', async () => {
    const h = await start();
    const s = net.connect({ port: h.port, host: '127.0.0.1' });
    await new Promise((r) => s.once('connect', r));
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    // before the greeting: an early talker (RFC 5321 §4.3.1 forbids it) is told 421 and dropped
    s.write(Buffer.from([0, 1, 2, 255, 13, 10, 0xc3, 0x28, 13, 10]));
    await new Promise((r) => s.once('close', r));
    expect(Buffer.concat(got).toString('latin1')).toMatch(/^421 /m);
    const c = await h.connect();
    expect((await c.ehlo()).reply.code).toBe(250);
    await c.quit();
  });
});

describe('pipelining (RFC 2920)', () => {
  it('MAIL/RCPT/RCPT/DATA in one write get their replies in order, then the message is queued', async () => {
    const h = await start();
    const c = await h.connect();
    await c.ehlo();
    c.write('MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@>\r\nRCPT TO:<d@example.org>\r\nDATA\r\n');
    const [mail, r1, r2, r3, data] = await c.replies(5);
    expect([mail!.code, r1!.code, r2!.code, r3!.code, data!.code]).toEqual([250, 250, 501, 250, 354]);
    c.write('Subject: pipelined\r\n\r\nbody\r\n.\r\nNOOP\r\n');
    const [end, noop] = await c.replies(2);
    expect(end!.code).toBe(250);
    expect(noop!.code).toBe(250);
    expect(h.queued[0]!.envelope.recipients).toEqual(['b@example.org', 'd@example.org']);
    await c.quit();
  });

  it('a refused MAIL makes the pipelined RCPT and DATA fail with 503, not succeed', async () => {
    const h = await start();
    const c = await h.connect();
    await c.ehlo();
    c.write('MAIL FROM:<<>>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nNOOP\r\n');
    const codes = (await c.replies(4)).map((r) => r.code);
    expect(codes).toEqual([501, 503, 503, 250]);
    await c.quit();
  });
});

describe('envelope limits', () => {
  it('accepts the null sender MAIL FROM:<> (RFC 5321 §4.5.5)', async () => {
    const h = await start();
    const c = await h.connect();
    await c.ehlo();
    const m = await c.sendMail('', ['bounce-target@example.org'], 'Subject: bounce\r\n\r\nx\r\n');
    expect(m.mail.code).toBe(250);
    expect(m.end!.code).toBe(250);
    expect(h.queued[0]!.envelope.from).toBe('');
    await c.quit();
  });

  it('too many recipients: 452 4.5.3 beyond max_recipients, a repeated one is not counted', async () => {
    const h = await start({ max_recipients: 3 });
    const c = await h.connect();
    await c.ehlo();
    await c.cmd('MAIL FROM:<a@example.com>');
    for (const r of ['r1', 'r2', 'r3']) expect((await c.cmd(`RCPT TO:<${r}@example.org>`)).code).toBe(250);
    const over = await c.cmd('RCPT TO:<r4@example.org>');
    expect([over.code, over.lines[0]]).toEqual([452, '4.5.3 Too many recipients']);
    expect((await c.cmd('RCPT TO:<r2@example.org>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    c.write('x\r\n.\r\n');
    expect((await c.reply()).code).toBe(250);
    expect(h.queued[0]!.envelope.recipients).toEqual(['r1@example.org', 'r2@example.org', 'r3@example.org']);
    await c.quit();
  });

  it('connection limit: the connection beyond max_connections gets 421 4.7.0 and is closed', async () => {
    const h = await start({ max_connections: 2 });
    const a = await h.connect();
    const b = await h.connect();
    const third = await h.connect();
    expect(third.greeting!.code).toBe(421);
    expect(third.greeting!.lines[0]).toMatch(/^4\.7\.0 /);
    await third.closed;
    // the two admitted sessions work
    expect((await a.cmd('NOOP')).code).toBe(250);
    await b.quit();
    const d = await h.connect();
    expect(d.greeting!.code).toBe(220);
    await Promise.all([a.quit(), d.quit()]);
  });

  it('rate limit: beyond rate_per_minute MAIL gets 450 4.7.1; unfinished transactions do not count; the window slides', async () => {
    const h = await start({ rate_per_minute: 2 });
    const c = await h.connect();
    await c.ehlo();
    // a transaction abandoned with RSET gives its slot back
    expect((await c.cmd('MAIL FROM:<a@example.com>')).code).toBe(250);
    await c.cmd('RSET');
    for (let i = 0; i < 2; i++) expect((await c.sendMail('a@example.com', ['b@example.org'], 'x\r\n')).end!.code).toBe(250);
    const limited = await c.cmd('MAIL FROM:<a@example.com>');
    expect([limited.code, limited.enhanced]).toEqual([450, '4.7.1']);
    // per client address, across connections
    const d = await h.connect();
    await d.ehlo();
    expect((await d.cmd('MAIL FROM:<a@example.com>')).code).toBe(450);
    h.clock.t += 60_001;
    expect((await d.sendMail('a@example.com', ['b@example.org'], 'x\r\n')).end!.code).toBe(250);
    expect(h.queued).toHaveLength(3);
    await Promise.all([c.quit(), d.quit()]);
  });
});
