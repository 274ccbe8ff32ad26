/** Recovery of what a crash or a bad disk leaves, the spool lock, and the operator controls. */
import { describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Spool, acquireSpoolLock } from '../../src/spool/spool.js';
import { encodeHeader, sizeField, SIZE_OFFSET } from '../../src/spool/format.js';
import { SEVEN_BIT_FACTS } from '../../src/mime/scan.js';
import type { Envelope, RecipientStatus } from '../../src/spool/types.js';
import { envelope, ls, quiet, spoolFixtures } from './support.js';

const fx = spoolFixtures();
const tmp = fx.tmp;
const open = (dir: string, log: { warn(obj: object, msg: string): void } = quiet): Promise<Spool> => fx.open(dir, { log });

/** A message file as the spool writes it, for hand-made spool directories. */
function msgFile(env: Envelope, body: Buffer, size = body.length): Buffer {
  const h = encodeHeader(env);
  sizeField(size, SEVEN_BIT_FACTS).copy(h, SIZE_OFFSET);
  return Buffer.concat([h, body]);
}

/** pid of a process that has exited */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  return r.pid!;
}

describe('recovery', () => {
  it('cleans tmp/, deletes orphan states, quarantines corrupt files with a logged reason, and loads the rest', async () => {
    const dir = tmp();
    for (const sub of ['tmp', 'msg', 'state']) mkdirSync(join(dir, sub), { recursive: true });
    const good = '01m8000000000001';
    const withBadState = '01m8000000000002';
    const truncated = '01m8000000000003';
    const noHeader = '01m8000000000004';
    const badJson = '01m8000000000005';
    const orphan = '01m8000000000006';
    const badEnvelope = '01m8000000000007';
    writeFileSync(join(dir, 'tmp', `${good}.msg`), 'half a draft');
    writeFileSync(join(dir, 'tmp', `${good}.3.state`), '{"v":1,');
    writeFileSync(join(dir, 'msg', good), msgFile(envelope(), Buffer.from('hello\r\n')));
    const st: RecipientStatus[] = [
      { address: 'a@example.com', state: 'deferred', attempts: 3, nextAttempt: 1_700_000_900_000, lastReason: '4.7.5 TLSA SERVFAIL' },
      { address: 'b@example.net', state: 'delivered', attempts: 1, nextAttempt: 0, remoteMta: 'mx.example.net' },
    ];
    writeFileSync(join(dir, 'state', `${good}.json`), JSON.stringify({ v: 1, held: true, recipients: st }));
    writeFileSync(join(dir, 'msg', withBadState), msgFile(envelope(), Buffer.from('x')));
    writeFileSync(join(dir, 'state', `${withBadState}.json`), '{"v":1,"held":false,"recipients":[{"addr'); // torn
    writeFileSync(join(dir, 'msg', truncated), msgFile(envelope(), Buffer.from('short'), 5000));
    writeFileSync(join(dir, 'state', `${truncated}.json`), JSON.stringify({ v: 1, held: false, recipients: st }));
    writeFileSync(join(dir, 'msg', noHeader), 'no newline at all');
    writeFileSync(join(dir, 'msg', badJson), '{"v":1,"size": 3,"envelope":{\nabc');
    writeFileSync(join(dir, 'state', `${orphan}.json`), JSON.stringify({ v: 1, held: false, recipients: st }));
    writeFileSync(join(dir, 'msg', badEnvelope), msgFile({ ...envelope(), kind: 'weird' as 'normal' }, Buffer.from('x')));
    writeFileSync(join(dir, 'msg', 'README'), 'not ours');

    const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
    const spool = await open(dir, {
      warn: (obj, msg) => {
        warnings.push({ obj: obj as Record<string, unknown>, msg });
      },
    });
    const msgs = await spool.recover();

    expect(msgs.map((m) => m.id)).toEqual([good, withBadState]);
    expect(msgs[0]).toMatchObject({ id: good, size: 7, held: true, recipients: st });
    expect(msgs[0]!.envelope).toEqual(envelope());
    // its state was unreadable: everybody pending again (maybe a repeat, never a loss)
    expect(msgs[1]!.recipients.map((r) => [r.address, r.state])).toEqual([
      ['a@example.com', 'pending'],
      ['b@example.net', 'pending'],
    ]);
    expect(msgs[1]!.held).toBeUndefined();

    expect(ls(join(dir, 'tmp'))).toEqual([]);
    expect(ls(join(dir, 'msg'))).toEqual([good, withBadState]);
    expect(ls(join(dir, 'state'))).toEqual([`${good}.json`]);
    expect(ls(join(dir, 'corrupt'))).toEqual([noHeader, badJson, truncated, `${truncated}.json`, badEnvelope, `${withBadState}.json`, 'README'].sort());
    const reasons = Object.fromEntries(warnings.map((w) => [w.obj.file, String(w.obj.reason)]));
    expect(reasons[`msg/${truncated}`]).toMatch(/size mismatch/);
    expect(reasons[`msg/${noHeader}`]).toMatch(/no header line/);
    expect(reasons[`msg/${badJson}`]).toMatch(/not JSON/);
    expect(reasons[`msg/${badEnvelope}`]).toMatch(/kind/);
    expect(reasons[`state/${withBadState}.json`]).toMatch(/not JSON.*pending again/);
    expect(reasons['msg/README']).toMatch(/not a queue id/);
    expect(warnings.every((w) => w.msg.includes('quarantined'))).toBe(true);
    expect(readFileSync(join(dir, 'corrupt', noHeader), 'utf8')).toBe('no newline at all'); // kept as it was

    // a second corrupt file of the same name never overwrites the first one in corrupt/
    await spool.close();
    writeFileSync(join(dir, 'msg', noHeader), 'second');
    await (await open(dir)).recover();
    const copies = ls(join(dir, 'corrupt')).filter((n) => n.startsWith(noHeader));
    expect(copies).toHaveLength(2);
    expect(copies.map((n) => readFileSync(join(dir, 'corrupt', n), 'utf8')).sort()).toEqual(['no newline at all', 'second']);
  });

  it('state files from every update round-trip through recovery, and new ids sort after recovered ones', async () => {
    const dir = tmp();
    let clock = 1_800_000_000_000;
    const s1 = await Spool.open(dir, { now: () => clock, log: quiet });
    const a = await s1.enqueue(envelope({ recipients: ['x@a.example', 'y@b.example', 'z@c.example'] }), Buffer.from('1'));
    const rs: RecipientStatus[] = [
      { address: 'x@a.example', state: 'failed', attempts: 1, nextAttempt: 0, dsnCode: '5.1.1', lastReason: '550 5.1.1 no such user' },
      { address: 'y@b.example', state: 'deferred', attempts: 2, nextAttempt: clock + 600_000, delayNotified: clock },
      { address: 'z@c.example', state: 'pending', attempts: 0, nextAttempt: clock },
    ];
    await s1.updateRecipients(a.id, rs);
    rs[1]!.attempts = 99; // the spool copied what it was given
    await s1.close();
    clock -= 3_600_000; // the clock stepped back an hour across the restart
    const s2 = await fx.open(dir, { now: () => clock });
    const [back] = await s2.recover();
    expect(back!.recipients[1]!.attempts).toBe(2);
    expect(back!.recipients.map((r) => r.state)).toEqual(['failed', 'deferred', 'pending']);
    const b = await s2.enqueue(envelope(), Buffer.from('2'));
    expect(b.id > a.id).toBe(true); // no reuse of an id on disk, whatever the clock says
  });
});

describe('operator controls', () => {
  it('setHeld survives restarts and later recipient updates; remove deletes message and state', async () => {
    const dir = tmp();
    const s1 = await open(dir);
    await s1.recover();
    const m = await s1.enqueue(envelope(), Buffer.from('held one'));
    const other = await s1.enqueue(envelope(), Buffer.from('other'));
    await s1.setHeld(m.id, true);
    await s1.updateRecipients(
      m.id,
      m.recipients.map((r) => ({ ...r, state: 'deferred', attempts: 1 })),
    );
    await s1.updateRecipients(
      other.id,
      other.recipients.map((r) => ({ ...r, state: 'deferred', attempts: 1 })),
    );
    await s1.close();

    const s2 = await open(dir);
    const rec = await s2.recover();
    expect(rec.map((r) => [r.id, r.held ?? false, r.recipients[0]!.attempts])).toEqual([
      [m.id, true, 1],
      [other.id, false, 1],
    ]);
    await s2.setHeld(m.id, false);
    await s2.remove(other.id);
    await expect(s2.remove(other.id)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(s2.setHeld(other.id, true)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(s2.updateRecipients(m.id, [])).rejects.toMatchObject({ code: 'EINVAL' });
    expect(ls(join(dir, 'msg'))).toEqual([m.id]);
    expect(ls(join(dir, 'state'))).toEqual([`${m.id}.json`]);
    await s2.close();
    await expect(s2.enqueue(envelope(), Buffer.from('late'))).rejects.toMatchObject({ code: 'ECLOSED' });

    const s3 = await open(dir);
    const last = await s3.recover();
    expect(last.map((r) => [r.id, r.held ?? false])).toEqual([[m.id, false]]);
  });

  it('serialises concurrent updates of one message: the last call wins on disk', async () => {
    const dir = tmp();
    const s = await open(dir);
    const m = await s.enqueue(envelope({ recipients: ['a@example.com'] }), Buffer.from('x'));
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.updateRecipients(m.id, [{ address: 'a@example.com', state: 'deferred', attempts: i + 1, nextAttempt: i }])),
    );
    const state = JSON.parse(readFileSync(join(dir, 'state', `${m.id}.json`), 'utf8'));
    expect(state.recipients[0].attempts).toBe(20);
  });

  it('close() waits for a commit in flight and drops open drafts', async () => {
    const dir = tmp();
    const s = await open(dir);
    const open1 = await s.begin(envelope());
    await open1.write(Buffer.from('never committed'));
    const committing = s.enqueue(envelope(), Buffer.from('in flight'));
    await s.close();
    const m = await committing;
    expect(ls(join(dir, 'msg'))).toEqual([m.id]);
    expect(ls(join(dir, 'tmp'))).toEqual([]);
    expect(existsSync(join(dir, 'lock'))).toBe(false);
    await expect(open1.commit()).rejects.toMatchObject({ code: 'EINVAL' });
  });
});

describe('spool lock', () => {
  it('excludes a second opener while held, and is free again after close', async () => {
    const dir = tmp();
    const s1 = await open(dir);
    expect(readFileSync(join(dir, 'lock'), 'utf8').split(' ')[0]).toBe(String(process.pid));
    await expect(Spool.open(dir, { log: quiet })).rejects.toMatchObject({ name: 'SpoolError', code: 'ELOCKED', pid: process.pid });
    await expect(acquireSpoolLock(dir)).rejects.toMatchObject({ code: 'ELOCKED' });
    await s1.close();
    const s2 = await open(dir);
    expect(s2).toBeInstanceOf(Spool);
  });

  it('takes over a lock whose pid is dead, or alive but a different process (pid reused), or garbage', async () => {
    const dir = tmp();
    mkdirSync(dir, { recursive: true });
    const stale = [
      `${deadPid()} - -\n`,
      `${process.pid} - 1\n`, // our pid, but a process started at tick 1: a reused pid
      `${process.pid} not-this-boot -\n`,
      'garbage\n',
    ];
    for (const content of stale) {
      writeFileSync(join(dir, 'lock'), content);
      const warned: unknown[] = [];
      const lock = await acquireSpoolLock(dir, { log: { warn: (o) => warned.push(o) } });
      expect(readFileSync(join(dir, 'lock'), 'utf8')).toMatch(new RegExp(`^${process.pid} `));
      expect(warned).toHaveLength(1);
      await lock.release();
      expect(existsSync(join(dir, 'lock'))).toBe(false);
    }
    expect(ls(dir)).toEqual([]); // no temp or aside files left behind
  });

  it('does not remove a lock that is no longer its own on release', async () => {
    const dir = tmp();
    const lock = await acquireSpoolLock(dir);
    writeFileSync(join(dir, 'lock'), '1 - -\n'); // someone else's now (pid 1 is alive)
    await lock.release();
    expect(readFileSync(join(dir, 'lock'), 'utf8')).toBe('1 - -\n');
  });
});

describe('message format versions (issue 19)', () => {
  it('reads a message file written by the v1 spool (no body facts, no DSN parameters): delivery will scan it', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'msg'), { recursive: true });
    const id = '01m8000000000abc';
    const v1 = readFileSync(join(import.meta.dirname, 'fixtures', 'v1-message'));
    expect(v1.subarray(0, 7).toString()).toBe('{"v":1,');
    writeFileSync(join(dir, 'msg', id), v1);
    const s = await open(dir);
    const [m, ...rest] = await s.recover();
    expect(rest).toEqual([]);
    expect(m).toMatchObject({ id, size: 375, envelope: { from: 'sender@example.org', eightBit: true, recipients: ['a@example.com'] } });
    expect(m!.body).toBeUndefined();
    expect(m!.envelope.dsn).toBeUndefined();
    expect((await s.readBody(id)).toString('utf8')).toContain('Grüße aus dem alten Spool.');
    expect(ls(join(dir, 'corrupt'))).toEqual([]);
  });

  it('writes v2: the body facts and the DSN parameters survive commit and recovery', async () => {
    const dir = tmp();
    const s = await open(dir);
    const env = envelope({
      dsn: { ret: 'HDRS', envid: 'QQ+314159' },
      rcptDsn: { 'a@example.com': { notify: ['SUCCESS', 'FAILURE'], orcpt: { type: 'rfc822', address: 'Alias@Client.example' } } },
    });
    const plain = await s.enqueue(env, Buffer.from('Subject: x\r\n\r\nplain\r\n'));
    const eight = await s.enqueue(env, Buffer.from(`Subject: x\r\n\r\nGrüße ${'x'.repeat(1200)}\r\n\0\r\n`));
    expect(plain.body).toEqual({ eightBit: false, longLines: false, nul: false });
    expect(eight.body).toEqual({ eightBit: true, longLines: true, nul: true });
    expect(
      readFileSync(join(dir, 'msg', eight.id))
        .subarray(0, 7)
        .toString(),
    ).toBe('{"v":2,');
    await s.close();
    const again = await open(dir);
    const byId = new Map((await again.recover()).map((m) => [m.id, m]));
    expect(byId.get(plain.id)!.body).toBe(plain.body); // the shared facts object
    expect(byId.get(eight.id)!.body).toEqual(eight.body);
    expect(byId.get(eight.id)!.envelope).toEqual(env);
  });

  it('quarantines a v2 header whose body digit is missing or out of range, and an unknown version', async () => {
    const dir = tmp();
    mkdirSync(join(dir, 'msg'), { recursive: true });
    const body = Buffer.from('x\r\n');
    const good = msgFile(envelope(), body).toString('latin1');
    writeFileSync(join(dir, 'msg', '01m8000000000001'), good.replace('"body":0', '"body":9'), 'latin1');
    writeFileSync(join(dir, 'msg', '01m8000000000002'), good.replace('"body":0,', ''), 'latin1');
    writeFileSync(join(dir, 'msg', '01m8000000000003'), good.replace('{"v":2,', '{"v":3,'), 'latin1');
    const s = await open(dir);
    expect(await s.recover()).toEqual([]);
    expect(ls(join(dir, 'corrupt'))).toEqual(['01m8000000000001', '01m8000000000002', '01m8000000000003']);
  });
});
