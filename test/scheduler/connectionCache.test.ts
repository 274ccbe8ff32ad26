/**
 * The connection cache (delivery.connection_cache_time, Postfix's smtp_connection_cache_time_limit): a
 * destination's verified session outlives the worker that ran out of messages for a while, so the next
 * message to the domain goes over it. Real spool, real DestinationRun, a scripted SMTP peer on a loopback
 * TCP port. What must hold whatever the timing: every message is delivered exactly once; an idle session
 * the server closed is never used; stop() says QUIT to every idle session; a run that is too old, has used
 * up max_messages_per_connection, or runs under a shared queue is never kept.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Spool } from '../../src/spool/spool.js';
import { RUN_REUSE_LIMIT_MS, Scheduler, type SchedulerConfig } from '../../src/scheduler/scheduler.js';
import type { DeliveryEvent } from '../../src/delivery/events.js';
import { normalScript, startScriptedPeer, type PeerAction, type PeerConnection, type ScriptedPeer } from '../support/scriptedPeer.js';
import { deliveryDeps } from '../support/deliveryDeps.js';
import { envelope, makeTmpDir, quiet } from '../spool/support.js';

const T = 5000;
const HOUR = 3600_000;
const base: SchedulerConfig = {
  min_backoff: 600_000,
  max_backoff: 4 * HOUR,
  lifetime: 5 * 86_400_000,
  delay_warning: 0,
  concurrency: 4,
  per_destination: 2,
  run_interval: HOUR,
};
const log = pino({ level: 'silent' });

const open: { stop(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of open.splice(0).reverse()) await o.stop();
});

interface World {
  peer: ScriptedPeer;
  scheduler: Scheduler;
  spool: Spool;
  events: DeliveryEvent[];
  /** enqueues one message to `tag@[address]` (default the peer's, 127.0.0.1) and waits until the scheduler is idle again */
  send(tag: string, address?: string): Promise<void>;
  /** resolves when the peer's connection `id` is gone */
  gone(id: number): Promise<void>;
}

async function world(o: {
  cacheMs: number;
  maxPerConnection?: number;
  concurrency?: number;
  now?: () => number;
  endOfData?: (c: PeerConnection) => PeerAction | undefined;
}): Promise<World> {
  const tmp = makeTmpDir('connection-cache-');
  const closed = new Map<number, () => void>();
  const closedIds = new Set<number>();
  const peer = await startScriptedPeer({
    host: '127.0.0.1',
    script: normalScript({ ext: ['PIPELINING'], endOfData: (c) => o.endOfData?.(c) }),
    onClose: (c) => {
      closedIds.add(c.id);
      closed.get(c.id)?.();
    },
  });
  const now = o.now ?? Date.now;
  const spool = await Spool.open(tmp.dir, { now, log: quiet });
  const events: DeliveryEvent[] = [];
  // the destination is an address literal: the builder's resolver is never asked
  const delivery = deliveryDeps({
    port: peer.port,
    timeout: T,
    maxMessagesPerConnection: o.maxPerConnection ?? 100,
    now,
    subscribers: [(e) => void events.push(e)],
  });
  const scheduler = new Scheduler({
    spool,
    delivery,
    config: { ...base, connection_cache_time: o.cacheMs, ...(o.concurrency ? { concurrency: o.concurrency } : {}) },
    hostname: 'relay.test',
    log,
    now,
    rand: () => 0.5,
  });
  open.push({
    async stop() {
      await scheduler.stop(1000);
      await spool.close();
      await peer.close();
      tmp.cleanup();
    },
  });
  return {
    peer,
    scheduler,
    spool,
    events,
    async send(tag, address = '127.0.0.1') {
      const msg = await spool.enqueue(
        envelope({ from: 'a@relay.test', recipients: [`${tag}@[${address}]`], eightBit: false, received: now() }),
        Buffer.from(`Subject: ${tag}\r\nMessage-ID: <${tag}@relay.test>\r\n\r\nhello\r\n`),
      );
      scheduler.add(msg);
      await scheduler.whenIdle();
    },
    gone: (id) => (closedIds.has(id) ? Promise.resolve() : new Promise<void>((resolve) => closed.set(id, resolve))),
  };
}

/** every transaction the peer saw, as [connection id, recipients, delivered] */
const transactions = (w: World) => w.peer.connections.flatMap((c) => c.transactions.map((t) => [c.id, t.rcpts, t.delivered]));

/** m1, then (once m1's connection is gone, however long that takes: no fixed sleep) m2, which must go once over a second connection */
async function secondConnectionAfterClose(w: World): Promise<void> {
  await w.send('m1');
  await w.gone(0);
  await w.send('m2');
  expect(transactions(w)).toEqual([
    [0, ['m1@[127.0.0.1]'], true],
    [1, ['m2@[127.0.0.1]'], true],
  ]);
}

describe('delivery.connection_cache_time: an idle session waits for the next message to its domain', () => {
  it('messages queued one after another, each after the queue went idle, share one connection; stop() says QUIT to the idle session', async () => {
    const w = await world({ cacheMs: HOUR });
    for (const tag of ['m1', 'm2', 'm3']) await w.send(tag);
    expect(transactions(w)).toEqual([
      [0, ['m1@[127.0.0.1]'], true],
      [0, ['m2@[127.0.0.1]'], true],
      [0, ['m3@[127.0.0.1]'], true],
    ]);
    // RFC 5321 §4.1.1.5: the reused connection is reset before each later transaction
    expect(w.peer.connections[0]!.commands.filter((c) => c === 'RSET')).toHaveLength(2);
    expect(w.peer.connections[0]!.commands).not.toContain('QUIT');
    await w.scheduler.stop(1000);
    await w.gone(0);
    expect(w.peer.connections[0]!.commands.at(-1)).toBe('QUIT');
    expect(await w.spool.recover()).toEqual([]);
  });

  it('idle sessions count against delivery.concurrency: with 2, a third destination’s new session closes the idle session kept longest', async () => {
    const w = await world({ cacheMs: HOUR, concurrency: 2 });
    // two more peers on other loopback addresses, same port (the destination port is one setting)
    const others: ScriptedPeer[] = [];
    for (const host of ['127.0.0.2', '127.0.0.3'])
      others.push(await startScriptedPeer({ host, port: w.peer.port, script: normalScript({ ext: ['PIPELINING'] }) }));
    open.push({ stop: async () => void (await Promise.all(others.map((p) => p.close()))) });
    await w.send('m1', '127.0.0.1');
    await w.send('m2', '127.0.0.2');
    await w.send('m3', '127.0.0.3'); // two kept + one new would be three: the oldest kept one (127.0.0.1) goes
    await w.gone(0);
    expect(w.peer.connections[0]!.commands.at(-1)).toBe('QUIT');
    // the two others are kept and carry the next message of their domain
    await w.send('m4', '127.0.0.2');
    await w.send('m5', '127.0.0.3');
    expect(others.map((p) => p.connections.length)).toEqual([1, 1]);
    expect(others.map((p) => p.connections[0]!.transactions.map((t) => t.delivered))).toEqual([
      [true, true],
      [true, true],
    ]);
  });

  it('0 closes the session as soon as the queue has nothing more for the domain (each message its own connection, each ended by QUIT)', async () => {
    const w = await world({ cacheMs: 0 });
    await secondConnectionAfterClose(w);
    expect(w.peer.connections[0]!.commands.at(-1)).toBe('QUIT');
  });

  it('the idle session is closed with QUIT once its time is up; the next message opens a new connection', async () => {
    const w = await world({ cacheMs: 20 });
    await secondConnectionAfterClose(w);
    expect(w.peer.connections[0]!.commands.at(-1)).toBe('QUIT');
  });

  it('an idle session the server closed (FIN right after its 250 to the dot) is never used: the next message goes once, over a new connection', async () => {
    const w = await world({
      cacheMs: HOUR,
      endOfData: (c) => (c.id === 0 ? { reply: '250 2.0.0 queued\r\n', thenClose: true } : undefined),
    });
    // whether the client saw the close before m2 (dropped unused) or only at its RSET (stage rset: sent again
    // over a new connection, nothing of it accepted by the first), m2 reaches the server exactly once
    await secondConnectionAfterClose(w);
    const m2 = w.events.filter((e) => e.kind === 'recipient' && e.outcome.address === 'm2@[127.0.0.1]');
    expect(m2.map((e) => e.kind === 'recipient' && e.outcome.result)).toEqual(['sent']);
  });

  it('a session that used up max_messages_per_connection is not kept idle (QUIT at once)', async () => {
    const w = await world({ cacheMs: HOUR, maxPerConnection: 1 });
    await w.send('m1');
    await w.gone(0);
    expect(w.peer.connections[0]!.commands.at(-1)).toBe('QUIT');
    await w.send('m2');
    expect(transactions(w).map((t) => t[0])).toEqual([0, 1]);
  });

  it(`a run older than ${RUN_REUSE_LIMIT_MS / 1000} s is not kept idle: its MX and MTA-STS answers are looked up again with the next run`, async () => {
    let clock = Date.now();
    const w = await world({
      cacheMs: HOUR,
      now: () => clock,
      // while m3 is being delivered over the kept session, the run comes of age
      endOfData: (c) => {
        if (c.transactions.length === 3) clock += RUN_REUSE_LIMIT_MS;
        return undefined;
      },
    });
    await w.send('m1');
    await w.send('m2'); // young: reused
    await w.send('m3'); // young when taken, too old to be kept after it
    await w.gone(0);
    expect(w.peer.connections[0]!.commands.at(-1)).toBe('QUIT');
    await w.send('m4');
    expect(transactions(w).map((t) => t[0])).toEqual([0, 0, 0, 1]);
  });

  it(`a kept run that grew older than ${RUN_REUSE_LIMIT_MS / 1000} s while idle (the clock jumped) is closed, not used`, async () => {
    let clock = Date.now();
    const w = await world({ cacheMs: HOUR, now: () => clock });
    await w.send('m1');
    clock += RUN_REUSE_LIMIT_MS;
    await w.send('m2');
    await w.gone(0);
    expect(w.peer.connections[0]!.commands.at(-1)).toBe('QUIT');
    expect(transactions(w).map((t) => t[0])).toEqual([0, 1]);
  });
});
