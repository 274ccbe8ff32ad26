/**
 * Issue 23 §2: per-client limits under parallel attack, over real loopback sockets and real TLS.
 * Each limit is checked and counted in one synchronous step, so sessions running in parallel
 * cannot all pass the check before any of them counts: failed AUTH (counted on arrival, as
 * Postfix's anvil does), concurrent AUTH, message rate, connections (total and per client),
 * recipients. IPv6 clients count per /64 (client_ipv6_prefix): the key function as a pure unit,
 * one real ::1 session, and (test/ingress/netns.test.ts) several addresses of one /64 in a private
 * network namespace.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AUTH_FAILURE_LIMIT, type IngressOptions } from '../../src/ingress/server.js';
import { clientKey } from '../../src/ingress/access.js';
import { AuthLimiter, Concurrency } from '../../src/ingress/limits.js';
import { hashPassword } from '../../src/ingress/users.js';
import { SmtpTestClient, type Reply } from '../support/submit.js';
import { closeIngresses, startIngress, type IngressHarness } from '../support/ingress.js';
import { makeSelfSigned } from '../support/pki.js';

const root = mkdtempSync(join(tmpdir(), 'ingress-limits-'));
let certFile = '';
let keyFile = '';
let usersFile = '';
const plain = (user: string, pw: string) => Buffer.from(`\0${user}\0${pw}`).toString('base64');
const BAD = plain('alice', 'looking-glass');
const GOOD = plain('alice', 'wonderland');
/** a user whose hash takes long to check (p=8): many AUTH lines arrive while the first checks run */
const SLOW = plain('slow', 'tortoise');

type Harness = IngressHarness;
const start = (patch: Partial<IngressOptions['config']> = {}): Promise<Harness> => startIngress(root, { listen: ['127.0.0.1:0', '[::1]:0'], ...patch });

const tlsCfg = (patch: Partial<IngressOptions['config']> = {}) => ({
  tls: { cert: certFile, key: keyFile },
  users_file: usersFile,
  relayClients: [],
  ...patch,
});

/** A session over TLS, after EHLO: ready for AUTH. */
async function tlsSession(h: Harness, host = '127.0.0.1'): Promise<SmtpTestClient> {
  const c = await SmtpTestClient.connect({ host, port: host.includes(':') ? h.ingress.addresses[1]!.port : h.port, timeout: 30_000 });
  await c.ehlo();
  expect((await c.startTls()).code).toBe(220);
  await c.ehlo();
  return c;
}

/** Sends `line` on every client at once (one write each, no await between) and reads each answer. */
async function fire(clients: SmtpTestClient[], line: string): Promise<Reply[]> {
  for (const c of clients) c.send(line);
  return Promise.all(clients.map((c) => c.reply()));
}

const codes = (rs: Reply[]) => rs.reduce<Record<number, number>>((o, r) => ({ ...o, [r.code]: (o[r.code] ?? 0) + 1 }), {});
const checks = (h: Harness) =>
  h.logs.filter((l) => l.msg === 'AUTH failed' && l.why === 'credentials').length + h.logs.filter((l) => l.msg === 'AUTH ok').length;

beforeAll(async () => {
  const { certPem, keyPem } = await makeSelfSigned({ dnsNames: ['relay.test'] });
  certFile = join(root, 'cert.pem');
  keyFile = join(root, 'key.pem');
  writeFileSync(certFile, certPem);
  writeFileSync(keyFile, keyPem, { mode: 0o600 });
  usersFile = join(root, 'users');
  writeFileSync(usersFile, `alice:${await hashPassword('wonderland')}\nslow:${await hashPassword('tortoise', { N: 16384, r: 8, p: 8 })}\n`, { mode: 0o600 });
}, 60_000);
afterEach(closeIngresses);
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('AUTH under parallel attack', () => {
  it('30 parallel sessions with a wrong password from one address get exactly 5 password checks; the other 25 get 454 4.7.0 at once', async () => {
    const h = await start(tlsCfg({ max_auth_per_client: 100 })); // concurrency out of the way: this is about counting on arrival
    const clients = await Promise.all(Array.from({ length: 30 }, () => tlsSession(h)));
    const replies = await fire(clients, `AUTH PLAIN ${BAD}`);
    expect(codes(replies)).toEqual({ 535: AUTH_FAILURE_LIMIT, 454: 30 - AUTH_FAILURE_LIMIT });
    for (const r of replies.filter((x) => x.code === 454)) expect(r.lines[0]).toBe('4.7.0 Too many failed authentication attempts, try again later');
    expect(checks(h)).toBe(AUTH_FAILURE_LIMIT);
    // the budget is spent for the client: the right password waits for the window too
    expect((await clients[0]!.cmd(`AUTH PLAIN ${GOOD}`)).code).toBe(454);
    await Promise.all(clients.map((c) => c.quit()));
  }, 60_000);

  it('concurrent AUTH per client is bounded (max_auth_per_client, default 3): of 30 simultaneous right passwords at most 3 are checked', async () => {
    const h = await start(tlsCfg());
    const clients = await Promise.all(Array.from({ length: 30 }, () => tlsSession(h)));
    const replies = await fire(clients, `AUTH PLAIN ${SLOW}`);
    const c = codes(replies);
    expect(c[235]).toBeGreaterThanOrEqual(1);
    expect(c[235]).toBeLessThanOrEqual(3);
    expect(c[454]).toBe(30 - c[235]!);
    for (const r of replies.filter((x) => x.code === 454)) expect(r.lines[0]).toBe('4.7.0 Too many concurrent authentication attempts, try again later');
    expect(checks(h)).toBe(c[235]);
    // the successes gave their failure slots back: the client still has its whole budget
    const more = await Promise.all(Array.from({ length: 3 }, () => tlsSession(h)));
    expect(codes(await fire(more, `AUTH PLAIN ${GOOD}`))).toEqual({ 235: 3 });
    await Promise.all([...clients, ...more].map((x) => x.quit()));
  }, 90_000);

  it('an exchange cut off mid-way (LOGIN, then hang up) ends its concurrency slot and stays counted as a failure', async () => {
    const h = await start(tlsCfg({ max_auth_per_client: 1 }));
    const a = await tlsSession(h);
    expect((await a.cmd('AUTH LOGIN')).code).toBe(334);
    const b = await tlsSession(h);
    expect((await b.cmd(`AUTH PLAIN ${GOOD}`)).lines[0]).toMatch(/concurrent/);
    a.destroy();
    await a.closed;
    // once the server has seen the close, b may authenticate; the abandoned attempt still counts
    let r: Reply | undefined;
    for (let i = 0; i < 250; i++) {
      r = await b.cmd(`AUTH PLAIN ${GOOD}`);
      if (r.code === 235) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    expect(r!.code).toBe(235);
    expect(h.ingress['auth'].count('127.0.0.1', h.clock.t)).toBe(1); // the abandoned LOGIN
    await b.quit();
  }, 30_000);

  it('IPv6: a real ::1 session counts under its /64 (client_ipv6_prefix)', async () => {
    const h = await start(tlsCfg({ max_auth_per_client: 100 }));
    const clients = await Promise.all(Array.from({ length: 8 }, () => tlsSession(h, '::1')));
    expect(codes(await fire(clients, `AUTH PLAIN ${BAD}`))).toEqual({ 535: 5, 454: 3 });
    expect(h.logs.find((l) => l.msg === 'AUTH refused: too many failures')).toMatchObject({ client: '::1', client_key: '0:0:0:0:0:0:0:0/64' });
    await Promise.all(clients.map((c) => c.quit()));
  }, 60_000);
});

describe('the other per-client limits under parallel sessions', () => {
  it('message rate: 30 sessions send MAIL at the same moment, rate_per_minute 5 → exactly 5 accepted', async () => {
    const h = await start({ rate_per_minute: 5 });
    const clients = await Promise.all(
      Array.from({ length: 30 }, async () => {
        const c = await SmtpTestClient.connect({ port: h.port });
        await c.ehlo();
        return c;
      }),
    );
    const replies = await fire(clients, 'MAIL FROM:<a@sender.test>');
    expect(codes(replies)).toEqual({ 250: 5, 450: 25 });
    // the five finish their messages; still five in the window
    const ok = clients.filter((_c, i) => replies[i]!.code === 250);
    await fire(ok, 'RCPT TO:<x@dest.test>');
    await fire(ok, 'DATA');
    const done = await fire(ok, 'Subject: x\r\n\r\nbody\r\n.');
    expect(codes(done)).toEqual({ 250: 5 });
    expect(h.queued).toHaveLength(5);
    await Promise.all(clients.map((c) => c.quit()));
  }, 60_000);

  it('connections: a burst of 30 against max_connections 5 admits exactly 5 (a burst neither passes the limit nor locks everyone out)', async () => {
    const h = await start({ max_connections: 5 });
    const clients = await Promise.all(Array.from({ length: 30 }, () => SmtpTestClient.connect({ port: h.port, timeout: 10_000 })));
    expect(codes(clients.map((c) => c.greeting!))).toEqual({ 220: 5, 421: 25 });
    // a slot frees when an admitted client leaves
    await clients.find((c) => c.greeting!.code === 220)!.quit();
    let again: SmtpTestClient | undefined;
    for (let i = 0; i < 50; i++) {
      again = await SmtpTestClient.connect({ port: h.port });
      if (again.greeting!.code === 220) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(again!.greeting!.code).toBe(220);
    await Promise.all([...clients, again!].map((c) => c.quit().catch(() => undefined)));
  }, 60_000);

  it('connections per client: max_connections_per_client 3 admits 3 of a burst of 20 from one address, and 3 more from another', async () => {
    const h = await start({ max_connections_per_client: 3 });
    const burst = (localAddress: string) =>
      Promise.all(Array.from({ length: 20 }, () => SmtpTestClient.connect({ port: h.port, localAddress, timeout: 10_000 })));
    const [a, b] = await Promise.all([burst('127.0.0.1'), burst('127.0.0.2')]);
    expect(codes(a.map((c) => c.greeting!))).toEqual({ 220: 3, 421: 17 });
    expect(codes(b.map((c) => c.greeting!))).toEqual({ 220: 3, 421: 17 });
    expect(a.find((c) => c.greeting!.code === 421)!.greeting!.lines[0]).toBe('4.7.0 Too many connections from your address, try again later');
    await Promise.all([...a, ...b].map((c) => c.quit().catch(() => undefined)));
  }, 60_000);

  it('recipients: 30 RCPTs pipelined in one write against max_recipients 10 → exactly 10 accepted, in 5 sessions at once', async () => {
    const h = await start({ max_recipients: 10 });
    const clients = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const c = await SmtpTestClient.connect({ port: h.port });
        await c.ehlo();
        return c;
      }),
    );
    const all = await Promise.all(
      clients.map(async (c) => {
        c.write(['MAIL FROM:<a@sender.test>', ...Array.from({ length: 30 }, (_x, i) => `RCPT TO:<r${i}@dest.test>`)].map((l) => `${l}\r\n`).join(''));
        return c.replies(31);
      }),
    );
    for (const rs of all) {
      expect(rs[0]!.code).toBe(250);
      expect(codes(rs.slice(1))).toEqual({ 250: 10, 452: 20 });
    }
    await Promise.all(clients.map((c) => c.quit()));
  }, 60_000);
});

describe('limit units (pure)', () => {
  it('clientKey: IPv4 as itself (IPv4-mapped too), IPv6 per prefix', () => {
    expect(clientKey('192.0.2.7', 64)).toBe('192.0.2.7');
    expect(clientKey('::ffff:192.0.2.7', 64)).toBe('192.0.2.7');
    expect(clientKey('2001:db8:1:2:aaaa::1', 64)).toBe('2001:db8:1:2:0:0:0:0/64');
    expect(clientKey('2001:db8:1:2:ffff:ffff:ffff:ffff', 64)).toBe(clientKey('2001:db8:1:2::5', 64));
    expect(clientKey('2001:db8:1:3::5', 64)).not.toBe(clientKey('2001:db8:1:2::5', 64));
    expect(clientKey('2001:db8:1:3::5', 48)).toBe(clientKey('2001:db8:1:2::5', 48));
    expect(clientKey('2001:db8::5', 128)).not.toBe(clientKey('2001:db8::6', 128));
    expect(clientKey('fe80::1%eth0', 64)).toBe('fe80:0:0:0:0:0:0:0/64');
    expect(clientKey('not-an-address', 64)).toBe('not-an-address');
  });

  it('AuthLimiter: attempts count at once, successes are forgiven, concurrency is bounded, end is idempotent', () => {
    const l = new AuthLimiter(5, 60_000, 2);
    const a = l.begin('k', 0);
    const b = l.begin('k', 0);
    expect(a.ok && b.ok).toBe(true);
    expect(l.begin('k', 0)).toEqual({ ok: false, why: 'concurrency' });
    if (a.ok) {
      l.forgive(a.attempt);
      l.end(a.attempt);
      l.end(a.attempt);
    }
    expect(l.count('k', 0)).toBe(1);
    if (b.ok) l.end(b.attempt);
    for (let i = 0; i < 4; i++) {
      const r = l.begin('k', 1);
      expect(r.ok).toBe(true);
      if (r.ok) l.end(r.attempt);
    }
    expect(l.begin('k', 2)).toEqual({ ok: false, why: 'failures' });
    expect(l.begin('k', 60_001).ok).toBe(true); // the window slid
    expect(l.begin('other', 2).ok).toBe(true);
  });

  it('Concurrency: tryEnter is check-and-count in one step; 0 means unlimited', () => {
    const c = new Concurrency();
    expect([c.tryEnter('k', 2), c.tryEnter('k', 2), c.tryEnter('k', 2)]).toEqual([true, true, false]);
    c.leave('k');
    expect(c.tryEnter('k', 2)).toBe(true);
    for (let i = 0; i < 100; i++) expect(c.tryEnter('u', 0)).toBe(true);
  });
});
