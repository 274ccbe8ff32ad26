/**
 * PolicyStore on real files: what a reload may install (DANE-2 resolver trust, incomplete files,
 * settled stats, emptied files) and what it reports (DANE-70 conflicts).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, appendFileSync } from 'node:fs';
import { writeFileAtomic } from '../support/files.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { parseConfigText, ConfigError, type LoadedConfig } from '../../src/config/load.js';
import { policyStoreFor } from '../../src/policy/config.js';
import { PolicyStore } from '../../src/policy/store.js';
import { trustAdProblem } from '../../src/dns/trust.js';

let dir: string;
let logs: { level: number; msg: string; [k: string]: unknown }[];
let stores: PolicyStore[];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-store-'));
  logs = [];
  stores = [];
});
afterEach(() => {
  for (const s of stores) s.close();
  rmSync(dir, { recursive: true, force: true });
});

const log = () =>
  pino(
    { level: 'debug' },
    new Writable({
      write: (c, _e, cb) => {
        for (const l of c.toString().split('\n')) if (l) logs.push(JSON.parse(l));
        cb();
      },
    }),
  );
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

function config(yaml: Record<string, unknown>): LoadedConfig {
  const base = { listen: ['127.0.0.1:0'], hostname: 'relay.test', queue_dir: join(dir, 'queue'), dns: { resolvers: ['127.0.0.1:53'] }, ...yaml };
  const cfg = parseConfigText(JSON.stringify(base));
  return { ...cfg, baseDir: dir, resolvedResolvers: cfg.dns.resolvers!, queue_dir: cfg.queue_dir };
}

// 192.0.2.53 (TEST-NET-1) is never contacted: the store only decides whether it may be trusted.
const offHost = { mode: 'trust-ad' as const, resolvers: ['192.0.2.53:53'] };

describe('DANE-2 resolver trust covers tls_policy entries', () => {
  it('DANE-2 trustAdProblem: a DANE entry counts like a DANE default; only in trust-ad mode; loopback or trusted_resolvers pass', () => {
    const c = (dns: Record<string, unknown>, tls_level = 'may') => config({ dns, delivery: { tls_level } });
    expect(trustAdProblem(c(offHost))).toBeUndefined();
    expect(trustAdProblem(c(offHost), { dane: true, source: 'tls_policy' })).toMatch(
      /a DANE entry in tls_policy: resolver\(s\) 192\.0\.2\.53:53 are not on loopback/,
    );
    expect(trustAdProblem(c(offHost, 'dane'))).toMatch(/delivery\.tls_level dane/);
    expect(trustAdProblem(c({ ...offHost, mode: 'validate' }), { dane: true })).toBeUndefined();
    expect(trustAdProblem(c({ resolvers: ['127.0.0.1:53'] }), { dane: true })).toBeUndefined();
    expect(trustAdProblem(c({ ...offHost, trusted_resolvers: ['192.0.2.53:53'] }), { dane: true })).toBeUndefined();
  });

  it('DANE-2 start-up with a dane entry under an untrusted trust-ad resolver is refused (ConfigError, names the problem)', () => {
    writeFileAtomic(join(dir, 'tls_policy'), 'ok.test may\nstrict.test dane-only\n');
    const cfg = config({ dns: offHost, delivery: { tls_level: 'may' }, policy: { tls_policy: 'tls_policy' } });
    expect(() => policyStoreFor(cfg)).toThrow(ConfigError);
    expect(() => policyStoreFor(cfg)).toThrow(/a DANE entry in tls_policy: resolver\(s\) 192\.0\.2\.53:53 are not on loopback/);
    // dns.mode validate does not believe the AD bit, so the path to the upstream does not matter.
    stores.push(policyStoreFor(config({ dns: { ...offHost, mode: 'validate' }, delivery: { tls_level: 'may' }, policy: { tls_policy: 'tls_policy' } })));
  });

  it('DANE-2 a reload that brings a DANE entry in under an untrusted resolver is rejected whole, logged with the reason; the previous version stays', () => {
    const file = join(dir, 'tls_policy');
    writeFileAtomic(file, 'a.test encrypt\n');
    const store = policyStoreFor(config({ dns: offHost, delivery: { tls_level: 'may' }, policy: { tls_policy: 'tls_policy' } }), log());
    stores.push(store);
    writeFileAtomic(file, 'a.test may\nb.test none\nstrict.test dane\n');
    const r = store.reload('test');
    expect(r.loaded).toEqual([]);
    expect(r.rejected[0]!.error).toMatch(/line 3: DANE entry refused: dns\.mode trust-ad with a DANE entry in tls_policy/);
    expect(store.resolve('a.test')).toMatchObject({ level: 'encrypt' });
    expect(store.resolve('strict.test')).toMatchObject({ level: 'may' });
    expect(store.mentionsDane()).toBe(false);
    // one line; the problems as a structured field (issue 21 item 5)
    expect(logs.find((l) => l.level === 50 && l.msg === 'tls_policy: rejected (previous version stays in force)')).toMatchObject({
      file: 'tls_policy',
      reason: 'test',
      problems: [{ line: 3, message: expect.stringContaining('DANE entry refused') }],
    });
  });
});

describe('issue7: half-written files are not installed', () => {
  it('issue7: a file whose last line has no newline is rejected naming that line; the previous version stays', () => {
    const file = join(dir, 'tls_policy');
    writeFileAtomic(file, 'a.test encrypt\n');
    const store = policyStoreFor(config({ policy: { tls_policy: 'tls_policy' } }), log());
    stores.push(store);
    writeFileAtomic(file, '# new\na.test may\nb.test dan');
    const r = store.reload('test');
    expect(r.rejected[0]!.error).toMatch(/line 3: no newline at the end of the last line \("b\.test dan"\)/);
    expect(store.resolve('a.test').level).toBe('encrypt');
    writeFileAtomic(file, '# new\na.test may\n   '); // trailing blanks without newline: the last non-empty line is complete
    expect(store.reload('test').loaded).toEqual(['tls_policy']);
    expect(store.resolve('a.test').level).toBe('may');
  });

  it('issue7: at start-up an incomplete file refuses to start', () => {
    writeFileAtomic(join(dir, 'danefail'), 'a.test\nb.te');
    expect(() => policyStoreFor(config({ policy: { danefail: 'danefail' } }))).toThrow(/line 2: no newline/);
  });

  it('issue7: a watched change is installed only after two stats debounceMs apart agree, then once, with the final text', async () => {
    const file = join(dir, 'tls_policy');
    writeFileAtomic(file, 'a.test may\n');
    const store = new PolicyStore({
      defaultLevel: 'dane',
      exceptionLevel: 'may',
      tlsPolicy: { path: file, label: 'tls_policy' },
      log: log(),
      statIntervalMs: 50,
      debounceMs: 250,
    });
    stores.push(store);
    const loads: { at: number; count: number }[] = [];
    store.onReload((r) => {
      if (r.loaded.length) loads.push({ at: Date.now(), count: store.counts().tls_policy_entries });
    });
    store.watch();
    // An in-place writer that appends one complete line every 60 ms for a while.
    const writes: number[] = [];
    for (let i = 0; i < 6; i++) {
      appendFileSync(file, `n${i}.test encrypt\n`);
      writes.push(Date.now());
      await sleep(60);
    }
    const lastWrite = writes.at(-1)!;
    await until(() => loads.at(-1)?.count === 7);
    await sleep(700);
    // Each load read no earlier than the second of two agreeing stats 250 ms apart after the last write before it,
    // and installed whole lines only (1 + the lines written by then).
    for (const l of loads) {
      const before = writes.filter((t) => t <= l.at);
      expect(l.at - before.at(-1)!).toBeGreaterThanOrEqual(450);
      expect(l.count).toBe(1 + before.length);
    }
    expect(loads.at(-1)!.at - lastWrite).toBeGreaterThanOrEqual(450);
    expect(lastWrite - writes[0]!).toBeGreaterThan(250);
    // Once: while the writer kept its pace (every gap under the 250 ms debounce) nothing was installed before the end.
    // A machine so busy that a 60 ms sleep took over 250 ms gave a quiet period, which the store rightly read (above).
    const gaps = writes.slice(1).map((t, i) => t - writes[i]!);
    if (gaps.every((g) => g < 250)) expect(loads).toHaveLength(1);
  });

  it('issue7: a file that had entries and now has none is installed but logged as an error', () => {
    const file = join(dir, 'danefail');
    writeFileAtomic(file, 'a.test\nb.test\n');
    const store = policyStoreFor(config({ policy: { danefail: 'danefail' } }), log());
    stores.push(store);
    writeFileAtomic(file, '# emptied\n');
    expect(store.reload('test').loaded).toEqual(['danefail']);
    expect(store.exceptionDomains()).toEqual([]);
    const e = logs.find((l) => l.msg.startsWith('POLICY FILE EMPTIED'));
    expect(e).toMatchObject({ level: 50, file: 'danefail', had: 2 });
    writeFileAtomic(file, '# still empty, nothing to say\n');
    store.reload('test');
    expect(logs.filter((l) => l.msg.startsWith('POLICY FILE EMPTIED'))).toHaveLength(1);
  });
});

describe('DANE-70 exception list and explicit dane-only entries', () => {
  it('DANE-70 the conflict is warned at load and once per reload, naming both files and lines; the dane-only entry stays in force', () => {
    writeFileAtomic(join(dir, 'tls_policy'), '# strict\nstrict.test dane-only\n');
    writeFileAtomic(join(dir, 'danefail'), 'other.test\nstrict.test\n');
    const store = policyStoreFor(config({ policy: { tls_policy: 'tls_policy', danefail: 'danefail' } }), log());
    stores.push(store);
    const conflicts = () => logs.filter((l) => l.msg.startsWith('policy conflict'));
    expect(conflicts()).toHaveLength(1);
    expect(conflicts()[0]).toMatchObject({ level: 40, domain: 'strict.test', danefail: 'danefail:2', tls_policy: 'tls_policy:2 strict.test dane-only' });
    expect(store.resolve('strict.test')).toMatchObject({ level: 'dane-only' });
    expect(store.resolve('other.test')).toMatchObject({ level: 'may', exception: { underlying: 'dane' } });
    expect(store.exceptionDomains()).toEqual(['other.test']); // nothing to probe for the domain the entry keeps strict
    writeFileAtomic(join(dir, 'danefail'), 'other.test\nstrict.test\nthird.test\n');
    store.reload('SIGHUP');
    expect(conflicts()).toHaveLength(2);
    expect(conflicts()[1]).toMatchObject({ reason: 'SIGHUP' });
  });

  it('DANE-70 policy.exception_level allows may and encrypt only (none would strip TLS)', () => {
    expect(() => config({ policy: { exception_level: 'none' } })).toThrow(/exception_level/);
    expect(() => config({ policy: { exception_level: 'dane' } })).toThrow(/exception_level/);
    expect(config({ policy: { exception_level: 'encrypt' } }).policy.exception_level).toBe('encrypt');
  });
});
