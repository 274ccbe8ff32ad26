/**
 * Issue 17: the spool serves a just-committed body from memory and skips the state-file unlink
 * that cannot succeed. The file on disk is the reference: every byte served from memory must be
 * the file's, and everything else (removal, quarantine, restart, faults) must behave as before.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Spool } from '../../src/spool/spool.js';
import { BODY_CACHE_ENTRY_OVERHEAD, BODY_CACHE_MAX_ENTRY, BodyCache, BodyCapture } from '../../src/spool/bodycache.js';
import type { QueuedMessage, RecipientStatus } from '../../src/spool/types.js';
import { FaultFs, envelope, inDir, ls, spoolFixtures } from './support.js';

const fx = spoolFixtures();
const CHUNK = 64 * 1024;

/** The body as the file holds it: everything after the header line. */
function fileBody(dir: string, id: string): Buffer {
  const raw = readFileSync(join(dir, 'msg', id));
  return raw.subarray(raw.indexOf(0x0a) + 1);
}

async function streamed(spool: Spool, id: string): Promise<Buffer[]> {
  const parts: Buffer[] = [];
  for await (const c of spool.openBody(id)) parts.push(c as Buffer);
  return parts;
}

/** Reads of msg/ files since `from` (open covers readBody's readFile path too). */
const msgReads = (fs: FaultFs) => fs.count('open', inDir('msg')) + fs.count('read', inDir('msg')) + fs.count('readFile', inDir('msg'));

/** A spool in a fresh directory over a FaultFs that logs every call. */
async function counted(): Promise<{ dir: string; fs: FaultFs; spool: Spool }> {
  const dir = fx.tmp();
  const fs = new FaultFs();
  return { dir, fs, spool: await fx.open(dir, { fs }) };
}

const done = (rs: RecipientStatus[]): RecipientStatus[] => rs.map((r) => ({ ...r, state: 'delivered' }));
/** the first recipient deferred, which makes the spool write a state file */
const deferFirst = (rs: RecipientStatus[]): RecipientStatus[] => rs.map((r, i) => (i === 0 ? { ...r, state: 'deferred', attempts: 1 } : r));

async function commitInChunks(spool: Spool, body: Buffer, cuts: number[]): Promise<QueuedMessage> {
  const d = await spool.begin(envelope());
  let off = 0;
  for (const c of cuts) {
    if (off >= body.length) break;
    await d.write(body.subarray(off, off + c));
    off += c;
  }
  if (off < body.length) await d.write(body.subarray(off));
  return d.commit();
}

/** Bodies of 8-bit octets, CRLF lines, lines far over 998 octets, bare CR/LF, NUL; some empty. */
const bodyArb = fc.oneof(
  fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
  fc
    .array(fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom('.', '', 'é€ü', 'x'.repeat(5000))), { maxLength: 40 })
    .map((lines) => Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'utf8')),
  fc.constant(Buffer.alloc(0)),
);

describe('body read cache (issue 17)', () => {
  it('serves exactly the file bytes from memory, for generated bodies written in generated chunks (8-bit, long lines, empty)', async () => {
    const { dir, fs, spool } = await counted();
    await fc.assert(
      fc.asyncProperty(bodyArb, fc.array(fc.integer({ min: 1, max: 5000 }), { maxLength: 8 }), async (body, cuts) => {
        const { id } = await commitInChunks(spool, body, cuts);
        const before = msgReads(fs);
        const parts = await streamed(spool, id);
        const whole = await spool.readBody(id);
        const prefix = await spool.readBodyPrefix(id, 100);
        expect(msgReads(fs)).toBe(before);
        const onDisk = fileBody(dir, id);
        expect(onDisk.equals(body)).toBe(true);
        expect(Buffer.concat(parts).equals(onDisk)).toBe(true);
        expect(whole.equals(onDisk)).toBe(true);
        expect(prefix.equals(onDisk.subarray(0, 100))).toBe(true);
        expect(parts.every((p) => p.length > 0 && p.length <= CHUNK)).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it('sizes around the write buffer and the per-body limit: equal to the file, from memory up to 1 MiB, from disk above', async () => {
    const { dir, fs, spool } = await counted();
    const header = readFileSync(join(dir, 'msg', (await commitInChunks(spool, Buffer.alloc(0), [])).id)).indexOf(0x0a) + 1;
    const sizes = [1, CHUNK - header - 1, CHUNK - header, CHUNK - header + 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7, BODY_CACHE_MAX_ENTRY - 1, BODY_CACHE_MAX_ENTRY];
    for (const size of [...sizes, BODY_CACHE_MAX_ENTRY + 1, 2 * BODY_CACHE_MAX_ENTRY]) {
      const body = Buffer.alloc(size);
      for (let i = 0; i < size; i++) body[i] = (i * 131 + (i >> 9)) & 0xff;
      // one big write, and small odd writes that straddle the coalescing buffer
      for (const cuts of [[], [1, 999, CHUNK - 3, 17, 2 * CHUNK]]) {
        const m = await commitInChunks(spool, body, cuts);
        const id = m.id;
        const before = msgReads(fs);
        const parts = await streamed(spool, id);
        const fromMemory = msgReads(fs) === before;
        expect(fromMemory, `size ${size}`).toBe(size <= BODY_CACHE_MAX_ENTRY);
        expect(Buffer.concat(parts).equals(fileBody(dir, id)), `size ${size}`).toBe(true);
        expect(Buffer.concat(parts).equals(body)).toBe(true);
        expect(Math.max(...parts.map((p) => p.length))).toBeLessThanOrEqual(CHUNK);
        expect((await spool.readBodyPrefix(id, CHUNK + 5)).equals(body.subarray(0, CHUNK + 5))).toBe(true);
        await spool.updateRecipients(id, done(m.recipients));
      }
    }
  });

  it('a body the cache kept without a copy (one buffer, at least half full) is never overwritten by the drafts after it, which reuse the spool’s buffers', async () => {
    const { dir, spool } = await counted();
    const pattern = (size: number, seed: number) => {
      const b = Buffer.alloc(size);
      for (let i = 0; i < size; i++) b[i] = (i * seed + (i >> 7)) & 0xff;
      return b;
    };
    const kept = [];
    for (const [size, seed] of [
      [CHUNK / 2 + 10, 7],
      [50_000, 13],
      [CHUNK - 400, 29],
    ] as const)
      kept.push({ body: pattern(size, seed), m: await commitInChunks(spool, pattern(size, seed), [1000, 3]) });
    // later drafts of every shape, some failing, fill and flush the spare buffers many times over
    for (let i = 0; i < 40; i++) {
      const d = await spool.begin(envelope());
      await d.write(Buffer.alloc([10, 40_000, CHUNK - 200, CHUNK + 5][i % 4]!, 0xee));
      if (i % 5 === 0) await d.abort();
      else await d.commit();
    }
    for (const { body, m } of kept) {
      expect(Buffer.concat(await streamed(spool, m.id)).equals(body)).toBe(true);
      expect(fileBody(dir, m.id).equals(body)).toBe(true);
    }
  });

  it('a consumer that changes the chunks it was given does not change what the next reader gets', async () => {
    const spool = await fx.open(fx.tmp());
    const body = Buffer.from('Subject: x\r\n\r\nhello\r\n');
    const m = await spool.enqueue(envelope(), body);
    for (const c of await streamed(spool, m.id)) c.fill(0x21);
    (await spool.readBody(m.id)).fill(0x21);
    (await spool.readBodyPrefix(m.id, 5)).fill(0x21);
    expect(Buffer.concat(await streamed(spool, m.id)).equals(body)).toBe(true);
  });

  it('a DSN or report queued with enqueue() is served from memory too', async () => {
    const fs = new FaultFs();
    const spool = await fx.open(fx.tmp(), { fs });
    const m = await spool.enqueue(envelope({ kind: 'dsn', from: '' }), Buffer.from('Content-Type: multipart/report\r\n\r\n--b--\r\n'));
    const before = msgReads(fs);
    expect((await spool.readBody(m.id)).toString()).toContain('multipart/report');
    expect(msgReads(fs)).toBe(before);
  });

  it('evicts the oldest bodies first once 32 MiB are held; they are read from disk, byte for byte', async () => {
    const { fs, spool } = await counted();
    const ids: string[] = [];
    for (let i = 0; i < 34; i++) ids.push((await spool.enqueue(envelope(), Buffer.alloc(BODY_CACHE_MAX_ENTRY, i))).id);
    // 31 of (1 MiB + overhead) fit in 32 MiB: the first three went
    for (const [i, id] of ids.entries()) {
      const before = msgReads(fs);
      const body = Buffer.concat(await streamed(spool, id));
      expect(body.equals(Buffer.alloc(BODY_CACHE_MAX_ENTRY, i))).toBe(true);
      expect(msgReads(fs) > before, `message ${i}`).toBe(i < 3);
    }
  });

  it('completion, operator delete, a failed commit and quarantine drop the copy: nothing is served for a message not on disk', async () => {
    const { dir, fs, spool } = await counted();
    const gone = async (id: string) => {
      await expect(streamed(spool, id)).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(spool.readBody(id)).rejects.toMatchObject({ code: 'ENOENT' });
      await expect(spool.readBodyPrefix(id, 10)).rejects.toMatchObject({ code: 'ENOENT' });
    };

    const delivered = await spool.enqueue(envelope(), Buffer.from('delivered'));
    await spool.updateRecipients(delivered.id, done(delivered.recipients));
    await gone(delivered.id);

    const deleted = await spool.enqueue(envelope(), Buffer.from('deleted'));
    await spool.remove(deleted.id);
    await gone(deleted.id);

    // the directory fsync fails: the message was never queued, and the copy goes with it
    const d = await spool.begin(envelope());
    await d.write(Buffer.from('not durable'));
    fs.failNext('fsyncDir', 'EIO', inDir('msg'));
    await expect(d.commit()).rejects.toMatchObject({ code: 'EIO' });
    await gone(d.id);

    // a file changed under the spool so that recovery cannot trust it is quarantined, not served from memory
    const broken = await spool.enqueue(envelope(), Buffer.from('intact in memory'));
    writeFileSync(join(dir, 'msg', broken.id), 'not a header\n');
    expect((await spool.recover()).map((m) => m.id)).not.toContain(broken.id);
    expect(ls(join(dir, 'corrupt'))).toEqual([broken.id]);
    await gone(broken.id);
  });

  it('after a restart the body is read from disk, and equals what was written', async () => {
    const dir = fx.tmp();
    const body = Buffer.from('Subject: restart\r\n\r\n\xe9t\xe9\r\n', 'latin1');
    const first = await fx.open(dir);
    const m = await first.enqueue(envelope(), body);
    await first.close();
    const fs = new FaultFs();
    const again = await fx.open(dir, { fs });
    await again.recover();
    const before = msgReads(fs);
    expect(Buffer.concat(await streamed(again, m.id)).equals(body)).toBe(true);
    expect(msgReads(fs)).toBeGreaterThan(before);
  });
});

describe('state-file unlink (issue 17)', () => {
  const stateUnlinks = (fs: FaultFs) => fs.events.filter((e) => e.op === 'unlink' && inDir('state')(e.path) && e.phase !== 'start');

  it('a fresh message delivered at the first attempt: no read of its file, no unlink of a state file that never existed', async () => {
    const { dir, fs, spool } = await counted();
    const m = await spool.enqueue(envelope(), Buffer.from('Subject: fast\r\n\r\nbody\r\n'));
    fs.events.length = 0;
    await streamed(spool, m.id);
    await spool.updateRecipients(m.id, done(m.recipients));
    const seen = fs.events.filter((e) => e.phase !== 'start').map((e) => `${e.op} ${e.phase} ${e.path.slice(dir.length)}`);
    expect(seen).toEqual([`unlink end /msg/${m.id}`, 'fsyncDir end /msg']);
    expect(ls(join(dir, 'msg'))).toEqual([]);
  });

  it('a message with a state write (deferred, or held) still gets its state file unlinked when it finishes', async () => {
    const { dir, fs, spool } = await counted();
    const deferred = await spool.enqueue(envelope(), Buffer.from('deferred'));
    await spool.updateRecipients(deferred.id, deferFirst(deferred.recipients));
    const held = await spool.enqueue(envelope(), Buffer.from('held'));
    await spool.setHeld(held.id, true);
    expect(ls(join(dir, 'state'))).toEqual([`${deferred.id}.json`, `${held.id}.json`]);
    await spool.updateRecipients(deferred.id, done(deferred.recipients));
    await spool.remove(held.id);
    expect(ls(join(dir, 'state'))).toEqual([]);
    expect(stateUnlinks(fs).map((e) => e.phase)).toEqual(['end', 'end']);
  });

  it('a state write that failed after its rename (state directory fsync) still counts: the file is unlinked at the end', async () => {
    const { dir, fs, spool } = await counted();
    const m = await spool.enqueue(envelope(), Buffer.from('x'));
    fs.failNext('fsyncDir', 'EIO', inDir('state'));
    await expect(spool.updateRecipients(m.id, deferFirst(m.recipients))).rejects.toMatchObject({ code: 'EIO' });
    expect(ls(join(dir, 'state'))).toEqual([`${m.id}.json`]);
    await spool.updateRecipients(m.id, done(m.recipients));
    expect(ls(join(dir, 'state'))).toEqual([]);
    expect(ls(join(dir, 'msg'))).toEqual([]);
  });

  it('a state write that failed before its rename: nothing left behind either way', async () => {
    const { dir, fs, spool } = await counted();
    const m = await spool.enqueue(envelope(), Buffer.from('x'));
    fs.failNext('rename', 'EIO', inDir('state'));
    await expect(spool.updateRecipients(m.id, deferFirst(m.recipients))).rejects.toMatchObject({ code: 'EIO' });
    await spool.updateRecipients(m.id, done(m.recipients));
    expect([ls(join(dir, 'state')), ls(join(dir, 'msg')), ls(join(dir, 'tmp'))]).toEqual([[], [], []]);
  });

  it('a message recovered from disk keeps the unlink (its state file may be there), and a crash image taken just after a state rename recovers and finishes cleanly', async () => {
    const dir = fx.tmp();
    const first = await fx.open(dir);
    const plain = await first.enqueue(envelope(), Buffer.from('plain'));
    const withState = await first.enqueue(envelope(), Buffer.from('with state'));
    await first.updateRecipients(withState.id, deferFirst(withState.recipients));
    await first.close();
    const fs = new FaultFs();
    const again = await fx.open(dir, { fs });
    const rec = await again.recover();
    for (const m of rec) await again.updateRecipients(m.id, done(m.recipients));
    expect(stateUnlinks(fs).map((e) => `${e.phase} ${e.path.slice(dir.length)}`)).toEqual([
      `error /state/${plain.id}.json`, // ENOENT, ignored: recovery does not vouch for a state file's absence
      `end /state/${withState.id}.json`,
    ]);
    expect([ls(join(dir, 'state')), ls(join(dir, 'msg'))]).toEqual([[], []]);
  });
});

describe('BodyCache accounting', () => {
  it('never holds more than its budget, drops the oldest first, and charges a slice the whole store it keeps alive', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 5000 }), fc.boolean()), { maxLength: 60 }), (ops) => {
        const cache = new BodyCache(20_000, 4000);
        const order: string[] = [];
        for (const [i, [size, del]] of ops.entries()) {
          const id = `m${i}`;
          cache.put(id, Buffer.allocUnsafeSlow(size));
          if (size <= 4000) order.push(id);
          else expect(cache.get(id)).toBeUndefined();
          if (del && order.length > 0) {
            cache.delete(order[0]!);
            order.shift();
          }
          expect(cache.bytes).toBeLessThanOrEqual(cache.budget);
          // what is held is a suffix of what was put (oldest dropped first)
          const held = order.filter((o) => cache.get(o) !== undefined);
          expect(held).toEqual(order.slice(order.length - held.length));
          expect(cache.size).toBe(held.length);
          expect(cache.bytes).toBe(held.reduce((n, o) => n + cache.get(o)!.length + BODY_CACHE_ENTRY_OVERHEAD, 0));
        }
        cache.clear();
        expect([cache.bytes, cache.size]).toEqual([0, 0]);
      }),
    );
    const slab = Buffer.alloc(8192);
    expect(BodyCache.cost(slab.subarray(0, 10))).toBe(8192 + BODY_CACHE_ENTRY_OVERHEAD);
  });

  it('BodyCapture keeps exactly the octets past the header, in unpooled memory, and gives up past its limit', () => {
    const c = new BodyCapture(5, 10);
    c.add(Buffer.from('HEADEab'), 0);
    c.add(Buffer.from('cd'), 7);
    const b = c.take()!;
    expect(b.toString()).toBe('abcd');
    expect(b.buffer.byteLength).toBe(4);
    const over = new BodyCapture(0, 3);
    over.add(Buffer.from('ab'), 0);
    over.add(Buffer.from('cd'), 2);
    expect(over.take()).toBeUndefined();
    expect(new BodyCapture(2).take()!.length).toBe(0);
  });
});
