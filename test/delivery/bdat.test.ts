/**
 * RFC 3030 CHUNKING with RFC 2920 PIPELINING (issue 17): a small message goes as one batch — [RSET,]
 * MAIL, the RCPTs, `BDAT <n> LAST` and its n octets in one write — and every reply the peer can send to
 * that batch ends in exactly one outcome per recipient, `sent` only when the peer answered the
 * recipient's RCPT and the BDAT with a 2xx after every octet arrived (the peer's own record, kept by
 * test/support/scriptedPeer.ts). Larger messages, peers without both extensions and bodies whose size
 * is not known before they are sent keep DATA. Real sockets on loopback throughout.
 */
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Readable } from 'node:stream';
import { DestinationRun } from '../../src/delivery/deliver.js';
import { BDAT_BATCH, SmtpError, SmtpSession, type SendInput } from '../../src/delivery/smtpClient.js';
import { normalScript, type PeerAction, type PeerTransaction, type ScriptedPeer } from '../support/scriptedPeer.js';
import { stageTimeouts } from '../support/deliveryDeps.js';
import { answer, deliverOnce, expectOneEach, firstTransaction, PEER_TIMEOUT, peerDeps, scriptedPeers, textBody, txs } from '../support/peerDelivery.js';

const peers = scriptedPeers();
afterAll(() => peers.close());
const peer = peers.peer;
const T = PEER_TIMEOUT;
const BOTH = ['PIPELINING', 'CHUNKING', 'ENHANCEDSTATUSCODES'];
const BODY = 'Subject: t\r\n\r\nbody\r\n';
const deps = peerDeps;
/** a message of `body` (declared with its own size) to `recipients`, as the shared deliverOnce */
const deliverText = (p: ScriptedPeer, recipients: string[], run?: DestinationRun, body = BODY) =>
  deliverOnce(p, recipients, run, textBody(body), Buffer.byteLength(body, 'latin1'));

describe('RFC 3030 §4.2 with RFC 2920: a small message in one batch', () => {
  it('RFC 3030 §2 §4.2 MAIL, every RCPT, BDAT <n> LAST with the n octets and a NOOP arrive in one read: CRLF lines, a final CRLF, no transparency dot, no DATA; delivered', async () => {
    const p = await peer(normalScript({ ext: BOTH }));
    const body = 'Subject: dots\n\n.leading dot\r\n..two\rbare CR\nlast line without EOL';
    const out = await deliverText(p, ['a', 'b'], undefined, body);
    expectOneEach(out, ['a', 'b'], p);
    expect(out.map((o) => o.result)).toEqual(['sent', 'sent']);
    const c = p.connections[0]!;
    expect(c.commands).not.toContain('DATA');
    const chunk = 'Subject: dots\r\n\r\n.leading dot\r\n..two\r\nbare CR\r\nlast line without EOL\r\n';
    const batch = c.reads.find((r) => r.some((l) => l.startsWith('MAIL')))!;
    expect(batch.map((l) => l.split(/[ :]/)[0])).toEqual(['MAIL', 'RCPT', 'RCPT', 'BDAT', 'NOOP']);
    expect(batch[3]).toBe(`BDAT ${chunk.length} LAST`);
    expect(txs(p)[0]!.bdat).toBe(true);
    expect(txs(p)[0]!.body!.toString('latin1')).toBe(chunk);
  });

  it('RFC 3030 §4.2 RFC 5321 §4.1.1.5 a reused connection: RSET, MAIL, RCPT, BDAT and NOOP in one read; both messages over one connection', async () => {
    const p = await peer(normalScript({ ext: BOTH }));
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const a = await deliverText(p, ['a'], run);
    const b = await deliverText(p, ['b'], run);
    await run.close();
    expect([...a, ...b].map((o) => o.result)).toEqual(['sent', 'sent']);
    expect(p.connections).toHaveLength(1);
    const batches = p.connections[0]!.reads.filter((r) => r.some((l) => l.startsWith('BDAT'))).map((r) => r.map((l) => l.split(/[ :]/)[0]));
    expect(batches).toEqual([
      ['MAIL', 'RCPT', 'BDAT', 'NOOP'],
      ['RSET', 'MAIL', 'RCPT', 'BDAT', 'NOOP'],
    ]);
    expect(txs(p).map((t) => t.body!.toString('latin1'))).toEqual([BODY, BODY]);
  });

  it.each([
    ['CHUNKING without PIPELINING', ['CHUNKING'], 100],
    ['PIPELINING without CHUNKING', ['PIPELINING'], 100],
    ['a message larger than the 4 KB batch', BOTH, 5000],
  ])('RFC 3030 %s: DATA as before, the same message arrives', async (_what, ext, size) => {
    const p = await peer(normalScript({ ext }));
    const body = `Subject: t\r\n\r\n${`${'x'.repeat(70)}\r\n`.repeat(Math.ceil(size / 72))}`;
    const out = await deliverText(p, ['a'], undefined, body);
    expect(out.map((o) => o.result)).toEqual(['sent']);
    expect(p.connections[0]!.commands).toContain('DATA');
    expect(p.connections[0]!.commands.some((l) => l.startsWith('BDAT'))).toBe(false);
    expect(txs(p)[0]!.body!.toString('latin1')).toBe(`${body}.\r\n`);
  });
});

describe('delivery.discard_ehlo_keywords (Postfix smtp_discard_ehlo_keywords): a broken extension turned off', () => {
  it.each([
    [['CHUNKING'], ['MAIL', 'RCPT', 'DATA']],
    [['PIPELINING'], ['MAIL']],
    [['CHUNKING', 'PIPELINING'], ['MAIL']],
  ])(
    'RFC 3030 RFC 2920 discarding %j: the peer offers both, the relay acts as if it did not (first read of the transaction: %j)',
    async (discard, firstRead) => {
      const p = await peer(normalScript({ ext: BOTH }));
      const run = new DestinationRun(deps(p.port, { discardExtensions: discard }), '[127.0.0.1]');
      const out = await deliverText(p, ['a'], run);
      await run.close();
      expect(out.map((o) => o.result)).toEqual(['sent']);
      const c = p.connections[0]!;
      expect(c.commands.some((l) => l.startsWith('BDAT'))).toBe(false);
      expect(c.reads.find((r) => r.some((l) => l.startsWith('MAIL')))!.map((l) => l.split(/[ :]/)[0])).toEqual(firstRead);
      expect(txs(p)[0]!.body!.toString('latin1')).toBe(`${BODY}.\r\n`);
    },
  );
});

/** One SmtpSession.send of `body` to a peer offering `ext`; the peer's transaction and the verb it used. */
async function sendOne(ext: string[], body: Buffer, size: number | null = body.length): Promise<{ t: PeerTransaction; verb: string; batch: number }> {
  const p = await peer(normalScript({ ext }));
  const sess = await SmtpSession.connect(
    { host: 'peer.test', address: p.host, port: p.port },
    { heloName: 'relay.test', tls: { mode: 'none' }, timeouts: stageTimeouts(T) },
  );
  const input: SendInput = { from: 'a@src.test', recipients: ['b@dst.test'], ...(size !== null ? { size } : {}), body: () => Readable.from([body]) };
  const res = await sess.send(input);
  await sess.quit();
  await p.close();
  expect(res.recipients.map((r) => r.kind)).toEqual(['delivered']);
  const c = p.connections[0]!;
  const t = c.transactions[0]!;
  const verb = c.commands.find((l) => /^(DATA|BDAT)/.test(l))!;
  const lines = c.commands.filter((l) => /^(MAIL|RCPT|BDAT|NOOP)/.test(l));
  return { t, verb, batch: lines.reduce((s, l) => s + Buffer.byteLength(l) + 2, 0) + (verb.startsWith('BDAT') ? t.body!.length : 0) };
}

/** What a DATA body says once its transparency dots and end-of-data line are taken off (RFC 5321 §4.5.2). */
function unstuffed(wire: Buffer): string {
  const s = wire.toString('latin1');
  const lines = s.slice(0, s.length - 3).split('\r\n');
  return lines.map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n');
}

describe('RFC 3030 §2 the choice and the octets', () => {
  it('RFC 3030 §2 the batch limit (BDAT_BATCH): a batch of exactly 4096 octets goes with BDAT, one more with DATA', async () => {
    // MAIL FROM:<a@src.test>, RCPT TO:<b@dst.test>, "BDAT 40xx LAST" and NOOP, each with its CRLF
    const fixed = 'MAIL FROM:<a@src.test>\r\n'.length + 'RCPT TO:<b@dst.test>\r\n'.length + `BDAT ${BDAT_BATCH} LAST\r\n`.length + 'NOOP\r\n'.length;
    const fits = Buffer.from(`${'y'.repeat(BDAT_BATCH - fixed - 2)}\r\n`);
    const a = await sendOne(BOTH, fits);
    expect([a.verb, a.batch]).toEqual([`BDAT ${fits.length} LAST`, BDAT_BATCH]);
    const over = Buffer.from(`${'y'.repeat(BDAT_BATCH - fixed - 1)}\r\n`);
    const b = await sendOne(BOTH, over);
    expect(b.verb).toBe('DATA');
  });

  it('RFC 3030 §2 a body whose size is not known before it is sent (a converted one: SendInput.size unset) goes with DATA', async () => {
    const r = await sendOne(BOTH, Buffer.from(BODY), null);
    expect(r.verb).toBe('DATA');
  });

  it('RFC 3030 §2 any body (CR, LF, dots, 8-bit; sizes around the limit): BDAT exactly when the batch fits, never over the limit, and the peer gets the same message as over DATA', async () => {
    const bodyArb = fc
      .tuple(
        fc.array(fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x2e, 0x41), fc.integer({ min: 1, max: 255 })), { maxLength: 300 }),
        fc.integer({ min: 0, max: 4100 }),
      )
      .map(([head, pad]) => Buffer.concat([Buffer.from(head), Buffer.alloc(pad, 0x7a)]));
    const used = { bdat: 0, data: 0 };
    await fc.assert(
      fc.asyncProperty(bodyArb, async (body) => {
        const viaData = await sendOne(['PIPELINING', '8BITMIME'], body);
        const viaChunking = await sendOne([...BOTH, '8BITMIME'], body);
        expect(viaData.verb).toBe('DATA');
        used[viaChunking.verb.startsWith('BDAT') ? 'bdat' : 'data']++;
        if (viaChunking.verb.startsWith('BDAT')) {
          expect(viaChunking.batch).toBeLessThanOrEqual(BDAT_BATCH);
          expect(viaChunking.t.body!.toString('latin1')).toBe(unstuffed(viaData.t.body!));
        } else {
          expect(viaChunking.verb).toBe('DATA');
          // DATA only when the batch would not have fit: the chunk is the DATA message without dots
          const octets = Buffer.byteLength(unstuffed(viaData.t.body!), 'latin1');
          expect(viaChunking.batch + octets + `BDAT ${octets} LAST\r\nNOOP\r\n`.length).toBeGreaterThan(BDAT_BATCH);
        }
      }),
      { numRuns: 60, seed: 0x3030 },
    );
    // both ways taken, each often
    expect(used.bdat).toBeGreaterThan(15);
    expect(used.data).toBeGreaterThan(5);
  });
});

describe('RFC 3030 §2, RFC 5321 §4.2.1: every reply to the batch', () => {
  it.each([
    ['250 2.0.0 queued', 'sent', true],
    ['251 2.0.0 queued elsewhere', 'sent', true],
    ['451 4.3.0 try later', 'deferred', true],
    ['552 5.3.4 too big', 'bounced', true],
    ['354 more please', 'deferred', false],
    ['334 what', 'deferred', false],
    ['421 4.3.2 closing', 'deferred', false],
  ] as const)('RFC 3030 §2 BDAT LAST answered %j → %s; the connection reused: %s', async (reply, result, reused) => {
    const p = await peer(
      normalScript({
        ext: BOTH,
        answer: firstTransaction({ BDAT: { reply: `${reply}\r\n`, ...(reply.startsWith('421') ? { thenClose: true as const } : {}) } }, 'BDAT'),
      }),
    );
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const out = await deliverText(p, ['a', 'b'], run);
    const next = await deliverText(p, ['c'], run);
    await run.close();
    expectOneEach(out, ['a', 'b'], p);
    expect(out.map((o) => o.result)).toEqual([result, result]);
    if (result !== 'sent') expect(out[0]!.reason).toMatch(/BDAT/);
    expect(next.map((o) => o.result)).toEqual(['sent']);
    expect(p.connections.length).toBe(reused ? 1 : 2);
  });

  it.each([
    ['garbage', { reply: 'hello there\r\n' }],
    ['a close', { close: true }],
    ['silence (the stage timeout)', { stall: true }],
  ] as const)('RFC 5321 §4.2 BDAT LAST answered with %s → deferred, never sent, the connection dropped', async (_what, action) => {
    const p = await peer(normalScript({ ext: BOTH, answer: answer({ BDAT: action as PeerAction }) }));
    const out = await deliverText(p, ['a']);
    expectOneEach(out, ['a'], p);
    expect(out.map((o) => o.result)).toEqual(['deferred']);
    expect(txs(p)[0]!.delivered).toBe(false);
  });

  it('RFC 3030 §4.2 MAIL refused: every recipient has the MAIL reply; the peer discards the pipelined chunk (503), the session goes on', async () => {
    const p = await peer(
      normalScript({
        ext: BOTH,
        answer: firstTransaction({ MAIL: '550 5.7.1 sender refused\r\n', RCPT: '503 5.5.1 MAIL first\r\n', BDAT: '503 5.5.1 no transaction\r\n' }, 'BDAT'),
      }),
    );
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const out = await deliverText(p, ['a', 'b'], run);
    const next = await deliverText(p, ['c'], run);
    await run.close();
    expectOneEach(out, ['a', 'b'], p);
    expect(out.map((o) => [o.result, o.code])).toEqual([
      ['bounced', '5.7.1'],
      ['bounced', '5.7.1'],
    ]);
    expect(next.map((o) => o.result)).toEqual(['sent']);
    expect(p.connections).toHaveLength(1);
  });

  it('RFC 3030 §4.2 no recipient accepted: the BDAT refusal is read, RSET follows, the session goes on; a 2xx to that BDAT (no such reply: the peer is out of step) drops the connection and voids the refusals (deferred)', async () => {
    for (const [bdatReply, connections, results] of [
      ['554 5.5.1 no valid recipients', 1, ['bounced', 'bounced']],
      ['250 2.0.0 ok?', 2, ['deferred', 'deferred']],
    ] as const) {
      const p = await peer(normalScript({ ext: BOTH, answer: firstTransaction({ RCPT: '550 5.1.1 no such user\r\n', BDAT: `${bdatReply}\r\n` }, 'BDAT') }));
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      const out = await deliverText(p, ['a', 'b'], run);
      const next = await deliverText(p, ['c'], run);
      await run.close();
      expectOneEach(out, ['a', 'b'], p);
      expect(out.map((o) => o.result)).toEqual(results);
      expect(out[0]!.reason).toMatch(results[0] === 'bounced' ? /RCPT TO/ : /out of step/);
      expect(next.map((o) => o.result)).toEqual(['sent']);
      expect(p.connections).toHaveLength(connections);
    }
  });

  it.each([
    ['550 5.7.1 rejected', false],
    ['250 2.0.0 queued', true],
  ] as const)(
    'RFC 2920 §3.1 a peer out of step in the batch (the last RCPT answered twice), BDAT then answered %j: the extra reply is never taken for the BDAT reply that delivers (the NOOP behind BDAT, and the reply more after it, expose the shift) → deferred 4.5.0, never sent (a peer that took it gets it again: a duplicate, never a loss)',
    async (bdatReply, peerTook) => {
      let first = true;
      const p = await peer(
        normalScript({
          ext: BOTH,
          answer: (verb, line) => {
            if (verb === 'RCPT' && first && line.includes('<b@')) return { reply: '250 ok\r\n250 ok\r\n' };
            if (verb === 'BDAT' && first) {
              first = false;
              return { reply: `${bdatReply}\r\n` };
            }
            return undefined;
          },
        }),
      );
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      const out = await deliverText(p, ['a', 'b'], run);
      const next = await deliverText(p, ['c'], run);
      await run.close();
      expectOneEach(out, ['a', 'b'], p);
      expect(out.map((o) => [o.result, o.code])).toEqual([
        ['deferred', '4.5.0'],
        ['deferred', '4.5.0'],
      ]);
      // what the peer did with it, and the session that was out of step carries nothing more
      expect(txs(p)[0]!.delivered).toBe(peerTook);
      expect(next.map((o) => o.result)).toEqual(['sent']);
      expect(p.connections).toHaveLength(2);
    },
  );

  it.each([
    ['250 2.0.0 ok', 'sent', 1],
    ['500 5.5.2 what', 'deferred', 2],
    ['354 go on', 'deferred', 2],
  ] as const)(
    'RFC 5321 §4.1.1.9 the NOOP that ends a BDAT batch answered %j → %s (anything but a 2xx: the peer is out of step, nothing it said decides)',
    async (reply, result, connections) => {
      const p = await peer(normalScript({ ext: BOTH, answer: firstTransaction({ NOOP: `${reply}\r\n` }, 'NOOP') }));
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      const out = await deliverText(p, ['a'], run);
      const next = await deliverText(p, ['b'], run);
      await run.close();
      expectOneEach(out, ['a'], p);
      expect(out.map((o) => o.result)).toEqual([result]);
      if (result === 'deferred') expect(out[0]!.reason).toMatch(/NOOP after BDAT .* out of step/);
      expect(next.map((o) => o.result)).toEqual(['sent']);
      expect(p.connections).toHaveLength(connections);
    },
  );

  it('RFC 3030 §4.2 one recipient refused, one accepted: the BDAT reply decides for the accepted one only', async () => {
    const p = await peer(
      normalScript({ ext: BOTH, answer: (verb, line) => (verb === 'RCPT' && line.includes('<b@') ? { reply: '450 4.2.1 busy\r\n' } : undefined) }),
    );
    const out = await deliverText(p, ['a', 'b']);
    expectOneEach(out, ['a', 'b'], p);
    expect(out.map((o) => o.result)).toEqual(['sent', 'deferred']);
  });

  it('RFC 5321 §3.8 RSET answered 421 (the peer is closing) on a reused connection: the batch behind it is no verdict; the message goes over a new connection and is delivered once', async () => {
    let resets = 0;
    const p = await peer(
      normalScript({
        ext: BOTH,
        answer: (verb) => (verb === 'RSET' && resets++ === 0 ? { reply: '421 4.4.2 idle too long\r\n', thenClose: true } : undefined),
      }),
    );
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const a = await deliverText(p, ['a'], run);
    const b = await deliverText(p, ['b'], run);
    await run.close();
    expectOneEach([...a, ...b], ['a', 'b'], p);
    expect([...a, ...b].map((o) => o.result)).toEqual(['sent', 'sent']);
    expect(p.connections).toHaveLength(2);
    expect(
      txs(p)
        .filter((t) => t.delivered)
        .map((t) => t.accepted),
    ).toEqual([['a@[127.0.0.1]'], ['b@[127.0.0.1]']]);
  });

  it('RFC 3030 §2 a session that fails reading the body before the batch: nothing is written, the error names the body', async () => {
    const p = await peer(normalScript({ ext: BOTH }));
    const sess = await SmtpSession.connect(
      { host: 'peer.test', address: p.host, port: p.port },
      { heloName: 'relay.test', tls: { mode: 'none' }, timeouts: stageTimeouts(T) },
    );
    const err = await sess
      .send({
        from: 'a@src.test',
        recipients: ['b@dst.test'],
        size: 10,
        body: () =>
          Readable.from(
            (async function* () {
              yield Buffer.from('Subject: ');
              throw new Error('disk read failed');
            })(),
          ),
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SmtpError);
    expect((err as SmtpError).message).toMatch(/body stream failed: disk read failed/);
    expect(p.connections[0]!.commands.filter((l) => /^(MAIL|RCPT|BDAT)/.test(l))).toEqual([]);
  });
});
