/** Failures: injected ENOSPC/EIO at every step, state-update atomicity, and a real full tmpfs. */
import { afterAll, describe, expect, it } from 'vitest';
import { cpSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Spool } from '../../src/spool/spool.js';
import type { RecipientStatus } from '../../src/spool/types.js';
import { mountTmpfs } from '../support/tmpfs.js';
import { FaultFs, envelope, inDir, ls, sha256, type Op, spoolFixtures } from './support.js';

const fx = spoolFixtures();
const tmp = fx.tmp;
const open = (dir: string, fs?: FaultFs): Promise<Spool> => fx.open(dir, { fs });

/** Closes `s` and recovers `dir` with the plain fs, as the next start would. */
async function restart(s: Spool, dir: string) {
  await s.close();
  const fresh = await open(dir);
  const msgs = await fresh.recover();
  return { spool: fresh, msgs, ids: msgs.map((m) => m.id) };
}

describe('injected failures on the enqueue path', () => {
  const steps: [Op, (p: string) => boolean][] = [
    ['open', inDir('tmp')],
    ['write', inDir('tmp')],
    ['fsync', inDir('tmp')],
    ['rename', inDir('msg')],
    ['fsyncDir', inDir('msg')],
  ];
  for (const [op, match] of steps) {
    for (const code of ['ENOSPC', 'EIO']) {
      it(`${op} fails with ${code}: rejects with the code, leaves nothing, the next enqueue works`, async () => {
        const dir = tmp();
        const fs = new FaultFs();
        const spool = await open(dir, fs);
        const before = await spool.enqueue(envelope(), Buffer.from('before'));
        fs.failNext(op, code, match);
        await expect(spool.enqueue(envelope(), Buffer.from('doomed'))).rejects.toMatchObject({ name: 'SpoolError', code });
        expect(ls(join(dir, 'tmp'))).toEqual([]);
        expect(ls(join(dir, 'msg'))).toEqual([before.id]);
        const after = await spool.enqueue(envelope(), Buffer.from('after'));
        const r = await restart(spool, dir);
        expect(r.ids).toEqual([before.id, after.id]);
        expect((await r.spool.readBody(after.id)).toString()).toBe('after');
        expect(ls(join(dir, 'corrupt'))).toEqual([]);
      });
    }
  }

  it('a write failing mid-stream fails that write and the commit with the same code, and frees the temp file', async () => {
    const dir = tmp();
    const fs = new FaultFs();
    const spool = await open(dir, fs);
    const d = await spool.begin(envelope());
    await d.write(randomBytes(300_000));
    fs.failNext('write', 'EIO', inDir('tmp'));
    await expect(d.write(randomBytes(300_000))).rejects.toMatchObject({ code: 'EIO' });
    expect(ls(join(dir, 'tmp'))).toEqual([]); // gone at once: on ENOSPC the space is needed
    await expect(d.commit()).rejects.toMatchObject({ code: 'EIO' });
    await d.abort(); // never throws
    const r = await restart(spool, dir);
    expect(r.ids).toEqual([]);
  });

  it('a failed directory fsync fails every message of its batch, none of which is recovered', async () => {
    const dir = tmp();
    const fs = new FaultFs();
    const spool = await open(dir, fs);
    // No timing: the first message's directory fsync is held until the five others are renamed into
    // msg/ (and so waiting for the next fsync, which they share); that second fsync fails.
    const renamed = () => fs.events.filter((e) => e.op === 'rename' && e.phase === 'end' && inDir('msg')(e.path)).length;
    const until = async (ok: () => boolean) => {
      while (!ok()) await new Promise((r) => setTimeout(r, 1));
    };
    fs.before('fsyncDir', inDir('msg'), async () => {
      await until(() => renamed() >= 6);
      await new Promise((r) => setImmediate(r));
    });
    let msgSyncs = 0;
    fs.failNext('fsyncDir', 'EIO', (p) => inDir('msg')(p) && ++msgSyncs === 2);
    const first = spool.enqueue(envelope(), Buffer.from('first')); // takes the first dir fsync alone
    await until(() => renamed() >= 1);
    const batch = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => spool.enqueue(envelope(), Buffer.from(`b${i}`))));
    const ok = await first;
    expect(batch.map((b) => b.status)).toEqual(Array(5).fill('rejected'));
    for (const b of batch) expect((b as PromiseRejectedResult).reason.code).toBe('EIO');
    const r = await restart(spool, dir);
    expect(r.ids).toEqual([ok.id]);
  });
});

describe('recipient state updates', () => {
  const deferred = (addr: string, n: number): RecipientStatus => ({
    address: addr,
    state: 'deferred',
    attempts: n,
    nextAttempt: 1_700_000_600_000 + n,
    lastReason: `4.4.1 try ${n}`,
    dsnCode: '4.4.1',
  });

  for (const [op, code] of [
    ['write', 'ENOSPC'],
    ['fsync', 'EIO'],
    ['rename', 'EIO'],
    ['fsyncDir', 'EIO'],
  ] as const) {
    it(`a failure at state ${op} rejects with ${code}; recovery sees the old state or the new, never a mix`, async () => {
      const dir = tmp();
      const fs = new FaultFs();
      const spool = await open(dir, fs);
      const m = await spool.enqueue(envelope(), Buffer.from('x'));
      const old = [deferred('a@example.com', 1), { ...m.recipients[1]!, state: 'delivered' as const, attempts: 1, remoteMta: 'mx.example.net' }];
      await spool.updateRecipients(m.id, old);
      const next = [deferred('a@example.com', 2), old[1]!];
      fs.failNext(op, code, op === 'fsyncDir' ? inDir('state') : (p) => p.includes('/tmp/') || p.includes('/state/'));
      await expect(spool.updateRecipients(m.id, next)).rejects.toMatchObject({ code });
      expect(ls(join(dir, 'tmp'))).toEqual([]);
      const r = await restart(spool, dir);
      // after a failed dir fsync the rename already happened: the new state is what is on disk
      expect(r.msgs[0]!.recipients).toEqual(op === 'fsyncDir' ? next : old);
    });
  }

  it('a crash between the fsynced temp state file and its rename recovers the old state', async () => {
    const dir = tmp();
    const fs = new FaultFs();
    const spool = await open(dir, fs);
    const m = await spool.enqueue(envelope(), Buffer.from('x'));
    const old = [deferred('a@example.com', 1), deferred('b@example.net', 1)];
    await spool.updateRecipients(m.id, old);
    const image = tmp();
    fs.before('rename', inDir('state'), () => {
      cpSync(dir, image, { recursive: true, filter: (s) => !s.endsWith('/lock') });
    });
    await spool.updateRecipients(m.id, [deferred('a@example.com', 2), deferred('b@example.net', 2)]);
    expect(readdirSync(join(image, 'tmp'))).toHaveLength(1); // the crash image does hold the new state, in tmp/
    const crashed = await open(image);
    expect((await crashed.recover())[0]!.recipients).toEqual(old);
    expect(ls(join(image, 'tmp'))).toEqual([]);
  });

  it('finishing a message unlinks msg/ (and fsyncs it) before the state file; a crash between leaves only an orphan', async () => {
    const dir = tmp();
    const fs = new FaultFs();
    const spool = await open(dir, fs);
    const m = await spool.enqueue(envelope(), Buffer.from('x'));
    await spool.updateRecipients(m.id, [deferred('a@example.com', 1), deferred('b@example.net', 1)]);
    const image = tmp();
    fs.before('unlink', inDir('state'), () => {
      cpSync(dir, image, { recursive: true, filter: (s) => !s.endsWith('/lock') });
    });
    fs.events.length = 0;
    const done = (a: string): RecipientStatus => ({ address: a, state: 'delivered', attempts: 2, nextAttempt: 0 });
    await spool.updateRecipients(m.id, [done('a@example.com'), { ...done('b@example.net'), state: 'failed', dsnCode: '5.1.1' }]);
    const order = fs.events.filter((e) => e.phase === 'end').map((e) => `${e.op} ${e.path.slice(dir.length)}`);
    expect(order).toEqual([`unlink /msg/${m.id}`, 'fsyncDir /msg', `unlink /state/${m.id}.json`]);
    expect(ls(join(image, 'state'))).toEqual([`${m.id}.json`]);
    const crashed = await open(image);
    expect(await crashed.recover()).toEqual([]);
    expect(ls(join(image, 'state'))).toEqual([]); // orphan deleted
    expect((await restart(spool, dir)).ids).toEqual([]);
  });
});

/** A 1 MB tmpfs, if this machine lets us mount one (we need root and CAP_SYS_ADMIN). */
const tmpfs = mountTmpfs('1m', 'spool-tmpfs-', 'the real ENOSPC case is SKIPPED');
afterAll(() => tmpfs.unmount());

describe('real ENOSPC', () => {
  const title = 'a full 1 MB tmpfs rejects with ENOSPC, keeps what was queued, and works again once space is freed';
  // the skip reason goes into the title so a skipped run says why
  it.skipIf(!!tmpfs.skip)(tmpfs.skip ? `${title} (skipped: ${tmpfs.skip})` : title, async () => {
    const dir = join(tmpfs.mnt, 'spool');
    const spool = await open(dir);
    const queued = new Map<string, string>();
    let failure: { code?: string } | undefined;
    for (let i = 0; i < 20 && !failure; i++) {
      const body = randomBytes(150_000);
      const d = await spool.begin(envelope());
      try {
        for (let off = 0; off < body.length; off += 16_384) await d.write(body.subarray(off, off + 16_384));
        queued.set((await d.commit()).id, sha256(body));
      } catch (e) {
        failure = e as { code?: string };
        await d.abort();
      }
    }
    expect(failure).toMatchObject({ name: 'SpoolError', code: 'ENOSPC' });
    expect(queued.size).toBeGreaterThan(2);
    expect(ls(join(dir, 'tmp'))).toEqual([]); // the partial draft is gone, its space freed

    const [victim] = queued.keys();
    await spool.remove(victim!);
    queued.delete(victim!);
    const again = randomBytes(100_000);
    queued.set((await spool.enqueue(envelope(), again)).id, sha256(again));

    const r = await restart(spool, dir);
    expect(r.ids).toEqual([...queued.keys()]);
    for (const [id, hash] of queued) expect(sha256(await r.spool.readBody(id))).toBe(hash);
  });
});
