/**
 * Scheduler decisions with the SMTP client's connector (issue 14): a real spool (files, fsync), the
 * real DestinationRun, and in-process scripted SMTP peers behind the connector (no port); the clock
 * is the test's. Grouping per destination, what each reply makes of a recipient (RFC 5321 §4.2.5,
 * §4.5.4.1 backoff), the bounce's DSN (RFC 3464) queued and delivered, the retry when it is due.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Spool } from '../../src/spool/spool.js';
import { Scheduler, type SchedulerConfig } from '../../src/scheduler/scheduler.js';
import type { DeliveryDeps } from '../../src/delivery/deliver.js';
import type { DeliveryEvent } from '../../src/delivery/events.js';
import { normalScript, scriptedConnector } from '../support/scriptedPeer.js';
import { deliveryDeps } from '../support/deliveryDeps.js';
import { FaultFs, makeTmpDir, envelope, ls, quiet } from '../spool/support.js';
import { join } from 'node:path';

const T = 3000;
const CFG: SchedulerConfig = {
  min_backoff: 600_000,
  max_backoff: 4 * 3600_000,
  lifetime: 5 * 86_400_000,
  delay_warning: 0,
  concurrency: 4,
  per_destination: 2,
  run_interval: 3600_000,
};
const log = pino({ level: 'silent' });

let tmp: { dir: string; cleanup: () => void };
let spool: Spool;
let scheduler: Scheduler | undefined;
beforeEach(async () => {
  tmp = makeTmpDir('scheduler-test-');
});
afterEach(async () => {
  await scheduler?.stop(1000);
  await spool?.close();
  tmp.cleanup();
});

/** Delivery over the scripted peers' connector, on the test's clock, every event into `events`. */
function connectorDelivery(connector: DeliveryDeps['connector'], now: () => number, events: DeliveryEvent[]): DeliveryDeps {
  return deliveryDeps({ port: 9, timeout: T, now, connector, subscribers: [(e) => void events.push(e)] });
}

describe('Scheduler decisions over in-process SMTP peers (connector)', () => {
  it('RFC 5321 §4.2.5 §4.5.4.1 one transaction per destination; a 452 recipient is deferred by min_backoff and retried when due, a 550 one fails with a DSN to the sender; done messages leave the index', async () => {
    let clock = 1_800_000_000_000;
    let full = true; // the mailbox of full@ is full at the first attempt only
    const peers = scriptedConnector({
      '127.0.0.2': normalScript({
        answer: (verb, line) => (verb === 'RCPT' && line.includes('<full@') && full ? { reply: '452 4.2.2 mailbox full\r\n' } : undefined),
      }),
      '127.0.0.3': normalScript({ answer: (verb, line) => (verb === 'RCPT' && line.includes('<gone@') ? { reply: '550 5.1.1 no such user\r\n' } : undefined) }),
      '127.0.0.4': normalScript(), // the sender's own domain: takes the DSN
    });
    const events: DeliveryEvent[] = [];
    spool = await Spool.open(tmp.dir, { now: () => clock, log: quiet });
    const delivery = connectorDelivery(peers.connector, () => clock, events);
    scheduler = new Scheduler({ spool, delivery, config: CFG, hostname: 'relay.test', log, now: () => clock, rand: () => 0.5 });
    const recipients = ['ok@[127.0.0.2]', 'full@[127.0.0.2]', 'gone@[127.0.0.3]'];
    const msg = await spool.enqueue(
      envelope({ from: 'a@[127.0.0.4]', recipients, eightBit: false, received: clock }),
      Buffer.from('Subject: t\r\nMessage-ID: <t1@sender.test>\r\n\r\nhello\r\n'),
    );
    scheduler.add(msg);
    await scheduler.whenIdle();

    // one connection and one transaction per destination, all its recipients in it
    const at = (a: string) => peers.connections.filter((c) => c.address === a);
    expect(at('127.0.0.2').flatMap((c) => c.transactions.map((t) => t.rcpts))).toEqual([['ok@[127.0.0.2]', 'full@[127.0.0.2]']]);
    expect(at('127.0.0.3').flatMap((c) => c.transactions.map((t) => t.rcpts))).toEqual([['gone@[127.0.0.3]']]);
    const state = () =>
      Object.fromEntries(scheduler!.get(msg.id)?.recipients.map((r) => [r.address, [r.state, r.attempts, r.nextAttempt - clock, r.dsnCode]]) ?? []);
    expect(state()).toEqual({
      'ok@[127.0.0.2]': ['delivered', 1, expect.any(Number), '2.0.0'],
      'full@[127.0.0.2]': ['deferred', 1, CFG.min_backoff, '4.2.2'], // rand 0.5: no jitter
      'gone@[127.0.0.3]': ['failed', 1, expect.any(Number), '5.1.1'],
    });
    // RFC 3464: the failure's DSN went from the null sender to the sender's domain and names the recipient
    const dsn = at('127.0.0.4').flatMap((c) => c.transactions);
    expect(dsn.map((t) => [t.from, t.rcpts, t.delivered])).toEqual([['', ['a@[127.0.0.4]'], true]]);
    expect(dsn[0]!.body!.toString('latin1')).toMatch(/Final-Recipient: rfc822; ?gone@\[127\.0\.0\.3\][\s\S]*Status: 5\.1\.1/);
    // what the run reported: one recipient event per recipient attempt (and one for the DSN)
    expect(events.filter((e) => e.kind === 'recipient').map((e) => e.kind === 'recipient' && [e.outcome.address, e.outcome.result])).toEqual(
      expect.arrayContaining([
        ['ok@[127.0.0.2]', 'sent'],
        ['full@[127.0.0.2]', 'deferred'],
        ['gone@[127.0.0.3]', 'bounced'],
        ['a@[127.0.0.4]', 'sent'],
      ]),
    );

    // Not due yet: nothing happens. Due: the retry delivers and the message is done.
    full = false;
    clock += CFG.min_backoff - 1;
    scheduler.kick();
    await scheduler.whenIdle();
    expect(at('127.0.0.2')).toHaveLength(1);
    clock += 1;
    scheduler.kick();
    await scheduler.whenIdle();
    expect(at('127.0.0.2').flatMap((c) => c.transactions.map((t) => [t.rcpts, t.delivered]))).toEqual([
      [['ok@[127.0.0.2]', 'full@[127.0.0.2]'], true],
      [['full@[127.0.0.2]'], true],
    ]);
    expect(scheduler.get(msg.id)).toBeUndefined();
    expect(scheduler.size).toBe(0);
  });
});

describe('settling overlaps the next transaction (issue 17)', () => {
  it('RFC 5321 §3.3 the next message goes over the same connection while the last one is still being removed; each recipient settles once; whenIdle and stop wait for the write', async () => {
    const clock = 1_800_000_000_000;
    const peers = scriptedConnector({ '127.0.0.2': normalScript() });
    const fs = new FaultFs();
    spool = await Spool.open(tmp.dir, { fs, now: () => clock, log: quiet });
    const events: DeliveryEvent[] = [];
    const delivery = connectorDelivery(peers.connector, () => clock, events);
    scheduler = new Scheduler({
      spool,
      delivery,
      config: { ...CFG, concurrency: 1, per_destination: 1 },
      hostname: 'relay.test',
      log,
      now: () => clock,
      rand: () => 0.5,
    });
    const body = Buffer.from('Subject: t\r\n\r\nhello\r\n');
    const m1 = await spool.enqueue(envelope({ recipients: ['a@[127.0.0.2]', 'b@[127.0.0.2]'], eightBit: false, received: clock }), body);
    const m2 = await spool.enqueue(envelope({ recipients: ['c@[127.0.0.2]'], eightBit: false, received: clock }), body);
    // The removal of the first message stops at its unlink until the gate opens.
    let open!: () => void;
    const gate = new Promise<void>((r) => {
      open = r;
    });
    let blocked = false;
    fs.before(
      'unlink',
      (p) => p.endsWith(`/msg/${m1.id}`),
      () => {
        blocked = true;
        return gate;
      },
    );
    scheduler.add(m1);
    scheduler.add(m2);
    const delivered = () => peers.connections.flatMap((c) => c.transactions.filter((t) => t.delivered));
    await new Promise<void>((r) => {
      const poll = () => (blocked && delivered().length === 2 ? r() : setImmediate(poll));
      poll();
    });
    // one connection, both transactions, while the first message is still on disk
    expect(peers.connections).toHaveLength(1);
    expect(delivered().map((t) => t.rcpts)).toEqual([['a@[127.0.0.2]', 'b@[127.0.0.2]'], ['c@[127.0.0.2]']]);
    expect(ls(join(tmp.dir, 'msg'))).toEqual([m1.id, m2.id].sort());
    let idle = false;
    let stopped = false;
    void scheduler.whenIdle().then(() => {
      idle = true;
    });
    const stopping = scheduler.stop(600_000).then(() => {
      stopped = true;
    });
    // stop() looks every 20 ms: give it a few looks at the clock, which must all find the write outstanding
    await new Promise((r) => setTimeout(r, 100));
    expect([idle, stopped, scheduler.activeDeliveries]).toEqual([false, false, 1]);
    open();
    await stopping;
    expect(idle).toBe(true);
    expect([ls(join(tmp.dir, 'msg')), ls(join(tmp.dir, 'state'))]).toEqual([[], []]);
    expect(scheduler.size).toBe(0);
    const sent = events.flatMap((e) => (e.kind === 'recipient' ? [`${e.outcome.address} ${e.outcome.result}`] : []));
    expect(sent.sort()).toEqual(['a@[127.0.0.2] sent', 'b@[127.0.0.2] sent', 'c@[127.0.0.2] sent']);
  });
});
