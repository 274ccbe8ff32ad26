/**
 * The DATA path against the real spool: what is written, when the 250 is sent, and
 * that nothing is queued when anything goes wrong (RFC 5321 §4.1.1.4, §6.1: a 250
 * transfers responsibility, so it may only follow a durable commit).
 *
 * Spool faults are injected two ways: through the spool's own SpoolFs seam (real
 * Spool, failing fsync/write/open), and with a SpoolWriter wrapper whose commit
 * throws or waits — the ingress seam the issue describes.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { pino } from 'pino';
import { configSchema } from '../../src/config/schema.js';
import { Ingress, type IngressOptions } from '../../src/ingress/server.js';
import { Spool, nodeSpoolFs, type SpoolFs } from '../../src/spool/spool.js';
import type { Draft, Envelope, QueuedMessage, SpoolWriter } from '../../src/spool/types.js';
import { SmtpTestClient } from '../support/submit.js';

const root = mkdtempSync(join(tmpdir(), 'ingress-data-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Fault = { op: 'open' | 'write' | 'fsync'; code: string; afterBytes?: number } | undefined;

/** The real node fs, with one switchable fault (SpoolFs is the spool's test seam). */
function faultyFs(): { fs: SpoolFs; fault: { current: Fault } } {
  const fault: { current: Fault } = { current: undefined };
  let written = 0;
  const err = (code: string) => Object.assign(new Error(`injected ${code}`), { code });
  const fs: SpoolFs = {
    ...nodeSpoolFs,
    async open(path, flags) {
      if (fault.current?.op === 'open' && flags === 'wx') throw err(fault.current.code);
      return nodeSpoolFs.open(path, flags);
    },
    async write(h, buf, offset, length, position) {
      const f = fault.current;
      if (f?.op === 'write' && written + length > (f.afterBytes ?? 0)) throw err(f.code);
      written += length;
      return nodeSpoolFs.write(h, buf, offset, length, position);
    },
    async fsync(h) {
      if (fault.current?.op === 'fsync') throw err(fault.current.code);
      return nodeSpoolFs.fsync(h);
    },
  };
  return { fs, fault };
}

interface Harness {
  ingress: Ingress;
  spool: Spool;
  dir: string;
  port: number;
  queued: QueuedMessage[];
  logs: Record<string, unknown>[];
  fault: { current: Fault };
  connect(): Promise<SmtpTestClient>;
}
const open: Harness[] = [];
let seq = 0;
const T0 = Date.UTC(2026, 10, 24, 12, 0, 0);

async function start(opts: { config?: Partial<IngressOptions['config']>; wrap?: (s: Spool) => SpoolWriter } = {}): Promise<Harness> {
  const dir = join(root, `spool-${++seq}`);
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  const { fs, fault } = faultyFs();
  const spool = await Spool.open(dir, { log, fs, now: () => T0 });
  await spool.recover();
  const queued: QueuedMessage[] = [];
  const ingress = await Ingress.start({
    config: { ...configSchema.parse({}).ingress, listen: ['127.0.0.1:0'], relayClients: ['127.0.0.0/8'], hostname: 'relay.test', ...opts.config },
    spool: opts.wrap ? opts.wrap(spool) : spool,
    log,
    now: () => T0,
    onQueued: (m) => queued.push(m),
  });
  const port = ingress.addresses[0]!.port;
  const h: Harness = { ingress, spool, dir, port, queued, logs, fault, connect: () => SmtpTestClient.connect({ port }) };
  open.push(h);
  return h;
}

async function stop(h: Harness): Promise<void> {
  const i = open.indexOf(h);
  if (i >= 0) open.splice(i, 1);
  await h.ingress.close();
  await h.spool.close();
}

/** What a restarted relay would find: reopen the spool and recover it. */
async function onDisk(h: Harness): Promise<QueuedMessage[]> {
  await stop(h);
  const s = await Spool.open(h.dir, { log: pino({ level: 'silent' }) });
  try {
    return await s.recover();
  } finally {
    await s.close();
  }
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const tmpFiles = (h: Harness) => readdirSync(join(h.dir, 'tmp'));

afterEach(async () => {
  while (open.length) await stop(open[open.length - 1]!);
});

async function openData(h: Harness, rcpts = ['rcpt@example.org'], params = ''): Promise<SmtpTestClient> {
  const c = await h.connect();
  await c.ehlo('client.example');
  expect((await c.cmd(`MAIL FROM:<sender@example.com>${params ? ' ' + params : ''}`)).code).toBe(250);
  for (const r of rcpts) expect((await c.cmd(`RCPT TO:<${r}>`)).code).toBe(250);
  expect((await c.cmd('DATA')).code).toBe(354);
  return c;
}

describe('what is queued', () => {
  it('writes a Received header first, then the body bytes exactly as sent (8-bit, bare LF, NUL, dots)', async () => {
    const h = await start();
    const body = Buffer.concat([
      Buffer.from('Subject: bytes\r\nFrom: <sender@example.com>\r\n\r\n'),
      Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0d, 0x0a]), // "café" in Latin-1: a raw 8-bit byte
      Buffer.from('grüße in UTF-8\r\n'),
      Buffer.from('bare\nLF\nlines\n'),
      Buffer.from('.leading dot\r\n..two dots\r\n'),
      Buffer.from('a lone dot after a bare LF is not the end:\n.\nstill body\r\n'),
      Buffer.from([0x00, 0x01, 0x7f, 0xff, 0x0d, 0x0a]),
      Buffer.from('no final newline is added by us\r\n'),
    ]);
    const c = await openData(h, ['rcpt@example.org'], 'BODY=8BITMIME');
    c.write(SmtpTestClient.dataPayload(body));
    const end = await c.reply();
    expect(end.code).toBe(250);
    expect(end.enhanced).toBe('2.0.0');
    const id = /queued as (\S+)$/.exec(end.lines[0]!)![1]!;
    expect(end.lines[0]).toBe(`2.0.0 Ok: queued as ${id}`);

    const stored = await h.spool.readBody(id);
    const received =
      'Received: from client.example ([127.0.0.1])\r\n' +
      `\tby relay.test with ESMTP id ${id}\r\n` +
      '\tfor <rcpt@example.org>; Tue, 24 Nov 2026 12:00:00 +0000\r\n';
    expect(stored.subarray(0, Buffer.byteLength(received)).toString('latin1')).toBe(received);
    expect(stored.subarray(Buffer.byteLength(received)).equals(body)).toBe(true);

    expect(h.queued).toHaveLength(1);
    const q = h.queued[0]!;
    expect(q.id).toBe(id);
    expect(q.envelope).toEqual<Envelope>({
      from: 'sender@example.com',
      recipients: ['rcpt@example.org'],
      smtputf8: false,
      eightBit: true,
      client: { address: '127.0.0.1' },
      received: T0,
      kind: 'normal',
    });
    const line = h.logs.find((l) => l.msg === 'queued')!;
    expect(line).toMatchObject({ queue_id: id, from: 'sender@example.com', size: stored.length, nrcpt: 1, client: '127.0.0.1' });
    await c.quit();
    expect((await onDisk(h)).map((m) => m.id)).toEqual([id]);
  });

  it('several recipients: one message, no "for" clause', async () => {
    const h = await start();
    const c = await openData(h, ['a@example.org', 'b@example.net']);
    c.write('Subject: two\r\n\r\nx\r\n.\r\n');
    expect((await c.reply()).code).toBe(250);
    const stored = (await h.spool.readBody(h.queued[0]!.id)).toString('latin1');
    expect(stored.split('\r\n')[1]).toMatch(/^\tby relay\.test with ESMTP id \S+; Tue, 24 Nov 2026 12:00:00 \+0000$/);
    expect(stored).not.toContain('a@example.org');
    expect(h.queued[0]!.envelope.recipients).toEqual(['a@example.org', 'b@example.net']);
    await c.quit();
  });
});

describe("the queued line's Message-ID (issue 21 item 5)", () => {
  it('issue21 is the one in the header section, whatever the segmentation; one in the body is not taken, not even after an empty header section', async () => {
    const h = await start();
    const c = await openData(h);
    const payload = SmtpTestClient.dataPayload(Buffer.from('Subject: s\r\nMessage-ID:\r\n <head@x.test>\r\n\r\nMessage-ID: <body@x.test>\r\n'));
    for (let i = 0; i < payload.length; i += 7) c.write(payload.subarray(i, i + 7)); // 7-byte writes
    expect((await c.reply()).code).toBe(250);
    expect((await c.cmd('MAIL FROM:<sender@example.com>')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<rcpt@example.org>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    c.write(SmtpTestClient.dataPayload(Buffer.from('\r\nMessage-ID: <body@x.test>\r\n'))); // no header fields at all
    expect((await c.reply()).code).toBe(250);
    await c.quit();
    expect(h.logs.filter((l) => l.msg === 'queued').map((l) => l.message_id)).toEqual(['<head@x.test>', undefined]);
  });
});

describe('message size (RFC 1870)', () => {
  const LIMIT = 2048;
  const bodyOf = (n: number) => Buffer.concat([Buffer.from('Subject: s\r\n\r\n'), Buffer.alloc(n - 16, 'x'), Buffer.from('\r\n')]);

  it('exactly at the limit is accepted', async () => {
    const h = await start({ config: { max_message_size: LIMIT } });
    expect(bodyOf(LIMIT).length).toBe(LIMIT);
    const c = await openData(h);
    c.write(SmtpTestClient.dataPayload(bodyOf(LIMIT)));
    expect((await c.reply()).code).toBe(250);
    expect(h.queued[0]!.size).toBeGreaterThan(LIMIT); // plus our Received line
    await c.quit();
  });

  it('one byte over: 552 5.3.4, the draft is aborted, nothing queued, the session goes on', async () => {
    const h = await start({ config: { max_message_size: LIMIT } });
    const c = await openData(h);
    c.write(SmtpTestClient.dataPayload(bodyOf(LIMIT + 1)));
    const r = await c.reply();
    expect(r.code).toBe(552);
    expect(r.lines[0]).toBe('5.3.4 Message size exceeds fixed maximum message size');
    expect(tmpFiles(h)).toEqual([]);
    expect(h.queued).toHaveLength(0);
    expect((await c.cmd('NOOP')).code).toBe(250);
    await c.quit();
    expect(await onDisk(h)).toEqual([]);
  });

  it('MAIL FROM SIZE= above the limit is refused up front with 552 5.3.4', async () => {
    const h = await start({ config: { max_message_size: LIMIT } });
    const c = await h.connect();
    await c.ehlo();
    expect((await c.cmd(`MAIL FROM:<a@example.com> SIZE=${LIMIT}`)).code).toBe(250);
    await c.cmd('RSET');
    const r = await c.cmd(`MAIL FROM:<a@example.com> SIZE=${LIMIT + 1}`);
    expect([r.code, r.lines[0]]).toEqual([552, '5.3.4 Message size exceeds fixed maximum message size']);
    await c.quit();
  });
});

describe('hop count (RFC 5321 §6.3, issue 13)', () => {
  const received = (n: number) =>
    Array.from({ length: n }, (_, i) => `Received: from hop${i}.example by hop${i + 1}.example; Tue, 24 Nov 2026 11:00:00 +0000\r\n`).join('');
  const message = (n: number, extra = '') => Buffer.from(`${received(n)}${extra}Subject: hops\r\n\r\nbody\r\n`);

  it('issue13-4 51 Received: header fields (ingress.max_hops 50): 554 5.4.6 at the end of DATA, nothing queued, the session goes on', async () => {
    const h = await start();
    const c = await openData(h);
    c.write(SmtpTestClient.dataPayload(message(51)));
    const r = await c.reply();
    expect([r.code, r.enhanced]).toEqual([554, '5.4.6']);
    expect(r.lines[0]).toMatch(/Too many hops: 51 Received: header fields, more than 50/);
    expect(tmpFiles(h)).toEqual([]);
    expect(h.queued).toHaveLength(0);
    expect((await c.cmd('NOOP')).code).toBe(250);
    await c.quit();
    expect(await onDisk(h)).toEqual([]);
    expect(h.logs.some((l) => l.msg === 'message refused: too many hops (mail loop?)' && l.received_fields === 51)).toBe(true);
  });

  it("issue13-4 50 Received: header fields pass; the relay's own Received line is added after the check (51 stored)", async () => {
    const h = await start();
    const c = await openData(h);
    c.write(SmtpTestClient.dataPayload(message(50)));
    expect((await c.reply()).code).toBe(250);
    const stored = (await h.spool.readBody(h.queued[0]!.id)).toString('latin1').split('\r\n\r\n')[0]!;
    expect(stored.match(/^Received:/gm)).toHaveLength(51);
    expect(stored.startsWith('Received: from client.example')).toBe(true);
    await c.quit();
  });

  it('issue13-4 only the header section counts (Received: lines in the body do not), whatever the segmentation; ingress.max_hops is configurable', async () => {
    const h = await start({ config: { max_hops: 3 } });
    const c = await openData(h);
    // Folded Received fields, odd case, WSP before the colon, a look-alike field, and 100 in the body.
    const head = 'Received: from a\r\n\tby b; x\r\nRECEIVED : from c; x\r\nreceived:\r\nReceived-SPF: pass\r\nX-Received: x\r\n';
    const body = Buffer.from(`${head}Subject: s\r\n\r\n${received(100)}`);
    const payload = SmtpTestClient.dataPayload(body);
    for (let i = 0; i < payload.length; i += 7) c.write(payload.subarray(i, i + 7)); // 7-byte writes
    expect((await c.reply()).code).toBe(250); // 3 fields, limit 3
    expect((await c.cmd('MAIL FROM:<sender@example.com>')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<rcpt@example.org>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    c.write(SmtpTestClient.dataPayload(Buffer.from(`Received: x\n${head}\nbody\n`))); // bare LF lines: 4 fields
    expect((await c.reply()).code).toBe(554);
    await c.quit();
  });
});

describe('what the body holds (issue 19): 8-bit octets and long lines', () => {
  it('8-bit octets without BODY=8BITMIME: accepted, treated as 8-bit (kept in the spool), the mismatch logged', async () => {
    const h = await start();
    const c = await openData(h); // no BODY parameter: 7BIT declared
    c.write(SmtpTestClient.dataPayload(Buffer.from('Subject: x\r\n\r\nGrüße\r\n')));
    const end = await c.reply();
    expect(end.code).toBe(250);
    await c.quit();
    expect(h.queued[0]!.envelope.eightBit).toBe(false); // what the client declared
    expect(h.queued[0]!.body).toEqual({ eightBit: true, longLines: false, nul: false }); // what it sent
    expect(h.logs.find((l) => l.msg === 'message has 8-bit octets but was not declared BODY=8BITMIME; treated as 8BITMIME')).toMatchObject({
      queue_id: h.queued[0]!.id,
    });
    const [m] = await onDisk(h);
    expect(m!.body).toEqual({ eightBit: true, longLines: false, nul: false });
  });

  it('7-bit mail is recorded as such; nothing is logged about it', async () => {
    const h = await start();
    const c = await openData(h, ['rcpt@example.org'], 'BODY=8BITMIME');
    c.write(SmtpTestClient.dataPayload(Buffer.from(`Subject: x\r\n\r\n${'y'.repeat(998)}\r\n`)));
    expect((await c.reply()).code).toBe(250);
    await c.quit();
    expect(h.queued[0]!.body).toEqual({ eightBit: false, longLines: false, nul: false });
    expect(h.logs.some((l) => String(l.msg).includes('8-bit octets'))).toBe(false);
  });

  it('a 3000-octet line is accepted by default (encoded on the way out) and recorded', async () => {
    const h = await start();
    const c = await openData(h);
    c.write(SmtpTestClient.dataPayload(Buffer.from(`Subject: x\r\n\r\n${'z'.repeat(3000)}\r\n`)));
    expect((await c.reply()).code).toBe(250);
    await c.quit();
    expect(h.queued[0]!.body!.longLines).toBe(true);
  });

  it('ingress.long_lines: refuse → 550 5.6.0 naming the limit, nothing queued, the session goes on', async () => {
    const h = await start({ config: { long_lines: 'refuse' } });
    const c = await openData(h);
    c.write(SmtpTestClient.dataPayload(Buffer.from(`Subject: x\r\n\r\n${'z'.repeat(999)}\r\n`)));
    const r = await c.reply();
    expect(r.code).toBe(550);
    expect(r.lines[0]).toMatch(/^5\.6\.0 Message has a line longer than 998 octets \(RFC 5322 section 2\.1\.1\)/);
    expect(tmpFiles(h)).toEqual([]);
    expect(h.queued).toHaveLength(0);
    // 998 octets is fine
    expect((await c.cmd('MAIL FROM:<sender@example.com>')).code).toBe(250);
    expect((await c.cmd('RCPT TO:<rcpt@example.org>')).code).toBe(250);
    expect((await c.cmd('DATA')).code).toBe(354);
    c.write(SmtpTestClient.dataPayload(Buffer.from(`Subject: x\r\n\r\n${'z'.repeat(998)}\r\n`)));
    expect((await c.reply()).code).toBe(250);
    await c.quit();
    expect(await onDisk(h)).toHaveLength(1);
  });
});

describe('spool failures: 452 4.3.1 and nothing queued', () => {
  it('commit throwing ENOSPC (SpoolWriter seam): 452 4.3.1, draft aborted, then the next message goes through', async () => {
    const aborted: string[] = [];
    let failCommit = true;
    const h = await start({
      wrap: (spool) => ({
        enqueue: (e, b) => spool.enqueue(e, b),
        async begin(env) {
          const d = await spool.begin(env);
          const wrapped: Draft = {
            id: d.id,
            get facts() {
              return d.facts;
            },
            write: (chunk) => d.write(chunk),
            commit: async () => {
              if (failCommit) throw Object.assign(new Error('No space left on device'), { code: 'ENOSPC' });
              return d.commit();
            },
            abort: async () => {
              aborted.push(d.id);
              await d.abort();
            },
          };
          return wrapped;
        },
      }),
    });
    const c = await openData(h);
    c.write('Subject: x\r\n\r\nbody\r\n.\r\n');
    const r = await c.reply();
    expect([r.code, r.lines[0]]).toEqual([452, '4.3.1 Insufficient system storage']);
    expect(aborted).toHaveLength(1);
    expect(h.queued).toHaveLength(0);
    expect(h.logs.some((l) => l.msg === 'spool failure; message refused' && (l.err as { code?: string }).code === 'ENOSPC')).toBe(true);
    failCommit = false;
    const ok = await c.sendMail('a@example.com', ['b@example.org'], 'x\r\n');
    expect(ok.end!.code).toBe(250);
    await c.quit();
    expect((await onDisk(h)).map((m) => m.id)).toEqual([h.queued[0]!.id]);
  });

  it.each([
    ['fsync fails with EIO (real spool)', { op: 'fsync', code: 'EIO' } as const, 10],
    ['write fails with ENOSPC mid-body (real spool)', { op: 'write', code: 'ENOSPC', afterBytes: 100_000 } as const, 300_000],
    ['the draft cannot even be created (ENOSPC on open)', { op: 'open', code: 'ENOSPC' } as const, 10],
  ])('%s', async (_name, fault, bodySize) => {
    const h = await start();
    h.fault.current = fault;
    const c = await openData(h);
    // The client keeps sending after the failure; we must read to "." and only then answer.
    c.write(SmtpTestClient.dataPayload(Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), Buffer.alloc(bodySize, 'y'), Buffer.from('\r\n')])));
    const r = await c.reply();
    expect([r.code, r.lines[0]]).toEqual([452, '4.3.1 Insufficient system storage']);
    expect(h.queued).toHaveLength(0);
    expect(tmpFiles(h)).toEqual([]);
    expect((await c.cmd('NOOP')).code).toBe(250);
    await c.quit();
    expect(await onDisk(h)).toEqual([]);
  });
});

describe('streaming', () => {
  it('never buffers the message: while the spool is slow, the server stops reading the socket', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let written = 0;
    let blocked = 0;
    const h = await start({
      wrap: (spool) => ({
        enqueue: (e, b) => spool.enqueue(e, b),
        async begin(env) {
          const d = await spool.begin(env);
          return {
            id: d.id,
            get facts() {
              return d.facts;
            },
            abort: () => d.abort(),
            commit: () => d.commit(),
            write: async (chunk) => {
              written += chunk.length;
              if (written > 64 * 1024) {
                blocked++;
                await gate; // a disk that has stopped keeping up
              }
              return d.write(chunk);
            },
          };
        },
      }),
    });
    const body = Buffer.concat([Buffer.from('Subject: big\r\n\r\n'), Buffer.alloc(16 * 1024 * 1024, 'b'), Buffer.from('\r\n')]);
    const c = await openData(h);
    c.write(SmtpTestClient.dataPayload(body));
    await until(() => blocked > 0);
    await new Promise((r) => setTimeout(r, 300));
    // Only one write may be outstanding (each is awaited), so the server has taken little
    // more than what reached the spool; the rest waits in the client and the kernel.
    expect(blocked).toBe(1);
    expect(written).toBeLessThan(1024 * 1024);
    expect(c.pendingWrite).toBeGreaterThan(8 * 1024 * 1024);
    release();
    const r = await c.reply();
    expect(r.code).toBe(250);
    const stored = await h.spool.readBody(h.queued[0]!.id);
    expect(stored.subarray(stored.length - body.length).equals(body)).toBe(true);
    await c.quit();
  });
});

describe('when the 250 is sent', () => {
  it('only after commit resolved: nothing reaches the client while commit is pending', async () => {
    const events: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const h = await start({
      wrap: (spool) => ({
        enqueue: (e, b) => spool.enqueue(e, b),
        async begin(env) {
          const d = await spool.begin(env);
          return {
            id: d.id,
            get facts() {
              return d.facts;
            },
            write: (chunk) => d.write(chunk),
            abort: () => d.abort(),
            commit: async () => {
              events.push('commit called');
              await gate;
              const m = await d.commit();
              events.push('commit resolved');
              return m;
            },
          };
        },
      }),
    });
    const c = await openData(h);
    c.write('Subject: wait\r\n\r\nbody\r\n.\r\n');
    await until(() => events.includes('commit called'));
    await new Promise((r) => setTimeout(r, 300));
    expect(c.unread()).toBe(''); // no reply yet: the message is not durable yet
    expect(h.queued).toHaveLength(0);
    release();
    const r = await c.reply();
    events.push('client got reply');
    expect(r.code).toBe(250);
    expect(events).toEqual(['commit called', 'commit resolved', 'client got reply']);
    await c.quit();
  });
});

describe('clients that leave, and shutdown', () => {
  it('a client that disconnects mid-DATA: draft aborted, nothing queued, the server carries on', async () => {
    const h = await start();
    const c = await openData(h);
    c.write(Buffer.concat([Buffer.from('Subject: cut\r\n\r\n'), Buffer.alloc(200_000, 'z')]));
    await until(() => tmpFiles(h).length === 1); // the draft exists and is being written
    c.destroy();
    await until(() => h.logs.some((l) => l.msg === 'client disconnected during DATA; message discarded'));
    await until(() => tmpFiles(h).length === 0);
    expect(h.queued).toHaveLength(0);
    const d = await h.connect();
    await d.ehlo();
    expect((await d.sendMail('a@example.com', ['b@example.org'], 'x\r\n')).end!.code).toBe(250);
    await d.quit();
    expect(await onDisk(h)).toHaveLength(1);
  });

  it('stopAccepting: no new connections, the transaction in DATA finishes with 250, idle sessions get 421 4.3.2', async () => {
    const h = await start();
    const idle = await h.connect();
    await idle.ehlo();
    const c = await openData(h);
    c.write('Subject: in flight\r\n\r\nfirst half\r\n');
    await until(() => tmpFiles(h).length === 1);
    let stopped = false;
    const stopping = h.ingress.stopAccepting().then(() => (stopped = true));
    await new Promise((r) => setTimeout(r, 100));
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect({ port: h.port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve('connected');
      });
      s.once('error', (e: Error & { code?: string }) => resolve(e.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    expect(stopped).toBe(false);
    c.write('second half\r\n.\r\n');
    expect((await c.reply()).code).toBe(250);
    await stopping;
    expect(h.queued).toHaveLength(1);
    const r = await idle.cmd('NOOP');
    expect([r.code, r.lines[0]]).toEqual([421, '4.3.2 Service shutting down']);
  });

  it('close() during DATA: 421, the draft is aborted, nothing queued', async () => {
    const h = await start();
    const c = await openData(h);
    c.write('Subject: never finished\r\n\r\npartial\r\n');
    await until(() => tmpFiles(h).length === 1);
    await h.ingress.close();
    await c.closed;
    expect(c.unread()).toMatch(/^421 4\.3\.2 /);
    await until(() => tmpFiles(h).length === 0);
    expect(h.queued).toHaveLength(0);
    expect(await onDisk(h)).toEqual([]);
  });
});
