/**
 * Issue 14 item 6: the relay's components come from one list (src/compose.ts), started in order and
 * drained then stopped in reverse, also when a start fails half-way. The lifecycle functions are checked
 * over components that record what is done to them; the relay's own list is checked with the real
 * components: its order, a real start and stop, and a start that fails at the last step (the SMTP port is
 * taken) and leaves nothing behind — the spool lock is free, the control socket gone, a second start works.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { compose, startAll, stopAll, type Component } from '../../src/compose.js';
import { Spool } from '../../src/spool/spool.js';
import { World } from '../support/world.js';

function recorder(): { log: string[]; component: (name: string, o?: { failStart?: boolean; failStop?: boolean; drain?: boolean }) => Component } {
  const log: string[] = [];
  return {
    log,
    component: (name, o = {}) => ({
      name,
      start: async () => {
        log.push(`start ${name}`);
        if (o.failStart) throw new Error(`${name} failed`);
      },
      ...(o.drain
        ? {
            drain: async (grace: number) => {
              log.push(`drain ${name} ${grace}`);
            },
          }
        : {}),
      stop: async () => {
        log.push(`stop ${name}`);
        if (o.failStop) throw new Error(`${name} stop failed`);
      },
    }),
  };
}

describe('startAll / stopAll: one list, in order and in reverse', () => {
  it('starts in list order; stops with every drain in reverse (with the grace), then every stop in reverse', async () => {
    const r = recorder();
    const started = await startAll([r.component('a'), r.component('b', { drain: true }), r.component('c', { drain: true })]);
    expect(started.map((c) => c.name)).toEqual(['a', 'b', 'c']);
    await stopAll(started, 250);
    expect(r.log).toEqual(['start a', 'start b', 'start c', 'drain c 250', 'drain b 250', 'stop c', 'stop b', 'stop a']);
  });

  it('a failed start stops the components already started, in reverse and without grace, and rethrows; the failed one and those after it are not touched', async () => {
    const r = recorder();
    const list = [r.component('a'), r.component('b', { drain: true }), r.component('c', { failStart: true }), r.component('d')];
    await expect(startAll(list)).rejects.toThrow('c failed');
    expect(r.log).toEqual(['start a', 'start b', 'start c', 'drain b 0', 'stop b', 'stop a']);
  });

  it('a stop that fails during the rollback does not hide the start error, nor keep the others from stopping', async () => {
    const r = recorder();
    await expect(startAll([r.component('a'), r.component('b', { failStop: true }), r.component('c', { failStart: true })])).rejects.toThrow('c failed');
    expect(r.log).toEqual(['start a', 'start b', 'start c', 'stop b', 'stop a']);
  });

  it('a stop that fails in a normal stop: the others still stop, then the first error is thrown', async () => {
    const r = recorder();
    const started = await startAll([r.component('a'), r.component('b', { failStop: true }), r.component('c')]);
    await expect(stopAll(started, 0)).rejects.toThrow('b stop failed');
    expect(r.log.slice(3)).toEqual(['stop c', 'stop b', 'stop a']);
  });
});

describe('the relay composition (real components)', () => {
  let w: World | undefined;
  let blocker: Server | undefined;
  afterEach(async () => {
    await new Promise((res) => (blocker ? blocker.close(res) : res(undefined)));
    blocker = undefined;
    await w?.close();
    w = undefined;
  });

  it('lists its components in start order: the privilege drop and the start-up checks first, ingress opened last before the watchers', async () => {
    w = await World.create();
    await w.receiver(); // the delivery port the configuration names
    const { components } = await compose({ config: w.config(), log: pino({ level: 'silent' }) });
    expect(components.map((c) => c.name)).toEqual([
      'privileges',
      'start-up checks',
      'resolver',
      'policy',
      'spool',
      'events',
      'tlsrpt',
      'recovery',
      'DNSSEC self-test',
      'mta-sts',
      'scheduler',
      'control socket',
      'metrics',
      'TLSRPT daily job',
      'ingress',
      'policy file watch',
      'danefail probe',
      'readiness',
    ]);
  });

  it('a real start and stop: everything it opened is released (spool lock, control socket, SMTP port)', async () => {
    w = await World.create();
    await w.receiver(); // the delivery port the configuration names
    const relay = await w.start({ metrics: { listen: '127.0.0.1:0' } });
    const port = w.ingressPort;
    const socket = join(w.config().queue_dir, 'control.sock');
    expect(existsSync(socket)).toBe(true);
    expect(relay.metrics?.server.address.port).toBeGreaterThan(0);
    await relay.stop(1000);
    w.relay = undefined;
    expect(existsSync(socket)).toBe(false);
    // the lock is free: the spool opens again
    const spool = await Spool.open(w.config().queue_dir, { log: pino({ level: 'silent' }) });
    await spool.close();
    // nothing listens on the SMTP port any more
    blocker = createServer();
    await new Promise<void>((res, rej) => {
      blocker!.once('error', rej);
      blocker!.listen(port, '127.0.0.1', () => res());
    });
  });

  it('a start that fails at ingress (port taken) stops what had started, in reverse: the spool lock is free, the control socket gone, and a second start works', async () => {
    w = await World.create();
    await w.receiver(); // the delivery port the configuration names
    blocker = createServer();
    await new Promise<void>((res) => blocker!.listen(0, '127.0.0.1', () => res()));
    const taken = (blocker.address() as { port: number }).port;
    await expect(w.start({ listen: [`127.0.0.1:${taken}`], metrics: { listen: '127.0.0.1:0' } })).rejects.toThrow(/EADDRINUSE/);
    const queueDir = w.config().queue_dir;
    // the control socket, opened before ingress, was closed (and unlinked) by the rollback
    expect(existsSync(join(queueDir, 'control.sock'))).toBe(false);
    const logs = w.logs.map((l) => l.msg);
    expect(logs).toContain('spool recovered');
    expect(logs).not.toContain('dane-relay started');
    // the spool lock was released: a second relay on the same spool starts (and the scheduler of the first no longer runs)
    const relay = await w.start();
    expect(relay.ingress.addresses[0]!.port).toBeGreaterThan(0);
  });
});
