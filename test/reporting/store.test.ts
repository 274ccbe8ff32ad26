/**
 * Durable counters (real files with fsync) and the recorder in front of them
 * (discovery through the relay's StubResolver against the loopback DNS server).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TlsrptStore, FLUSH_INTERVAL_MS } from '../../src/reporting/tlsrpt/store.js';
import { TlsrptRecorder } from '../../src/reporting/tlsrpt/recorder.js';
import { TlsrptDiscovery } from '../../src/reporting/tlsrpt/discovery.js';
import { detailKey, policyKey } from '../../src/reporting/tlsrpt/report.js';
import { StubResolver } from '../../src/dns/stub.js';
import { spawn } from 'node:child_process';
import { ROOT, ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'tlsrpt-store-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const P = policyKey({ type: 'tlsa', strings: ['3 1 1 AA'], domain: 'mx.a.test' });
const D = detailKey({ resultType: 'certificate-not-trusted', receivingMx: 'mx.a.test', receivingIp: '127.0.0.9', reasonCode: 'dane-no-match' });

describe('TLSRPT store', () => {
  it('TLSRPT-10 counts survive a restart: appended, fsynced within a second, summed on reading', async () => {
    const dir = tmp();
    const s = await TlsrptStore.open(dir);
    for (let i = 0; i < 5; i++) s.add('2025-03-01', 'a.test', P, true);
    s.add('2025-03-01', 'a.test', P, false, D);
    s.add('2025-03-01', 'a.test', P, false, D);
    s.add('2025-03-02', 'a.test', P, true);
    // Not yet on disk: the flush is batched.
    expect(existsSync(join(dir, 'counts', '2025-03-01.jsonl'))).toBe(false);
    await new Promise((r) => setTimeout(r, FLUSH_INTERVAL_MS + 300));
    expect(
      readFileSync(join(dir, 'counts', '2025-03-01.jsonl'), 'utf8')
        .trim()
        .split('\n'),
    ).toHaveLength(1);
    s.add('2025-03-01', 'a.test', P, true);
    await s.close();
    const again = await TlsrptStore.open(dir, { readOnly: true });
    const day = await again.read('2025-03-01');
    expect(day.get('a.test')).toEqual([
      {
        policy: { type: 'tlsa', strings: ['3 1 1 AA'], domain: 'mx.a.test' },
        success: 6,
        failure: 2,
        details: [
          { detail: { resultType: 'certificate-not-trusted', receivingMx: 'mx.a.test', receivingIp: '127.0.0.9', reasonCode: 'dane-no-match' }, count: 2 },
        ],
      },
    ]);
    expect((await again.read('2025-03-02')).get('a.test')![0]!.success).toBe(1);
    expect(await again.days()).toEqual(['2025-03-01', '2025-03-02']);
  });

  it('TLSRPT-10 a torn last line (crash mid-append) is skipped and the next append starts on a fresh line', async () => {
    const dir = tmp();
    const s = await TlsrptStore.open(dir);
    s.add('2025-03-01', 'a.test', P, true);
    await s.flush();
    appendFileSync(join(dir, 'counts', '2025-03-01.jsonl'), '{"d":"a.test","p":'); // torn
    s.add('2025-03-01', 'a.test', P, true);
    await s.flush();
    const warnings: object[] = [];
    const r = await TlsrptStore.open(dir, { log: { warn: (o) => warnings.push(o) } });
    expect((await r.read('2025-03-01')).get('a.test')![0]!.success).toBe(2);
    expect(warnings).toEqual([{ day: '2025-03-01', skipped_lines: 1 }]);
  });

  it('TLSRPT-10 SIGKILL loses at most the last second: every count older than one flush interval is on disk', async () => {
    ensureBuilt();
    const dir = tmp();
    const child = spawn(
      process.execPath,
      [join(import.meta.dirname, 'fixtures', 'store-crash-child.mjs'), dir, join(ROOT, 'dist', 'src', 'reporting', 'tlsrpt', 'store.js')],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', (b: Buffer) => {
        if (b.toString().includes('flushed 1000')) res();
      });
      child.on('exit', (c) => rej(new Error(`child exited ${c}`)));
    });
    await new Promise((r) => setTimeout(r, 700)); // more counts, some flushed, the last ones not
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const s = await TlsrptStore.open(dir, { readOnly: true });
    const n = (await s.read('2025-03-01')).get('a.test')![0]!.success;
    expect(n).toBeGreaterThanOrEqual(1000);
    expect(n % 100).toBe(0); // whole batches only: no torn line was counted
  }, 60_000);

  it('TLSRPT-6 retention: days older than the window are removed', async () => {
    const dir = tmp();
    const s = await TlsrptStore.open(dir);
    for (const d of ['2025-01-01', '2025-02-28', '2025-03-01']) {
      s.add(d, 'a.test', P, true);
    }
    await s.flush();
    writeFileSync(join(dir, 'counts', 'notes.txt'), 'operator file');
    expect(await s.prune('2025-03-02', 30)).toEqual(['2025-01-01']);
    expect(await s.days()).toEqual(['2025-02-28', '2025-03-01']);
    expect(existsSync(join(dir, 'counts', 'notes.txt'))).toBe(true);
  });
});

describe('TLSRPT recorder', () => {
  let dns: TestDns;
  let resolver: StubResolver;
  beforeAll(async () => {
    dns = await startDnsServer();
    resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1 });
    dns.add({ name: '_smtp._tls.with.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:r@with.test' });
    dns.add({ name: '_smtp._tls.twice.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:a@twice.test' });
    dns.add({ name: '_smtp._tls.twice.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:b@twice.test' });
  });
  afterAll(async () => {
    await resolver.close();
    await dns.close();
  });

  /** Waits on a condition (no fixed sleep): polls every 5 ms, fails after 5 s. */
  async function until(cond: () => boolean, what: string): Promise<void> {
    const limit = Date.now() + 5000;
    while (!cond()) {
      if (Date.now() > limit) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  it('TLSRPT-6 every session is counted at once; a domain known (cached) to publish no valid record is not; one DNS lookup per domain', async () => {
    const store = await TlsrptStore.open(tmp());
    const t = Date.parse('2025-03-01T12:00:00Z');
    const discovery = new TlsrptDiscovery(resolver, () => t);
    const rec = new TlsrptRecorder({ store, discovery, now: () => t });
    const session = { host: 'mx.x.test', address: '127.0.0.9', ok: true, policy: { type: 'tlsa' as const, baseDomain: 'mx.x.test', records: ['3 1 1 AA'] } };
    rec.record({ ...session, domain: 'with.test' });
    rec.record({ ...session, domain: 'without.test' });
    rec.record({ ...session, domain: 'twice.test' });
    // First sessions are counted before discovery answers (a miss never drops a session).
    expect([...(await store.read('2025-03-01')).keys()].sort()).toEqual(['twice.test', 'with.test', 'without.test']);
    await until(() => ['with.test', 'without.test', 'twice.test'].every((d) => discovery.cached(d)), 'discovery of three domains');
    expect(discovery.cached('without.test')!.kind).toBe('none'); // NXDOMAIN
    expect(discovery.cached('twice.test')!.kind).toBe('none'); // two records: invalid
    for (let i = 0; i < 9; i++) rec.record({ ...session, domain: 'with.test' });
    rec.record({ ...session, domain: 'with.test', ok: false, resultType: 'certificate-not-trusted', reasonCode: 'dane-no-match' });
    rec.record({ ...session, domain: 'without.test' });
    rec.record({ ...session, domain: 'twice.test' });
    const day = await store.read('2025-03-01');
    expect(day.get('with.test')![0]).toMatchObject({ success: 10, failure: 1 });
    expect(day.get('without.test')![0]).toMatchObject({ success: 1, failure: 0 });
    expect(day.get('twice.test')![0]).toMatchObject({ success: 1, failure: 0 });
    expect(dns.queriesFor('_smtp._tls.with.test', 'TXT')).toBe(1);
    await store.close();
  });

  it('TLSRPT-6 a DNS temporary failure of the TXT lookup drops nothing: dnssec-invalid sessions during DNS trouble are counted', async () => {
    dns.behave('_smtp._tls.flaky.test', 'TXT', 'servfail');
    const store = await TlsrptStore.open(tmp());
    const t = Date.parse('2025-03-01T12:00:00Z');
    const discovery = new TlsrptDiscovery(resolver, () => t);
    const rec = new TlsrptRecorder({ store, discovery, now: () => t });
    const fail = { domain: 'flaky.test', host: 'mx.flaky.test', ok: false, resultType: 'dnssec-invalid' as const, reasonCode: 'tlsa-lookup-servfail' };
    rec.record(fail);
    await until(() => discovery.cached('flaky.test') !== undefined, 'discovery of flaky.test');
    expect(discovery.cached('flaky.test')!.kind).toBe('tempfail');
    rec.record(fail);
    rec.record(fail);
    expect((await store.read('2025-03-01')).get('flaky.test')![0]).toMatchObject({ success: 0, failure: 3 });
    await store.close();
    dns.behave('_smtp._tls.flaky.test', 'TXT', undefined);
  });

  it('TLSRPT-10 a count recorded while discovery is still running is on disk after close, and one recorded after close is written too', async () => {
    const dir = tmp();
    const store = await TlsrptStore.open(dir);
    const t = Date.parse('2025-03-01T12:00:00Z');
    dns.behave('_smtp._tls.slow.test', 'TXT', 'timeout');
    const rec = new TlsrptRecorder({ store, discovery: new TlsrptDiscovery(resolver, () => t), now: () => t });
    rec.record({ domain: 'slow.test', host: 'mx.slow.test', ok: true });
    await store.close(); // the TXT lookup has not answered yet
    store.add('2025-03-01', 'slow.test', policyKey({ type: 'no-policy-found', strings: [], domain: 'slow.test' }), true);
    const reopened = await TlsrptStore.open(dir, { readOnly: true });
    await until(
      () =>
        readFileSync(join(dir, 'counts', '2025-03-01.jsonl'), 'utf8')
          .trim()
          .split('\n').length === 2,
      'the post-close append',
    );
    expect((await reopened.read('2025-03-01')).get('slow.test')![0]).toMatchObject({ success: 2 });
    dns.behave('_smtp._tls.slow.test', 'TXT', undefined);
  });
});
