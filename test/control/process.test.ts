/**
 * `dane-relay queue …` against a running relay process (control socket) and against the
 * same spool with the relay stopped (files under the spool lock): the same results.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cpSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { submit } from '../support/mail.js';
import { RelayProcess, freePort, runCli, runCliIn, sleep, type CliResult } from '../support/relayProcess.js';
import { acquireSpoolLock } from '../../src/spool/lock.js';
import type { SpoolListing } from '../../src/spool/inspect.js';
import { main } from '../../src/cli.js';

let dns: TestDns;
let rx: Receiver;
let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  rx = await startReceiver({ host: '127.0.0.30' });
  // Both destinations point at an address where nothing listens: every attempt is refused and deferred.
  dns.add(
    { name: 'dead.test', type: 'MX', data: { preference: 10, exchange: 'mx.dead.test' } },
    { name: 'mx.dead.test', type: 'A', data: '127.0.0.31' },
    { name: 'gone.test', type: 'MX', data: { preference: 10, exchange: 'mx.gone.test' } },
    { name: 'mx.gone.test', type: 'A', data: '127.0.0.32' },
  );
  dir = mkdtempSync(join(tmpdir(), 'dr-ctl-'));
}, 120_000);
afterAll(async () => {
  await rx?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

function writeConfig(name: string, port: number): string {
  const f = join(dir, `${name}.yml`);
  writeFileSync(
    f,
    `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${join(dir, name)}\n` +
      `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
      `delivery:\n  port: ${rx.port}\n  tls_level: may\n  timeouts: { connect: 2s }\n` +
      `queue:\n  min_backoff: 1h\n  max_backoff: 2h\n  run_interval: 200ms\n` +
      `log:\n  level: info\n`,
  );
  return f;
}

const q = (cfg: string, ...args: string[]) => runCli(['queue', ...args, '--config', cfg]);

/**
 * `dane-relay queue ARGS…` run in this process: the CLI's own main(), through the running relay's control socket or
 * on the stopped spool's files, exactly as the process runs it. The sessions below make ~30 calls; as processes, one
 * after the other, each Node start-up took 2-5 s of wall time on the busy 2-core machine and the test went past its
 * 120 s limit there (three times, also with the two sessions side by side). A few calls stay real processes (`q`).
 */
const qIn = (cfg: string, ...args: string[]): Promise<CliResult> => runCliIn(main, ['queue', ...args, '--config', cfg]);
const json = (r: CliResult) => {
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
};

/** `queue list --json` in this process, for polling. */
const listNow = async (cfg: string): Promise<SpoolListing> => json(await qIn(cfg, 'list', '--json')) as SpoolListing;

/** Polls until `ok` (the test's own timeout bounds it, not a wall-clock guess that gives up and returns). */
async function waitFor<T>(f: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    await sleep(150);
  }
}

/** The same operator session, run once against the running relay and once against the stopped one. */
async function session(cfg: string, ids: string[]): Promise<Record<string, unknown>> {
  const [m1, m2, , m4] = ids as [string, string, string, string];
  const out: Record<string, unknown> = {};
  out.list = json(await qIn(cfg, 'list', '--json'));
  out.show = json(await qIn(cfg, 'show', m2, '--json'));
  out.hold = json(await qIn(cfg, 'hold', m1, '--json'));
  out.listAfterHold = json(await qIn(cfg, 'list', '--json'));
  out.flush = json(await qIn(cfg, 'flush', 'gone.test', '--json'));
  out.requeueHeld = json(await qIn(cfg, 'requeue', m1, '--json'));
  out.delete = json(await qIn(cfg, 'delete', m4, '--json'));
  const again = await qIn(cfg, 'delete', m4);
  out.deleteAgain = { code: again.code, stderr: again.stderr };
  const show = await qIn(cfg, 'show', m4);
  out.showDeleted = { code: show.code, stderr: show.stderr };
  const bad = await qIn(cfg, 'hold', '../../etc/passwd');
  out.badId = { code: bad.code, stderr: bad.stderr };
  out.release = json(await qIn(cfg, 'release', m1, '--json'));
  out.text = (await qIn(cfg, 'hold', m2)).stdout;
  out.releaseText = (await qIn(cfg, 'release', m2)).stdout;
  return out;
}

describe('queue control, running and stopped relay', () => {
  it('queue list/show/flush/hold/release/delete/requeue give the same results through the control socket and on the stopped spool', async () => {
    const port = await freePort();
    const cfgA = writeConfig('a', port);
    const relay = new RelayProcess(cfgA);
    await relay.start();
    const sock = statSync(join(dir, 'a', 'control.sock'));
    expect(sock.isSocket()).toBe(true);
    expect(sock.mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'a')).mode & 0o077).toBe(0); // owner-only directory

    const ids: string[] = [];
    for (const to of [['a@dead.test'], ['b@dead.test', 'c@gone.test'], ['d@gone.test'], ['e@gone.test']]) {
      ids.push((await submit({ port, from: 'app@sender.test', to, subject: `to ${to.join(',')}` })).queueId);
    }
    // Every recipient was tried once and deferred for an hour.
    const listing = await waitFor(
      () => listNow(cfgA),
      (l) => l.messages.length === 4 && l.messages.every((m) => m.recipients.every((r) => r.state === 'deferred' && r.attempts === 1)),
    );
    expect(listing.messages.map((m) => m.id)).toEqual([...ids].sort());
    expect(listing.messages.flatMap((m) => m.recipients.map((r) => r.lastReason))).toEqual(Array(5).fill(expect.stringMatching(/refused|ECONNREFUSED/i)));
    const text = await q(cfgA, 'list');
    expect(text.stdout).toContain('-- 4 message(s), 5 recipient(s) waiting');
    expect(text.stdout).toContain('<c@gone.test>  deferred  attempts 1  next ');

    // Same starting point twice: the stopped relay's spool, copied.
    expect(await relay.stop()).toBe(0);
    cpSync(join(dir, 'a'), join(dir, 'b'), { recursive: true });
    const cfgB = writeConfig('b', port);
    await relay.start();

    const expectedAttempts = (id: string, address: string) => (address.endsWith('@gone.test') || id === ids[0] ? 2 : 1);
    // The two sessions touch different spools (A through the running relay, B's files under its lock): side by side.
    const [online, offline] = await Promise.all([session(cfgA, ids), session(cfgB, ids)]);
    const onlineAfter = await waitFor(
      () => listNow(cfgA),
      (l) => l.messages.every((m) => m.recipients.every((r) => r.attempts === expectedAttempts(m.id, r.address))),
    );
    expect(await relay.stop()).toBe(0);

    // Identical answers, including the listing before any change and the error texts.
    expect(offline).toEqual(online);
    expect(online.flush).toEqual({ cmd: 'flush', domain: 'gone.test', messages: 3 });
    expect(online.requeueHeld).toEqual({ cmd: 'requeue', id: ids[0], recipients: 1, held: true });
    expect((online.listAfterHold as SpoolListing).messages.map((m) => m.held)).toEqual([true, false, false, false]);
    expect(online.deleteAgain).toEqual({ code: 1, stderr: `dane-relay queue delete: no message ${ids[3]} in the queue\n` });
    expect((online.badId as CliResult).code).toBe(2);
    expect(online.text).toBe(`${ids[1]}: on hold\n`);

    // The running relay acted: the flushed gone.test recipients and the requeued-then-released m1 were attempted again.
    for (const m of onlineAfter.messages) for (const r of m.recipients) expect(r.attempts).toBe(expectedAttempts(m.id, r.address));
    // The stopped spool recorded the flush durably: due now, not attempted.
    const b = json(await q(cfgB, 'list', '--json')) as SpoolListing;
    for (const m of b.messages)
      for (const r of m.recipients) {
        expect(r.attempts).toBe(1);
        if (r.address.endsWith('@gone.test') || m.id === ids[0]) expect(r.nextAttempt).toBeLessThanOrEqual(Date.now());
        else expect(r.nextAttempt).toBeGreaterThan(Date.now() + 30 * 60_000);
      }
    // Both relays' spools end with the same messages, nothing held, m4 gone for good.
    const a = json(await q(cfgA, 'list', '--json')) as SpoolListing;
    expect(a.messages.map((m) => [m.id, m.held])).toEqual(b.messages.map((m) => [m.id, m.held]));
    expect(a.messages.map((m) => m.id)).toEqual([ids[0], ids[1], ids[2]].sort());
  }, 120_000);

  it('a spool locked by a live process whose control socket does not answer: changes are refused with a clear reason, list is read-only with a warning', async () => {
    const port = await freePort();
    const cfg = writeConfig('locked', port);
    const relay = new RelayProcess(cfg);
    await relay.start();
    const { queueId } = await submit({ port, from: 'app@sender.test', to: ['x@dead.test'] });
    expect(await relay.stop()).toBe(0);
    // This test process holds the lock, as a stuck relay would, and nothing listens on the socket.
    const lock = await acquireSpoolLock(join(dir, 'locked'));
    try {
      const hold = await q(cfg, 'hold', queueId);
      expect(hold.code).toBe(1);
      expect(hold.stderr).toContain(
        `is locked by running process ${process.pid}, but its control socket ${join(dir, 'locked', 'control.sock')} does not answer`,
      );
      expect(hold.stderr).toContain('nothing was changed');
      const list = await q(cfg, 'list', '--json');
      expect(list.code).toBe(0);
      expect(list.stderr).toContain('showing the spool files read-only');
      expect((JSON.parse(list.stdout) as SpoolListing).messages.map((m) => [m.id, m.held])).toEqual([[queueId, false]]);
    } finally {
      await lock.release();
    }
    // Lock released: the same command works on the files.
    const hold = await q(cfg, 'hold', queueId, '--json');
    expect(JSON.parse(hold.stdout)).toEqual({ cmd: 'hold', id: queueId, held: true });
    expect((json(await q(cfg, 'show', queueId, '--json')) as { held: boolean }).held).toBe(true);
  }, 60_000);
});
