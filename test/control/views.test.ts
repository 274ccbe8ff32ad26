/**
 * Issue 21 item 8: the operator's queue views on a real relay and its real spool — `queue list
 * --domain/--state` (mailq for one destination), `queue shape` (qshape: recipients by domain and age),
 * `queue show ID [--body]` (postcat -q) — through the running relay's control socket and then on the
 * stopped relay's files, which must give the same answers; `--version` and the version in the start line.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt, ROOT } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { submit } from '../support/mail.js';
import { RelayProcess, freePort, runCli, runCliIn, sleep, type CliResult } from '../support/relayProcess.js';
import type { SpoolListing } from '../../src/spool/inspect.js';
import type { QueuedMessage, RecipientStatus } from '../../src/spool/types.js';
import { filterListing, formatShape, parseStateFilter, queueShape } from '../../src/control/views.js';
import { SHAPE_BUCKETS } from '../../src/spool/shape.js';
import { messageContent } from '../../src/control/commands.js';
import { main } from '../../src/cli.js';

const rcpt = (address: string, state: RecipientStatus['state']): RecipientStatus => ({ address, state, attempts: 1, nextAttempt: 0 });
const msg = (id: string, received: number, recipients: RecipientStatus[], held = false): QueuedMessage => ({
  id,
  size: 1,
  held,
  recipients,
  envelope: {
    from: 'a@b.test',
    recipients: recipients.map((r) => r.address),
    smtputf8: false,
    eightBit: false,
    client: { address: '127.0.0.1' },
    received,
    kind: 'normal',
  },
});
const MIN = 60_000;

describe('issue21 item 8: queue views, pure', () => {
  const now = 10_000 * MIN;
  const listing: SpoolListing = {
    messages: [
      msg('m1', now - 1 * MIN, [rcpt('a@one.test', 'deferred'), rcpt('b@two.test', 'delivered')]),
      msg('m2', now - 5 * MIN, [rcpt('c@one.test', 'pending')]), // exactly 5 min: the 5-10m bucket
      msg('m3', now - 7 * MIN, [rcpt('d@Two.Test', 'deferred'), rcpt('e@two.test', 'failed')], true),
      msg('m4', now - 2000 * MIN, [rcpt('f@one.test', 'deferred')]),
    ],
    unreadable: [],
  };

  it("filters: --domain keeps that domain's recipients (case-insensitive, trailing dot), --state one state, waiting or held; both together", () => {
    const ids = (l: SpoolListing) => l.messages.map((m) => `${m.id}:${m.recipients.map((r) => r.address).join(',')}`);
    expect(ids(filterListing(listing, { domain: 'TWO.test.' }))).toEqual(['m1:b@two.test', 'm3:d@Two.Test,e@two.test']);
    expect(ids(filterListing(listing, { state: 'deferred' }))).toEqual(['m1:a@one.test', 'm3:d@Two.Test', 'm4:f@one.test']);
    expect(ids(filterListing(listing, { state: 'waiting' }))).toEqual(['m1:a@one.test', 'm2:c@one.test', 'm3:d@Two.Test', 'm4:f@one.test']);
    expect(ids(filterListing(listing, { state: 'held' }))).toEqual(['m3:d@Two.Test,e@two.test']);
    expect(ids(filterListing(listing, { domain: 'one.test', state: 'deferred' }))).toEqual(['m1:a@one.test', 'm4:f@one.test']);
    expect(filterListing(listing, { domain: 'none.test' }).messages).toEqual([]);
    expect(filterListing(listing, {})).toBe(listing);
    // the words queue list shows (issue 21 item 4), and the spool's own words as aliases
    expect([parseStateFilter('sent'), parseStateFilter('delivered'), parseStateFilter('Bounced'), parseStateFilter('failed')]).toEqual([
      'sent',
      'sent',
      'bounced',
      'bounced',
    ]);
    expect(ids(filterListing(listing, { state: 'sent' }))).toEqual(['m1:b@two.test']);
    expect(() => parseStateFilter('sent-ish')).toThrow(/unknown state "sent-ish" \(expected one of pending, deferred, sent, bounced, waiting, held\)/);
  });

  it('shape: waiting recipients by domain and age bucket (qshape buckets, a boundary age goes up), TOTAL first, busiest domain next', () => {
    const s = queueShape(listing, now);
    expect(s.columns).toEqual(['0-5m', '5-10m', '10-20m', '20-40m', '40-80m', '80-160m', '160-320m', '320-640m', '640-1280m', '1280m+']);
    expect(s.columns).toHaveLength(SHAPE_BUCKETS.length + 1);
    expect(s.rows).toEqual([
      { domain: 'TOTAL', total: 4, counts: [1, 2, 0, 0, 0, 0, 0, 0, 0, 1] },
      { domain: 'one.test', total: 3, counts: [1, 1, 0, 0, 0, 0, 0, 0, 0, 1] },
      { domain: 'two.test', total: 1, counts: [0, 1, 0, 0, 0, 0, 0, 0, 0, 0] },
    ]);
    expect(queueShape(listing, now, { state: 'deferred', domain: 'one.test' }).rows[0]).toEqual({
      domain: 'TOTAL',
      total: 2,
      counts: [1, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    });
    const text = formatShape(s).split('\n');
    expect(text[0]).toBe('         T 0-5m 5-10m 10-20m 20-40m 40-80m 80-160m 160-320m 320-640m 640-1280m 1280m+');
    expect(text[1]).toBe('TOTAL    4    1     2      0      0      0       0        0        0         0      1');
    expect(queueShape({ messages: [], unreadable: [] }, now).rows).toEqual([{ domain: 'TOTAL', total: 0, counts: Array(10).fill(0) }]);
  });

  it('show content: the header section ends at the first empty line (CRLF or LF); a message without one is all header', () => {
    expect(messageContent(Buffer.from('Subject: a\r\nX: b\r\n\r\nbody\r\n\r\nmore\r\n'), true)).toEqual({
      headers: 'Subject: a\r\nX: b',
      body: 'body\r\n\r\nmore\r\n',
    });
    expect(messageContent(Buffer.from('Subject: a\nX: b\n\nbody\n'), false)).toEqual({ headers: 'Subject: a\nX: b' });
    expect(messageContent(Buffer.from('\r\njust a body\r\n'), true)).toEqual({ headers: '', body: 'just a body\r\n' });
    expect(messageContent(Buffer.from('Subject: a\r\n'), true)).toEqual({ headers: 'Subject: a', body: '' });
  });
});

let dns: TestDns;
let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  // nothing listens at either MX: every attempt is refused and the recipients wait
  dns.add(
    { name: 'dead.test', type: 'MX', data: { preference: 10, exchange: 'mx.dead.test' } },
    { name: 'mx.dead.test', type: 'A', data: '127.0.0.31' },
    { name: 'gone.test', type: 'MX', data: { preference: 10, exchange: 'mx.gone.test' } },
    { name: 'mx.gone.test', type: 'A', data: '127.0.0.32' },
  );
  dir = mkdtempSync(join(tmpdir(), 'dr-views-'));
}, 120_000);
afterAll(async () => {
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

const json = (r: CliResult) => {
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as unknown;
};

describe('issue21 item 8: queue list filters, queue shape, queue show --body on a real relay and its spool', () => {
  it("the same answers through the running relay and on the stopped relay's files", async () => {
    const port = await freePort();
    const cfg = join(dir, 'relay.yml');
    const free = await freePort('127.0.0.31');
    writeFileSync(
      cfg,
      `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${join(dir, 'q')}\n` +
        `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
        `delivery:\n  port: ${free}\n  tls_level: may\n  timeouts: { connect: 2s }\n` +
        `queue:\n  min_backoff: 1h\n  max_backoff: 2h\n  run_interval: 200ms\n`,
    );
    const relay = new RelayProcess(cfg);
    await relay.start();
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const started = relay.output.split('\n').find((l) => l.includes('dane-relay started'));
    expect(JSON.parse(started!).version).toBe(version);

    const ids: string[] = [];
    for (const [to, text] of [
      [['a@dead.test'], 'first body line\n'],
      [['b@dead.test', 'c@gone.test'], 'second body line\n'],
      [['d@gone.test'], 'third body line\n'],
    ] as const)
      ids.push((await submit({ port, from: 'app@sender.test', to: [...to], subject: `views ${to.join(',')}`, text })).queueId);
    const q = (...args: string[]) => runCliIn(main, ['queue', ...args, '--config', cfg]);
    for (;;) {
      const l = json(await q('list', '--json')) as SpoolListing;
      if (l.messages.length === 3 && l.messages.every((m) => m.recipients.every((r) => r.state === 'deferred' && r.attempts === 1))) break;
      await sleep(100);
    }

    const session = async () => {
      const out: Record<string, unknown> = {};
      const byDomain = json(await q('list', '--domain', 'gone.test', '--json')) as SpoolListing;
      out.byDomain = byDomain.messages.map((m) => [m.id, m.recipients.map((r) => r.address)]);
      out.deferred = (json(await q('list', '--state', 'deferred', '--json')) as SpoolListing).messages.length;
      out.delivered = (json(await q('list', '--state', 'delivered', '--json')) as SpoolListing).messages.length;
      out.text = (await q('list', '--domain', 'dead.test')).stdout
        .split('\n')
        .filter((l) => l.startsWith('    <'))
        .map((l) => l.trim().split(/\s+/).slice(0, 4).join(' '))
        .sort();
      const bad = await q('list', '--state', 'stuck');
      out.bad = [bad.code, bad.stderr];
      const shape = json(await q('shape', '--json')) as { rows: { domain: string; total: number; counts: number[] }[] };
      out.shape = shape.rows.map((r) => [r.domain, r.total, r.counts[0]]);
      out.shapeText = (await q('shape', '--domain', 'gone.test')).stdout.split('\n')[1];
      const show = await q('show', ids[1]!);
      out.show =
        show.stdout.includes('*** MESSAGE CONTENTS ***') &&
        show.stdout.includes('Subject: views b@dead.test,c@gone.test') &&
        !show.stdout.includes('second body line');
      const body = await q('show', ids[1]!, '--body');
      out.body =
        body.stdout.includes('Subject: views b@dead.test,c@gone.test') &&
        body.stdout.includes('second body line') &&
        body.stdout.endsWith('*** END OF MESSAGE ***\n');
      const bj = json(await q('show', ids[2]!, '--body', '--json')) as { id: string; headers: string; body: string };
      // the JSON sink keeps control characters visible (CR as the two characters \r): printableJson
      out.bodyJson = [bj.id, bj.headers.includes('Subject: views d@gone.test'), bj.body];
      const missing = await q('show', '0123456789abcdef', '--body');
      out.missing = [missing.code, missing.stderr];
      return out;
    };
    const online = await session();
    expect(online).toEqual({
      byDomain: [
        [ids[1], ['c@gone.test']],
        [ids[2], ['d@gone.test']],
      ].sort((a, b) => (a[0]! < b[0]! ? -1 : 1)),
      deferred: 3,
      delivered: 0,
      text: ['<a@dead.test> deferred attempts 1', '<b@dead.test> deferred attempts 1'],
      bad: [2, 'dane-relay queue list: --state: unknown state "stuck" (expected one of pending, deferred, sent, bounced, waiting, held)\n'],
      shape: [
        ['TOTAL', 4, 4],
        ['dead.test', 2, 2],
        ['gone.test', 2, 2],
      ],
      shapeText: 'TOTAL     2    2     0      0      0      0       0        0        0         0      0',
      show: true,
      body: true,
      bodyJson: [ids[2], true, 'third body line\\r\\n'],
      missing: [1, 'dane-relay queue show: no message 0123456789abcdef in the queue\n'],
    });
    expect(await relay.stop()).toBe(0);
    // the stopped relay: the same questions answered from the spool files
    expect(await session()).toEqual(online);
    expect((await runCli(['queue', 'shape', '--config', cfg])).stdout).toMatch(/^ +T 0-5m /);
  }, 240_000);

  it('--version prints the package version (exit 0); -V too', async () => {
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) {
      const r = await runCliIn(main, [flag]);
      expect(r).toMatchObject({ code: 0, stdout: `dane-relay ${version}\n`, stderr: '' });
    }
  });
});
