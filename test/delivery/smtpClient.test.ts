/**
 * SmtpSession against real peers on loopback: smtp-server (test/support/receiver.ts)
 * for well-behaved MTAs, tiny raw `net` servers for hostile or odd ones that
 * smtp-server cannot imitate. Real TLS with certificates from test/support/pki.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import tls from 'node:tls';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { SmtpError, SmtpSession, mailCommand, rcptCommand, type SmtpClientOptions, type SmtpTimeouts } from '../../src/delivery/smtpClient.js';
import type { Target, TlsRequirement } from '../../src/delivery/types.js';
import type { PresentedChain, VerifyOutcome } from '../../src/dane/types.js';
import { startReceiver, type Receiver, type ReceiverOptions } from '../support/receiver.js';
import { chainPem, makeCa, makeIntermediate, makeLeaf, makeSelfSigned, type Issued } from '../support/pki.js';

const MX = 'mx.example.test';

const T: SmtpTimeouts = {
  connect: 3000,
  greeting: 3000,
  ehlo: 3000,
  starttls: 3000,
  mail: 3000,
  rcpt: 3000,
  data: 3000,
  data_block: 5000,
  data_done: 5000,
};
/** for stages whose timeout is not under test */
const PATIENT: SmtpTimeouts = {
  connect: 60_000,
  greeting: 60_000,
  ehlo: 60_000,
  starttls: 60_000,
  mail: 60_000,
  rcpt: 60_000,
  data: 60_000,
  data_block: 60_000,
  data_done: 60_000,
};

let ca: Issued;
let inter: Issued;
let leaf: Issued;
let selfSigned: Issued;
let tlsChain: { key: string; cert: string };

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

beforeAll(async () => {
  ca = await makeCa();
  inter = await makeIntermediate(ca);
  leaf = await makeLeaf(inter, { cn: MX, dnsNames: [MX] });
  selfSigned = await makeSelfSigned({ cn: MX, dnsNames: [MX] });
  // Leaf, intermediate and root all presented, leaf first.
  tlsChain = { key: leaf.keyPem, cert: chainPem(leaf, inter, ca) };
});

async function receiver(o: ReceiverOptions = {}): Promise<Receiver> {
  const r = await startReceiver(o);
  cleanups.push(() => r.close());
  return r;
}

function target(p: { host?: string; port: number }, host = MX): Target {
  return { host, address: p.host ?? '127.0.0.1', port: p.port };
}

function options(tlsReq: TlsRequirement, timeouts: SmtpTimeouts = T): SmtpClientOptions {
  return { heloName: 'relay.test.invalid', tls: tlsReq, timeouts };
}

const text = (s: string | Buffer[]) => () => Readable.from(typeof s === 'string' ? [Buffer.from(s)] : s);

const accept = (): VerifyOutcome => ({ ok: true, detail: 'test verifier accepts' });

async function deliver(sess: SmtpSession, from = 'a@src.test', to = ['b@dst.test'], body = 'Subject: x\r\n\r\nhello\r\n') {
  return sess.send({ from, recipients: to, body: text(body) });
}

async function expectSmtpError(p: Promise<unknown>): Promise<SmtpError> {
  const err = await p.then(
    () => {
      throw new Error('expected an SmtpError, got success');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SmtpError);
  return err as SmtpError;
}

/** Commands the receiver saw after the STARTTLS command. */
function afterStarttls(r: Receiver): string[] {
  const i = r.commands.indexOf('STARTTLS');
  return i < 0 ? [] : r.commands.slice(i + 1);
}

// ---------------------------------------------------------------------------
// A scripted raw SMTP peer: per line handler, DATA captured byte-exact.
interface RawPeer {
  host: string;
  port: number;
  lines: string[];
  /** wire bytes of each DATA body, including the final ".\r\n" */
  bodies: Buffer[];
  /** bytes received after the command named, e.g. 'STARTTLS' */
  bytesAfter(cmd: string): number;
}
type LineHandler = (line: string, sock: net.Socket, peer: RawPeer) => void;

async function rawPeer(handler: LineHandler, greeting = '220 raw.test.invalid ESMTP\r\n'): Promise<RawPeer> {
  const peer: RawPeer = { host: '127.0.0.1', port: 0, lines: [], bodies: [], bytesAfter: () => 0 };
  const marks = new Map<string, number>();
  let total = 0;
  peer.bytesAfter = (cmd) => (marks.has(cmd) ? total - marks.get(cmd)! : 0);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let inData: Buffer[] | undefined;
    sock.on('data', (chunk: Buffer) => {
      total += chunk.length;
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          const atStart = buf.subarray(0, 3).equals(Buffer.from('.\r\n')) && inData.length === 0;
          if (atStart) {
            peer.bodies.push(Buffer.from('.\r\n'));
          } else if (end < 0) {
            return;
          } else {
            inData.push(buf.subarray(0, end + 5));
            peer.bodies.push(Buffer.concat(inData));
          }
          buf = buf.subarray(atStart ? 3 : end + 5);
          inData = undefined;
          sock.write('250 2.0.0 queued\r\n');
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.subarray(0, nl).toString('utf8');
        buf = buf.subarray(nl + 2);
        peer.lines.push(line);
        marks.set(line.split(' ')[0]!.toUpperCase(), total - buf.length);
        if (line.toUpperCase() === 'DATA') {
          inData = [];
          sock.write('354 go ahead\r\n');
          continue;
        }
        if (line.toUpperCase() === 'QUIT') {
          sock.end('221 2.0.0 bye\r\n');
          return;
        }
        handler(line, sock, peer);
      }
    });
    if (greeting) sock.write(greeting);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  peer.port = (server.address() as net.AddressInfo).port;
  cleanups.push(
    () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  );
  return peer;
}

/** A minimal well-behaved responder for the raw peer. */
function basic(ext: string[] = []): LineHandler {
  return (line, sock) => {
    if (/^EHLO /i.test(line)) sock.write(multi(250, ['raw.test.invalid', ...ext]));
    else sock.write('250 2.0.0 ok\r\n');
  };
}

/** Plain STARTTLS by hand (no policy), to show what a lax client would get. */
function laxStarttls(port: number, host: string, opts: tls.ConnectionOptions): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    let buf = '';
    let step = 0; // 0: greeting, 1: EHLO reply, 2: STARTTLS reply
    s.on('error', reject);
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const done = buf.split('\r\n').find((l) => /^\d{3} /.test(l));
      if (!done) return;
      buf = '';
      if (step === 0) s.write('EHLO lax.test.invalid\r\n');
      else if (step === 1) s.write('STARTTLS\r\n');
      else {
        s.removeAllListeners('data');
        const t = tls.connect({ ...opts, socket: s }, () => {
          resolve(t.getProtocol());
          t.destroy();
        });
        t.on('error', reject);
      }
      step++;
    });
  });
}

/** "250-a\r\n250-b\r\n250 c\r\n" from lines. */
function multi(code: number, lines: string[]): string {
  return lines.map((l, i) => `${code}${i === lines.length - 1 ? ' ' : '-'}${l}\r\n`).join('');
}

// ---------------------------------------------------------------------------

describe('SmtpSession: plain SMTP', () => {
  it('DANE-44 plain delivery (mode none): envelope and body arrive, STARTTLS is never sent', async () => {
    const r = await receiver({ tls: tlsChain }); // STARTTLS offered, must be ignored in mode none
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    expect(sess.greeting.code).toBe(220);
    expect(sess.extensions.has('STARTTLS')).toBe(true);
    expect(sess.tls).toBeUndefined();
    const res = await deliver(sess, 'alice@src.test', ['bob@dst.test'], 'Subject: hi\r\n\r\nbody\r\n');
    await sess.quit();
    expect(res.recipients).toEqual([expect.objectContaining({ address: 'bob@dst.test', kind: 'delivered' })]);
    expect(res.recipients[0]!.reply.code).toBe(250);
    expect(res.recipients[0]!.reply.enhanced).toMatch(/^2\.\d+\.\d+$/);
    expect(r.messages).toHaveLength(1);
    const m = r.messages[0]!;
    expect(m.from).toBe('alice@src.test');
    expect(m.to).toEqual(['bob@dst.test']);
    expect(m.body.toString()).toBe('Subject: hi\r\n\r\nbody\r\n');
    expect(m.secure).toBe(false);
    expect(r.commands).not.toContain('STARTTLS');
    expect(r.commands.at(-1)).toBe('QUIT');
  });

  it('RFC 5321 §3.3 multi-recipient: per-RCPT 250/450/550 results, only accepted recipients get the message', async () => {
    const r = await receiver({
      rcpt: (a) => (a.startsWith('later') ? { code: 450, message: 'mailbox busy' } : a.startsWith('gone') ? { code: 550, message: 'no such user' } : undefined),
    });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    const res = await deliver(sess, 'a@src.test', ['ok@dst.test', 'later@dst.test', 'gone@dst.test', 'ok2@dst.test']);
    await sess.quit();
    expect(res.recipients.map((x) => [x.address, x.kind, x.reply.code, x.kind === 'refused' ? [x.step, x.permanent] : null])).toEqual([
      ['ok@dst.test', 'delivered', 250, null],
      ['later@dst.test', 'refused', 450, ['RCPT TO', false]],
      ['gone@dst.test', 'refused', 550, ['RCPT TO', true]],
      ['ok2@dst.test', 'delivered', 250, null],
    ]);
    // RFC 3463 codes are parsed and their class matches the reply class.
    expect(res.recipients[1]!.reply.enhanced).toMatch(/^4\.\d+\.\d+$/);
    expect(res.recipients[2]!.reply.enhanced).toMatch(/^5\.\d+\.\d+$/);
    expect(res.recipients[2]!.reply.text).toContain('no such user');
    expect(r.messages[0]!.to).toEqual(['ok@dst.test', 'ok2@dst.test']);
  });

  it('RFC 2920 pipelining: MAIL and every RCPT are sent before any reply is read', async () => {
    // This peer answers nothing until it holds MAIL and both RCPTs: a client that
    // waited for the MAIL reply first would deadlock into the 'mail' timeout.
    const peer = await rawPeer((line, sock, p) => {
      if (/^EHLO /i.test(line)) return void sock.write(multi(250, ['raw.test.invalid', 'PIPELINING', 'ENHANCEDSTATUSCODES']));
      const pending = p.lines.filter((l) => /^(MAIL|RCPT)/.test(l)).length;
      if (pending === 3 && /^RCPT/.test(line)) sock.write('250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n');
    });
    const sess = await SmtpSession.connect(target(peer), options({ mode: 'none' }, { ...T, mail: 1500 }));
    const res = await deliver(sess, 'a@src.test', ['x@dst.test', 'y@dst.test']);
    await sess.quit();
    expect(res.recipients.map((x) => [x.kind, x.reply.code])).toEqual([
      ['delivered', 250],
      ['refused', 550],
    ]);
    // DATA only after the RCPT replies (RFC 2920 §3.1), and exactly once.
    expect(peer.lines.filter((l) => l === 'DATA')).toHaveLength(1);
  });

  it('RFC 5321 §4.3.2 without PIPELINING: RCPT is sent only after the MAIL reply', async () => {
    let mailAnsweredAt = 0;
    let rcptSeenAt = 0;
    const peer = await rawPeer((line, sock) => {
      if (/^EHLO /i.test(line)) return void sock.write(multi(250, ['raw.test.invalid', '8BITMIME']));
      if (/^MAIL /i.test(line)) {
        setTimeout(() => {
          mailAnsweredAt = performance.now();
          sock.write('250 ok\r\n');
        }, 150);
        return;
      }
      if (/^RCPT /i.test(line)) rcptSeenAt = performance.now();
      sock.write('250 ok\r\n');
    });
    const sess = await SmtpSession.connect(target(peer), options({ mode: 'none' }));
    const res = await deliver(sess);
    await sess.quit();
    expect(res.recipients.map((x) => x.kind)).toEqual(['delivered']);
    expect(rcptSeenAt).toBeGreaterThan(mailAnsweredAt);
    expect(mailAnsweredAt).toBeGreaterThan(0);
  });

  it('RFC 5321 §4.5.2 dot-stuffing and bare LF/CR → CRLF: the receiver gets the body byte-exact', async () => {
    const r = await receiver();
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    const input = 'Subject: dots\n\n.leading dot\r\n..two dots\rbare CR\nbare LF\r\n.\r\nlast line without EOL';
    await deliver(sess, 'a@src.test', ['b@dst.test'], input);
    await sess.quit();
    expect(r.messages[0]!.body.toString('latin1')).toBe(
      'Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nbare CR\r\nbare LF\r\n.\r\nlast line without EOL\r\n',
    );
  });

  it('RFC 5321 §4.5.2 wire form: dots stuffed and CRLF kept across chunk boundaries, ends with CRLF.CRLF', async () => {
    const peer = await rawPeer(basic(['PIPELINING']));
    const sess = await SmtpSession.connect(target(peer), options({ mode: 'none' }));
    // CR and LF of one line break split over chunks; a dot at the start of a chunk that starts a line.
    const chunks = ['a\r', '\n', '.b\r', '\n', '.', '\n', 'c\r', 'd\n', 'e'].map((s) => Buffer.from(s));
    const res = await sess.send({ from: 'a@src.test', recipients: ['b@dst.test'], body: text(chunks) });
    // An empty body is just the terminating dot line.
    await sess.send({ from: 'a@src.test', recipients: ['b@dst.test'], body: text('') });
    await sess.quit();
    expect(res.recipients.map((x) => x.kind)).toEqual(['delivered']);
    expect(peer.bodies.map((b) => b.toString('latin1'))).toEqual(['a\r\n..b\r\n..\r\nc\r\nd\r\ne\r\n.\r\n', '.\r\n']);
  });

  it('RFC 5321 §4.5.3.1.7 large body (32 MB) is streamed with backpressure, never buffered whole', async () => {
    const size = 32 * 1024 * 1024;
    const line = Buffer.from('x'.repeat(1022) + '\r\n'); // no leading dots: wire == content
    const chunk = Buffer.concat(Array.from({ length: 64 }, () => line)); // 64 KB
    const expected = createHash('sha256');
    for (let i = 0; i < size / chunk.length; i++) expected.update(chunk);
    expected.update('.\r\n');

    // The raw peer hashes while it reads; the generator records how far it ran ahead.
    let received = 0;
    const hash = createHash('sha256');
    let maxLead = 0;
    const server = net.createServer((sock) => {
      let inData = false;
      sock.write('220 raw ESMTP\r\n');
      sock.on('data', (c: Buffer) => {
        if (inData) {
          const take = Math.min(c.length, size + 3 - received);
          received += take;
          hash.update(c.subarray(0, take));
          if (received < size + 3) return;
          inData = false;
          sock.write('250 2.0.0 got it\r\n');
          c = c.subarray(take);
        }
        for (const l of c.toString().split('\r\n').filter(Boolean)) {
          if (l.startsWith('EHLO')) sock.write('250-raw\r\n250 SIZE 100000000\r\n');
          else if (l === 'DATA') {
            inData = true;
            sock.write('354 go\r\n');
          } else if (l === 'QUIT') sock.end('221 bye\r\n');
          else sock.write('250 ok\r\n');
        }
      });
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    cleanups.push(() => new Promise<void>((res) => server.close(() => res())));

    async function* body() {
      for (let sent = 0; sent < size; sent += chunk.length) {
        maxLead = Math.max(maxLead, sent - received);
        yield chunk;
      }
    }
    const sess = await SmtpSession.connect(target({ port: (server.address() as net.AddressInfo).port }), options({ mode: 'none' }));
    const res = await sess.send({ from: 'a@src.test', recipients: ['b@dst.test'], size, body: () => Readable.from(body()) });
    await sess.quit();
    expect(res.recipients.map((x) => x.kind)).toEqual(['delivered']);
    expect(received).toBe(size + 3);
    expect(hash.digest('hex')).toBe(expected.digest('hex'));
    // Without backpressure the whole 32 MB would be queued before the peer read any
    // of it; with it, the producer is at most kernel + stream buffers ahead.
    expect(maxLead).toBeLessThan(12 * 1024 * 1024);
  });

  it.each([[true], [false]])(
    'RFC 5321 §4.1.1.5 connection reuse (PIPELINING %s): the session itself sends RSET before the second transaction, never before the first',
    async (pipelining) => {
      const r = await receiver({ pipelining });
      const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
      await deliver(sess, 'a@src.test', ['one@dst.test'], 'first\r\n');
      expect(sess.usable).toBe(true);
      expect(r.commands).not.toContain('RSET');
      await deliver(sess, 'b@src.test', ['two@dst.test'], 'second\r\n');
      expect(r.commands.filter((c) => /^(RSET|MAIL)/.test(c))).toEqual([
        expect.stringMatching(/^MAIL FROM:<a@src\.test>/),
        'RSET',
        expect.stringMatching(/^MAIL FROM:<b@src\.test>/),
      ]);
      await sess.quit();
      expect(sess.usable).toBe(false);
      expect(r.connections).toBe(1);
      expect(r.messages.map((m) => [m.to[0], m.body.toString()])).toEqual([
        ['one@dst.test', 'first\r\n'],
        ['two@dst.test', 'second\r\n'],
      ]);
      expect(r.commands.filter((c) => c === 'RSET')).toHaveLength(1);
    },
  );

  it('RFC 5321 §3.3 MAIL rejected: result says so, no RCPT/DATA, the session stays usable', async () => {
    const r = await receiver({ pipelining: false, mail: (f) => (f.startsWith('bad') ? { code: 553, message: 'sender refused' } : undefined) });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    const res = await deliver(sess, 'bad@src.test');
    expect(res.recipients).toEqual([
      expect.objectContaining({ kind: 'refused', step: 'MAIL FROM', permanent: true, reply: expect.objectContaining({ code: 553 }) }),
    ]);
    expect(sess.usable).toBe(true);
    const ok = await deliver(sess, 'good@src.test');
    await sess.quit();
    expect(ok.recipients.map((x) => x.kind)).toEqual(['delivered']);
    expect(r.commands.filter((c) => c.startsWith('RCPT'))).toHaveLength(1);
    expect(r.messages.map((m) => m.from)).toEqual(['good@src.test']);
  });

  it('RFC 5321 §3.3 no recipient accepted, without PIPELINING: RSET is sent instead of DATA', async () => {
    const r = await receiver({ pipelining: false, rcpt: () => ({ code: 550, message: 'no' }) });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    const res = await deliver(sess, 'a@src.test', ['x@dst.test', 'y@dst.test']);
    expect(res.recipients.every((x) => x.kind === 'refused' && x.step === 'RCPT TO' && x.reply.code === 550)).toBe(true);
    expect(sess.usable).toBe(true);
    await sess.quit();
    expect(r.commands).not.toContain('DATA');
    expect(r.commands).toContain('RSET');
  });

  it('RFC 2920 §3.1 no recipient accepted, with PIPELINING: the DATA of the batch is refused (RFC 5321 §3.3), no body follows, RSET, the session stays usable', async () => {
    const r = await receiver({ rcpt: (a) => (a.startsWith('z@') ? undefined : { code: 550, message: 'no' }) });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    const res = await deliver(sess, 'a@src.test', ['x@dst.test', 'y@dst.test']);
    expect(res.recipients.every((x) => x.kind === 'refused' && x.step === 'RCPT TO' && x.reply.code === 550)).toBe(true);
    expect(sess.usable).toBe(true);
    // the session carries the next message as usual
    expect((await deliver(sess, 'b@src.test', ['z@dst.test'])).recipients.map((x) => x.kind)).toEqual(['delivered']);
    await sess.quit();
    const verbs = r.commands.map((c) => c.split(/[ :]/)[0]);
    expect(verbs.slice(0, verbs.indexOf('RSET') + 1)).toEqual(['EHLO', 'MAIL', 'RCPT', 'RCPT', 'DATA', 'RSET']);
    expect(r.messages.map((m) => m.from)).toEqual(['b@src.test']);
  });

  it('RFC 1870/6152/6531 MAIL parameters: SIZE, BODY=8BITMIME and SMTPUTF8 when advertised', async () => {
    const r = await receiver({ size: 10_000_000 });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    expect(sess.extensions.get('SIZE')).toBe('10000000');
    await sess.send({ from: 'ä@src.test', recipients: ['b@dst.test'], size: 1234, eightBit: true, smtputf8: true, body: text('héllo\r\n') });
    await sess.quit();
    expect(r.commands.find((c) => c.startsWith('MAIL'))).toBe('MAIL FROM:<ä@src.test> SIZE=1234 BODY=8BITMIME SMTPUTF8');
    expect(r.messages[0]!.from).toBe('ä@src.test');
  });

  it('RFC 6531 §3.4 SMTPUTF8 needed but not advertised: permanent 5.6.7 at stage mail, nothing sent', async () => {
    const r = await receiver({ smtputf8: false });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    const err = await expectSmtpError(sess.send({ from: 'ä@src.test', recipients: ['b@dst.test'], smtputf8: true, body: text('x\r\n') }));
    await sess.quit();
    expect(err.stage).toBe('mail');
    expect(err.permanent).toBe(true);
    expect(err.reply?.enhanced).toBe('5.6.7');
    expect(r.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
  });

  it('RFC 6152 §3 an 8-bit body to a server without 8BITMIME: permanent 5.6.3 at stage mail, nothing sent (the last guard)', async () => {
    const r = await receiver({ eightBitMime: false });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    const err = await expectSmtpError(sess.send({ from: 'a@src.test', recipients: ['b@dst.test'], eightBit: true, body: text('h\u00e9llo\r\n') }));
    await sess.quit();
    expect([err.stage, err.permanent, err.reply?.enhanced]).toEqual(['mail', true, '5.6.3']);
    expect(r.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
  });

  it('RFC 3461 §5.2.1 DSN parameters go only to a server that advertises DSN, re-encoded as xtext', async () => {
    const input = {
      from: 'a@src.test',
      recipients: ['b@dst.test', 'c@dst.test'],
      body: text('x\r\n'),
      dsn: {
        mail: { ret: 'FULL' as const, envid: 'id 1+2' },
        rcpt: [{ notify: ['SUCCESS' as const, 'DELAY' as const], orcpt: { type: 'rfc822', address: 'B@Src.test' } }, undefined],
      },
    };
    expect(mailCommand(input, new Map([['DSN', '']]))).toBe('MAIL FROM:<a@src.test> RET=FULL ENVID=id+201+2B2');
    expect(mailCommand(input, new Map())).toBe('MAIL FROM:<a@src.test>');
    expect(rcptCommand('b@dst.test', input.dsn.rcpt[0], new Map([['DSN', '']]))).toBe('RCPT TO:<b@dst.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;B@Src.test');
    expect(rcptCommand('b@dst.test', input.dsn.rcpt[0], new Map())).toBe('RCPT TO:<b@dst.test>');
    const withDsn = await receiver();
    const sess = await SmtpSession.connect(target(withDsn), options({ mode: 'none' }));
    await sess.send(input);
    await sess.quit();
    expect(withDsn.commands.filter((c) => /^(MAIL|RCPT)/.test(c))).toEqual([
      'MAIL FROM:<a@src.test> RET=FULL ENVID=id+201+2B2',
      'RCPT TO:<b@dst.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;B@Src.test',
      'RCPT TO:<c@dst.test>',
    ]);
    const without = await receiver({ dsn: false });
    const s2 = await SmtpSession.connect(target(without), options({ mode: 'none' }));
    await s2.send(input);
    await s2.quit();
    expect(without.commands.filter((c) => /^(MAIL|RCPT)/.test(c))).toEqual(['MAIL FROM:<a@src.test>', 'RCPT TO:<b@dst.test>', 'RCPT TO:<c@dst.test>']);
  });

  it('RFC 5321 §4.1.4 EHLO rejected with 5xx: falls back to HELO, no extensions', async () => {
    const peer = await rawPeer((line, sock) => {
      if (/^EHLO /i.test(line)) sock.write('502 5.5.1 EHLO not implemented\r\n');
      else sock.write('250 ok\r\n');
    });
    const sess = await SmtpSession.connect(target(peer), options({ mode: 'may' }));
    expect(sess.extensions.size).toBe(0);
    expect(sess.tls).toBeUndefined();
    const res = await deliver(sess);
    await sess.quit();
    expect(res.recipients.map((x) => x.kind)).toEqual(['delivered']);
    expect(peer.lines.slice(0, 2)).toEqual(['EHLO relay.test.invalid', 'HELO relay.test.invalid']);
  });

  it('RFC 5321 §3.1 421 greeting: SmtpError stage greeting, temporary; 554 greeting is permanent', async () => {
    const r421 = await receiver({ greeting: { code: 421, text: 'try later' } });
    const e421 = await expectSmtpError(SmtpSession.connect(target(r421), options({ mode: 'may' })));
    expect(e421.stage).toBe('greeting');
    expect(e421.reply?.code).toBe(421);
    expect(e421.permanent).toBe(false);
    const r554 = await receiver({ greeting: { code: 554, text: 'go away' } });
    const e554 = await expectSmtpError(SmtpSession.connect(target(r554), options({ mode: 'may' })));
    expect(e554.stage).toBe('greeting');
    expect(e554.permanent).toBe(true);
    // Nothing beyond (at most) QUIT was sent to a refusing server.
    expect([...r421.commands, ...r554.commands].filter((c) => c !== 'QUIT')).toEqual([]);
  });
});

describe('SmtpSession: hostile and broken peers', () => {
  it('RFC 5321 §4.2 endless multi-line reply: protocol error once the bound is hit', async () => {
    const peer = await rawPeer((line, sock) => {
      if (!/^EHLO /i.test(line)) return;
      // Never send the final "250 " line; keep the pipe full until the client leaves.
      const flood = (): void => {
        while (!sock.destroyed && sock.write('250-FLOOD' + 'x'.repeat(100) + '\r\n'));
        if (!sock.destroyed) sock.once('drain', flood);
      };
      flood();
    });
    const err = await expectSmtpError(SmtpSession.connect(target(peer), options({ mode: 'none' })));
    // the bound, not a timeout, ended it (a timeout would be stage ehlo)
    expect(err.stage).toBe('protocol');
    expect(err.message).toMatch(/exceeds 512 lines/);
  });

  it('RFC 5321 §4.2 malformed reply line: protocol error', async () => {
    const peer = await rawPeer(() => {}, 'hello there, I am not SMTP\r\n');
    const err = await expectSmtpError(SmtpSession.connect(target(peer), options({ mode: 'none' })));
    expect(err.stage).toBe('protocol');
    expect(err.message).toMatch(/malformed/);
  });

  it('RFC 3207 §5 / CVE-2011-0411 class: bytes after the 220 to STARTTLS abort before the handshake', async () => {
    const peer = await rawPeer((line, sock) => {
      if (/^EHLO /i.test(line)) sock.write(multi(250, ['raw.test.invalid', 'STARTTLS', 'PIPELINING']));
      // The injected "replies" would otherwise be read inside the TLS session.
      else if (line === 'STARTTLS') sock.write('220 2.0.0 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n');
    });
    const err = await expectSmtpError(SmtpSession.connect(target(peer), options({ mode: 'encrypt', servername: MX })));
    expect(err.stage).toBe('protocol');
    expect(err.message).toMatch(/injection/);
    // No ClientHello (or anything else) followed the STARTTLS command.
    expect(peer.bytesAfter('STARTTLS')).toBe(0);
  });

  // The stalled stage's timeout is short, every other one patient: a busy machine that delays a
  // well-behaved stage must not make it time out first (the reply's "after 400 ms" names the timer).
  const stalls: Array<[NonNullable<ReceiverOptions['stall']>, string, keyof SmtpTimeouts]> = [
    ['greeting', 'greeting', 'greeting'],
    ['ehlo', 'ehlo', 'ehlo'],
    ['mail', 'mail', 'mail'],
    ['rcpt', 'rcpt', 'rcpt'],
    ['data', 'data', 'data'],
    ['dot', 'data', 'data_done'],
  ];
  it.each(stalls)('RFC 5321 §4.5.3.2 peer stalls at %s: timeout with stage %s, connection dropped', async (stall, stage, timer) => {
    const r = await receiver({ stall });
    const timeouts = { ...PATIENT, [timer]: 400 };
    const run = async (): Promise<void> => {
      const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }, timeouts));
      try {
        await deliver(sess);
      } finally {
        expect(sess.usable).toBe(false);
      }
    };
    const err = await expectSmtpError(run());
    expect(err.stage).toBe(stage);
    expect(err.timeout).toBe(true);
    expect(err.message).toMatch(/timeout after 400 ms/);
    expect(r.messages).toHaveLength(0);
  });
});

describe('SmtpSession: TLS policy', () => {
  it('DANE-44 may + STARTTLS offered: upgrades, SNI sent, EHLO repeated over TLS', async () => {
    const r = await receiver({ tls: { key: selfSigned.keyPem, cert: selfSigned.certPem } });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'may', servername: MX }));
    expect(sess.tls).toMatchObject({ protocol: 'TLSv1.3', verified: false, servername: MX });
    // RFC 3207 §4.2: extensions come from the post-TLS EHLO (no STARTTLS any more).
    expect(sess.extensions.has('STARTTLS')).toBe(false);
    await deliver(sess);
    await sess.quit();
    expect(r.messages[0]).toMatchObject({ secure: true, servername: MX, tlsProtocol: 'TLSv1.3' });
    expect(r.commands.filter((c) => c.startsWith('EHLO'))).toHaveLength(2);
  });

  it('DANE-44 may + STARTTLS not offered: delivers in cleartext', async () => {
    const r = await receiver({ tls: tlsChain, starttls: false });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'may', servername: MX }));
    expect(sess.tls).toBeUndefined();
    await deliver(sess);
    await sess.quit();
    expect(r.messages[0]!.secure).toBe(false);
    expect(r.commands).not.toContain('STARTTLS');
  });

  it('DANE-44 may + failed handshake: cleartextRetryAllowed, and the cleartext retry delivers', async () => {
    const r = await receiver({ tls: { ...tlsChain, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } });
    const err = await expectSmtpError(SmtpSession.connect(target(r), options({ mode: 'may', servername: MX })));
    expect(err.stage).toBe('tls');
    expect(err.cleartextRetryAllowed).toBe(true);
    expect(r.commands).not.toContain('MAIL FROM:<a@src.test>');
    const sess = await SmtpSession.connect(target(r), options({ mode: 'none' }));
    await deliver(sess);
    await sess.quit();
    expect(r.messages).toHaveLength(1);
    expect(r.messages[0]!.secure).toBe(false);
  });

  it('DANE-42/43 encrypt + STARTTLS not offered: stage starttls, QUIT, receiver never saw MAIL', async () => {
    const r = await receiver({ tls: tlsChain, starttls: false });
    const err = await expectSmtpError(SmtpSession.connect(target(r), options({ mode: 'encrypt', servername: MX })));
    expect(err.stage).toBe('starttls');
    expect(err.cleartextRetryAllowed).toBe(false);
    expect(err.permanent).toBe(false);
    expect(r.commands).toEqual(['EHLO relay.test.invalid', 'QUIT']);
  });

  it('DANE-42 encrypt: unauthenticated TLS accepted (self-signed, wrong name), never verified', async () => {
    const other = await makeSelfSigned({ cn: 'unrelated.invalid', dnsNames: ['unrelated.invalid'] });
    const r = await receiver({ tls: { key: other.keyPem, cert: other.certPem } });
    const sess = await SmtpSession.connect(target(r), options({ mode: 'encrypt', servername: MX }));
    expect(sess.tls?.verified).toBe(false);
    await deliver(sess);
    await sess.quit();
    expect(r.messages[0]!.secure).toBe(true);
  });

  it('DANE-43 encrypt + failed handshake: stage tls, no cleartext retry allowed, no MAIL', async () => {
    const r = await receiver({ tls: { ...tlsChain, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } });
    const err = await expectSmtpError(SmtpSession.connect(target(r), options({ mode: 'encrypt', servername: MX })));
    expect(err.stage).toBe('tls');
    expect(err.cleartextRetryAllowed).toBe(false);
    expect(r.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
  });

  it('DANE-63/43 verify + verifier rejects: QUIT, receiver never saw MAIL FROM nor a second EHLO', async () => {
    const r = await receiver({ tls: tlsChain });
    const outcome: VerifyOutcome = { ok: false, reason: 'dane-no-match', detail: 'no TLSA record matched' };
    const err = await expectSmtpError(SmtpSession.connect(target(r), options({ mode: 'verify', servername: MX, verify: () => outcome })));
    expect(err.stage).toBe('verify');
    expect(err.verify).toEqual(outcome);
    expect(err.message).toContain('dane-no-match');
    expect(err.cleartextRetryAllowed).toBe(false);
    expect(r.tlsHandshakes).toBe(1);
    expect(r.commands.filter((c) => c.startsWith('EHLO'))).toHaveLength(1);
    expect(afterStarttls(r)).toEqual(['QUIT']);
    expect(r.messages).toHaveLength(0);
  });

  it('DANE-63 verify: a throwing verifier counts as a failure', async () => {
    const r = await receiver({ tls: tlsChain });
    const err = await expectSmtpError(
      SmtpSession.connect(
        target(r),
        options({
          mode: 'verify',
          servername: MX,
          verify: () => {
            throw new Error('boom');
          },
        }),
      ),
    );
    expect(err.stage).toBe('verify');
    expect(err.verify?.reason).toBe('verifier-error');
    expect(afterStarttls(r)).toEqual(['QUIT']);
  });

  it('DANE-53 verify: the verifier gets the presented chain leaf first, DER, before EHLO', async () => {
    const r = await receiver({ tls: tlsChain });
    let seen: PresentedChain | undefined;
    let commandsAtVerify: string[] = [];
    const sess = await SmtpSession.connect(
      target(r),
      options({
        mode: 'verify',
        servername: MX,
        verify: (chain) => {
          seen = chain;
          commandsAtVerify = afterStarttls(r);
          return { ok: true, detail: 'matched 2 1 1', matched: '2 1 1 …', depth: 2 };
        },
      }),
    );
    expect(seen!.certificates.map((c) => c.toString('hex'))).toEqual([leaf.der, inter.der, ca.der].map((c) => c.toString('hex')));
    expect(seen!.protocol).toBe('TLSv1.3');
    expect(seen!.cipher).toBeTruthy();
    expect(commandsAtVerify).toEqual([]); // DANE-63: verification ran before the post-TLS EHLO
    expect(sess.tls).toMatchObject({ verified: true, verify: { ok: true, depth: 2 } });
    await deliver(sess);
    await sess.quit();
    expect(r.messages[0]).toMatchObject({ secure: true, servername: MX });
  });

  it('DANE-60 SNI seen by the receiver equals servername (trailing dot dropped); none for an IP literal', async () => {
    const r = await receiver({ tls: tlsChain });
    const a = await SmtpSession.connect(target(r), options({ mode: 'verify', servername: `${MX}.`, verify: accept }));
    await deliver(a);
    await a.quit();
    const b = await SmtpSession.connect(target(r), options({ mode: 'encrypt', servername: '127.0.0.1' }));
    await deliver(b);
    await b.quit();
    expect(r.messages.map((m) => m.servername)).toEqual([MX, undefined]);
    expect(a.tls?.servername).toBe(MX);
    expect(b.tls?.servername).toBeUndefined();
  });

  it('DANE-61 TLS >= 1.2: a TLSv1.1-only server fails the handshake (a TLSv1 client would succeed)', async () => {
    const r = await receiver({ tls: { ...tlsChain, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } });
    const err = await expectSmtpError(SmtpSession.connect(target(r), options({ mode: 'verify', servername: MX, verify: accept })));
    expect(err.stage).toBe('tls');
    expect(String((err.cause as Error | undefined)?.message ?? err.message)).toMatch(/protocol|version/i);
    expect(r.tlsHandshakes).toBe(0);
    // Control: the server really speaks TLS 1.1, so our floor is what failed.
    const proto = await laxStarttls(r.port, r.host, { rejectUnauthorized: false, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' });
    expect(proto).toBe('TLSv1.1');
  });

  it('DANE-62 verify: every connection does a full handshake and runs the verifier', async () => {
    const r = await receiver({ tls: tlsChain });
    let calls = 0;
    const req: TlsRequirement = { mode: 'verify', servername: MX, verify: () => ((calls += 1), accept()) };
    for (let i = 0; i < 2; i++) {
      const sess = await SmtpSession.connect(target(r), options(req));
      await deliver(sess);
      await sess.quit();
    }
    expect(calls).toBe(2);
    expect(r.tlsHandshakes).toBe(2);
    expect(r.messages).toHaveLength(2);
  });

  it('DANE-41 verify mode without a verify function is refused before any TCP connection', async () => {
    let accepted = 0;
    const server = net.createServer((c) => {
      accepted++;
      c.destroy();
    });
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
    cleanups.push(() => new Promise<void>((res) => server.close(() => res())));
    const err = await expectSmtpError(
      SmtpSession.connect(target({ port: (server.address() as net.AddressInfo).port }), options({ mode: 'verify', servername: MX })),
    );
    expect(err.stage).toBe('verify');
    await new Promise((res) => setTimeout(res, 50));
    expect(accepted).toBe(0);
  });
});

describe('SmtpSession: REQUIRETLS (RFC 8689 §4.2.1)', () => {
  it('RT-26 RT-23 REQUIRETLS goes on MAIL FROM only over an authenticated session whose EHLO advertised it; anything else is refused before MAIL', async () => {
    expect(mailCommand({ from: 'a@src.test', recipients: ['b@dst.test'], requireTls: true, body: text('') }, new Map())).toBe(
      'MAIL FROM:<a@src.test> REQUIRETLS',
    );
    const yes = await receiver({ tls: tlsChain, requireTls: true });
    const s1 = await SmtpSession.connect(target(yes), options({ mode: 'verify', servername: MX, verify: accept, authenticatedRoute: 'dnssec-dane' }));
    expect(s1.extensions.has('REQUIRETLS')).toBe(true);
    await s1.send({ from: 'a@src.test', recipients: ['b@dst.test'], requireTls: true, body: text('Subject: x\r\n\r\nhi\r\n') });
    await s1.quit();
    expect(yes.messages[0]).toMatchObject({ requireTls: true, secure: true });
    // the server does not advertise it: 4.7.30, nothing of the transaction sent
    const no = await receiver({ tls: tlsChain });
    const s2 = await SmtpSession.connect(target(no), options({ mode: 'verify', servername: MX, verify: accept, authenticatedRoute: 'dnssec-dane' }));
    const e2 = await expectSmtpError(s2.send({ from: 'a@src.test', recipients: ['b@dst.test'], requireTls: true, body: text('x\r\n') }));
    expect(e2.reply?.enhanced).toBe('4.7.30');
    await s2.quit();
    expect(no.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    // advertised, but TLS without authentication (opportunistic): 4.7.10
    const s3 = await SmtpSession.connect(target(yes), options({ mode: 'encrypt' }));
    const e3 = await expectSmtpError(s3.send({ from: 'a@src.test', recipients: ['b@dst.test'], requireTls: true, body: text('x\r\n') }));
    expect(e3.reply?.enhanced).toBe('4.7.10');
    await s3.quit();
    expect(yes.messages).toHaveLength(1);
  });

  it('RT-21 RT-22 the last guard takes a session verified over an MTA-STS enforce route, and no verified session whose route authenticates nothing (DANE after an insecure MX, trust-insecure-mx)', async () => {
    const yes = await receiver({ tls: tlsChain, requireTls: true });
    const sts = await SmtpSession.connect(target(yes), options({ mode: 'verify', servername: MX, verify: accept, authenticatedRoute: 'sts-enforce' }));
    expect(sts.tls).toMatchObject({ verified: true, route: 'sts-enforce' });
    await sts.send({ from: 'a@src.test', recipients: ['b@dst.test'], requireTls: true, body: text('Subject: x\r\n\r\nhi\r\n') });
    await sts.quit();
    expect(yes.messages[0]).toMatchObject({ requireTls: true, secure: true });
    // verified (the chain was accepted), but the requirement names no authenticated route: 4.7.10, no MAIL
    const trusted = await SmtpSession.connect(target(yes), options({ mode: 'verify', servername: MX, verify: accept, label: 'trusted' }));
    expect(trusted.tls).toMatchObject({ verified: true });
    const e = await expectSmtpError(trusted.send({ from: 'a@src.test', recipients: ['b@dst.test'], requireTls: true, body: text('x\r\n') }));
    expect(e.reply?.enhanced).toBe('4.7.10');
    await trusted.quit();
    expect(yes.messages).toHaveLength(1);
    expect(yes.commands.filter((c) => c.startsWith('MAIL'))).toHaveLength(1);
  });
});
