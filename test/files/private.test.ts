/**
 * Issue 23 §3, in process with real files: what the relay creates is 0700/0600 under umask 000,
 * and a planted symbolic link never makes it write (or read) elsewhere — spool, lock, readiness
 * probe, TLSRPT store and writers. The start-up checks on planted links, FIFOs, modes and owners,
 * and the privilege plan. (Process runs with throwaway users: test/e2e/sharedHost.test.ts.)
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createPrivateFile,
  ensurePrivateDir,
  ensurePrivateSubdir,
  openPrivateAppend,
  readFileNoFollow,
  writePrivateFileAtomic,
  writePrivateFileNew,
} from '../../src/files/private.js';
import { checkParentDir, checkReadFile, checkStateTree, type Identity } from '../../src/files/checks.js';
import { privilegePlan, handOverState, SPOOL_NAMES } from '../../src/files/privileges.js';
import { nodeSpoolFs, Spool } from '../../src/spool/spool.js';
import { umaskOfStatus } from '../../src/spool/fs.js';
import { ensureBuiltSpool } from '../spool/support.js';
import { probeWritable } from '../../src/metrics/readiness.js';
import { TlsrptStore } from '../../src/reporting/tlsrpt/store.js';
import { HttpsSender } from '../../src/reporting/tlsrpt/https.js';
import { skipReason, throwawayUser, removeThrowawayUsers } from '../support/users.js';
import { hashPassword, Users } from '../../src/ingress/users.js';

const root = mkdtempSync(join(tmpdir(), 'dr-files-'));
let n = 0;
const fresh = () => {
  const d = join(root, `t${++n}`);
  mkdirSync(d, { mode: 0o700 });
  return d;
};
const modeOf = (p: string) => lstatSync(p).mode & 0o7777;
const me: Identity = { uid: process.geteuid!(), name: 'me' };
/** a file outside every tree that a planted link points at: it must stay exactly as it is */
let victim = '';
const VICTIM = 'victim: must never change\n';

let oldUmask = 0;
beforeAll(() => {
  oldUmask = process.umask(0); // this test file runs in its own worker process (vitest pool: forks)
  victim = join(root, 'victim');
  writeFileSync(victim, VICTIM, { mode: 0o644 });
});
afterAll(() => {
  process.umask(oldUmask);
  removeThrowawayUsers();
  rmSync(root, { recursive: true, force: true });
});
afterEach(() => expect(readFileSync(victim, 'utf8')).toBe(VICTIM));

/** every directory 0700 and every file 0600 below `dir` (sockets 0600 too) */
function expectPrivateTree(dir: string): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      expect([p, modeOf(p)]).toEqual([p, 0o700]);
      expectPrivateTree(p);
    } else expect([p, modeOf(p)]).toEqual([p, 0o600]);
  }
}

describe('under umask 000 everything created is owner-only', () => {
  it('directories (all the way down), new files, appended files, atomic replacements', async () => {
    const d = fresh();
    const created = await ensurePrivateDir(join(d, 'a', 'b', 'c'));
    expect(created).toEqual([join(d, 'a'), join(d, 'a', 'b'), join(d, 'a', 'b', 'c')]);
    const h = await createPrivateFile(join(d, 'a', 'new'));
    await h.close();
    const { handle } = await openPrivateAppend(join(d, 'a', 'b', 'log'));
    await handle.close();
    await writePrivateFileAtomic(join(d, 'a', 'b', 'c', 'atomic'), 'x');
    await writePrivateFileNew(join(d, 'a', 'once'), 'y');
    expectPrivateTree(d);
  });

  it('the spool, its lock, state files and the readiness probe; the TLSRPT store, plans and pending sends', async () => {
    const q = join(fresh(), 'queue');
    const spool = await Spool.open(q, { log: { warn: () => undefined } });
    await spool.recover();
    const m = await spool.enqueue(
      { from: 'a@b.test', recipients: ['c@d.test'], smtputf8: false, eightBit: false, client: { address: '127.0.0.1' }, received: Date.now(), kind: 'normal' },
      Buffer.from('x\r\n'),
    );
    await spool.setHeld(m.id, true);
    await probeWritable(join(q, 'tmp'));
    const store = await TlsrptStore.open(join(q, 'tlsrpt'));
    store.add('2026-01-01', 'd.test', '["no-policy-found",[],"d.test",null]', true);
    await store.flush();
    await store.close();
    // a loopback target (nothing listens): allowed here, so the failure is retried and kept in pending/ (issue 13's target rules)
    const https = new HttpsSender(join(q, 'tlsrpt'), { now: Date.now, timeoutMs: 200, allowPrivateTargets: true });
    await https.send({ id: 'r1', day: '2026-01-01', domain: 'd.test', filename: 'f', urls: ['https://127.0.0.1:1/'], body: '' });
    expect(existsSync(join(q, 'tlsrpt', 'pending', 'r1.json'))).toBe(true);
    expectPrivateTree(q);
    expect(modeOf(q)).toBe(0o700);
    await spool.close();
  });
});

describe('a umask that takes owner bits away does not narrow what the spool creates', () => {
  // The spool reads the umask once, at its first file (src/spool/fs.ts createNeedsFchmod), so each umask
  // runs in a child process started under it, as the relay would be. Where the umask takes owner bits the
  // fchmod runs while the file is being written: fsync and close wait for it, so the file is exactly 0600
  // before it is published. Under the usual umasks O_CREAT's 0600 is exact and no fchmod is made.
  let modulePath = '';
  beforeAll(() => {
    modulePath = ensureBuiltSpool();
  }, 120_000);
  const FIXTURE = join(import.meta.dirname, '..', 'spool', 'fixtures', 'umask-child.mjs');

  for (const [umask, fchmod] of [
    ['0277', true],
    ['0477', true],
    ['0177', false],
    ['0077', false],
    ['0022', false],
  ] as const)
    it(`umask ${umask}: a spool file is 0600 once fsync returned, and a queued message and its state file are 0600 (fchmod ${fchmod ? 'made' : 'skipped'})`, () => {
      const q = join(fresh(), 'queue');
      const out = execFileSync('/bin/sh', ['-c', `umask ${umask} && exec "$0" "$@"`, process.execPath, FIXTURE, q, modulePath], { encoding: 'utf8' });
      expect(JSON.parse(out)).toEqual({ fchmod, probeMode: 0o600 });
      expectPrivateTree(q);
    });

  it('the umask is read from /proc/<pid>/status; an unreadable one keeps the fchmod', () => {
    expect(umaskOfStatus('Name:\tnode\nUmask:\t0277\nState:\tR (running)\n')).toBe(0o277);
    expect(umaskOfStatus('Umask:\t0022\n')).toBe(0o022);
    expect(umaskOfStatus('Name:\tnode\nState:\tR (running)\n')).toBeUndefined();
    expect(umaskOfStatus('Umask:\tnonsense\n')).toBeUndefined();
    const own = umaskOfStatus(readFileSync('/proc/self/status', 'latin1'));
    expect(own).toBe(0); // beforeAll set it
  });
});

describe('planted symbolic links never redirect a write or a read', () => {
  it('a new file at a link (even a dangling one) is refused: EEXIST, nothing written through it', async () => {
    const d = fresh();
    symlinkSync(victim, join(d, 'f'));
    symlinkSync(join(d, 'nowhere'), join(d, 'dangling'));
    await expect(createPrivateFile(join(d, 'f'))).rejects.toMatchObject({ code: 'EEXIST' });
    await expect(createPrivateFile(join(d, 'dangling'))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(existsSync(join(d, 'nowhere'))).toBe(false);
    await expect(nodeSpoolFs.open(join(d, 'f'), 'wx')).rejects.toMatchObject({ code: 'EEXIST' });
  });

  it('append, read, spool read and directory sync refuse a link (ELOOP); an atomic replace replaces the link itself', async () => {
    const d = fresh();
    symlinkSync(victim, join(d, 'f'));
    await expect(openPrivateAppend(join(d, 'f'))).rejects.toMatchObject({ code: 'ELOOP' });
    await expect(readFileNoFollow(join(d, 'f'))).rejects.toMatchObject({ code: 'ELOOP' });
    await expect(nodeSpoolFs.open(join(d, 'f'), 'r')).rejects.toMatchObject({ code: 'ELOOP' });
    await expect(nodeSpoolFs.readFile(join(d, 'f'))).rejects.toMatchObject({ code: 'ELOOP' });
    symlinkSync(d, join(d, 'dirlink'));
    await expect(nodeSpoolFs.fsyncDir(join(d, 'dirlink'))).rejects.toMatchObject({ code: expect.stringMatching(/^(ELOOP|ENOTDIR)$/) }); // O_DIRECTORY|O_NOFOLLOW on a link
    await writePrivateFileAtomic(join(d, 'f'), 'new');
    expect(lstatSync(join(d, 'f')).isFile()).toBe(true);
  });

  it('a directory below the state root that is a link is refused, wherever it points', async () => {
    const d = fresh();
    const elsewhere = fresh();
    symlinkSync(elsewhere, join(d, 'plan'));
    await expect(ensurePrivateSubdir(d, 'plan')).rejects.toThrow(/is a symbolic link inside the relay's state directory/);
    await expect(ensurePrivateSubdir(d, 'plan', '2026-01-01')).rejects.toThrow(/is a symbolic link/);
    expect(readdirSync(elsewhere)).toEqual([]);
    // the configured directory itself may be an operator's link (a spool on another disk)
    const moved = fresh();
    symlinkSync(moved, join(d, 'spool'));
    await expect(ensurePrivateDir(join(d, 'spool'))).resolves.toEqual([]);
  });

  it('the spool: queue_dir/tmp planted as a link to another directory → Spool.open refuses, nothing lands there', async () => {
    const q = fresh();
    const elsewhere = fresh();
    symlinkSync(elsewhere, join(q, 'tmp'));
    await expect(Spool.open(q, { log: { warn: () => undefined } })).rejects.toThrow(/\/tmp: is a symbolic link inside the relay's state directory/);
    expect(readdirSync(elsewhere)).toEqual([]);
  });

  it('the spool lock planted as a link → refused with a clear error, the target untouched', async () => {
    const q = fresh();
    symlinkSync(victim, join(q, 'lock'));
    await expect(Spool.open(q, { log: { warn: () => undefined } })).rejects.toThrow(/lock is a symbolic link, not a spool lock/);
  });

  it('the readiness probe at a predictable name planted as a link: refused, the target not truncated', async () => {
    const d = fresh();
    for (let i = 1; i < 50; i++) symlinkSync(victim, join(d, `readyz.${process.pid}.${i}.probe`));
    await expect(probeWritable(d)).rejects.toThrow(/create .*EEXIST/);
  });

  it('TLSRPT: a planted counts file link is refused, nothing is written through it', async () => {
    const d = fresh();
    mkdirSync(join(d, 'counts'), { mode: 0o700 });
    symlinkSync(victim, join(d, 'counts', '2026-01-01.jsonl'));
    const warnings: string[] = [];
    const store = await TlsrptStore.open(d, { log: { warn: (o) => warnings.push(JSON.stringify(o)) } });
    store.add('2026-01-01', 'd.test', '["no-policy-found",[],"d.test",null]', true);
    await expect(store.flush()).rejects.toMatchObject({ code: 'ELOOP' });
    expect(warnings.join()).toContain('ELOOP');
    await store.close().catch(() => undefined);
  });
});

describe('start-up checks of state trees and trusted files', () => {
  it('a clean tree passes; a directory of ours readable by others is tightened to 0700', async () => {
    const q = fresh();
    mkdirSync(join(q, 'msg'), { mode: 0o755 });
    chmodSync(join(q, 'msg'), 0o755);
    const p = await checkStateTree(q, me);
    expect(p).toEqual([{ level: 'fixed', path: join(q, 'msg'), message: `${join(q, 'msg')} was readable by other users (mode 0755); set to 0700` }]);
    expect(modeOf(join(q, 'msg'))).toBe(0o700);
    expect(await checkStateTree(q, me)).toEqual([]);
    expect(await checkStateTree(join(q, 'missing'), me)).toEqual([]);
  });

  it("an empty directory of ours that others could write (a fresh clone's queue/ under umask 000) is closed and used; one with contents is refused, its mode left for the operator", async () => {
    const q = fresh();
    chmodSync(q, 0o777);
    writeFileSync(join(q, '.gitkeep'), '');
    expect(await checkStateTree(q, me)).toEqual([{ level: 'fixed', path: q, message: `${q} was writable by others (mode 0777) and empty; set to 0700` }]);
    expect(modeOf(q)).toBe(0o700);
    chmodSync(q, 0o777);
    writeFileSync(join(q, 'planted'), '');
    expect((await checkStateTree(q, me))[0]).toMatchObject({ level: 'refuse' });
    expect(modeOf(q)).toBe(0o777);
    expect((await checkStateTree(q, me))[0]).toMatchObject({ level: 'refuse' }); // and again at the next start
  });

  it('refuses group/other-writable directories, links and FIFOs anywhere in the tree, saying how to fix it', async () => {
    const q = fresh();
    mkdirSync(join(q, 'state'), { mode: 0o700 });
    writeFileSync(join(q, 'state', 'x.json'), '{}');
    chmodSync(join(q, 'state'), 0o770);
    mkdirSync(join(q, 'tmp'), { mode: 0o700 });
    symlinkSync(victim, join(q, 'tmp', 'x.msg'));
    execFileSync('mkfifo', [join(q, 'tmp', 'fifo')]);
    mkdirSync(join(q, 'msg'), { mode: 0o700 });
    writeFileSync(join(q, 'msg', 'm'), 'x');
    chmodSync(join(q, 'msg'), 0o703);
    const p = await checkStateTree(q, me);
    expect(p.map((x) => x.level)).toEqual(['refuse', 'refuse', 'refuse', 'refuse']);
    const text = p.map((x) => x.message).join('\n');
    expect(text).toContain(`${join(q, 'state')} is writable by its group (mode 0770)`);
    expect(text).toContain(`Fix: chmod 700 ${join(q, 'state')}`);
    expect(text).toContain(`${join(q, 'msg')} is writable by all users (mode 0703)`);
    expect(text).toContain(`${join(q, 'tmp', 'x.msg')} is a symbolic link`);
    expect(text).toContain(`${join(q, 'tmp', 'fifo')} is not a regular file, directory or socket`);
  });

  it('the users file is checked whenever it is loaded (start and SIGHUP): writable by others → refused, the previous users stay', async () => {
    const f = join(fresh(), 'users');
    writeFileSync(f, `alice:${await hashPassword('pw')}\n`, { mode: 0o600 });
    expect((await Users.load(f)).size).toBe(1);
    chmodSync(f, 0o646);
    await expect(Users.load(f)).rejects.toThrow(/writable by all users \(mode 0646\)/);
  });

  it("the control socket's own directory outside the spool: a sticky shared directory is fine, a writable one is not", async () => {
    const d = fresh();
    chmodSync(d, 0o1777);
    expect(await checkParentDir(d, me)).toEqual([]);
    chmodSync(d, 0o777);
    expect((await checkParentDir(d, me))[0]!.message).toMatch(/writable by others and not sticky/);
  });

  it('secrets writable by others are refused, readable ones warned; config files writable by others warned', async () => {
    const d = fresh();
    const key = join(d, 'key.pem');
    writeFileSync(key, 'k', { mode: 0o600 });
    expect(await checkReadFile(key, 'secret', me)).toEqual([]);
    chmodSync(key, 0o640);
    expect((await checkReadFile(key, 'secret', me))[0]).toMatchObject({ level: 'warn', message: expect.stringContaining('readable by its group') });
    chmodSync(key, 0o666);
    expect((await checkReadFile(key, 'secret', me))[0]).toMatchObject({
      level: 'refuse',
      message: expect.stringContaining('writable by all users (mode 0666)'),
    });
    expect((await checkReadFile(key, 'config', me))[0]).toMatchObject({ level: 'warn' });
    expect(await checkReadFile(join(d, 'missing'), 'secret', me)).toEqual([]);
  });

  it.skipIf(skipReason !== undefined)('a tree or a secret owned by another (throwaway) local user is refused', async () => {
    const u = throwawayUser('own');
    const q = fresh();
    chownSync(q, u.uid, u.gid);
    expect((await checkStateTree(q, { uid: 0, name: 'root' }))[0]!.message).toBe(
      `${q} is owned by uid ${u.uid}, not by the relay's user root (uid 0): another user could change the relay's state. Fix: chown -R root ${q} (or set \`user:\` to its owner)`,
    );
    const users = join(fresh(), 'users');
    writeFileSync(users, 'x', { mode: 0o600 });
    chownSync(users, u.uid, u.gid);
    expect((await checkReadFile(users, 'secret', { uid: 0, name: 'root' }))[0]).toMatchObject({
      level: 'refuse',
      message: expect.stringContaining(`owned by uid ${u.uid} (not root, not root)`),
    });
  });
});

describe('privileges', () => {
  const lookup = (name: string) => (name === 'mail' ? { name: 'mail', uid: 8, gid: 8 } : name === 'root' ? { name: 'root', uid: 0, gid: 0 } : undefined);

  it('root without user: runs with a loud warning; allow_root: false refuses; root with user: drops', () => {
    expect(privilegePlan({ allow_root: true }, 0, lookup).rootWarning).toMatch(/^RUNNING AS ROOT: .*a flaw .* would give an attacker the whole host/);
    expect(() => privilegePlan({ allow_root: false }, 0, lookup)).toThrow(/refusing to run as root \(allow_root: false\)/);
    expect(privilegePlan({ user: 'mail', allow_root: false }, 0, lookup)).toEqual({ drop: { name: 'mail', uid: 8, gid: 8 } });
    expect(() => privilegePlan({ user: 'nosuch', allow_root: true }, 0, lookup)).toThrow(/user: nosuch: no such user/);
    expect(() => privilegePlan({ user: 'root', allow_root: true }, 0, lookup)).toThrow(/is uid 0/);
  });

  it('not root: user: must be the current user (nothing to switch), else a clear refusal', () => {
    expect(privilegePlan({ user: 'mail', allow_root: true }, 8, lookup)).toEqual({});
    expect(privilegePlan({ allow_root: false }, 8, lookup)).toEqual({});
    expect(() => privilegePlan({ user: 'mail', allow_root: true }, 1000, lookup)).toThrow(/runs as uid 1000 and cannot switch users without root/);
  });

  it.skipIf(skipReason !== undefined)(
    'handing the state over: root-owned entries go to the user, links are not followed, a directory with foreign files is not walked',
    async () => {
      const u = throwawayUser('hand');
      const q = fresh();
      mkdirSync(join(q, 'msg'), { mode: 0o700 });
      writeFileSync(join(q, 'msg', 'm1'), 'x', { mode: 0o600 });
      symlinkSync(victim, join(q, 'lock'));
      const before = statSync(victim);
      expect(await handOverState([{ path: q, walk: true, known: SPOOL_NAMES }], u)).toBe(4);
      for (const p of [q, join(q, 'msg'), join(q, 'msg', 'm1')]) expect(statSync(p).uid).toBe(u.uid);
      expect(lstatSync(join(q, 'lock')).uid).toBe(u.uid);
      expect(statSync(victim).uid).toBe(before.uid); // the link's target kept its owner
      const mixed = fresh();
      writeFileSync(join(mixed, 'passwd'), 'x');
      await expect(handOverState([{ path: mixed, walk: true, known: SPOOL_NAMES }], u)).rejects.toThrow(/holds files the relay does not make \(passwd\)/);
      expect(statSync(join(mixed, 'passwd')).uid).toBe(0);
    },
  );
});

if (skipReason) console.warn(`test/files/private.test.ts: throwaway-user cases skipped: ${skipReason}`);
