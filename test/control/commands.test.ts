/** The pure rules of queue control, and the socket protocol against an in-process relay. */
import { afterEach, describe, expect, it } from 'vitest';
import { createConnection } from 'node:net';
import { spawn } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { flushRecipients, parseRequest, requeueRecipients } from '../../src/control/commands.js';
import { request } from '../../src/control/client.js';
import { ControlServer, controlSocketPath } from '../../src/control/server.js';
import type { QueuedMessage, RecipientStatus } from '../../src/spool/types.js';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';

const now = 1_000_000;
const rcpt = (address: string, state: RecipientStatus['state'], nextAttempt: number): RecipientStatus => ({ address, state, attempts: 1, nextAttempt });
const msg = (recipients: RecipientStatus[], held = false): QueuedMessage => ({
  id: 'x',
  size: 1,
  held,
  recipients,
  envelope: {
    from: 'a@b.test',
    recipients: recipients.map((r) => r.address),
    smtputf8: false,
    eightBit: false,
    client: { address: '127.0.0.1' },
    received: 0,
    kind: 'normal',
  },
});

describe('parseRequest', () => {
  it.each([
    [{ cmd: 'list' }, { cmd: 'list' }],
    [{ cmd: 'flush' }, { cmd: 'flush' }],
    [
      { cmd: 'flush', domain: 'Example.COM.' },
      { cmd: 'flush', domain: 'example.com' },
    ],
    [
      { cmd: 'flush', domain: '[127.0.0.1]' },
      { cmd: 'flush', domain: '[127.0.0.1]' },
    ],
    [
      { cmd: 'hold', id: '0123456789abcdef' },
      { cmd: 'hold', id: '0123456789abcdef' },
    ],
  ])('accepts %j', (raw, want) => {
    expect(parseRequest(raw)).toEqual(want);
  });
  it.each([
    [null, 'not a JSON object'],
    [[], 'not a JSON object'],
    [{ cmd: 'destroy' }, 'unknown command'],
    [{ cmd: 'hold' }, 'hold needs a queue id'],
    [{ cmd: 'delete', id: '../../etc/passwd' }, 'is not a queue id'],
    [{ cmd: 'list', id: 'x' }, 'list takes no queue id'],
    [{ cmd: 'hold', id: 'x', domain: 'a.test' }, 'is not a queue id'],
    [{ cmd: 'flush', domain: 'a b' }, 'is not a domain name'],
    [{ cmd: 'flush', domain: 7 }, 'is not a domain name'],
    [{ cmd: 'list', extra: 1 }, 'unknown request field'],
  ])('refuses %j (%s)', (raw, why) => {
    expect(() => parseRequest(raw)).toThrow(why);
    try {
      parseRequest(raw);
    } catch (e) {
      expect((e as { code: string }).code).toBe('EINVAL');
    }
  });
});

describe('flushRecipients (the rule of Scheduler.flush, for the stopped spool)', () => {
  const rs = [
    rcpt('a@x.test', 'deferred', now + 10),
    rcpt('b@y.test', 'deferred', now + 10),
    rcpt('c@x.test', 'delivered', now + 10),
    rcpt('d@x.test', 'pending', now - 5),
    rcpt('e@X.TEST', 'failed', now + 10),
  ];
  it('makes open recipients waiting for later due now; leaves done, already due, other domains alone', () => {
    expect(flushRecipients(msg(rs), undefined, now)!.map((r) => r.nextAttempt)).toEqual([now, now, now + 10, now - 5, now + 10]);
    expect(flushRecipients(msg(rs), 'x.test', now)!.map((r) => r.nextAttempt)).toEqual([now, now + 10, now + 10, now - 5, now + 10]);
    expect(flushRecipients(msg(rs), 'X.Test', now)!.map((r) => r.nextAttempt)).toEqual([now, now + 10, now + 10, now - 5, now + 10]);
  });
  it('reports no change (undefined) for a held message, another domain, or nothing waiting', () => {
    expect(flushRecipients(msg(rs, true), undefined, now)).toBeUndefined();
    expect(flushRecipients(msg(rs), 'z.test', now)).toBeUndefined();
    expect(flushRecipients(msg([rcpt('d@x.test', 'pending', now)]), undefined, now)).toBeUndefined();
  });
  it('does not change its input', () => {
    const m = msg([rcpt('a@x.test', 'deferred', now + 10)]);
    flushRecipients(m, undefined, now);
    expect(m.recipients[0]!.nextAttempt).toBe(now + 10);
  });
});

describe('requeueRecipients', () => {
  it('every deferred recipient is due now, whatever its domain; counts only those', () => {
    const r = requeueRecipients(
      [
        rcpt('a@x.test', 'deferred', now + 10),
        rcpt('b@y.test', 'deferred', now - 10),
        rcpt('c@x.test', 'delivered', now + 10),
        rcpt('d@x.test', 'pending', now),
      ],
      now,
    );
    expect(r.changed).toBe(2);
    expect(r.recipients.map((x) => x.nextAttempt)).toEqual([now, now - 10, now + 10, now]);
    expect(r.recipients.map((x) => x.attempts)).toEqual([1, 1, 1, 1]);
  });
});

describe('control socket protocol (in-process relay)', () => {
  let w: World | undefined;
  afterEach(async () => {
    await w?.close();
    w = undefined;
  });

  const raw = (path: string, line: string) =>
    new Promise<string>((resolve, reject) => {
      const s = createConnection(path);
      let buf = '';
      s.on('connect', () => s.write(line));
      s.on('data', (d) => {
        buf += d;
      });
      s.on('end', () => resolve(buf));
      s.on('error', reject);
    });

  it('one JSON line in, one out; bad input gets an EINVAL answer and changes nothing', async () => {
    w = await World.create();
    await w.receiver();
    w.dns.add({ name: 'ok.test', type: 'MX', data: { preference: 10, exchange: 'mx.ok.test' } }, { name: 'mx.ok.test', type: 'A', data: w.deadHost() });
    const relay = await w.start({ delivery: { tls_level: 'may' } });
    const path = controlSocketPath(relay.config);
    expect(path).toBe(join(w.dir, 'queue', 'control.sock'));
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const { queueId } = await submit({ port: w.ingressPort, from: 'a@s.test', to: ['x@ok.test'] });
    await w.settle();

    expect(JSON.parse(await raw(path, 'not json\n'))).toMatchObject({ ok: false, code: 'EINVAL', error: expect.stringContaining('not JSON') });
    expect(JSON.parse(await raw(path, '{"cmd":"delete","id":"../lock"}\n'))).toMatchObject({ ok: false, code: 'EINVAL' });
    expect(JSON.parse(await raw(path, `${'x'.repeat(70_000)}`))).toMatchObject({ ok: false, code: 'EINVAL', error: 'request too long' });
    expect(await request(path, { cmd: 'hold', id: '0000000000000000' })).toMatchObject({ ok: false, code: 'ENOENT' });
    expect(await request(path, { cmd: 'hold', id: queueId })).toEqual({ ok: true, result: { cmd: 'hold', id: queueId, held: true } });
    expect(relay.scheduler.get(queueId)!.held).toBe(true);
    // Durable: the state file says held.
    expect(JSON.parse(readFileSync(join(w.dir, 'queue', 'state', `${queueId}.json`), 'utf8')).held).toBe(true);
    const list = await request(path, { cmd: 'list' });
    expect(list.ok && list.result.cmd === 'list' && list.result.listing.messages.map((m) => [m.id, m.held, m.recipients[0]!.state])).toEqual([
      [queueId, true, 'deferred'],
    ]);
  });

  it('a socket file left by a killed relay is replaced; a live one or a non-socket file is never taken over', async () => {
    w = await World.create();
    await w.receiver();
    const relay = await w.start({ delivery: { tls_level: 'may' } });
    const path = relay.control!.path;
    const backend = {
      list: async () => ({ messages: [], unreadable: [] }),
      get: async () => undefined,
      setHeld: async () => false,
      remove: async () => false,
      flush: async () => 0,
      requeue: async () => undefined,
      content: async () => undefined,
    };
    await expect(ControlServer.start({ path, backend, now: Date.now, log: relay.log })).rejects.toThrow('in use by another process');
    const other = join(w.dir, 'plain-file');
    writeFileSync(other, 'keep me');
    await expect(ControlServer.start({ path: other, backend, now: Date.now, log: relay.log })).rejects.toThrow('is not a socket');
    expect(readFileSync(other, 'utf8')).toBe('keep me');
    await expect(ControlServer.start({ path: join(w.dir, 'x'.repeat(120)), backend, now: Date.now, log: relay.log })).rejects.toThrow('Unix socket limit');
    // A socket whose owner was SIGKILLed: the file stays, nobody answers; the next relay takes the path.
    const stale = join(w.dir, 'stale.sock');
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise((r) => child.stdout!.once('data', r));
    await new Promise((r) => {
      child.once('exit', r);
      child.kill('SIGKILL');
    });
    expect(statSync(stale).isSocket()).toBe(true);
    const srv = await ControlServer.start({ path: stale, backend, now: Date.now, log: relay.log });
    expect(await request(stale, { cmd: 'flush' })).toEqual({ ok: true, result: { cmd: 'flush', messages: 0 } });
    await srv.close();
    expect(() => statSync(stale)).toThrow();
  });
});

describe('control socket failures never stop mail', () => {
  it('a relay whose control socket cannot be created still starts, says so loudly, and accepts mail', async () => {
    const w = await World.create();
    try {
      const rx = await w.receiver();
      w.dns.add({ name: 'ok.test', type: 'MX', data: { preference: 10, exchange: 'mx.ok.test' } }, { name: 'mx.ok.test', type: 'A', data: rx.host });
      writeFileSync(join(w.dir, 'not-a-socket'), 'x');
      const relay = await w.start({ delivery: { tls_level: 'may' }, control: { socket: 'not-a-socket' } });
      expect(relay.control).toBeUndefined();
      expect(w.logs.some((l) => l.level === 'error' && l.msg.startsWith('CONTROL SOCKET NOT AVAILABLE') && l.msg.includes('is not a socket'))).toBe(true);
      await submit({ port: w.ingressPort, from: 'a@s.test', to: ['x@ok.test'] });
      await w.settle();
      expect(rx.messages).toHaveLength(1);
    } finally {
      await w.close();
    }
  });
});
