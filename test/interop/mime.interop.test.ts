/**
 * Issue 19 against Postfix: what the next hop agreed to, and what the sender asked for.
 *
 * - A Postfix listener with `smtpd_discard_ehlo_keywords = 8bitmime,dsn` (a minimal next hop) gets
 *   8-bit mail and a 3000-octet line from our relay: what lands in its Maildir is 7-bit, every
 *   line ≤ 998 octets, and decodes to what was sent; no DSN parameter ever reaches it (Postfix would
 *   answer 501 5.7.1 "DSN support is disabled").
 * - Postfix as the front MTA (relayhost = our relay) takes a submission with DSN requests
 *   (RET, ENVID, NOTIFY, ORCPT) and relays through us: to a Postfix listener with DSN the
 *   parameters round-trip and that listener's own "delivered" report names the ENVID and the
 *   ORCPT; to the listener without DSN our relay sends the "relayed" DSN itself.
 * - Issue 17, RFC 3030: a plain Postfix next hop (CHUNKING and PIPELINING, as shipped) gets a small message
 *   as one BDAT batch and a 10 KB one with DATA — its own per-client command counts say which — and both
 *   land octet for octet, lines starting with a dot included.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { simpleParser } from 'mailparser';
import { startDnsWorld, type DnsWorld, type ZoneSpec } from './support/dnsworld.js';
import { startPostfixReceivers, startPostfixRelay, type Listener, type PostfixReceivers, type PostfixRelay, type ReceivedMessage } from './support/postfix.js';
import { startRelay, type RelayProcessHandle } from './support/relay.js';
import { SmtpTestClient } from '../support/submit.js';
import { ensureBuilt } from '../support/build.js';

const SEVEN = { name: 'mx.seven.tst', address: '127.0.91.7' };
const EIGHT = { name: 'mx.eight.tst', address: '127.0.91.8' };
const SENDER = { name: 'mx.sender.tst', address: '127.0.91.9' };
/** a plain Postfix 3.7 next hop (PIPELINING and CHUNKING on by default) whose smtpd logs under its own name */
const CHUNK = { name: 'mx.chunk.tst', address: '127.0.91.10' };
const zones: ZoneSpec[] = [
  { name: 'seven.tst', records: ['@ MX 10 mx', `mx A ${SEVEN.address}`] },
  { name: 'eight.tst', records: ['@ MX 10 mx', `mx A ${EIGHT.address}`] },
  { name: 'sender.tst', records: ['@ MX 10 mx', `mx A ${SENDER.address}`] },
  { name: 'chunk.tst', records: ['@ MX 10 mx', `mx A ${CHUNK.address}`] },
];
const listeners: Listener[] = [
  { ...SEVEN, options: { smtpd_discard_ehlo_keywords: '8bitmime,dsn' } },
  EIGHT,
  SENDER,
  { ...CHUNK, options: { syslog_name: 'postfix-chunk' } },
];

let dns: DnsWorld | undefined;
let rx: PostfixReceivers | undefined;
let relay: RelayProcessHandle | undefined;
let front: PostfixRelay | undefined;

beforeAll(async () => {
  ensureBuilt();
  try {
    dns = await startDnsWorld({ zones });
    rx = await startPostfixReceivers({ listeners, resolver: dns.unbound });
    relay = await startRelay({ resolver: dns.unbound, listen: '127.0.0.21:2525' });
    // Postfix in front: everything to our relay, no TLS on that hop (our ingress has none here)
    front = await startPostfixRelay({
      address: '127.0.0.22',
      resolver: dns.unbound,
      hostname: 'front.tst',
      extra: { relayhost: '[127.0.0.21]:2525', smtp_tls_security_level: 'none', smtp_dns_support_level: 'enabled' },
    });
  } catch (e) {
    await front?.stop();
    await relay?.stop();
    await rx?.stop();
    await dns?.stop();
    throw e;
  }
});

afterAll(async () => {
  await front?.stop().catch(() => undefined);
  await relay?.stop().catch(() => undefined);
  await rx?.stop().catch(() => undefined);
  await dns?.stop().catch(() => undefined);
});

async function submit(server: { host: string; port: number }, mail: string, rcpts: string[], body: Buffer | string): Promise<void> {
  const c = await SmtpTestClient.connect({ host: server.host, port: server.port, timeout: 30_000 });
  await c.ehlo('app.interop.invalid');
  const m = await c.cmd(`MAIL FROM:${mail}`);
  expect(m.code, m.raw).toBe(250);
  for (const r of rcpts) {
    const reply = await c.cmd(`RCPT TO:${r}`);
    expect(reply.code, reply.raw).toBe(250);
  }
  expect((await c.cmd('DATA')).code).toBe(354);
  c.write(SmtpTestClient.dataPayload(body));
  const end = await c.reply();
  await c.quit();
  expect(end.code, end.raw).toBe(250);
}

async function waitFor(what: string, find: () => ReceivedMessage | undefined, ms = 60_000): Promise<ReceivedMessage> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = find();
    if (m) return m;
    if (Date.now() > deadline)
      throw new Error(
        `${what}: not delivered within ${ms} ms\n--- relay ---\n${relay!.output().slice(-4000)}\n--- postfix ---\n${rx!.log().slice(-4000)}\n--- front ---\n${front?.log().slice(-3000)}`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
}

function raw(m: ReceivedMessage): Buffer {
  return Buffer.from(m.raw, 'utf8');
}

describe('8BITMIME and line length: a Postfix next hop with smtpd_discard_ehlo_keywords = 8bitmime,dsn', () => {
  it('the premise: that listener offers neither 8BITMIME nor DSN; the other one offers both', async () => {
    const ehlo = async (address: string) => {
      const c = await SmtpTestClient.connect({ host: address, port: 25, timeout: 10_000 });
      const { extensions } = await c.ehlo('probe.interop.invalid');
      await c.quit();
      return extensions;
    };
    const seven = await ehlo(SEVEN.address);
    expect(seven).not.toContain('8BITMIME');
    expect(seven).not.toContain('DSN');
    expect(await ehlo(EIGHT.address)).toEqual(expect.arrayContaining(['8BITMIME', 'DSN']));
  });

  it('8-bit mail arrives converted: 7-bit, lines ≤ 998, same content after decoding', async () => {
    const body = Buffer.from(
      [
        'From: app@sender.tst',
        'To: a@seven.tst',
        'Subject: interop 8bit',
        'Message-ID: <i8@sender.tst>',
        'MIME-Version: 1.0',
        'Content-Type: multipart/mixed; boundary="b"',
        '',
        '--b',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: 8bit',
        '',
        'Grüße aus Köln, ein Satz mit Umlauten: ÄÖÜ äöü ß.',
        `${'lang '.repeat(700)}`,
        '--b',
        'Content-Type: application/octet-stream',
        'Content-Disposition: attachment; filename="b.bin"',
        '',
        '\u00ff\u00fe\u00fd raw octets',
        '--b--',
        '',
      ].join('\r\n'),
      'utf8',
    );
    await submit(relay!, '<app@sender.tst> BODY=8BITMIME', ['<a@seven.tst>'], body);
    const m = await waitFor('a@seven.tst', () => rx!.messages().find((x) => x.to === 'a@seven.tst'));
    expect(m.by).toBe(SEVEN.name);
    const bytes = raw(m);
    expect(bytes.some((b) => b >= 0x80)).toBe(false);
    expect(Math.max(...m.raw.split(/\r?\n/).map((l) => l.length))).toBeLessThanOrEqual(998);
    const parsed = await simpleParser(bytes);
    expect(parsed.text).toBe(`Grüße aus Köln, ein Satz mit Umlauten: ÄÖÜ äöü ß.\n${'lang '.repeat(700)}`);
    expect(parsed.attachments[0]!.content.equals(Buffer.from('\u00ff\u00fe\u00fd raw octets', 'utf8'))).toBe(true);
    // Postfix saw no BODY=8BITMIME (it did not offer it): its log has the MAIL FROM without one
    expect(rx!.log()).not.toMatch(/DSN support is disabled/);
  });

  it('a 3000-octet line (7-bit message) arrives quoted-printable, also at a hop that has 8BITMIME', async () => {
    const line = 'x'.repeat(3000);
    await submit(relay!, '<app@sender.tst>', ['<long@eight.tst>'], `From: app@sender.tst\r\nSubject: interop long\r\n\r\n${line}\r\n`);
    const m = await waitFor('long@eight.tst', () => rx!.messages().find((x) => x.to === 'long@eight.tst'));
    expect(Math.max(...m.raw.split(/\r?\n/).map((l) => l.length))).toBeLessThanOrEqual(998);
    expect((await simpleParser(raw(m))).text).toBe(`${line}\n`);
  });
});

describe('DSN round trip: Postfix in front, relaying through us with DSN requests', () => {
  it('RET/ENVID/NOTIFY/ORCPT reach a Postfix with DSN, whose "delivered" report names them; the hop without DSN gets none and we send "relayed"', async () => {
    await submit(
      { host: front!.address, port: front!.port },
      '<app@sender.tst> RET=HDRS ENVID=interop+2Benvid-1',
      ['<u@eight.tst> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Orig-U@eight.tst', '<v@seven.tst> NOTIFY=SUCCESS ORCPT=rfc822;Orig-V@seven.tst'],
      'From: app@sender.tst\r\nSubject: interop dsn\r\nMessage-ID: <dsn1@sender.tst>\r\n\r\nasking for notifications\r\n',
    );
    await waitFor('u@eight.tst', () => rx!.messages().find((x) => x.to === 'u@eight.tst'));
    await waitFor('v@seven.tst', () => rx!.messages().find((x) => x.to === 'v@seven.tst'));
    const reports = () =>
      rx!.messages().filter((x) => x.to === 'app@sender.tst' && x.raw.includes('message/delivery-status') && x.raw.includes('interop+envid-1'));
    const delivered = await waitFor('the "delivered" DSN from Postfix', () => reports().find((x) => /^Action: delivered/m.test(x.raw)));
    expect(delivered.raw).toMatch(/^Original-Envelope-Id: interop\+envid-1/m);
    expect(delivered.raw).toMatch(/^Original-Recipient: rfc822; ?Orig-U@eight\.tst/m);
    expect(delivered.raw).toMatch(/^Final-Recipient: rfc822; ?u@eight\.tst/m);
    const relayed = await waitFor('the "relayed" DSN from our relay', () => reports().find((x) => /^Action: relayed/m.test(x.raw)));
    expect(relayed.raw).toMatch(/^Reporting-MTA: dns; relay\.tst/m);
    expect(relayed.raw).toMatch(/^Original-Recipient: rfc822; Orig-V@seven\.tst/m);
    expect(relayed.raw).toMatch(/^Final-Recipient: rfc822; v@seven\.tst/m);
    expect(relayed.raw).toMatch(/^Remote-MTA: dns; mx\.seven\.tst/m);
    expect(relayed.by).toBe(SENDER.name); // our relay delivered it over SMTP
    // nobody reported the same recipient twice: the front Postfix left success to us (we offer DSN)
    expect(reports().filter((x) => /Final-Recipient: rfc822; ?v@seven\.tst/.test(x.raw))).toHaveLength(1);
    expect(rx!.log()).not.toMatch(/DSN support is disabled/);
  });
});

/**
 * Postfix logs each client's commands when it disconnects ("disconnect from … mail=1 rcpt=1 bdat=1 quit=1
 * commands=N"); the CHUNK listener logs as postfix-chunk. The counts of every such line so far, summed.
 */
function chunkCommands(): { disconnects: number; bdat: number; data: number } {
  const lines = rx!
    .log()
    .split('\n')
    .filter((l) => /postfix-chunk\/smtpd\[\d+\]: disconnect from /.test(l));
  const count = (l: string, cmd: string) => Number(new RegExp(`\\b${cmd}=(\\d+)`).exec(l)?.[1] ?? 0);
  return { disconnects: lines.length, bdat: lines.reduce((n, l) => n + count(l, 'bdat'), 0), data: lines.reduce((n, l) => n + count(l, 'data'), 0) };
}

describe('RFC 3030 CHUNKING and RFC 2920 PIPELINING toward a real Postfix (issue 17)', () => {
  const message = (id: string, lines: number) =>
    Buffer.from(
      [
        'From: app@sender.tst',
        `To: ${id}@chunk.tst`,
        `Subject: interop ${id}`,
        `Message-ID: <${id}@sender.tst>`,
        'Date: Tue, 8 Dec 2026 00:00:00 +0000',
        '',
        '.a line that starts with a dot',
        '..and one with two',
        ...Array.from({ length: lines }, (_, i) => `line ${i} ${'x'.repeat(60)}`),
        '.',
        'end',
        '',
      ].join('\r\n'),
    );
  /** waits until the relay has closed its idle session (connection_cache_time) and Postfix logged it */
  async function disconnectsAfter(before: number): Promise<{ disconnects: number; bdat: number; data: number }> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const c = chunkCommands();
      if (c.disconnects > before) return c;
      if (Date.now() > deadline) throw new Error(`no disconnect logged by postfix-chunk\n${rx!.log().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  it('RFC 3030 §4.2 a 1 KB message goes with BDAT, a 10 KB one with DATA (Postfix counts the commands), and both arrive octet for octet, dotted lines included', async () => {
    const small = message('small', 10);
    const large = message('large', 150);
    expect(small.length).toBeLessThan(1500);
    expect(large.length).toBeGreaterThan(10_000);
    const before = chunkCommands();
    await submit(relay!, '<app@sender.tst>', ['<small@chunk.tst>'], small);
    const s = await waitFor('small@chunk.tst', () => rx!.messages().find((x) => x.to === 'small@chunk.tst'));
    const afterSmall = await disconnectsAfter(before.disconnects);
    expect({ bdat: afterSmall.bdat - before.bdat, data: afterSmall.data - before.data }).toEqual({ bdat: 1, data: 0 });
    await submit(relay!, '<app@sender.tst>', ['<large@chunk.tst>'], large);
    const l = await waitFor('large@chunk.tst', () => rx!.messages().find((x) => x.to === 'large@chunk.tst'));
    const afterLarge = await disconnectsAfter(afterSmall.disconnects);
    expect({ bdat: afterLarge.bdat - afterSmall.bdat, data: afterLarge.data - afterSmall.data }).toEqual({ bdat: 0, data: 1 });
    // what landed is what was submitted, after the headers Postfix and our relay put on top
    for (const [m, sent] of [
      [s, small],
      [l, large],
    ] as const) {
      expect(m.by).toBe(CHUNK.name);
      const bytes = raw(m);
      const at = bytes.indexOf('From: app@sender.tst');
      expect(at).toBeGreaterThan(0);
      expect(bytes.subarray(at).toString('latin1').replace(/\r?\n/g, '\r\n')).toBe(sent.toString('latin1'));
    }
  });
});
