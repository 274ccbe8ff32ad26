/**
 * A minimal next hop (no 8BITMIME, no DSN) behind the relay, fed generated MIME messages
 * (test/support/mimeTrees.ts: nesting, multipart/signed, every transfer encoding, 8-bit bodies and
 * header fields, long lines, NUL, preambles) submitted with BODY=8BITMIME over SMTP. Every message
 * must end one of two ways: delivered to that hop 7-bit, with no line over 998 octets and the same
 * leaf contents (decoded by mailparser), or bounced with 5.6.3 and a DSN — exactly when the
 * tree's oracle says it cannot be converted. Leaked = any octet the hop did not agree to, or an
 * unconvertible message that reached it; lost = a message neither delivered intact nor bounced.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { World } from '../support/world.js';
import { SmtpTestClient } from '../support/submit.js';
import type { Receiver } from '../support/receiver.js';
import { message, sameContent, topArb } from '../support/mimeTrees.js';
import { MIME_NESTING_LIMIT } from '../../src/mime/downgrade.js';
import { record, SCALE } from './support/report.js';
import { SEED } from './support/rng.js';

const N = 150 * SCALE;
let w: World;
let rx: Receiver;
let inbox: Receiver;

beforeAll(async () => {
  w = await World.create();
  rx = await w.mx('dest.test', { eightBitMime: false, dsn: false });
  inbox = await w.mx('sender.test');
  await w.start({ log: { level: 'info' } });
}, 60_000);
afterAll(async () => {
  await w?.close();
});

describe(`a 7-bit-only next hop and generated MIME (seed ${SEED})`, () => {
  it('every message is delivered 7-bit and intact, or bounced with 5.6.3 exactly when it cannot be converted; none leaks, none is lost', async () => {
    const t0 = Date.now();
    const tops = fc.sample(topArb, { seed: SEED, numRuns: N });
    const cases = tops.map((top, i) => {
      const m = message(top, '7bit', MIME_NESTING_LIMIT);
      return { i, refuse: m.refuse, raw: Buffer.concat([Buffer.from(`X-Fault-Case: ${i}\r\n`), m.raw]), queueId: '' };
    });
    let acknowledged = 0;
    const queue = [...cases];
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        const c = await SmtpTestClient.connect({ port: w.ingressPort, timeout: 30_000 });
        await c.ehlo('fault.client');
        for (let k = queue.shift(); k; k = queue.shift()) {
          const r = await c.sendMail('app@sender.test', [`x${k.i}@dest.test`], k.raw, 'BODY=8BITMIME');
          if (r.end?.code === 250) {
            acknowledged++;
            k.queueId = /queued as (\S+)/.exec(r.end.lines[0]!)![1]!;
          }
        }
        await c.quit();
      }),
    );
    const expectBounced = cases.filter((k) => k.refuse).length;
    const deadline = Date.now() + 120_000;
    while ((rx.messages.length < N - expectBounced || inbox.messages.length < expectBounced) && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    await w.settle();

    const byCase = new Map(rx.messages.map((m) => [Number(/X-Fault-Case: (\d+)/.exec(m.body.toString('latin1'))?.[1]), m]));
    const status = new Map(
      w
        .deliveries()
        .filter((l) => String(l.to).endsWith('@dest.test'))
        .map((l) => [String(l.queue_id), l]),
    );
    let leaked = 0;
    let lost = 0;
    let delivered = 0;
    let bounced = 0;
    let mismatched = 0;
    const problems: string[] = [];
    for (const k of cases) {
      const got = byCase.get(k.i);
      const line = status.get(k.queueId);
      if (got) {
        const b = got.body;
        const longest = Math.max(
          ...b
            .toString('latin1')
            .split('\n')
            .map((l) => l.replace(/\r$/, '').length),
        );
        if (b.some((x) => x >= 0x80 || x === 0) || longest > 998) {
          leaked++;
          problems.push(`case ${k.i}: not 7-bit/short lines`);
        }
        if (k.refuse) {
          leaked++;
          problems.push(`case ${k.i}: unconvertible but delivered`);
        }
        try {
          await sameContent(k.raw, b.subarray(b.indexOf('X-Fault-Case:')));
          delivered++;
        } catch (e) {
          mismatched++;
          problems.push(`case ${k.i}: content differs: ${(e as Error).message.slice(0, 200)}`);
        }
      } else if (line?.status === 'bounced' && line.dsn === '5.6.3' && k.refuse) {
        bounced++;
      } else {
        lost++;
        problems.push(
          `case ${k.i}: ${line ? `${line.status} ${line.dsn} ${String(line.reason).slice(0, 200)}` : 'no outcome'} (oracle: ${k.refuse ? 'refuse' : 'convert'})`,
        );
      }
    }
    const dsns = inbox.messages.filter((m) => m.body.toString().includes('Status: 5.6.3')).length;
    lost += mismatched;
    record({
      case: 'minimal next hop (no 8BITMIME, no DSN): generated MIME messages',
      sent: N,
      acknowledged,
      delivered: delivered + bounced,
      lost,
      leaked,
      notes: `${delivered} delivered converted and intact (mailparser), ${bounced} bounced with 5.6.3 as the oracle said (${dsns} DSNs to the sender), content mismatches ${mismatched}; ${Math.round((Date.now() - t0) / 1000)} s; seed ${SEED}`,
    });
    expect(problems).toEqual([]);
    expect(acknowledged).toBe(N);
    expect(dsns).toBe(bounced);
    expect(leaked).toBe(0);
    expect(lost).toBe(0);
  }, 300_000);
});
