/**
 * Slow and hostile SMTP peers: receivers that stall at every stage, send endless multi-line
 * replies or a line without end, trickle bytes, send garbage, drop the connection in the middle
 * of DATA, or answer 4xx/5xx at random. The stage timeouts fire (RFC 5321 §4.5.3.2), the relay
 * stays consistent, and no message is marked delivered that the receiver did not accept with 250:
 * afterwards every message is delivered once the destination behaves, or bounced with a DSN.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import type { Receiver } from '../support/receiver.js';
import { startHostilePeer, type HostileBehaviour, type HostilePeer } from './support/hostilePeer.js';
import { record, SCALE } from './support/report.js';
import { rng, SEED } from './support/rng.js';

const STAGE_MS = 400;
const STALLS = ['greeting', 'ehlo', 'mail', 'rcpt', 'data', 'dot'] as const;
const RAW: HostileBehaviour[] = ['endless-greeting', 'endless-ehlo', 'trickle-greeting', 'endless-line', 'garbage', 'drop-mid-data', 'close-after-354'];
const RANDOM_MESSAGES = 40 * SCALE;
/**
 * Stage timeouts for the redelivery to the good receiver, where no timeout is under test: on a busy
 * machine the 400 ms ones can fire at a well-behaved peer, and one after the dot would duplicate a message.
 */
const PATIENT = Object.fromEntries(['connect', 'greeting', 'ehlo', 'starttls', 'mail', 'rcpt', 'data', 'data_block', 'data_done'].map((k) => [k, '60s']));

let w: World;
/**
 * The random-refusal receiver has a relay of its own with ordinary (seconds) stage timeouts: it tests
 * outcomes, not timeouts, and with the 400 ms timeouts of the stall cases a loaded machine made its
 * greeting (smtp-server waits 100 ms before it) miss the deadline round after round — each miss
 * deferring the whole batch — until the lifetime expired some recipients.
 */
let wr: World;
let good: Receiver;
let sink: Receiver;
let rsink: Receiver;
let random: Receiver;
const stalled: { name: string; domain: string; rx: Receiver }[] = [];
const raw: { name: string; domain: string; peer: HostilePeer }[] = [];
const ids = new Map<string, string>(); // marker → domain
const rand = rng(SEED);

const marker = (m: { body: Buffer }) => /X-Test-Id: (\S+)/.exec(m.body.toString())?.[1];
const open = (world = w) =>
  world
    .relay!.scheduler.list()
    .filter((m) => m.envelope.from !== '')
    .flatMap((m) => m.recipients.filter((r) => r.state !== 'delivered' && r.state !== 'failed').map((r) => ({ id: m.id, ...r })));

beforeAll(async () => {
  w = await World.create();
  good = await w.receiver();
  sink = await w.receiver(); // DSNs to sender.test
  w.dns.add({ name: 'sender.test', type: 'MX', data: { preference: 10, exchange: 'mx.sender.test' } }, { name: 'mx.sender.test', type: 'A', data: sink.host });
  // TTL 0: the relay's resolver must not cache them, the last test points them elsewhere.
  const point = (domain: string, host: string) =>
    w.dns.add(
      { name: domain, type: 'MX', ttl: 0, data: { preference: 10, exchange: `mx.${domain}` } },
      { name: `mx.${domain}`, type: 'A', ttl: 0, data: host },
    );
  for (const s of STALLS) {
    const rx = await w.receiver({ stall: s });
    stalled.push({ name: `stall at ${s}`, domain: `stall-${s}.test`, rx });
    point(`stall-${s}.test`, rx.host);
  }
  for (const b of RAW) {
    const peer = await startHostilePeer({ host: w.deadHost(), port: w.port, behaviour: b });
    raw.push({ name: b, domain: `${b}.test`, peer });
    point(`${b}.test`, peer.host);
  }
  // RFC 5321 §4.2.5 / §4.5.3.1: random transient and permanent refusals at MAIL, RCPT and after the dot.
  const roll = (stage: string) => {
    const x = rand();
    if (x < 0.15) return { code: 451, message: `4.3.0 random ${stage} deferral` };
    if (x < 0.2) return { code: 550, message: `5.7.1 random ${stage} refusal` };
    return undefined;
  };
  wr = await World.create();
  rsink = await wr.receiver();
  random = await wr.receiver({ mail: () => roll('MAIL'), rcpt: () => roll('RCPT'), data: () => roll('DATA') });
  wr.dns.add(
    { name: 'sender.test', type: 'MX', data: { preference: 10, exchange: 'mx.sender.test' } },
    { name: 'mx.sender.test', type: 'A', data: rsink.host },
  );
  wr.dns.add(
    { name: 'random.test', type: 'MX', data: { preference: 10, exchange: 'mx.random.test' } },
    { name: 'mx.random.test', type: 'A', data: random.host },
  );
  await wr.start({ log: { level: 'info' }, delivery: { tls_level: 'may' } });
  const t = `${STAGE_MS}ms`;
  await w.start({
    log: { level: 'info' },
    delivery: { tls_level: 'may', timeouts: { connect: '1s', greeting: t, ehlo: t, starttls: t, mail: t, rcpt: t, data: t, data_block: t, data_done: t } },
  });
}, 60_000);

afterAll(async () => {
  await Promise.all(raw.map((r) => r.peer.close()));
  await w?.close();
  await wr?.close();
});

async function send(domain: string, n: number, world = w): Promise<void> {
  for (let i = 0; i < n; i++) {
    const id = `${domain}-${i}`;
    ids.set(id, domain);
    await submit({
      port: world.ingressPort,
      from: 'app@sender.test',
      to: [`user${i}@${domain}`],
      raw: `Subject: ${id}\r\nX-Test-Id: ${id}\r\n\r\nbody ${id}\r\n`,
    });
  }
}

describe(`hostile SMTP peers (seed ${SEED})`, () => {
  let firstPassMs = 0;

  it('every stalling or hostile peer ends in a timeout or a protocol error, never in "delivered"', async () => {
    const t0 = Date.now();
    for (const p of [...stalled, ...raw]) await send(p.domain, 2);
    await w.settle();
    firstPassMs = Date.now() - t0;
    const deliveries = w.deliveries();
    for (const p of [...stalled, ...raw]) {
      const mine = deliveries.filter((l) => String(l.to).endsWith(`@${p.domain}`));
      expect({ peer: p.name, statuses: [...new Set(mine.map((l) => l.status))] }).toEqual({ peer: p.name, statuses: ['deferred'] });
      if (p.name.startsWith('stall')) for (const l of mine) expect(String(l.reason)).toMatch(/timeout|timed out/);
    }
    // Bounded by the stage timeouts, not by the peers: a peer that could hold a session open (a
    // trickle, an endless reply) would keep settle() from returning and fail this test on its
    // timeout. How long it took is a figure for the report, not a pass mark: on a busy machine the
    // same run took over 20 s (it takes 6 s on an idle one).
    const st = stalled.find((p) => p.name === 'stall at dot')!;
    // The receiver that stalls after the dot has the body but never said 250: the relay must keep it.
    expect(st.rx.messages).toHaveLength(0);
    expect(open().filter((r) => r.address.endsWith('@stall-dot.test'))).toHaveLength(2);
  }, 60_000);

  it(
    'random 4xx/5xx: a message is marked delivered exactly when the receiver accepted it; the rest bounce with a DSN',
    async () => {
      await send('random.test', RANDOM_MESSAGES, wr);
      for (let round = 0; round < 30 && open(wr).some((r) => r.address.endsWith('@random.test')); round++) await wr.advance(5 * 3600_000);
      const sent = wr
        .deliveries()
        .filter((l) => String(l.to).endsWith('@random.test') && l.status === 'sent')
        .map((l) => String(l.to));
      const bounced = wr
        .deliveries()
        .filter((l) => String(l.to).endsWith('@random.test') && l.status === 'bounced')
        .map((l) => String(l.to));
      const accepted = random.messages.flatMap((m) => m.to);
      expect(open(wr).filter((r) => r.address.endsWith('@random.test'))).toEqual([]);
      expect([...sent].sort()).toEqual([...accepted].sort()); // marked delivered ⇔ acknowledged by the receiver
      expect(new Set(sent).size).toBe(sent.length); // each at most once
      expect(sent.filter((a) => bounced.includes(a))).toEqual([]);
      expect(sent.length + bounced.length).toBe(RANDOM_MESSAGES);
      // every bounce produced a DSN to the sender
      await wr.settle();
      const dsnFor = rsink.messages.map((m) => m.body.toString());
      for (const a of bounced) expect(dsnFor.some((b) => b.includes(a))).toBe(true);
    },
    120_000 * SCALE,
  );

  it('once the destinations behave, every deferred message is delivered; duplicates only from the peer that stalled after the dot', async () => {
    // No timeout is under test any more: the relay restarts on its spool with patient ones.
    await w.relay!.stop(1000);
    await w.start({ log: { level: 'info' }, delivery: { tls_level: 'may', timeouts: PATIENT } });
    for (const p of [...stalled, ...raw]) {
      w.dns.remove(`mx.${p.domain}`, 'A');
      w.dns.add({ name: `mx.${p.domain}`, type: 'A', ttl: 0, data: good.host });
    }
    for (let round = 0; round < 5 && open().length > 0; round++) await w.advance(5 * 3600_000);
    expect(open()).toEqual([]);
    const hostile = [...stalled, ...raw];
    const expected = [...ids.entries()].filter(([, d]) => hostile.some((p) => p.domain === d)).map(([id]) => id);
    const got = good.messages.map(marker);
    expect(got.sort()).toEqual(expected.sort());
    // The relay restarts on the same spool: nothing is left to deliver, nothing is corrupt.
    const before = good.messages.length;
    await w.relay!.stop(1000);
    await w.start({ log: { level: 'info' }, delivery: { tls_level: 'may', timeouts: PATIENT } });
    await w.settle();
    expect(open()).toEqual([]);
    expect(good.messages.length).toBe(before);
    const sentRandom = random.messages.length;
    const bouncedRandom = RANDOM_MESSAGES - sentRandom;
    const dotDuplicates = stalled.find((p) => p.name === 'stall at dot')!.rx.messages.length; // 0: it never said 250
    record({
      case: 'hostile peers (stalls, endless replies, drops, random 4xx/5xx)',
      sent: ids.size,
      acknowledged: ids.size,
      delivered: got.length + sentRandom,
      duplicated: dotDuplicates,
      lost: 0,
      leaked: 0,
      notes: `${STALLS.length} stall stages + ${RAW.length} raw behaviours all failed within ${firstPassMs} ms of submission (stage timeout ${STAGE_MS} ms); the peer stalling after the dot got bodies it never acknowledged, redelivered elsewhere; random.test: ${sentRandom} delivered, ${bouncedRandom} bounced with DSN; seed ${SEED}`,
    });
  }, 120_000);
});
