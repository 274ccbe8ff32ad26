/**
 * Issue 13, defects 1–3: every reply a peer can give at each step of a transaction ends in exactly
 * one outcome per recipient, and `sent` only when the peer answered DATA with 354 and the end of
 * data with a 2xx (RFC 5321 §4.2.1, §4.3.2). Real DestinationRun.deliver over real loopback
 * sockets against a scripted peer (test/support/scriptedPeer.ts) that keeps the server's truth.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { DestinationRun } from '../../src/delivery/deliver.js';
import type { DeliveryEvent } from '../../src/delivery/events.js';
import { SmtpError, SmtpSession } from '../../src/delivery/smtpClient.js';
import type { RecipientOutcome } from '../../src/delivery/outcome.js';
import { normalScript, type ConnectionScript, type PeerAction, type PeerConnection, type PeerTransaction, type ScriptedPeer } from '../support/scriptedPeer.js';
import { stageTimeouts } from '../support/deliveryDeps.js';
import { answer, deliverOnce, expectOneEach, PEER_TIMEOUT, peerDeps, scriptedPeers, txs } from '../support/peerDelivery.js';

const peers = scriptedPeers();
afterAll(() => peers.close());
const peer = peers.peer;
const deps = peerDeps;
const T = PEER_TIMEOUT;

describe('issue 13 defects 1–3: one outcome per recipient, sent only after 354 and a 2xx to the end of data', () => {
  it('issue13-1 RFC 5321 §4.2.1 a 2xx to MAIL FROM that is not 250, with PIPELINING: never `sent` without DATA; the transaction goes on (first digit 2 = positive completion)', async () => {
    const p = await peer(normalScript({ ext: ['PIPELINING'], answer: answer({ MAIL: '251 2.1.0 sender ok, will forward\r\n' }) }));
    const out = await deliverOnce(p, ['a', 'b']);
    expectOneEach(out, ['a', 'b'], p);
    // The peer saw DATA, answered 354 and 250 to the dot: delivered is the truth, and the outcome.
    expect(txs(p)).toHaveLength(1);
    expect(txs(p)[0]!.delivered).toBe(true);
    expect(out.map((o) => o.result)).toEqual(['sent', 'sent']);
  });

  it('issue13-1 PIPELINING: MAIL 252 and RCPT 250 but the connection closes before DATA → deferred, not sent', async () => {
    const p = await peer(
      normalScript({ ext: ['PIPELINING'], answer: (verb) => (verb === 'MAIL' ? { reply: '252 ok\r\n' } : verb === 'DATA' ? { close: true } : undefined) }),
    );
    const out = await deliverOnce(p, ['a']);
    expectOneEach(out, ['a'], p);
    expect(out.map((o) => o.result)).toEqual(['deferred']);
  });

  it.each([['250 2.0.0 ok, no body needed'], ['251 2.0.0 forwarded'], ['220 ready'], ['221 bye'], ['334 go on'], ['350 not quite 354']])(
    'issue13-2 RFC 5321 §4.3.2 DATA answered %j: only 354 opens the data phase → deferred (protocol error), never sent',
    async (reply) => {
      const p = await peer(normalScript({ ext: ['PIPELINING', 'ENHANCEDSTATUSCODES'], answer: answer({ DATA: `${reply}\r\n` }) }));
      const out = await deliverOnce(p, ['a', 'b']);
      expectOneEach(out, ['a', 'b'], p);
      expect(out.map((o) => o.result)).toEqual(['deferred', 'deferred']);
      expect(out[0]!.code).toBe('4.5.0');
      expect(out[0]!.reason).toMatch(/DATA/);
      expect(txs(p).some((t) => t.dot)).toBe(false); // no body went out
    },
  );

  it('issue13-2 RFC 5321 §4.3.2 a 3xx to the end of data is no delivery → deferred; a 4xx deferred, a 5xx bounced', async () => {
    for (const [reply, result] of [
      ['354 again?', 'deferred'],
      ['452 4.3.1 full', 'deferred'],
      ['554 5.6.0 rejected', 'bounced'],
    ] as const) {
      const p = await peer(normalScript({ endOfData: () => ({ reply: `${reply}\r\n` }) }));
      const out = await deliverOnce(p, ['a']);
      expectOneEach(out, ['a'], p);
      expect({ reply, result: out[0]!.result }).toEqual({ reply, result });
    }
  });

  it('issue13-3 RFC 5321 §4.2.1 MAIL answered 251 by a peer without PIPELINING: exactly one outcome per recipient', async () => {
    const p = await peer(normalScript({ answer: answer({ MAIL: '251 2.1.0 ok\r\n' }) }));
    const out = await deliverOnce(p, ['a', 'b', 'c']);
    expectOneEach(out, ['a', 'b', 'c'], p);
    expect(out.map((o) => o.result)).toEqual(['sent', 'sent', 'sent']);
  });

  it('issue13-3 MAIL answered with a 3xx (not allowed for MAIL), with and without PIPELINING → every recipient deferred (protocol error), no body (DATA only inside the pipelined batch)', async () => {
    for (const ext of [[], ['PIPELINING']]) {
      const p = await peer(normalScript({ ext, answer: answer({ MAIL: '354 what?\r\n' }) }));
      const out = await deliverOnce(p, ['a', 'b']);
      expectOneEach(out, ['a', 'b'], p);
      expect(out.map((o) => [o.result, o.code])).toEqual([
        ['deferred', '4.5.0'],
        ['deferred', '4.5.0'],
      ]);
      // RFC 2920 §3.1: with PIPELINING the DATA went in MAIL's batch; without, the client never got that far
      if (ext.length) expect(p.connections[0]!.reads.find((r) => r.some((l) => l.startsWith('MAIL')))?.at(-1)).toBe('DATA');
      else expect(p.connections[0]!.commands).not.toContain('DATA');
      expect(p.connections[0]!.transactions.some((t) => t.dot || (t.body?.length ?? 0) > 0)).toBe(false);
    }
  });

  it("issue13-3 RCPT answered with a 3xx: that recipient deferred, the transaction is abandoned before DATA (the peer's view of it is unknown)", async () => {
    const p = await peer(normalScript({ answer: (verb, line) => (verb === 'RCPT' && line.includes('<b@') ? { reply: '354 eh\r\n' } : undefined) }));
    const out = await deliverOnce(p, ['a', 'b', 'c']);
    expectOneEach(out, ['a', 'b', 'c'], p);
    expect(out.every((o) => o.result === 'deferred')).toBe(true);
    expect(p.connections[0]!.commands).not.toContain('DATA');
  });

  it("RFC 5321 §4.2.1 MAIL 4xx / 5xx: every recipient deferred / bounced with the peer's words", async () => {
    for (const [reply, result] of [
      ['451 4.3.0 try later', 'deferred'],
      ['553 5.1.8 bad sender', 'bounced'],
    ] as const) {
      for (const ext of [[], ['PIPELINING']]) {
        const p = await peer(normalScript({ ext, answer: answer({ MAIL: `${reply}\r\n`, RCPT: '503 5.5.1 no MAIL\r\n' }) }));
        const out = await deliverOnce(p, ['a', 'b']);
        expectOneEach(out, ['a', 'b'], p);
        expect(out.map((o) => o.result)).toEqual([result, result]);
        expect(out[0]!.reason).toContain(reply);
        expect(out[0]!.reason).toContain('MAIL FROM');
      }
    }
  });

  it("RFC 5321 §4.2.1 RCPT 2xx other than 250 (251, 252) counts as accepted; a 4xx/5xx is that recipient's own outcome", async () => {
    const p = await peer(
      normalScript({
        ext: ['PIPELINING'],
        answer: (verb, line) => {
          if (verb !== 'RCPT') return undefined;
          const who = /<(\w)@/.exec(line)![1];
          return {
            reply:
              { a: '251 2.1.5 will forward\r\n', b: '252 2.1.5 cannot verify, will try\r\n', c: '450 4.2.1 busy\r\n', d: '550 5.1.1 no such user\r\n' }[who!] ??
              '250 ok\r\n',
          };
        },
      }),
    );
    const out = await deliverOnce(p, ['a', 'b', 'c', 'd']);
    expectOneEach(out, ['a', 'b', 'c', 'd'], p);
    expect(out.map((o) => o.result)).toEqual(['sent', 'sent', 'deferred', 'bounced']);
    expect(txs(p)[0]!.rcpts).toHaveLength(4);
  });

  it('RFC 5321 §4.2 multi-line replies with changing codes, garbage, out-of-range codes, close and stall at each step → deferred, never sent', async () => {
    const faults: PeerAction[] = [
      { reply: '250-ok\r\n354 mixed\r\n' },
      { reply: 'garbage line\r\n' },
      { reply: '199 too low\r\n' },
      { reply: '650 too high\r\n' },
      { close: true },
      { stall: true },
    ];
    for (const step of ['MAIL', 'RCPT', 'DATA', 'dot']) {
      for (const f of faults) {
        const p = await peer(normalScript({ answer: (verb) => (verb === step ? f : undefined), endOfData: () => (step === 'dot' ? f : undefined) }));
        const run = new DestinationRun(deps(p.port, { timeouts: { ...stageTimeouts(300), connect: T, greeting: T, ehlo: T, starttls: T } }), '[127.0.0.1]');
        const out = await deliverOnce(p, ['a', 'b'], run);
        await run.close();
        expectOneEach(out, ['a', 'b'], p);
        expect({ step, f, results: out.map((o) => o.result) }).toEqual({ step, f, results: ['deferred', 'deferred'] });
      }
    }
  }, 60_000);

  it('RFC 5321 §4.5.3.1.10 552 to RCPT is the old "too many recipients": treated as 452, deferred (4.x.x), not bounced', async () => {
    const p = await peer(
      normalScript({ answer: (verb, line) => (verb === 'RCPT' && line.includes('<b@') ? { reply: '552 5.5.3 too many recipients\r\n' } : undefined) }),
    );
    const out = await deliverOnce(p, ['a', 'b']);
    expectOneEach(out, ['a', 'b'], p);
    expect(out.map((o) => [o.result, o.code])).toEqual([
      ['sent', '2.0.0'],
      ['deferred', '4.5.3'],
    ]);
  });

  it('RFC 5321 §4.2 a peer out of step — MAIL answered twice, or a reply before the end-of-data dot — is never read as success: deferred 4.5.0', async () => {
    const twice = await peer(normalScript({ answer: answer({ MAIL: '250 ok\r\n250 ok\r\n' }) }));
    const a = await deliverOnce(twice, ['a']);
    expectOneEach(a, ['a'], twice);
    expect(a.map((o) => [o.result, o.code])).toEqual([['deferred', '4.5.0']]);
    expect(twice.connections[0]!.commands.filter((c) => c.startsWith('RCPT'))).toEqual([]);
    const early = await peer(normalScript({ answer: answer({ DATA: '354 go\r\n250 2.0.0 queued before the body\r\n' }) }));
    const b = await deliverOnce(early, ['a']);
    expectOneEach(b, ['a'], early);
    expect(b.map((o) => [o.result, o.code])).toEqual([['deferred', '4.5.0']]);
    expect(txs(early)[0]!.dot).toBe(false); // the dot was never sent
  });

  it('RFC 5321 §3.8 421 to RCPT: the peer is closing, so the transaction ends there (every recipient deferred, no DATA) and the connection is not reused', async () => {
    const p = await peer(
      normalScript({ answer: (verb, line) => (verb === 'RCPT' && line.includes('<b@') ? { reply: '421 4.3.2 shutting down\r\n' } : undefined) }),
    );
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const first = await deliverOnce(p, ['a', 'b'], run);
    const second = await deliverOnce(p, ['c'], run);
    await run.close();
    expect([...first, ...second].map((o) => [o.address.split('@')[0], o.result])).toEqual([
      ['a', 'deferred'],
      ['b', 'deferred'],
      ['c', 'sent'],
    ]);
    expect(first[0]!.reason).toContain('421 4.3.2 shutting down (in reply to RCPT TO)');
    expect(p.connections).toHaveLength(2);
    expect(p.connections[0]!.commands).not.toContain('DATA');
    expect(p.connections[0]!.commands).not.toContain('RSET');
  });

  it('RFC 5321 §4.1.1.5 RSET refused on a reused connection: the next message goes over a new connection and is delivered', async () => {
    const p = await peer(normalScript({ answer: (verb) => (verb === 'RSET' ? { reply: '500 what\r\n' } : undefined) }));
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const a = await deliverOnce(p, ['a'], run);
    const b = await deliverOnce(p, ['b'], run);
    await run.close();
    expect([...a, ...b].map((o) => o.result)).toEqual(['sent', 'sent']);
    expect(p.connections).toHaveLength(2);
  });
});

/** The reset-failed events of a run, as [stage, failure kind]. */
function resetFailures(events: DeliveryEvent[]): [string, string][] {
  return events.flatMap((e) => (e.kind === 'reset-failed' ? [[e.error.stage, e.error.failure.kind] as [string, string]] : []));
}

/** Two messages over one DestinationRun (the second one reuses the first one's connection); the events it emitted. */
async function twoMessages(p: ScriptedPeer): Promise<{ first: RecipientOutcome[]; second: RecipientOutcome[]; events: DeliveryEvent[] }> {
  const events: DeliveryEvent[] = [];
  const run = new DestinationRun(deps(p.port, { subscribers: [(e) => void events.push(e)] }), '[127.0.0.1]');
  const first = await deliverOnce(p, ['a'], run);
  const second = await deliverOnce(p, ['b', 'c'], run);
  await run.close();
  expectOneEach(first, ['a'], p);
  expectOneEach(second, ['b', 'c'], p);
  return { first, second, events };
}

describe('RFC 5321 §4.1.1.5 / RFC 2920 §3.1: the RSET before a reused connection’s next transaction', () => {
  it('RFC 2920 §3.1 with PIPELINING the RSET goes in one write with MAIL, the RCPTs and DATA: the peer answers RSET only once it has read them, and both messages go over one connection', async () => {
    // The peer holds back its RSET and MAIL replies until the first RCPT has arrived: a client that waited
    // for the RSET reply before sending MAIL would wait until its timer, then open a second connection.
    const held = new Set<number>();
    const p = await peer(
      normalScript({
        ext: ['PIPELINING'],
        answer: (verb, _line, c) => {
          if (verb === 'RSET') return (held.add(c.id), { reply: '' });
          if (verb === 'MAIL' && held.has(c.id)) return { reply: '' };
          if (verb === 'RCPT' && held.delete(c.id)) return { reply: '250 2.0.0 reset\r\n250 2.1.0 sender ok\r\n250 2.1.5 ok\r\n' };
          return undefined;
        },
      }),
    );
    const { first, second, events } = await twoMessages(p);
    expect([...first, ...second].map((o) => o.result)).toEqual(['sent', 'sent', 'sent']);
    expect(p.connections).toHaveLength(1);
    const c = p.connections[0]!;
    expect(c.commands.map((l) => l.split(/[ :]/)[0])).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'RCPT', 'DATA', 'QUIT']);
    // the first transaction of the connection has no RSET; the second's RSET, MAIL, RCPTs and DATA arrived in one read
    expect(c.reads.find((r) => r.includes('RSET'))?.map((l) => l.split(/[ :]/)[0])).toEqual(['RSET', 'MAIL', 'RCPT', 'RCPT', 'DATA']);
    expect(resetFailures(events)).toEqual([]);
  });

  it('RFC 5321 §4.1.1.5 without PIPELINING the RSET goes alone and its reply is awaited before MAIL', async () => {
    const p = await peer(normalScript());
    const { first, second } = await twoMessages(p);
    expect([...first, ...second].map((o) => o.result)).toEqual(['sent', 'sent', 'sent']);
    expect(p.connections).toHaveLength(1);
    const c = p.connections[0]!;
    expect(c.commands.map((l) => l.split(/[ :]/)[0])).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', 'RSET', 'MAIL', 'RCPT', 'RCPT', 'DATA', 'QUIT']);
    // each command in a read of its own: the client waited for every reply (RFC 5321 without RFC 2920)
    expect(c.reads.every((r) => r.length === 1)).toBe(true);
  });

  it.each([[true], [false]])(
    'RFC 5321 §4.1.1.5 every later transaction on the connection gets its RSET, the third as the second (PIPELINING %s)',
    async (pipelining) => {
      const p = await peer(normalScript({ ext: pipelining ? ['PIPELINING'] : [] }));
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      for (const who of ['a', 'b', 'c', 'd']) expect((await deliverOnce(p, [who], run)).map((o) => o.result)).toEqual(['sent']);
      await run.close();
      expect(p.connections).toHaveLength(1);
      const verbs = p.connections[0]!.commands.map((l) => l.split(/[ :]/)[0]);
      const later = ['RSET', 'MAIL', 'RCPT', 'DATA'];
      expect(verbs).toEqual(['EHLO', 'MAIL', 'RCPT', 'DATA', ...later, ...later, ...later, 'QUIT']);
    },
  );

  it.each([[true], [false]])('RFC 5321 §4.2.1 a 2xx other than 250 to RSET completes it (PIPELINING %s): same connection', async (pipelining) => {
    const p = await peer(normalScript({ ext: pipelining ? ['PIPELINING'] : [], answer: answer({ RSET: '200 2.0.0 flushed\r\n' }) }));
    const { first, second, events } = await twoMessages(p);
    expect([...first, ...second].map((o) => o.result)).toEqual(['sent', 'sent', 'sent']);
    expect(p.connections).toHaveLength(1);
    expect(resetFailures(events)).toEqual([]);
  });

  /** Each failure of the RSET, and the failure kind the client gives it (stage `rset` always). */
  const failures: [string, PeerAction, string][] = [
    ['421 (closing)', { reply: '421 4.3.2 shutting down\r\n' }, 'refused'],
    ['451', { reply: '451 4.3.0 try later\r\n' }, 'refused'],
    ['500', { reply: '500 5.5.1 what\r\n' }, 'refused'],
    ['554', { reply: '554 5.3.0 no\r\n' }, 'refused'],
    ['a 3xx', { reply: '354 go ahead\r\n' }, 'protocol'],
    ['garbage', { reply: 'hello there\r\n' }, 'protocol'],
    ['a multi-line reply with changing codes', { reply: '250-ok\r\n550 no\r\n' }, 'protocol'],
    ['close', { close: true }, 'connection'],
    ['no reply (stage timeout)', { stall: true }, 'timeout'],
  ];
  for (const pipelining of [true, false]) {
    it.each(failures)(
      `RFC 5321 §4.1.1.5 RSET on a reused connection answered %s (PIPELINING ${pipelining}): nothing of the message was accepted, the replies pipelined behind it are no verdict, and it goes over a new connection, delivered once`,
      async (_what, action, kind) => {
        // On the first connection, after its RSET, the peer would refuse MAIL and every RCPT for good: a
        // client that read those replies would bounce the message.
        const p = await peer(
          normalScript({
            ext: pipelining ? ['PIPELINING'] : [],
            answer: (verb, _line, c) => {
              if (c.id !== 0 || !c.commands.includes('RSET')) return undefined;
              if (verb === 'RSET') return action;
              if (verb === 'MAIL' || verb === 'RCPT') return { reply: '550 5.7.1 refused for good\r\n' };
              return undefined;
            },
          }),
        );
        const { first, second, events } = await twoMessages(p);
        expect([...first, ...second].map((o) => o.result)).toEqual(['sent', 'sent', 'sent']);
        expect(p.connections).toHaveLength(2);
        const [old, fresh] = p.connections as [PeerConnection, PeerConnection];
        const afterRset = old.commands.slice(old.commands.indexOf('RSET'));
        expect(afterRset.map((l) => l.split(/[ :]/)[0])).toEqual(
          // with PIPELINING the peer read the whole batch, DATA included (unless it closed or stalled at RSET); without, nothing after RSET
          pipelining && 'reply' in action ? ['RSET', 'MAIL', 'RCPT', 'RCPT', 'DATA'] : ['RSET'],
        );
        // no byte of the second message's body reached the first connection (this peer even answers the pipelined
        // DATA with 354 after refusing every RCPT; the client had dropped the connection at the RSET's reply)
        expect(old.transactions.filter((t) => t.dot || (t.body?.length ?? 0) > 0)).toHaveLength(1); // the first message's only
        // the new connection's first transaction: no RSET
        expect(fresh.commands.map((l) => l.split(/[ :]/)[0])).toEqual(['EHLO', 'MAIL', 'RCPT', 'RCPT', 'DATA', 'QUIT']);
        expect(resetFailures(events)).toEqual([['rset', kind]]);
      },
    );
  }

  it.each([[true], [false]])(
    'RFC 5321 §4.1.1.5 RSET refused and the new connection cannot be opened (PIPELINING %s): each recipient deferred once, like any failed open; nothing delivered twice',
    async (pipelining) => {
      const refusing = normalScript({ ext: pipelining ? ['PIPELINING'] : [], answer: answer({ RSET: '421 4.3.2 shutting down\r\n' }) });
      const busy = normalScript({ greeting: { reply: '421 4.3.2 too busy\r\n' } });
      const p = await peer((c: PeerConnection): ConnectionScript => (c.id === 0 ? refusing() : busy()));
      const { first, second, events } = await twoMessages(p);
      expect(first.map((o) => o.result)).toEqual(['sent']);
      expect(second.map((o) => [o.result, o.relay])).toEqual([
        ['deferred', undefined],
        ['deferred', undefined],
      ]);
      expect(second[0]!.reason).toContain('421 4.3.2 too busy');
      expect(p.connections).toHaveLength(2);
      expect(txs(p).filter((t) => t.delivered)).toHaveLength(1);
      expect(resetFailures(events)).toEqual([['rset', 'refused']]);
    },
  );

  it('RFC 5321 §3.8 a reused connection the peer closed while idle (421 notice, then FIN): found before anything is sent, as a failed RSET (stage rset), and the message goes over a new connection', async () => {
    const p = await peer(
      normalScript({
        ext: ['PIPELINING'],
        endOfData: (c, t) =>
          c.id === 0 && t.from.startsWith('idle') ? { reply: '250 2.0.0 queued\r\n421 4.4.2 idle timeout\r\n', thenClose: true } : undefined,
      }),
    );
    // The session on its own: once the close is seen, the next send throws stage `rset` before writing anything.
    const sess = await SmtpSession.connect(
      { host: 'peer.test', address: '127.0.0.1', port: p.port },
      { heloName: 'relay.test', tls: { mode: 'none' }, timeouts: deps(p.port).timeouts },
    );
    const body = () => Readable.from([Buffer.from('Subject: t\r\n\r\nbody\r\n')]);
    const first = await sess.send({ from: 'idle@sender.test', recipients: ['a@[127.0.0.1]'], body });
    expect(first.recipients.map((v) => v.kind)).toEqual(['delivered']);
    await new Promise<void>((resolve) => {
      const wait = (): unknown => (sess.usable ? setImmediate(wait) : resolve());
      wait();
    });
    const err = await sess.send({ from: 'x@sender.test', recipients: ['b@[127.0.0.1]'], body }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SmtpError);
    // the FIN seen: `connection`; only the 421 read yet: `protocol` (unsolicited data)
    expect(['rset:connection', 'rset:protocol']).toContain(`${(err as SmtpError).stage}:${(err as SmtpError).failure.kind}`);
    expect(p.connections[0]!.commands.filter((l) => /^(RSET|MAIL)/.test(l))).toHaveLength(1);
    await sess.quit();
  });
});

describe('issue 19: the body decision before MAIL is an outcome like any other', () => {
  it('RFC 6152 §3 an 8-bit header to a peer without 8BITMIME: every recipient bounced 5.6.3 once, no MAIL sent, and the same connection delivers the next message', async () => {
    const p = await peer(normalScript({ ext: ['PIPELINING'] }));
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const refused = await deliverOnce(p, ['a', 'b', 'c'], run, () => Readable.from([Buffer.from('Subject: Grüße\r\n\r\nbody\r\n')]));
    const next = await deliverOnce(p, ['d'], run);
    await run.close();
    expectOneEach(refused, ['a', 'b', 'c'], p);
    expect(refused.map((o) => [o.result, o.code])).toEqual([
      ['bounced', '5.6.3'],
      ['bounced', '5.6.3'],
      ['bounced', '5.6.3'],
    ]);
    expect(refused[0]!.reason).toMatch(/8-bit octets .*cannot be converted/);
    expect(next.map((o) => o.result)).toEqual(['sent']);
    expect(p.connections).toHaveLength(1);
    expect(p.connections[0]!.commands.filter((l) => l.startsWith('MAIL'))).toHaveLength(1); // the second message's only
  });

  it('the message cannot be read for the decision (a format 1 body that fails while scanned): every recipient deferred 4.3.0 once, nothing sent, the connection kept', async () => {
    const p = await peer(normalScript({ ext: ['PIPELINING'] }));
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const broken = () =>
      new Readable({
        read() {
          this.destroy(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' }));
        },
      });
    const failed = await deliverOnce(p, ['a', 'b'], run, broken);
    const next = await deliverOnce(p, ['c'], run);
    await run.close();
    expectOneEach(failed, ['a', 'b'], p);
    expect(failed.map((o) => [o.result, o.code])).toEqual([
      ['deferred', '4.3.0'],
      ['deferred', '4.3.0'],
    ]);
    expect(failed[0]!.reason).toContain('EIO');
    expect(next.map((o) => o.result)).toEqual(['sent']);
    expect(p.connections).toHaveLength(1);
  });
});

describe('RFC 2920 §3.1: DATA ends the pipelined batch; the body waits for its 354 and for an accepted recipient', () => {
  it('RFC 2920 §3.1 with PIPELINING, MAIL, the RCPTs and DATA arrive in one read: the peer answers nothing until DATA has arrived, and the body comes only after the 354', async () => {
    // A client that waited for the RCPT replies before DATA would wait here until its timer and defer.
    const p = await peer(
      normalScript({
        ext: ['PIPELINING'],
        answer: (verb) =>
          verb === 'MAIL' ? { reply: '250 2.1.0 ok\r\n', hold: true } : verb === 'RCPT' ? { reply: '250 2.1.5 ok\r\n', hold: true } : undefined,
      }),
    );
    const out = await deliverOnce(p, ['a', 'b']);
    expectOneEach(out, ['a', 'b'], p);
    expect(out.map((o) => o.result)).toEqual(['sent', 'sent']);
    const c = p.connections[0]!;
    const batch = c.reads.find((r) => r.some((l) => l.startsWith('MAIL')))!;
    expect(batch.map((l) => l.split(/[ :]/)[0])).toEqual(['MAIL', 'RCPT', 'RCPT', 'DATA']);
    expect(c.transactions[0]!.body?.toString()).toContain('body');
  });

  it.each([
    ['every RCPT refused', { RCPT: '550 5.1.1 no such user\r\n' }, ['bounced', 'bounced']],
    ['every RCPT refused, one for now', { RCPT: '450 4.2.0 later\r\n' }, ['deferred', 'deferred']],
    ['MAIL refused', { MAIL: '550 5.7.1 not from you\r\n', RCPT: '503 5.5.1 no MAIL\r\n' }, ['bounced', 'bounced']],
  ])(
    'RFC 2920 §3.1 %s and the pipelined DATA answered 354 anyway (RFC 5321 §3.3 only lets the server refuse it): a lone dot, not one body byte, the refusals are the outcomes, and the connection carries the next message',
    async (_what, over, results) => {
      let dirty = true; // the first transaction of each connection is refused; later ones are normal
      const p = await peer(
        normalScript({
          ext: ['PIPELINING'],
          answer: (verb) => {
            if (verb === 'RSET') dirty = false;
            if (!dirty) return undefined;
            if (verb === 'DATA') return { reply: '354 go ahead anyway\r\n' };
            return answer(over)(verb);
          },
        }),
      );
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      const first = await deliverOnce(p, ['a', 'b'], run);
      const second = await deliverOnce(p, ['c'], run);
      await run.close();
      expectOneEach(first, ['a', 'b'], p);
      expect(first.map((o) => o.result)).toEqual(results);
      expect(second.map((o) => o.result)).toEqual(['sent']);
      expect(p.connections).toHaveLength(1);
      const [refused, next] = p.connections[0]!.transactions as [PeerTransaction, PeerTransaction];
      // the body as received, its terminating dot included: the dot alone
      expect({ dot: refused.dot, body: refused.body?.toString() }).toEqual({ dot: true, body: '.\r\n' });
      expect(next.delivered).toBe(true);
      expect(next.rcpts).toEqual(['c@[127.0.0.1]']);
    },
  );

  it.each([
    ['garbage', { reply: 'what\r\n' }, 'deferred'],
    ['close', { close: true }, 'bounced'],
  ] as [string, PeerAction, string][])(
    'RFC 2920 §3.1 every RCPT refused, DATA answered 354 and the lone dot answered with %s: the refusals stand after a close, and are void after garbage (a peer that garbles a reply may have miscounted them: deferred); the connection is dropped, the next message goes over a new one, delivered once',
    async (_what, dotAction, result) => {
      const p = await peer(
        normalScript({
          ext: ['PIPELINING'],
          answer: (verb, _line, c) =>
            c.id === 0 && verb === 'RCPT' ? { reply: '550 5.1.1 no\r\n' } : c.id === 0 && verb === 'DATA' ? { reply: '354 go\r\n' } : undefined,
          endOfData: (c) => (c.id === 0 ? dotAction : undefined),
        }),
      );
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      const first = await deliverOnce(p, ['a'], run);
      const second = await deliverOnce(p, ['b'], run);
      await run.close();
      expect(first.map((o) => o.result)).toEqual([result]);
      expect(second.map((o) => o.result)).toEqual(['sent']);
      expect(p.connections).toHaveLength(2);
      expect(p.connections[0]!.transactions.map((t) => [t.dot, t.body?.toString()])).toEqual([[true, '.\r\n']]);
      expect(txs(p).filter((t) => t.delivered && t.rcpts.includes('b@[127.0.0.1]'))).toHaveLength(1);
    },
  );
});

describe('RFC 2920 §3.1 / RFC 5321 §4.3.2, §3.8: every reply to the pipelined DATA (and to the lone dot) when nothing was accepted', () => {
  /** The first transaction of connection 0: MAIL's reply, one per RCPT (a, b), and the refusals they are. */
  const batches: [string, { MAIL: string; a: string; b: string }, string[]][] = [
    ['MAIL 550', { MAIL: '550 5.7.1 not from you\r\n', a: '503 5.5.1 no MAIL\r\n', b: '503 5.5.1 no MAIL\r\n' }, ['bounced', 'bounced']],
    ['MAIL 451', { MAIL: '451 4.3.0 later\r\n', a: '503 5.5.1 no MAIL\r\n', b: '503 5.5.1 no MAIL\r\n' }, ['deferred', 'deferred']],
    ['every RCPT refused', { MAIL: '250 2.1.0 ok\r\n', a: '550 5.1.1 no such user\r\n', b: '450 4.2.1 busy\r\n' }, ['bounced', 'deferred']],
    ['every RCPT refused, one 552', { MAIL: '250 2.1.0 ok\r\n', a: '550 5.1.1 no such user\r\n', b: '552 5.5.3 too many\r\n' }, ['bounced', 'deferred']],
    [
      'MAIL 421 (and 421 to all after it)',
      { MAIL: '421 4.3.2 shutting down\r\n', a: '421 4.3.2 shutting down\r\n', b: '421 4.3.2 shutting down\r\n' },
      ['deferred', 'deferred'],
    ],
    ['MAIL 550, RCPT 421', { MAIL: '550 5.7.1 not from you\r\n', a: '421 4.3.2 shutting down\r\n', b: '503 5.5.1 no MAIL\r\n' }, ['bounced', 'bounced']],
    ['RCPT 550 then 421', { MAIL: '250 2.1.0 ok\r\n', a: '550 5.1.1 no such user\r\n', b: '421 4.3.2 shutting down\r\n' }, ['bounced', 'deferred']],
  ];
  /** [name, DATA's reply, the state it leaves: clean (the session may go on) or not] */
  const dataReplies: [string, PeerAction, boolean][] = [
    ['503', { reply: '503 5.5.1 no valid recipients\r\n' }, true],
    ['554 multi-line', { reply: '554-5.5.1 no valid\r\n554 5.5.1 recipients\r\n' }, true],
    ['451', { reply: '451 4.3.0 later\r\n' }, true],
    ['421', { reply: '421 4.3.2 shutting down\r\n' }, false],
    ['250 (answers no DATA: out of step)', { reply: '250 2.0.0 ok\r\n' }, false],
    ['355 (a 3xx that is not 354: the peer may wait for a body)', { reply: '355 go on\r\n' }, false],
    ['garbage', { reply: 'what\r\n' }, false],
    ['close', { close: true }, false],
  ];
  const dotReplies: [string, PeerAction, boolean][] = [
    ['250', { reply: '250 2.0.0 nothing to do\r\n' }, true],
    ['554', { reply: '554 5.5.1 no valid recipients\r\n' }, true],
    ['451', { reply: '451 4.3.0 later\r\n' }, true],
    ['354 (a 3xx: the peer still waits for something)', { reply: '354 more?\r\n' }, false],
    ['421', { reply: '421 4.3.2 shutting down\r\n' }, false],
    ['garbage', { reply: 'what\r\n' }, false],
    ['close', { close: true }, false],
  ];
  const cases: [string, string, string, (typeof batches)[number][1], string[], PeerAction, PeerAction | undefined, boolean][] = [];
  /** a reply no command of the batch can get (a 2xx or a 3xx other than 354 to DATA, a 3xx to the dot): the peer is out of step */
  const outOfStep = (name: string) => /^(250 \(answers|355 |354 \(a 3xx|garbage)/.test(name);
  // out of step, no reply of the batch decides anything: every recipient deferred (unless a 421 ended it first)
  const judged = (closing: boolean, name: string, results: string[]) => (!closing && outOfStep(name) ? results.map(() => 'deferred') : results);
  for (const [bn, batch, results] of batches) {
    const closing = Object.values(batch).some((r) => r.startsWith('421'));
    for (const [dn, d, dClean] of dataReplies) cases.push([bn, dn, '-', batch, judged(closing, dn, results), d, undefined, !closing && dClean]);
    for (const [xn, x, xClean] of dotReplies)
      cases.push([bn, '354', xn, batch, judged(closing, xn, results), { reply: '354 go ahead anyway\r\n' }, x, !closing && xClean]);
  }

  it.each(cases)(
    'RFC 2920 §3.1 %s, DATA answered %s, the lone dot answered %s: the refusals are the outcomes (all deferred when a reply shows the peer out of step: then none decides), no body byte (a lone dot only after a 354 and no 421), the connection goes on only when the reply left it in step, and after a 421 nothing more is sent (RFC 5321 §3.8)',
    async (_b, _d, _x, batch, results, dataAction, dotAction, clean) => {
      const first = (c: PeerConnection): boolean => c.id === 0 && c.transactions.length <= 1;
      const p = await peer(
        normalScript({
          ext: ['PIPELINING', 'ENHANCEDSTATUSCODES'],
          answer: (verb, line, c) => {
            if (!first(c) || verb === 'EHLO' || verb === 'RSET' || verb === 'QUIT') return undefined;
            if (verb === 'MAIL') return { reply: batch.MAIL };
            if (verb === 'RCPT') return { reply: line.includes('<a@') ? batch.a : batch.b };
            if (verb === 'DATA') return dataAction;
            return undefined;
          },
          endOfData: (c, t) => (c.id === 0 && t === c.transactions[0] ? dotAction : undefined),
        }),
      );
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      const out = await deliverOnce(p, ['a', 'b'], run);
      const next = await deliverOnce(p, ['c'], run);
      await run.close();
      expectOneEach(out, ['a', 'b'], p);
      expect(out.map((o) => o.result)).toEqual(results);
      // the next message is delivered once, over this connection only when it was left in step
      expect(next.map((o) => o.result)).toEqual(['sent']);
      expect(txs(p).filter((t) => t.delivered && t.rcpts.includes('c@[127.0.0.1]'))).toHaveLength(1);
      expect(p.connections).toHaveLength(clean ? 1 : 2);
      const c0 = p.connections[0]!;
      const refused = c0.transactions[0]!;
      // never a body byte: at most the lone dot, and that only after a 354 read before any 421
      const lone =
        'reply' in dataAction &&
        dataAction.reply.startsWith('354') &&
        !batch.MAIL.startsWith('421') &&
        !batch.a.startsWith('421') &&
        !batch.b.startsWith('421');
      expect({ dot: refused.dot, body: refused.body?.toString() ?? '' }).toEqual(lone ? { dot: true, body: '.\r\n' } : { dot: false, body: '' });
      // what the client sent on connection 0 after the batch: the next message over it (clean), else nothing
      const after = c0.commands.slice(c0.commands.indexOf('DATA') + 1).map((l) => l.split(/[ :]/)[0]);
      expect(after).toEqual(clean ? ['RSET', 'MAIL', 'RCPT', 'DATA', 'QUIT'] : []);
    },
  );

  it.each([
    ['MAIL refused, DATA stalls', { MAIL: '550 5.7.1 not from you\r\n', RCPT: '503 5.5.1 no MAIL\r\n' }, { stall: true }, undefined, ['bounced']],
    ['every RCPT refused, DATA 354, the lone dot stalls', { RCPT: '550 5.1.1 no\r\n' }, { reply: '354 go\r\n' }, { stall: true }, ['bounced']],
  ] as [string, Record<string, string>, PeerAction, PeerAction | undefined, string[]][])(
    'RFC 2920 §3.1 %s: the stage timeout ends the wait, the refusals stand, no body byte, the next message goes over a new connection',
    async (_what, over, dataAction, dotAction, results) => {
      const p = await peer(
        normalScript({
          ext: ['PIPELINING'],
          answer: (verb, _line, c) => (c.id !== 0 ? undefined : verb === 'DATA' ? dataAction : answer(over)(verb)),
          endOfData: (c) => (c.id === 0 ? dotAction : undefined),
        }),
      );
      const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
      const first = await deliverOnce(p, ['a'], run);
      const second = await deliverOnce(p, ['b'], run);
      await run.close();
      expectOneEach(first, ['a'], p);
      expect(first.map((o) => o.result)).toEqual(results);
      expect(second.map((o) => o.result)).toEqual(['sent']);
      expect(p.connections).toHaveLength(2);
      const refused = p.connections[0]!.transactions[0]!;
      expect(refused.body?.toString() ?? '').toBe(dotAction ? '.\r\n' : '');
    },
  );

  it('RFC 2920 §3.1 a peer out of step in the batch (the last RCPT answered twice, then 354 to DATA): the extra reply is read as the DATA reply, a 2xx that opens no data phase → deferred 4.5.0, no body byte, the connection dropped', async () => {
    const p = await peer(
      normalScript({
        ext: ['PIPELINING', 'ENHANCEDSTATUSCODES'],
        answer: (verb, line) => (verb === 'RCPT' && line.includes('<b@') ? { reply: '250 ok\r\n250 ok\r\n' } : undefined),
      }),
    );
    const run = new DestinationRun(deps(p.port), '[127.0.0.1]');
    const first = await deliverOnce(p, ['a', 'b'], run);
    const second = await deliverOnce(p, ['c'], run);
    await run.close();
    expectOneEach(first, ['a', 'b'], p);
    expect(first.map((o) => [o.result, o.code])).toEqual([
      ['deferred', '4.5.0'],
      ['deferred', '4.5.0'],
    ]);
    expect(second.map((o) => o.result)).toEqual(['sent']);
    expect(p.connections).toHaveLength(2);
    // the peer entered its data phase (it answered 354) but got not one byte, not even the dot
    const t = p.connections[0]!.transactions[0]!;
    expect({ dataPhase: t.dataPhase, dot: t.dot, body: t.body?.toString() ?? '' }).toEqual({ dataPhase: true, dot: false, body: '' });
  });
});
