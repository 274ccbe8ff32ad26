/**
 * Never looped (issue 13 defects 3 and 4), with the real relay on loopback:
 * - an MX host that resolves, under any name, to the relay's own listen address and port, and an
 *   address literal of ours, are a mail loop (RFC 5321 §5.1): bounced 5.4.6, like the MX-name rule
 *   (DANE-14) — not delivered to ourselves for ever;
 * - a peer that answers MAIL with 251 and no PIPELINING: settled once, never retried at every
 *   queue run without backoff.
 * The relay listens on 127.0.0.1 at the same port its deliveries use (delivery.port); receivers
 * live on other 127.0.0.x addresses at that port.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import type { Receiver } from '../support/receiver.js';
import { freePort, sleep } from '../support/relayProcess.js';
import { normalScript, startScriptedPeer, type ScriptedPeer } from '../support/scriptedPeer.js';

let w: World;
let sink: Receiver;
let peers: ScriptedPeer[] = [];

beforeEach(async () => {
  w = await World.create();
  w.port = await freePort(); // the relay listens at 127.0.0.1:port, receivers at 127.0.0.x:port
  sink = await w.receiver(); // the sender's domain: DSNs
  w.dns.add({ name: 'sender.test', type: 'MX', data: { preference: 10, exchange: 'mx.sender.test' } }, { name: 'mx.sender.test', type: 'A', data: sink.host });
});
afterEach(async () => {
  await w.close();
  await Promise.all(peers.map((p) => p.close()));
  peers = [];
});

const start = () => w.start({ listen: [`127.0.0.1:${w.port}`], log: { level: 'info' } });
const accepted = () => w.logs.filter((l) => l.msg === 'queued').length;

/**
 * settle(), or false as soon as `looping()` holds: a relay that loops never becomes idle, and the
 * loop shows itself as a count (a second accepted copy, a second MAIL), not as time passing.
 */
async function settleOr(looping: () => boolean): Promise<boolean> {
  let done = false;
  const watch = async (): Promise<boolean> => {
    while (!done && !looping()) await sleep(20);
    return false;
  };
  try {
    return await Promise.race([w.settle().then(() => true), watch()]);
  } finally {
    done = true;
  }
}
const settleOrLoop = () => settleOr(() => accepted() > 1);

describe('mail loops (RFC 5321 §5.1, issue 13 defect 4)', () => {
  it("issue13-4 DANE-14 an MX (under another name) that resolves to the relay's own listen address: bounced 5.4.6 with a DSN, accepted once, no loop", async () => {
    w.dns.add(
      { name: 'loop.test', type: 'MX', data: { preference: 10, exchange: 'mx.elsewhere.test' } },
      { name: 'mx.elsewhere.test', type: 'A', data: '127.0.0.1' },
    );
    await start();
    expect(w.ingressPort).toBe(w.port);
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@loop.test'], text: 'loop?' });
    const idle = await settleOrLoop();
    expect({ idle, accepted: accepted() }).toEqual({ idle: true, accepted: 1 }); // only the submission, never a copy from ourselves
    const [line] = w.deliveries().filter((l) => l.to === 'user@loop.test');
    expect(line).toMatchObject({ status: 'bounced', dsn: '5.4.6' });
    expect(String(line!.reason)).toMatch(/loops back to myself.*127\.0\.0\.1.*own listen address/);
    await sink.waitFor(1);
    expect(sink.messages[0]!.body.toString()).toMatch(/Status: 5\.4\.6/);
    expect(w.relay!.scheduler.size).toBe(0);
  });

  it('issue13-4 an address literal of ours, x@[127.0.0.1] at our port: bounced 5.4.6', async () => {
    await start();
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['x@[127.0.0.1]'], text: 'literal' });
    const idle = await settleOrLoop();
    expect({ idle, accepted: accepted() }).toEqual({ idle: true, accepted: 1 });
    expect(w.deliveries().find((l) => l.to === 'x@[127.0.0.1]')).toMatchObject({ status: 'bounced', dsn: '5.4.6' });
  });

  it('issue13-4 DANE-14 this relay as a backup MX: better hosts are tried and the message is deferred (not bounced); as the best MX, worse hosts are dropped and it bounces', async () => {
    const other = await w.receiver();
    w.dns.add(
      { name: 'backup.test', type: 'MX', data: { preference: 10, exchange: 'mx1.backup.test' } },
      { name: 'mx1.backup.test', type: 'A', data: w.deadHost() },
      { name: 'backup.test', type: 'MX', data: { preference: 20, exchange: 'us.backup.test' } },
      { name: 'us.backup.test', type: 'A', data: '127.0.0.1' },
      { name: 'primary.test', type: 'MX', data: { preference: 10, exchange: 'us.primary.test' } },
      { name: 'us.primary.test', type: 'A', data: '127.0.0.1' },
      { name: 'primary.test', type: 'MX', data: { preference: 20, exchange: 'mx2.primary.test' } },
      { name: 'mx2.primary.test', type: 'A', data: other.host },
    );
    await start();
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['a@backup.test', 'b@primary.test'], text: 'mx' });
    expect(await settleOrLoop()).toBe(true);
    const d = w.deliveries();
    expect(d.find((l) => l.to === 'a@backup.test')).toMatchObject({ status: 'deferred' });
    expect(String(d.find((l) => l.to === 'a@backup.test')!.reason)).toMatch(/us\.backup\.test\[127\.0\.0\.1\].* is this relay/);
    expect(d.find((l) => l.to === 'b@primary.test')).toMatchObject({ status: 'bounced', dsn: '5.4.6' });
    expect(other.messages).toHaveLength(0);
    expect(accepted()).toBe(1);
  });

  it('issue13-4 the same address at another port is not us (a local MTA beside the relay): delivered', async () => {
    const local = await startScriptedPeer({ host: '127.0.0.1', script: normalScript() });
    peers.push(local);
    await w.start({ log: { level: 'info' }, delivery: { port: local.port } }); // relay on 127.0.0.1:<random>, deliveries to 127.0.0.1:<local.port>
    expect(w.ingressPort).not.toBe(local.port);
    w.dns.add(
      { name: 'side.test', type: 'MX', data: { preference: 10, exchange: 'localhost.side.test' } },
      { name: 'localhost.side.test', type: 'A', data: '127.0.0.1' },
    );
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['u@side.test'], text: 'beside' });
    expect(await settleOrLoop()).toBe(true);
    expect(w.deliveries().find((l) => l.to === 'u@side.test')).toMatchObject({ status: 'sent' });
    expect(local.connections[0]!.transactions[0]!.delivered).toBe(true);
  });
});

describe('no hot loop (issue 13 defect 3)', () => {
  it('issue13-3 a peer without PIPELINING answering MAIL with 251: the recipient is settled once (delivered), not retried at every queue run', async () => {
    const p = await startScriptedPeer({
      host: '127.0.0.7',
      port: w.port,
      script: normalScript({ answer: (verb) => (verb === 'MAIL' ? { reply: '251 2.1.0 ok\r\n' } : undefined) }),
    });
    peers.push(p);
    w.dns.add({ name: 'odd.test', type: 'MX', data: { preference: 10, exchange: 'mx.odd.test' } }, { name: 'mx.odd.test', type: 'A', data: p.host });
    await w.start({ listen: [`127.0.0.1:${w.port}`], log: { level: 'info' }, queue: { run_interval: '50ms' } });
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['u@odd.test'], text: '251' });
    const mails = () => p.connections.flatMap((c) => c.commands).filter((c) => c.startsWith('MAIL'));
    await settleOr(() => mails().length > 1);
    await sleep(500); // ten queue runs: a recipient left without an outcome would be tried at each
    await settleOr(() => mails().length > 1);
    expect(mails()).toHaveLength(1);
    expect(
      w
        .deliveries()
        .filter((l) => l.to === 'u@odd.test')
        .map((l) => l.status),
    ).toEqual(['sent']);
    expect(w.relay!.scheduler.size).toBe(0);
  });
});
