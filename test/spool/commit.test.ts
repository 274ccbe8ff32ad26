/** Enqueue path: durability ordering, group commit, drafts, exact body bytes, streaming. */
import { describe, expect, it } from 'vitest';
import { cpSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { type Spool, idTime } from '../../src/spool/spool.js';
import { FaultFs, envelope, inDir, ls, spoolFixtures } from './support.js';

const fx = spoolFixtures();
const tmp = fx.tmp;
const open = (dir: string, fs?: FaultFs): Promise<Spool> => fx.open(dir, { fs });

/** A copy of the spool as it is on disk right now, minus the lock: what a crash here would leave. */
function snapshot(dir: string): string {
  const copy = tmp();
  cpSync(dir, copy, { recursive: true, filter: (src) => !src.endsWith('/lock') });
  return copy;
}

async function recoverCopy(copy: string): Promise<{ ids: string[]; tmp: string[]; spool: Spool }> {
  const s = await open(copy);
  const ids = (await s.recover()).map((m) => m.id);
  return { ids, tmp: ls(join(copy, 'tmp')), spool: s };
}

describe('commit durability ordering', () => {
  it('does exactly: create tmp, write, fsync file, rename into msg/, fsync msg/, then resolves', async () => {
    const dir = tmp();
    const fs = new FaultFs();
    const spool = await open(dir, fs);
    fs.events.length = 0;
    const m = await spool.enqueue(envelope(), Buffer.from('Subject: hi\r\n\r\nbody\r\n'));
    fs.mark('resolved', m.id);
    const seen = fs.events.filter((e) => e.phase === 'end').map((e) => `${e.op} ${e.op === 'resolved' ? e.path : e.path.slice(dir.length)}`);
    expect(seen).toEqual([
      `open /tmp/${m.id}.msg`,
      `write /tmp/${m.id}.msg`, // header + body coalesced into one write(2)
      `fsync /tmp/${m.id}.msg`,
      `close /tmp/${m.id}.msg`,
      `rename /msg/${m.id}`,
      'fsyncDir /msg',
      `resolved ${m.id}`,
    ]);
  });

  it('keeps a draft invisible to recovery until commit resolves, and it survives after', async () => {
    const dir = tmp();
    const fs = new FaultFs();
    const spool = await open(dir, fs);
    const d = await spool.begin(envelope());
    await d.write(Buffer.from('part one\r\n'));

    // recover() on the live spool must neither list the open draft nor delete its temp file
    expect(await spool.recover()).toEqual([]);
    expect(ls(join(dir, 'tmp'))).toEqual([`${d.id}.msg`]);

    await d.write(Buffer.from('part two\r\n'));
    let beforeRename = '';
    let beforeDirSync = '';
    fs.before('rename', inDir('msg'), () => {
      beforeRename = snapshot(dir);
    });
    fs.before('fsyncDir', inDir('msg'), () => {
      beforeDirSync = snapshot(dir);
    });
    let resolved = false;
    const committing = d.commit().then((m) => {
      resolved = true;
      return m;
    });
    // a crash image taken while commit runs: the temp file is cleaned up, no message appears
    const crashed = await recoverCopy(
      await new Promise<string>((r) => {
        const poll = () => (beforeRename ? r(beforeRename) : setImmediate(poll));
        poll();
      }),
    );
    expect(crashed.ids).toEqual([]);
    expect(crashed.tmp).toEqual([]);
    const m = await committing;
    expect(resolved).toBe(true);
    expect(beforeDirSync).not.toBe(''); // the dir fsync happened before the resolution
    // after resolution, a crash image has the message with its full body
    const after = await recoverCopy(snapshot(dir));
    expect(after.ids).toEqual([m.id]);
    expect((await after.spool.readBody(m.id)).toString()).toBe('part one\r\npart two\r\n');
    expect(m.recipients.map((r) => r.state)).toEqual(['pending', 'pending']);
  });

  it('leaves nothing behind for an aborted draft, and abort after commit does not remove the message', async () => {
    const dir = tmp();
    const spool = await open(dir);
    const d = await spool.begin(envelope());
    await d.write(Buffer.alloc(200_000, 0x61)); // past the coalescing buffer, so bytes are on disk
    await d.abort();
    expect(ls(join(dir, 'tmp'))).toEqual([]);
    expect(ls(join(dir, 'msg'))).toEqual([]);
    await expect(d.write(Buffer.from('x'))).rejects.toMatchObject({ code: 'EINVAL' });

    const d2 = await spool.begin(envelope());
    await d2.write(Buffer.from('kept'));
    const m = await d2.commit();
    await d2.abort();
    expect(ls(join(dir, 'msg'))).toEqual([m.id]);
  });

  it('rejects an envelope recovery could not read back, before writing anything', async () => {
    const dir = tmp();
    const spool = await open(dir);
    await expect(spool.begin({ ...envelope(), recipients: [] })).rejects.toMatchObject({ code: 'EINVAL' });
    expect(ls(join(dir, 'tmp'))).toEqual([]);
  });
});

describe('group commit', () => {
  it('50 concurrent enqueues share directory fsyncs, and each resolves only after one that covers its rename', async () => {
    const dir = tmp();
    const fs = new FaultFs();
    fs.delays.fsyncDir = 15; // a slow disk, so submissions pile up behind a running dir fsync
    const spool = await open(dir, fs);
    fs.events.length = 0;
    const body = Buffer.alloc(4096, 0x41);
    const msgs = await Promise.all(
      Array.from({ length: 50 }, () =>
        spool.enqueue(envelope(), body).then((m) => {
          fs.mark('resolved', m.id);
          return m;
        }),
      ),
    );
    const dirSyncs = fs.count('fsyncDir', inDir('msg'));
    expect(dirSyncs).toBeGreaterThan(0);
    expect(dirSyncs).toBeLessThan(50);
    expect(fs.count('fsync')).toBe(50); // exactly one file fsync per message, nothing more
    expect(fs.count('fsyncDir')).toBe(dirSyncs); // and no other directory fsyncs on this path

    const ev = fs.events;
    for (const m of msgs) {
      const renamed = ev.findIndex((e) => e.op === 'rename' && e.phase === 'end' && e.path.endsWith(`/msg/${m.id}`));
      const resolved = ev.findIndex((e) => e.op === 'resolved' && e.path === m.id);
      expect(renamed).toBeGreaterThanOrEqual(0);
      // a dir fsync that started after the rename and finished before the resolution
      const covered = ev.some(
        (s, i) =>
          s.op === 'fsyncDir' &&
          s.phase === 'start' &&
          i > renamed &&
          ev.some((e, j) => e.op === 'fsyncDir' && e.phase === 'end' && j > i && j < resolved && e.seq > s.seq),
      );
      expect(covered, `message ${m.id} resolved without a covering directory fsync`).toBe(true);
    }
    expect((await spool.recover()).map((m) => m.id).sort()).toEqual(msgs.map((m) => m.id).sort());
  });
});

describe('body bytes', () => {
  it('round-trips arbitrary bytes exactly (NUL, bare LF, bare CR, 8-bit, dot lines), via readBody and openBody', async () => {
    const dir = tmp();
    const spool = await open(dir);
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const body = Buffer.concat([
      Buffer.from('From: x\n\nbare LF\nbare CR\r.\r\n..\r\n\0\0NUL'),
      all,
      Buffer.from('\xff\xfe', 'latin1'),
      all,
      Buffer.from('\n'), // ends with a newline, like a header line would
    ]);
    const d = await spool.begin(envelope({ from: '', smtputf8: true, recipients: ['ü@exämple.de'] }));
    // odd chunk sizes, so chunks straddle the coalescing buffer's edges
    for (let i = 0, n = 1; i < body.length; i += n, n = n * 3 + 1) await d.write(body.subarray(i, i + n));
    const m = await d.commit();
    expect(m.size).toBe(body.length);
    expect((await spool.readBody(m.id)).equals(body)).toBe(true);
    const streamed: Buffer[] = [];
    for await (const c of spool.openBody(m.id)) streamed.push(c as Buffer);
    expect(Buffer.concat(streamed).equals(body)).toBe(true);

    const empty = await spool.enqueue(envelope(), Buffer.alloc(0));
    expect((await spool.readBody(empty.id)).length).toBe(0);

    await spool.close();
    const again = await open(dir);
    const rec = await again.recover();
    expect(rec.map((r) => [r.id, r.size])).toEqual([
      [m.id, body.length],
      [empty.id, 0],
    ]);
    expect(rec[0]!.envelope.recipients).toEqual(['ü@exämple.de']);
    expect(rec[0]!.envelope.from).toBe('');
    expect((await again.readBody(m.id)).equals(body)).toBe(true);
  });

  it('streams a 50 MB body in and out in bounded chunks', async () => {
    const dir = tmp();
    const spool = await open(dir);
    const size = 50 * 1024 * 1024;
    const chunk = Buffer.alloc(256 * 1024);
    const inHash = createHash('sha256');
    const d = await spool.begin(envelope());
    for (let off = 0, i = 0; off < size; off += chunk.length, i++) {
      chunk.fill(i % 251); // different bytes per chunk, so a misplaced chunk changes the hash
      chunk.writeUInt32BE(i, 0);
      inHash.update(chunk);
      await d.write(chunk);
    }
    const m = await d.commit();
    expect(m.size).toBe(size);
    expect(statSync(join(dir, 'msg', m.id)).size).toBeGreaterThan(size);

    const outHash = createHash('sha256');
    let chunks = 0;
    let biggest = 0;
    for await (const c of spool.openBody(m.id)) {
      outHash.update(c as Buffer);
      chunks++;
      biggest = Math.max(biggest, (c as Buffer).length);
    }
    expect(outHash.digest('hex')).toBe(inHash.digest('hex'));
    expect(chunks).toBeGreaterThan(100);
    expect(biggest).toBeLessThanOrEqual(64 * 1024);
  });

  it('handles an envelope bigger than the write buffer (3000 recipients) with a body on both sides of it', async () => {
    const dir = tmp();
    const spool = await open(dir);
    const recipients = Array.from({ length: 3000 }, (_, i) => `recipient-number-${i}@example.com`);
    const small = await spool.enqueue(envelope({ recipients }), Buffer.from('small'));
    const big = await spool.enqueue(envelope({ recipients }), Buffer.alloc(100_000, 0x0a));
    await spool.close();
    const again = await open(dir);
    const rec = await again.recover();
    expect(rec.map((m) => [m.id, m.size, m.recipients.length])).toEqual([
      [small.id, 5, 3000],
      [big.id, 100_000, 3000],
    ]);
    expect(rec[1]!.recipients[2999]!.address).toBe('recipient-number-2999@example.com');
    expect((await again.readBody(big.id)).equals(Buffer.alloc(100_000, 0x0a))).toBe(true);
    expect(ls(join(dir, 'corrupt'))).toEqual([]);
  });

  it('openBody of a missing message errors on the stream instead of throwing', async () => {
    const dir = tmp();
    const spool = await open(dir);
    const s = spool.openBody('0000000000000000');
    await expect(async () => {
      for await (const _ of s) void _;
    }).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(spool.readBody('../../etc/passwd')).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('queue ids', () => {
  it('are 16 filename-safe chars, unique and in creation order even with a frozen clock', async () => {
    const dir = tmp();
    const spool = await fx.open(dir, { now: () => 1_700_000_000_000 });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await spool.enqueue(envelope(), Buffer.from(String(i)))).id);
    for (const id of ids) expect(id).toMatch(/^[0-9a-hjkmnp-tv-z]{16}$/);
    expect(new Set(ids).size).toBe(20);
    expect([...ids].sort()).toEqual(ids);
    // the time part is the clock (ms); with the clock frozen only the sequence part moves
    expect(idTime(ids[0]!)).toBe(1_700_000_000_000);
    expect(ids.every((id) => id.slice(0, 10) === ids[0]!.slice(0, 10))).toBe(true);
    expect(
      readFileSync(join(dir, 'msg', ids[3]!))
        .subarray(-1)
        .toString(),
    ).toBe('3');
  });
});
