/**
 * The daily job (TlsrptService.tick) on real files and the loopback DNS server: one failing domain
 * does not hold back the others, and a day is planned only after its plan is durably written, and
 * read again until it has settled.
 */
import { mkdtempSync, rmSync, writeFileSync, existsSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TlsrptService, SETTLE_MS, type TlsrptSettings } from '../../src/reporting/tlsrpt/daily.js';
import { dkimKeygen } from '../../src/reporting/tlsrpt/mail.js';
import { policyKey } from '../../src/reporting/tlsrpt/report.js';
import type { Envelope } from '../../src/spool/types.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';

let dns: TestDns;
let resolver: StubResolver;
const dirs: string[] = [];
beforeAll(async () => {
  dns = await startDnsServer();
  resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1 });
  for (const d of ['a.test', 'b.test', 'c.test']) dns.add({ name: `_smtp._tls.${d}`, type: 'TXT', data: `v=TLSRPTv1; rua=mailto:reports@${d}` });
});
afterAll(async () => {
  await resolver.close();
  await dns.close();
});
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const DAY = '2025-03-01';
const END = Date.parse('2025-03-02T00:00:00Z');
const P = policyKey({ type: 'no-policy-found', strings: [], domain: 'x' });

function setup(clock: { t: number }, opts: { dkim?: boolean; allowPrivateTargets?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tlsrpt-daily-'));
  dirs.push(dir);
  const settings: TlsrptSettings = {
    dir,
    organizationName: 'T',
    contactInfo: 'tlsrpt@relay.test',
    submitter: 'relay.test',
    retentionDays: 30,
    maxDelayMs: 0,
    allowPrivateTargets: opts.allowPrivateTargets ?? false,
    dkim: opts.dkim === false ? undefined : { domain: 'relay.test', selector: 'tlsrpt', privateKey: dkimKeygen({}).privateKeyPem },
  };
  const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
  const log = {
    info() {},
    debug() {},
    warn: (obj: object, msg: string) => {
      warnings.push({ obj: obj as Record<string, unknown>, msg });
    },
  };
  return {
    dir,
    warnings,
    open: (maxReportBytes?: number) => TlsrptService.open({ settings, resolver, log, now: () => clock.t, rand: () => 0, maxReportBytes }),
  };
}

describe('TLSRPT daily job', () => {
  it('TLSRPT-34 one failing domain does not block the others: it is logged and retried on the next tick', async () => {
    const clock = { t: END + SETTLE_MS + 60_000 };
    const s = setup(clock);
    const svc = await s.open();
    for (const d of ['a.test', 'b.test', 'c.test']) svc.store.add(DAY, d, P, true);
    await svc.store.flush();
    const queued: string[] = [];
    let broken = true;
    // The spool refuses b.test's report (e.g. a write error) on the first tick only.
    svc.start(async (env: Envelope) => {
      if (broken && env.recipients.includes('reports@b.test')) throw new Error('spool write failed');
      queued.push(env.recipients[0]!);
      return `q${queued.length}`;
    });
    await svc.tick();
    expect(queued.sort()).toEqual(['reports@a.test', 'reports@c.test']);
    expect(s.warnings.find((w) => w.obj.domain === 'b.test')).toMatchObject({
      msg: 'tlsrpt: report failed; will retry next tick',
      obj: { day: DAY, err: 'spool write failed' },
    });
    expect(await svc.wasSent(DAY, 'b.test')).toBe(false);
    broken = false;
    await svc.tick();
    expect(queued.sort()).toEqual(['reports@a.test', 'reports@b.test', 'reports@c.test']);
    expect(await svc.wasSent(DAY, 'b.test')).toBe(true);
    await svc.tick(); // nothing is sent twice
    expect(queued).toHaveLength(3);
    await svc.stop();
  });

  it('TLSRPT-34 a day is done with only after its plan is written: a failed write is retried on the next tick', async () => {
    const clock = { t: END + SETTLE_MS + 60_000 };
    const s = setup(clock);
    const svc = await s.open();
    svc.store.add(DAY, 'a.test', P, true);
    await svc.store.flush();
    writeFileSync(join(s.dir, 'plan'), 'not a directory'); // the plan cannot be written
    await svc.tick();
    expect(s.warnings.some((w) => w.obj.step === 'plan')).toBe(true);
    rmSync(join(s.dir, 'plan'));
    await svc.tick();
    expect(await svc.readPlan(DAY)).toEqual({ 'a.test': END });
    await svc.stop();
  });

  it('TLSRPT-31 TLSRPT-34 a domain whose first count lands after the tick that planned the day still gets its report; a settled day is not re-read', async () => {
    const clock = { t: END + 30_000 }; // 00:00:30Z: the day has closed but may not have settled
    const s = setup(clock);
    const svc = await s.open();
    svc.store.add(DAY, 'a.test', P, true);
    await svc.store.flush();
    await svc.tick();
    expect(Object.keys((await svc.readPlan(DAY))!)).toEqual(['a.test']);
    // A session that ended at 23:59:59.9 and was flushed after that tick.
    svc.store.add(DAY, 'b.test', P, false);
    await svc.store.flush();
    clock.t = END + SETTLE_MS + 1;
    await svc.tick();
    expect(Object.keys((await svc.readPlan(DAY))!).sort()).toEqual(['a.test', 'b.test']);
    svc.store.add(DAY, 'c.test', P, true); // far too late: the settled day is not read again
    await svc.store.flush();
    await svc.tick();
    expect(Object.keys((await svc.readPlan(DAY))!).sort()).toEqual(['a.test', 'b.test']);
    expect(existsSync(join(s.dir, 'plan'))).toBe(true);
    expect(readdirSync(join(s.dir, 'plan'))).toEqual([`${DAY}.json`]);
    await svc.stop();
  });

  it('TLSRPT-41 a report over the receiver size limit is not sent: dropped with the reason, logged', async () => {
    const clock = { t: END + SETTLE_MS + 60_000 };
    const s = setup(clock);
    const svc = await s.open(300);
    svc.store.add(DAY, 'a.test', P, true);
    for (let i = 0; i < 40; i++)
      svc.store.add(DAY, 'b.test', policyKey({ type: 'tlsa', strings: [`3 1 1 ${i.toString(16).padStart(64, '7')}`], domain: `mx${i}.b.test` }), true);
    await svc.store.flush();
    const queued: string[] = [];
    svc.start(async (env: Envelope) => {
      queued.push(env.recipients[0]!);
      return 'q';
    });
    await svc.tick();
    expect(queued).toEqual(['reports@a.test']);
    expect(await svc.wasSent(DAY, 'b.test')).toBe(true); // recorded as dropped, not retried every minute
    expect(s.warnings.find((w) => w.obj.domain === 'b.test')).toMatchObject({ msg: 'tlsrpt: report too large for receivers; not sent', obj: { limit: 300 } });
    await svc.stop();
  });

  it('TLSRPT-44 without tlsrpt.dkim the job warns at start that mailto reports cannot be signed', async () => {
    const s = setup({ t: END }, { dkim: false });
    const svc = await s.open();
    svc.start(async () => 'q');
    await svc.stop();
    expect(s.warnings.map((w) => w.msg)).toContain(
      'tlsrpt: tlsrpt.dkim is not configured; reports to mailto: addresses cannot be signed and will not be sent (https reports are)',
    );
  });

  it('under umask 000 nothing it creates is writable by group or others: an outbox anyone could fill would be mail sent from the null sender', async () => {
    // an https rua on loopback (allowed for this test) where nothing listens: the report goes to pending/ for a retry
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise((r) => closed.close(r));
    dns.add({ name: '_smtp._tls.h.test', type: 'TXT', data: `v=TLSRPTv1; rua=https://127.0.0.1:${port}/tlsrpt` });
    const old = process.umask(0);
    try {
      const clock = { t: END + SETTLE_MS + 60_000 };
      const s = setup(clock, { allowPrivateTargets: true });
      rmSync(s.dir, { recursive: true }); // created from scratch under this umask, top directory too
      const svc = await s.open();
      for (const d of ['a.test', 'h.test']) svc.store.add(DAY, d, P, true);
      await svc.store.flush();
      svc.start(async () => 'q');
      await svc.tick();
      await svc.toOutbox(
        { kind: 'tlsrpt', from: '', recipients: ['reports@a.test'], smtputf8: false, eightBit: false, client: { address: '127.0.0.1' }, received: clock.t },
        Buffer.from('Subject: x\r\n\r\nx\r\n'),
      );
      await svc.stop();
      const modes = new Map<string, string>();
      const walk = (d: string) => {
        for (const e of readdirSync(d, { withFileTypes: true })) {
          const p = join(d, e.name);
          modes.set(p.slice(s.dir.length) + (e.isDirectory() ? '/' : ''), (statSync(p).mode & 0o777).toString(8));
          if (e.isDirectory()) walk(p);
        }
      };
      modes.set('/', (statSync(s.dir).mode & 0o777).toString(8));
      walk(s.dir);
      // everything the job writes is there: counts, plan, sent, outbox, pending
      expect([...modes.keys()].filter((k) => k.endsWith('/')).sort()).toEqual(['/', '/counts/', '/outbox/', '/pending/', '/plan/', '/sent/', `/sent/${DAY}/`]);
      expect([...modes].filter(([, m]) => Number.parseInt(m, 8) & 0o022)).toEqual([]);
    } finally {
      process.umask(old);
      dns.remove('_smtp._tls.h.test', 'TXT');
    }
  });
});
