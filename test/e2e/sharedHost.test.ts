/**
 * Issue 23 §3 with real processes and throwaway local users (created with useradd, removed after):
 * - `user:`: the relay binds a privileged port as root, hands its spool over and runs as that user
 *   (all of /proc/<pid>/status says so); what it and the root-run `queue` CLI create stays the user's;
 *   a spool a root relay used is handed over when `user:` is added.
 * - another local user can neither reach the control socket nor read or plant anything in the spool;
 * - refusals with clear messages: a spool owned by another user, a group-writable spool directory,
 *   links planted at queue_dir/tmp and at the lock, a world-writable users file, a key owned by
 *   another user, `allow_root: false`, `user:` without root; warnings: running as root, a
 *   world-writable config, a group-writable policy file; a link planted at the control socket path
 *   is never followed;
 * - under umask 000 every directory and file the relay and its commands create is 0700/0600.
 * Not root: skipped, and the reason is printed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
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
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ensureBuilt, CLI } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { submit } from '../support/mail.js';
import { makeSelfSigned } from '../support/pki.js';
import { cpuMsOf, freePort, runCli, sleep } from '../support/relayProcess.js';
import { removeThrowawayUsers, skipReason, throwawayUser, type LocalUser } from '../support/users.js';
import { publicRuntime, reachableTmpdir, type PublicRuntime } from '../support/reachable.js';
import { hashPassword } from '../../src/ingress/users.js';

if (skipReason) console.warn(`SKIPPED test/e2e/sharedHost.test.ts: ${skipReason}`);

let dns: TestDns;
let dir: string;
/** the relay for processes started as a throwaway user, who may not be able to read this checkout */
let runtime: PublicRuntime;
const VICTIM = 'victim: must never change\n';
let victim = '';

beforeAll(async () => {
  if (skipReason) return;
  ensureBuilt();
  dns = await startDnsServer();
  // every destination is dead: messages stay deferred in the spool
  dns.add({ name: 'dead.test', type: 'MX', data: { preference: 10, exchange: 'mx.dead.test' } }, { name: 'mx.dead.test', type: 'A', data: '127.0.0.61' });
  runtime = publicRuntime();
  // TMPDIR may be private (issue 20): the throwaway users must reach their directories below this one
  dir = mkdtempSync(join(reachableTmpdir('anyone'), 'dr-shared-'));
  chmodSync(dir, 0o711); // throwaway users may pass through to their own directories, not list this one
  victim = join(dir, 'victim');
  writeFileSync(victim, VICTIM, { mode: 0o644 });
}, 120_000);
afterAll(async () => {
  if (skipReason) return;
  expect(readFileSync(victim, 'utf8')).toBe(VICTIM);
  await dns?.close();
  removeThrowawayUsers();
  rmSync(dir, { recursive: true, force: true });
  runtime?.remove();
});

let seq = 0;
/** A config in its own directory (0711), queue inside; `extra` is YAML appended at the end. */
function relayConfig(opts: { port: number; listenHost?: string; extra?: string; name?: string }): { cfg: string; base: string; queue: string } {
  const base = join(dir, opts.name ?? `r${++seq}`);
  mkdirSync(base, { mode: 0o711 });
  chmodSync(base, 0o711);
  const queue = join(base, 'queue');
  const cfg = join(base, 'relay.yml');
  writeFileSync(
    cfg,
    `listen: ["${opts.listenHost ?? '127.0.0.1'}:${opts.port}"]\nhostname: relay.test\nqueue_dir: ${queue}\n` +
      `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
      `delivery:\n  tls_level: may\n  timeouts: { connect: 1s }\nqueue:\n  min_backoff: 1h\n  max_backoff: 2h\n  run_interval: 200ms\n${opts.extra ?? ''}`,
    { mode: 0o644 },
  );
  chmodSync(cfg, 0o644); // readable by the throwaway users whatever the umask (077 makes it 0600)
  return { cfg, base, queue };
}

interface Proc {
  child: ChildProcess;
  output: () => string;
  exit: Promise<number | null>;
}

/** The relay CLI as a process, optionally under `umask` or as another user; resolves once started (or exited). */
async function serve(cfg: string, opts: { umask?: string; as?: LocalUser } = {}): Promise<Proc & { started: boolean }> {
  const args = [opts.as ? runtime.cli : CLI, 'serve', '--config', cfg];
  const child = opts.umask
    ? spawn('sh', ['-c', `umask ${opts.umask} && exec "$0" "$@"`, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.as ? { uid: opts.as.uid, gid: opts.as.gid } : {}) });
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  child.stderr!.on('data', (d) => {
    out += d;
  });
  const exit = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  // until it started or exited, or spun 15 s of CPU without starting (a wall-clock bound failed on a busy machine)
  while (!out.includes('dane-relay started') && child.exitCode === null && (cpuMsOf(child.pid) ?? 0) < 15_000) await sleep(20);
  if (child.exitCode === null && !out.includes('dane-relay started')) await sleep(200);
  return { child, output: () => out, exit, started: out.includes('dane-relay started') && child.exitCode === null };
}

async function stop(p: Proc): Promise<number | null> {
  if (p.child.exitCode === null) p.child.kill('SIGTERM');
  return p.exit;
}

/** Starts and expects a refusal: exit 1, stderr naming each problem. */
async function refused(cfg: string, as?: LocalUser): Promise<string> {
  const p = await serve(cfg, { as });
  const code = await (p.child.exitCode !== null ? p.exit : Promise.race([p.exit, sleep(15_000).then(() => 'timeout' as const)]));
  if (code === 'timeout') {
    await stop(p);
    throw new Error(`expected a refusal; the relay started:\n${p.output()}`);
  }
  expect(code).toBe(1);
  return p.output();
}

/** A privileged port (< 1024) free on `host` right now. */
async function privilegedPort(host: string): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 600 + Math.floor(Math.random() * 400);
    const ok = await new Promise<boolean>((r) => {
      const s = createServer();
      s.once('error', () => r(false));
      s.listen(port, host, () => s.close(() => r(true)));
    });
    if (ok) return port;
  }
  throw new Error('no free privileged port');
}

/** Uid/Gid/Groups lines of /proc/<pid>/status */
function ids(pid: number): { uid: number[]; gid: number[]; groups: number[] } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const nums = (k: string) => (new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)?.[1] ?? '').trim().split(/\s+/).filter(Boolean).map(Number);
  return { uid: nums('Uid'), gid: nums('Gid'), groups: nums('Groups') };
}

/** [path, uid, mode] of everything below `d` (lstat, links not followed) */
function tree(d: string): [string, number, number][] {
  const out: [string, number, number][] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    out.push([p, st.uid, st.mode & 0o7777]);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
  };
  walk(d);
  return out;
}

function expectPrivate(d: string, uid: number): void {
  for (const [p, owner, mode] of tree(d)) {
    expect([p, owner]).toEqual([p, uid]);
    expect([p, mode.toString(8)]).toEqual([p, lstatSync(p).isDirectory() ? '700' : '600']);
  }
}

async function queuedMessage(port: number, host = '127.0.0.1'): Promise<string> {
  return (await submit({ port, host, from: 'app@sender.test', to: ['x@dead.test'] })).queueId;
}

describe.skipIf(skipReason !== undefined)('user: the relay drops root after binding (throwaway user)', () => {
  it("binds a privileged port as root, then runs as the user; spool, socket and CLI-made files are the user's", async () => {
    const u = throwawayUser('relay');
    const host = '127.0.0.62';
    const port = await privilegedPort(host);
    const { certPem, keyPem } = await makeSelfSigned({ dnsNames: ['relay.test'] });
    const { cfg, base, queue } = relayConfig({
      port,
      listenHost: host,
      extra: `user: ${u.name}\ningress:\n  tls: { cert: cert.pem, key: key.pem }\n  users_file: users\n`,
    });
    // keys and users file stay root-only: they are read before the drop
    writeFileSync(join(base, 'cert.pem'), certPem, { mode: 0o644 });
    writeFileSync(join(base, 'key.pem'), keyPem, { mode: 0o600 });
    writeFileSync(join(base, 'users'), `alice:${await hashPassword('pw')}\n`, { mode: 0o600 });
    const relay = await serve(cfg);
    try {
      expect(relay.started, relay.output()).toBe(true);
      expect(relay.output()).toContain('privileges dropped');
      expect(relay.output()).not.toContain('RUNNING AS ROOT');
      const id = ids(relay.child.pid!);
      expect(id.uid).toEqual([u.uid, u.uid, u.uid, u.uid]);
      expect(id.gid).toEqual([u.gid, u.gid, u.gid, u.gid]);
      expect(id.groups).not.toContain(0);
      const qid = await queuedMessage(port, host);
      expect(qid).toMatch(/\S/);
      expectPrivate(queue, u.uid);
      const sock = statSync(join(queue, 'control.sock'));
      expect([sock.isSocket(), sock.uid, (sock.mode & 0o777).toString(8)]).toEqual([true, u.uid, '600']);
      // root's queue commands act as the user: through the socket while it runs…
      const list = await runCli(['queue', 'list', '--json', '--config', cfg]);
      expect(list.code, list.stderr).toBe(0);
      expect((JSON.parse(list.stdout) as { messages: { id: string }[] }).messages.map((m) => m.id)).toEqual([qid]);
      const hold = await runCli(['queue', 'hold', qid, '--config', cfg]);
      expect(hold.code, hold.stderr + relay.output()).toBe(0);
    } finally {
      expect(await stop(relay)).toBe(0);
    }
    // …and on the files while it is stopped: the state file it writes belongs to the user
    const rel = await runCli(['queue', 'release', readdirSync(join(queue, 'msg'))[0]!, '--config', cfg]);
    expect(rel.code, rel.stderr).toBe(0);
    expectPrivate(queue, u.uid);
  }, 90_000);

  it('an existing spool a root relay used keeps working: adding user: hands it over at the next start', async () => {
    const u = throwawayUser('adopt');
    const port = await freePort();
    const { cfg, queue } = relayConfig({ port });
    const asRoot = await serve(cfg);
    let qid: string;
    try {
      expect(asRoot.started, asRoot.output()).toBe(true);
      expect(asRoot.output()).toContain('RUNNING AS ROOT');
      qid = await queuedMessage(port);
    } finally {
      expect(await stop(asRoot)).toBe(0);
    }
    expect(statSync(join(queue, 'msg', qid)).uid).toBe(0);
    writeFileSync(cfg, `${readFileSync(cfg, 'utf8')}user: ${u.name}\n`);
    const asUser = await serve(cfg);
    try {
      expect(asUser.started, asUser.output()).toBe(true);
      expect(asUser.output()).toMatch(/"state_entries_handed_over":[1-9]\d*/);
      expectPrivate(queue, u.uid);
      const list = await runCli(['queue', 'list', '--json', '--config', cfg]);
      expect((JSON.parse(list.stdout) as { messages: { id: string }[] }).messages.map((m) => m.id)).toEqual([qid]);
    } finally {
      const code = await stop(asUser);
      expect(code, asUser.output()).toBe(0);
    }
  }, 90_000);
});

describe.skipIf(skipReason !== undefined)('another local user against a running relay (throwaway user)', () => {
  it('cannot reach the control socket, list or read the spool, or plant a link in it', async () => {
    const evil = throwawayUser('evil');
    const port = await freePort();
    const { cfg, queue } = relayConfig({ port });
    const relay = await serve(cfg);
    try {
      expect(relay.started, relay.output()).toBe(true);
      const qid = await queuedMessage(port);
      const script = `
        const net = require('node:net'), fs = require('node:fs');
        const r = {};
        const code = (f) => { try { f(); return 'ok'; } catch (e) { return e.code; } };
        r.readdir = code(() => fs.readdirSync(${JSON.stringify(queue)}));
        r.read = code(() => fs.readFileSync(${JSON.stringify(join(queue, 'msg', qid))}));
        r.plant = code(() => fs.symlinkSync('/etc/shadow', ${JSON.stringify(join(queue, 'tmp', 'x.msg'))}));
        const s = net.connect(${JSON.stringify(join(queue, 'control.sock'))});
        s.on('connect', () => { r.socket = 'ok'; done(); });
        s.on('error', (e) => { r.socket = e.code; done(); });
        function done() { console.log(JSON.stringify(r)); }`;
      const out = execFileSync(process.execPath, ['-e', script], { uid: evil.uid, gid: evil.gid, encoding: 'utf8' });
      expect(JSON.parse(out)).toEqual({ readdir: 'EACCES', read: 'EACCES', plant: 'EACCES', socket: 'EACCES' });
    } finally {
      expect(await stop(relay)).toBe(0);
    }
  }, 60_000);
});

describe.skipIf(skipReason !== undefined)('refusals and warnings at start', () => {
  it('a spool owned by another user, a group-writable spool directory: refused, saying what and how to fix', async () => {
    const u = throwawayUser('owner');
    const a = relayConfig({ port: await freePort() });
    mkdirSync(a.queue, { mode: 0o700 });
    chownSync(a.queue, u.uid, u.gid);
    const outA = await refused(a.cfg);
    expect(outA).toContain(`refusing to start: files the relay trusts are not safe on a shared host`);
    expect(outA).toContain(`${a.queue} is owned by uid ${u.uid}, not by the relay's user root (uid 0)`);
    expect(outA).toContain(`Fix: chown -R root ${a.queue}`);

    const b = relayConfig({ port: await freePort() });
    mkdirSync(join(b.queue, 'msg'), { recursive: true, mode: 0o700 });
    writeFileSync(join(b.queue, 'msg', 'planted'), 'x'); // (an empty one would simply be closed and used)
    chmodSync(join(b.queue, 'msg'), 0o770);
    expect(await refused(b.cfg)).toContain(`${join(b.queue, 'msg')} is writable by its group (mode 0770)`);
  }, 60_000);

  it('links planted at queue_dir/tmp and at the lock: refused, nothing written where they point', async () => {
    const a = relayConfig({ port: await freePort() });
    const elsewhere = join(a.base, 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o700 });
    mkdirSync(a.queue, { mode: 0o700 });
    symlinkSync(elsewhere, join(a.queue, 'tmp'));
    expect(await refused(a.cfg)).toContain(`${join(a.queue, 'tmp')} is a symbolic link; the relay never writes or reads its state through links`);
    expect(readdirSync(elsewhere)).toEqual([]);

    const b = relayConfig({ port: await freePort() });
    mkdirSync(b.queue, { mode: 0o700 });
    symlinkSync(victim, join(b.queue, 'lock'));
    expect(await refused(b.cfg)).toContain(`${join(b.queue, 'lock')} is a symbolic link`);
  }, 60_000);

  it('a link planted at a control.socket path outside the spool is never followed or removed; the relay runs without the socket', async () => {
    const a = relayConfig({ port: await freePort(), extra: 'control:\n  socket: ctl/control.sock\n' });
    mkdirSync(join(a.base, 'ctl'), { mode: 0o700 });
    symlinkSync(victim, join(a.base, 'ctl', 'control.sock'));
    const relay = await serve(a.cfg);
    try {
      expect(relay.started, relay.output()).toBe(true);
      expect(relay.output()).toContain('CONTROL SOCKET NOT AVAILABLE');
      expect(relay.output()).toContain('exists and is not a socket (a symbolic link); refusing to replace it');
      expect(lstatSync(join(a.base, 'ctl', 'control.sock')).isSymbolicLink()).toBe(true);
    } finally {
      expect(await stop(relay)).toBe(0);
    }
  }, 60_000);

  it('a world-writable users file and a key owned by another user are refused; a world-writable config and a group-writable policy file are warned', async () => {
    const u = throwawayUser('keys');
    const { certPem, keyPem } = await makeSelfSigned({ dnsNames: ['relay.test'] });
    const a = relayConfig({ port: await freePort(), extra: 'ingress:\n  tls: { cert: cert.pem, key: key.pem }\n  users_file: users\n' });
    writeFileSync(join(a.base, 'cert.pem'), certPem);
    writeFileSync(join(a.base, 'key.pem'), keyPem, { mode: 0o600 });
    chownSync(join(a.base, 'key.pem'), u.uid, u.gid);
    writeFileSync(join(a.base, 'users'), `alice:${await hashPassword('pw')}\n`, { mode: 0o600 });
    chmodSync(join(a.base, 'users'), 0o666);
    const out = await refused(a.cfg);
    expect(out).toContain(
      `${join(a.base, 'users')} is writable by all users (mode 0666): whoever can write it can impersonate the relay or log in through it. Fix: chown root ${join(a.base, 'users')} && chmod 600`,
    );
    expect(out).toContain(`${join(a.base, 'key.pem')} is owned by uid ${u.uid} (not root, not root)`);

    const b = relayConfig({ port: await freePort(), extra: 'policy:\n  tls_policy: tls_policy\n' });
    writeFileSync(join(b.base, 'tls_policy'), 'example.org may\n');
    chmodSync(join(b.base, 'tls_policy'), 0o664);
    chmodSync(b.cfg, 0o666);
    const relay = await serve(b.cfg);
    try {
      expect(relay.started, relay.output()).toBe(true);
      expect(relay.output()).toContain(`UNSAFE FILE: ${b.cfg} is writable by all users (mode 0666): whoever can write it can change what the relay does`);
      expect(relay.output()).toContain(`UNSAFE FILE: ${join(b.base, 'tls_policy')} is writable by its group (mode 0664)`);
    } finally {
      expect(await stop(relay)).toBe(0);
    }
  }, 60_000);

  it('allow_root: false refuses root without user:; user: naming someone else refuses a non-root start', async () => {
    const a = relayConfig({ port: await freePort(), extra: 'allow_root: false\n' });
    expect(await refused(a.cfg)).toContain('refusing to run as root (allow_root: false)');
    const u1 = throwawayUser('one');
    const u2 = throwawayUser('two');
    const b = relayConfig({ port: await freePort(), extra: `user: ${u1.name}\n` });
    expect(await refused(b.cfg, u2)).toContain(`user: ${u1.name} is set, but the relay runs as uid ${u2.uid} and cannot switch users without root`);
  }, 60_000);
});

describe.skipIf(skipReason !== undefined)('under umask 000', () => {
  it('every directory and file the relay, dkim keygen and tlsrpt send --out create is 0700/0600', async () => {
    const port = await freePort();
    const { cfg, base, queue } = relayConfig({ port });
    const relay = await serve(cfg, { umask: '000' });
    try {
      expect(relay.started, relay.output()).toBe(true);
      await queuedMessage(port);
      // the deferral is written (state file) before we look
      for (let i = 0; i < 100 && readdirSync(join(queue, 'state')).length === 0; i++) await sleep(50);
      expect(readdirSync(join(queue, 'state'))).toHaveLength(1);
      expectPrivate(queue, 0);
    } finally {
      expect(await stop(relay)).toBe(0);
    }
    const sh = (cmd: string) => execFileSync('sh', ['-c', `umask 000 && ${cmd}`], { encoding: 'utf8' });
    const key = join(base, 'dkim', 'tlsrpt.key');
    mkdirSync(join(base, 'dkim'), { mode: 0o700 });
    sh(`"${process.execPath}" "${CLI}" dkim keygen --domain relay.test --out "${key}"`);
    expect((statSync(key).mode & 0o777).toString(8)).toBe('600');
    // a closed day with one counted session, then its report written to a new directory
    const day = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
    writeFileSync(
      join(queue, 'tlsrpt', 'counts', `${day}.jsonl`),
      `${JSON.stringify({ d: 'dead.test', p: JSON.stringify(['no-policy-found', [], 'dead.test', null]), s: 1, f: 0, x: {} })}\n`,
      { mode: 0o600 },
    );
    const out = join(base, 'reports', 'new');
    sh(`"${process.execPath}" "${CLI}" tlsrpt send --day ${day} --out "${out}" --config "${cfg}"`);
    expect((statSync(join(base, 'reports')).mode & 0o777).toString(8)).toBe('700');
    expectPrivate(out, 0);
    expect(readdirSync(out)).toHaveLength(1);
    expect(existsSync(join(queue, 'tlsrpt', 'sent'))).toBe(false); // --out marks nothing as sent
  }, 90_000);
});
