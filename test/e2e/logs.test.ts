/**
 * Issue 21 item 5 on the real process's log output: lines that tie together. Every line about a message
 * carries its queue id (also `MX host skipped` and `connection attempt failed`), a deferred line names the
 * host actually tried, the `queued` line has the Message-ID, levels are names, the sent/deferred lines carry
 * Postfix's `delays=a/b/c/d`, and no message spans lines.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { RelayProcess, cpuMsOf, freePort, sleep } from '../support/relayProcess.js';
import { submit } from '../support/mail.js';
import { makeLogger, oneLineMessage } from '../../src/log.js';
import { messageIdOf } from '../../src/ingress/messageId.js';

let dns: TestDns;
let rx: Receiver;
let dir: string;
const DEAD = '127.0.0.33'; // nothing listens there: connection refused

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  rx = await startReceiver({ host: '127.0.0.32' });
  // good.test: one MX that takes the mail. skip.test (signed): mx1's TLSA lookup fails (skipped, DANE-33),
  // mx2 (no TLSA) refuses the connection: deferred, and the line names mx2 as the host tried.
  dns.add({ name: 'good.test', type: 'MX', data: { preference: 10, exchange: 'mx.good.test' } }, { name: 'mx.good.test', type: 'A', data: rx.host });
  dns.addZone({ name: 'skip.test', secure: true });
  dns.add(
    { name: 'skip.test', type: 'MX', data: { preference: 10, exchange: 'mx1.skip.test' } },
    { name: 'skip.test', type: 'MX', data: { preference: 20, exchange: 'mx2.skip.test' } },
    { name: 'mx1.skip.test', type: 'A', data: '127.0.0.34' },
    { name: 'mx2.skip.test', type: 'A', data: DEAD },
  );
  dns.behave(`_${rx.port}._tcp.mx1.skip.test`, 'TLSA', 'servfail');
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-logs-'));
});
afterAll(async () => {
  await rx?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

const DELAYS = /^\d+\.\d\d\/\d+\.\d\d\/\d+\.\d\d\/\d+\.\d\d$/;

describe('log lines that tie together (issue 21 item 5)', () => {
  it('DANE-33 issue21: queue_id on every line about a message, the host tried on the deferred line, Message-ID on queued, level names, delays=a/b/c/d, one line per message', async () => {
    const port = await freePort();
    const file = join(dir, 'relay.yml');
    writeFileSync(
      file,
      `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: queue\ndns: { mode: trust-ad, resolvers: ["${dns.server}"], timeout: 1s, attempts: 1 }\n` +
        `delivery: { port: ${rx.port}, tls_level: dane }\nqueue: { min_backoff: 1h }\nlog: { level: debug }\n`,
    );
    const relay = new RelayProcess(file, port);
    await relay.start();
    const raw = () => relay.output.split('\n').filter((l) => l.startsWith('{'));
    const lines = () => raw().map((l) => JSON.parse(l) as Record<string, unknown>);
    const until = async <T>(what: string, find: () => T | undefined): Promise<T> => {
      for (;;) {
        const v = find();
        if (v !== undefined) return v;
        if (!relay.running || (cpuMsOf(relay.pid) ?? 0) > 15_000) throw new Error(`no ${what} in: ${relay.output}`);
        await sleep(20);
      }
    };
    const outcome = (queueId: string) => until(`delivery of ${queueId}`, () => lines().find((l) => l.msg === 'delivery' && l.queue_id === queueId));
    try {
      const sent = await submit({
        port,
        from: 'app@sender.test',
        to: ['a@good.test'],
        raw: 'From: app@sender.test\r\nTo: a@good.test\r\nMessage-ID:\r\n <tie.1@sender.test>\r\nSubject: x\r\n\r\nbody\r\n',
      });
      const deferred = await submit({ port, from: 'app@sender.test', to: ['b@skip.test'], subject: 'skip' });

      const ok = await outcome(sent.queueId);
      expect(ok).toMatchObject({ level: 'info', status: 'sent', relay: `mx.good.test[${rx.host}]:${rx.port}` });
      expect(ok.delays).toMatch(DELAYS);
      const parts = String(ok.delays).split('/').map(Number);
      expect(parts.reduce((a, b) => a + b, 0)).toBeCloseTo(Number(ok.delay), 1);
      expect(lines().find((l) => l.msg === 'queued' && l.queue_id === sent.queueId)).toMatchObject({ message_id: '<tie.1@sender.test>', level: 'info' });

      const d = await outcome(deferred.queueId);
      expect(d).toMatchObject({
        status: 'deferred',
        relay: `mx2.skip.test[${DEAD}]:${rx.port}`,
        mx_hosts: ['mx1.skip.test', `mx2.skip.test[${DEAD}]:${rx.port}`],
      });
      expect(d.delays).toMatch(DELAYS);
      expect(lines().find((l) => l.msg === 'MX host skipped' && l.mx === 'mx1.skip.test')).toMatchObject({ queue_id: deferred.queueId, domain: 'skip.test' });
      expect(lines().find((l) => l.msg === 'connection attempt failed')).toMatchObject({
        queue_id: deferred.queueId,
        relay: `mx2.skip.test[${DEAD}]:${rx.port}`,
      });

      // every line: a level name, and a message that is one line
      for (const l of lines()) {
        expect(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).toContain(l.level);
        expect(String(l.msg ?? '')).not.toMatch(/[\r\n]/);
      }
      // every line that names a domain being delivered also names the message (the per-run facts of a delivery)
      for (const l of lines().filter((x) => typeof x.domain === 'string' && ['good.test', 'skip.test'].includes(x.domain as string)))
        expect(l.queue_id, JSON.stringify(l)).toMatch(/\S/);
    } finally {
      expect(await relay.stop('SIGTERM')).toBe(0);
    }
  });
});

describe('one line per message, Message-ID (units)', () => {
  it('issue21: a msg with line breaks keeps its first line; the rest become msg_lines, with the bindings and an err kept', () => {
    const out: string[] = [];
    const log = makeLogger('info', new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }) as never);
    log.warn({ config: 'x.yml' }, 'CONFIG RELOAD REFUSED\nline 2: bad\n\nline 3: worse');
    log.error(new Error('boom'), 'failed:\r\ndetail');
    log.info('plain');
    const [a, b, c] = out.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(out.every((l) => l.split('\n').length === 2)).toBe(true);
    expect(a).toMatchObject({ level: 'warn', msg: 'CONFIG RELOAD REFUSED', msg_lines: ['line 2: bad', 'line 3: worse'], config: 'x.yml' });
    expect(b).toMatchObject({ level: 'error', msg: 'failed:', msg_lines: ['detail'], err: { message: 'boom' } });
    expect(c).toMatchObject({ level: 'info', msg: 'plain' });
    expect(c).not.toHaveProperty('msg_lines');
    expect(oneLineMessage(['one line'])).toEqual(['one line']);
  });
  it.each([
    ['Message-ID: <a@b>\r\n\r\n', '<a@b>'],
    ['Subject: x\r\nmessage-id :\r\n  <folded@b>\r\n\r\n', '<folded@b>'],
    ['Subject: x\r\n\r\nMessage-ID: <in-body@b>\r\n', undefined],
    ['X-Message-ID: <not@b>\nSubject: x\n\n', undefined],
  ])('issue21: Message-ID of %j is %s', (head, id) => {
    expect(messageIdOf(Buffer.from(head))).toBe(id);
  });
});
