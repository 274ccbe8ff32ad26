/**
 * The durable MTA-STS policy cache and its refresh rules (RFC 8461 §3.3, §5.1, §10.2): real files
 * (0700/0600, fsync, rename), real HTTPS policy hosts on loopback with a test CA, the relay's
 * StubResolver against the loopback test DNS server; time is a clock the test moves.
 *
 * When the local disk fails (the last two describes): every local failure path of a lookup — stat, read,
 * parse of the cache file, mkdir, write, rename, fsync (ENOSPC on a full tmpfs, EROFS on a read-only
 * mount, as root) — either applies the policy in force or rejects (StsStateError), never answers "no
 * policy" while an `enforce` policy may be in that file (STS-16, STS-33).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fetchPolicy } from '../../src/mtasts/fetch.js';
import { FETCH_BACKOFF_MS, RECENTLY_USED_MS, REFRESH_INTERVAL_MS, StsPolicies, StsStateError, type StsPoliciesOptions } from '../../src/mtasts/policies.js';
import { PolicyStore } from '../../src/mtasts/store.js';
import { stsFetchFailure } from '../../src/reporting/tlsrpt/results.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { chainPem, makeCa, makeLeaf, type Issued } from '../support/pki.js';
import { startPolicyHost, type PolicyHost } from '../support/stsHost.js';

const policy = (mode: string, maxAge = 604800, mx = ['mail.example.test']) =>
  `version: STSv1\nmode: ${mode}\n${mx.map((m) => `mx: ${m}\n`).join('')}max_age: ${maxAge}\n`;

let ca: Issued;
let dns: TestDns;
let resolver: StubResolver;
const hosts: PolicyHost[] = [];
const dirs: string[] = [];
const mounts: string[] = [];
let n = 0;
let clock = Date.UTC(2026, 11, 7);
const logs: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
const log = {
  info: (obj: object, msg: string) => {
    logs.push({ level: 'info', obj: obj as Record<string, unknown>, msg });
  },
  warn: (obj: object, msg: string) => {
    logs.push({ level: 'warn', obj: obj as Record<string, unknown>, msg });
  },
};

/** A Policy Domain with a TXT id and a loopback policy host. */
async function site(id: string | undefined, body: string) {
  const domain = `cache${++n}.test`;
  const leaf = await makeLeaf(ca, { dnsNames: [`mta-sts.${domain}`] });
  const host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) }, { body });
  hosts.push(host);
  dns.add({ name: `mta-sts.${domain}`, type: 'A', data: '127.0.0.1' });
  if (id) dns.add({ name: `_mta-sts.${domain}`, type: 'TXT', data: `v=STSv1; id=${id}` });
  return {
    domain,
    host,
    setId: (v: string | undefined) => {
      dns.remove(`_mta-sts.${domain}`, 'TXT');
      if (v) dns.add({ name: `_mta-sts.${domain}`, type: 'TXT', data: `v=STSv1; id=${v}` });
    },
  };
}

function queueDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sts-cache-'));
  dirs.push(d);
  return d;
}

function policies(q: string, port: number, refreshFailed?: StsPoliciesOptions['refreshFailed']): StsPolicies {
  return new StsPolicies({
    store: new PolicyStore(q),
    resolver,
    log,
    ...(refreshFailed ? { refreshFailed } : {}),
    now: () => clock,
    random: () => 0.5,
    fetch: (d) => fetchPolicy(d, { resolver, ca: ca.certPem, port, timeoutMs: 20_000 }),
  });
}

/** An enforce policy for `s` stored under `q` (fetched by another instance: "before the restart"). */
async function stored(q: string, s: Awaited<ReturnType<typeof site>>): Promise<string> {
  expect((await policies(q, s.host.port).lookup(s.domain)).applied?.policy.mode).toBe('enforce');
  return join(q, 'mta-sts', `${s.domain}.json`);
}

/** Root can mount a tmpfs (the interop/CI machine runs as root); elsewhere the ENOSPC/EROFS cases are skipped. */
const canMount = (() => {
  if (process.getuid?.() !== 0) return false;
  const d = mkdtempSync(join(tmpdir(), 'sts-mnt-probe-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', d], { stdio: 'ignore' });
    execFileSync('umount', [d], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
})();

/** A queue_dir on its own small tmpfs. */
function tmpfsQueueDir(): string {
  const d = queueDir();
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', d]);
  mounts.push(d);
  return d;
}

/** Fills the filesystem of `dir` to the last block (ENOSPC for the next write). */
function fill(dir: string): void {
  const chunk = Buffer.alloc(4096, 1);
  for (let i = 0; ; i++) {
    try {
      writeFileSync(join(dir, `filler-${i}`), chunk);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC') return;
      throw e;
    }
  }
}

beforeAll(async () => {
  ca = await makeCa({ cn: 'MTA-STS cache test CA' });
  dns = await startDnsServer();
  resolver = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1, cache: false });
});
afterEach(() => {
  logs.length = 0;
});
afterAll(async () => {
  for (const m of mounts) execFileSync('umount', ['-l', m]);
  await Promise.all(hosts.map((h) => h.close()));
  await resolver.close();
  await dns.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('MTA-STS policy cache', () => {
  it('STS-30 the policy survives a restart: stored 0600 in a 0700 queue_dir/mta-sts, used after restart without a fetch', async () => {
    const s = await site('one', policy('enforce'));
    const q = queueDir();
    const first = await policies(q, s.host.port).lookup(s.domain);
    expect(first).toMatchObject({
      fetch: 'fetched',
      applied: { id: 'one', policy: { mode: 'enforce', mx: ['mail.example.test'] }, fetchedAt: clock, expiresAt: clock + 604800_000 },
    });
    expect(statSync(join(q, 'mta-sts')).mode & 0o777).toBe(0o700);
    expect(statSync(join(q, 'mta-sts', `${s.domain}.json`)).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(q, 'mta-sts'))).toEqual([`${s.domain}.json`]); // no temp file left
    // "restart": a new instance over the same directory, the policy host gone
    s.host.set({ status: 500 });
    const again = policies(q, s.host.port);
    expect(await again.load()).toBe(1);
    const r = await again.lookup(s.domain);
    expect(r).toMatchObject({ fetch: 'cached', applied: { id: 'one', policy: { mode: 'enforce' } } });
    expect(s.host.requests).toHaveLength(1);
  });

  it('STS-31 same id and unexpired: no fetch; a new TXT id fetches and replaces the policy', async () => {
    const s = await site('v1', policy('testing'));
    const p = policies(queueDir(), s.host.port);
    expect((await p.lookup(s.domain)).applied?.policy.mode).toBe('testing');
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'v1' } });
    expect(s.host.requests).toHaveLength(1);
    s.setId('v2');
    s.host.set({ body: policy('enforce', 86400, ['mx.cache.test']) });
    expect(await p.lookup(s.domain)).toMatchObject({
      fetch: 'fetched',
      applied: { id: 'v2', policy: { mode: 'enforce', mx: ['mx.cache.test'], maxAge: 86400 } },
    });
    expect(s.host.requests).toHaveLength(2);
  });

  it('STS-33 STS-16 no downgrade: enforce cached, new id but HTTPS 404 → still enforced and said so; TXT gone → still enforced', async () => {
    const s = await site('a', policy('enforce'));
    const q = queueDir();
    const p = policies(q, s.host.port);
    await p.lookup(s.domain);
    s.setId('b');
    s.host.set({ status: 404 });
    const r = await p.lookup(s.domain);
    expect(r).toMatchObject({ fetch: 'failed', failure: { resultType: 'sts-policy-fetch-error' }, applied: { id: 'a', policy: { mode: 'enforce' } } });
    expect(logs.find((l) => l.msg === 'mta-sts: policy fetch failed; keeping the cached policy')).toMatchObject({
      level: 'warn',
      obj: { domain: s.domain, id: 'b', cachedId: 'a' },
    });
    // the failure is recorded with the kept policy (show says so)
    expect((await new PolicyStore(q).read(s.domain))?.entry.refreshFailure).toMatchObject({ resultType: 'sts-policy-fetch-error', at: clock });
    s.setId(undefined); // NXDOMAIN
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'cached', discovery: { kind: 'none' }, applied: { policy: { mode: 'enforce' } } });
    dns.behave(`_mta-sts.${s.domain}`, 'TXT', 'servfail');
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'cached', discovery: { kind: 'error' }, applied: { policy: { mode: 'enforce' } } });
    dns.behave(`_mta-sts.${s.domain}`, 'TXT', undefined);
  });

  it('STS-33 an invalid policy or a WebPKI failure never replaces a valid one either', async () => {
    const s = await site('a', policy('enforce'));
    const p = policies(queueDir(), s.host.port);
    await p.lookup(s.domain);
    s.setId('b');
    s.host.set({ body: 'version: STSv1\nmode: enforce\nmax_age: 1\n' });
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'failed', failure: { resultType: 'sts-policy-invalid' }, applied: { id: 'a' } });
  });

  it('STS-16 a failed first fetch: no policy, then no fetch for 5 minutes under that id (not one per message); a new id or the end of the wait fetches again', async () => {
    const s = await site('x1', policy('enforce'));
    s.host.set({ status: 503 });
    const p = policies(queueDir(), s.host.port);
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'failed', applied: undefined });
    expect(logs.some((l) => l.msg === 'mta-sts: policy fetch failed; no cached policy, delivering as without MTA-STS')).toBe(true);
    s.host.set({ body: policy('enforce') });
    for (let i = 0; i < 5; i++)
      expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'backoff', applied: undefined, failure: { reason: expect.stringContaining('HTTP 503') } });
    expect(s.host.requests).toHaveLength(1);
    clock += FETCH_BACKOFF_MS - 1;
    expect((await p.lookup(s.domain)).fetch).toBe('backoff');
    clock += 1;
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'fetched', applied: { policy: { mode: 'enforce' } } });
    // a new id is a new policy: no wait for it
    const t = await site('y1', policy('enforce'));
    t.host.set({ status: 503 });
    const p2 = policies(queueDir(), t.host.port);
    await p2.lookup(t.domain);
    t.setId('y2');
    t.host.set({ body: policy('testing') });
    expect(await p2.lookup(t.domain)).toMatchObject({ fetch: 'fetched', applied: { id: 'y2' } });
  });

  it('STS-16 one fetch per domain at a time: concurrent deliveries share it', async () => {
    const s = await site('c1', policy('enforce'));
    const p = policies(queueDir(), s.host.port);
    const all = await Promise.all(Array.from({ length: 10 }, () => p.lookup(s.domain)));
    expect(all.every((r) => r.applied?.id === 'c1')).toBe(true);
    expect(s.host.requests).toHaveLength(1);
  });

  it('STS-34 an expired, unrefreshed policy stops applying; max_age 0 applies only to the delivery that fetched it', async () => {
    const s = await site('e1', policy('enforce', 3600));
    const p = policies(queueDir(), s.host.port);
    await p.lookup(s.domain);
    s.setId(undefined);
    clock += 3600_000 - 1;
    expect((await p.lookup(s.domain)).applied?.policy.mode).toBe('enforce');
    clock += 1;
    expect((await p.lookup(s.domain)).applied).toBeUndefined();
    const z = await site('z1', policy('enforce', 0));
    const pz = policies(queueDir(), z.host.port);
    expect((await pz.lookup(z.domain)).applied?.policy.maxAge).toBe(0);
    z.setId(undefined);
    expect((await pz.lookup(z.domain)).applied).toBeUndefined();
  });

  it('STS-46 a fetched mode none replaces an older enforce (the way out for owners)', async () => {
    const s = await site('n1', policy('enforce'));
    const p = policies(queueDir(), s.host.port);
    await p.lookup(s.domain);
    s.setId('n2');
    s.host.set({ body: 'version: STSv1\nmode: none\nmax_age: 86400\n' });
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'fetched', applied: { id: 'n2', policy: { mode: 'none', mx: [] } } });
  });

  it('STS-32 proactive refresh: a used policy is refetched before expiry (about daily, jittered) whatever the TXT says; unused ones are not, and go at expiry', async () => {
    const used = await site('u1', policy('enforce', 10 * 86400));
    const idle = await site('i1', policy('enforce', 40 * 86400));
    const q = queueDir();
    const pu = policies(q, used.host.port);
    const pi = policies(q, idle.host.port);
    const t0 = clock;
    await pu.lookup(used.domain);
    await pi.lookup(idle.domain);
    // before the refresh time (jitter 0.5 → exactly one interval): nothing
    clock = t0 + REFRESH_INTERVAL_MS - 1;
    expect(await pu.maintain()).toEqual({ refreshed: [], failed: [], dropped: [] });
    clock = t0 + REFRESH_INTERVAL_MS;
    used.setId(undefined); // refresh does not need the TXT record
    used.host.set({ body: policy('enforce', 10 * 86400, ['mx2.example.test']) });
    expect((await pu.maintain()).refreshed).toEqual([used.domain]);
    const stored = (await new PolicyStore(q).read(used.domain))!.entry;
    expect(stored).toMatchObject({ id: 'u1', fetchedAt: clock, expiresAt: clock + 10 * 86400_000, policy: { mx: ['mx2.example.test'] } });
    expect(used.host.requests).toHaveLength(2);
    // idle: not used for RECENTLY_USED_MS → not refreshed; at expiry dropped
    clock = t0 + RECENTLY_USED_MS + 1;
    const m = await pi.maintain();
    expect(m.refreshed).not.toContain(idle.domain);
    expect(idle.host.requests).toHaveLength(1);
    clock = t0 + 40 * 86400_000;
    expect((await pi.maintain()).dropped).toContain(idle.domain);
    expect(await new PolicyStore(q).read(idle.domain)).toBeUndefined();
    expect(logs.some((l) => l.msg === 'mta-sts: expired policy dropped' && l.obj.domain === idle.domain)).toBe(true);
  });

  it('STS-32 STS-34 a failed proactive refresh keeps the policy, warns, and is recorded; mode none does not warn', async () => {
    const s = await site('r1', policy('enforce', 10 * 86400));
    const q = queueDir();
    const p = policies(q, s.host.port);
    const t0 = clock;
    await p.lookup(s.domain);
    clock = t0 + REFRESH_INTERVAL_MS;
    s.host.set({ status: 500 });
    expect((await p.maintain()).failed).toEqual([s.domain]);
    expect(logs.filter((l) => l.msg === 'mta-sts: policy fetch failed; keeping the cached policy').map((l) => l.level)).toEqual(['warn']);
    expect((await p.lookup(s.domain)).applied).toMatchObject({ fetchedAt: t0, policy: { mode: 'enforce' } });
    const none = await site('o1', 'version: STSv1\nmode: none\nmax_age: 864000\n');
    const pn = policies(queueDir(), none.host.port);
    await pn.lookup(none.domain);
    logs.length = 0;
    clock += REFRESH_INTERVAL_MS;
    none.host.set({ status: 500 });
    expect((await pn.maintain()).failed).toEqual([none.domain]);
    expect(logs.filter((l) => l.msg === 'mta-sts: policy fetch failed; keeping the cached policy').map((l) => l.level)).toEqual(['info']);
  });

  it('STS-62 TLSRPT-22 each failed proactive refresh is handed to refreshFailed once, with the policy kept in force; not a successful one, not mode none, not a failed fetch made by a delivery', async () => {
    const s = await site('t1', policy('enforce', 10 * 86400));
    const none = await site('t2', 'version: STSv1\nmode: none\nmax_age: 864000\n');
    const q = queueDir();
    const failed: { domain: string; resultType: string; kept: string }[] = [];
    const p = policies(q, s.host.port, (f) => failed.push({ domain: f.domain, resultType: f.resultType, kept: `${f.kept.id}/${f.kept.policy.mode}` }));
    const pn = policies(queueDir(), none.host.port, (f) =>
      failed.push({ domain: f.domain, resultType: f.resultType, kept: `${f.kept.id}/${f.kept.policy.mode}` }),
    );
    const t0 = clock;
    await p.lookup(s.domain);
    await pn.lookup(none.domain);
    // a delivery's own failed fetch (new id, 500) is the delivery's to report (event sts-fetch-failed), not this hook's
    s.setId('t1b');
    s.host.set({ status: 500 });
    expect((await p.lookup(s.domain)).fetch).toBe('failed');
    expect(failed).toEqual([]);
    clock = t0 + REFRESH_INTERVAL_MS;
    expect((await p.maintain()).failed).toEqual([s.domain]);
    expect(failed).toEqual([{ domain: s.domain, resultType: 'sts-policy-fetch-error', kept: 't1/enforce' }]);
    // the next hourly run refreshes again (still due): a second failed fetch, a second count
    clock += 3600_000;
    s.host.set({ body: 'version: STSv1\nmode: enforce\nmax_age: 1\n' });
    expect((await p.maintain()).failed).toEqual([s.domain]);
    expect(failed.at(-1)).toEqual({ domain: s.domain, resultType: 'sts-policy-invalid', kept: 't1/enforce' });
    // a successful one is not a failure
    s.host.set({ body: policy('enforce', 10 * 86400) });
    clock += 3600_000;
    expect((await p.maintain()).refreshed).toEqual([s.domain]);
    expect(failed).toHaveLength(2);
    // mode none: refresh failures are not reported (STS-46) — the relay's TLSRPT mapping drops them
    none.host.set({ status: 500 });
    clock = t0 + 2 * REFRESH_INTERVAL_MS;
    await pn.lookup(none.domain);
    expect((await pn.maintain()).failed).toContain(none.domain);
    expect(failed.filter((f) => f.domain === none.domain).map((f) => f.kept)).toEqual(['t2/none']);
    expect(stsFetchFailure(none.domain, 'sts-policy-fetch-error', (await pn.lookup(none.domain)).applied)).toBeUndefined();
    clock = t0;
  });

  it('STS-30 a purge or refresh by another process (the CLI) is seen at the next lookup; a malformed file is warned about and replaced by a successful fetch', async () => {
    const s = await site('p1', policy('enforce'));
    const q = queueDir();
    const p = policies(q, s.host.port);
    await p.lookup(s.domain);
    expect(await new PolicyStore(q).remove(s.domain)).toBe(true);
    s.setId(undefined);
    expect((await p.lookup(s.domain)).applied).toBeUndefined();
    // malformed file
    s.setId('p2');
    writeFileSync(join(q, 'mta-sts', `${s.domain}.json`), '{"format":1,"domain":"x', { mode: 0o600 });
    const r = await p.lookup(s.domain);
    expect(logs.some((l) => l.msg.startsWith('mta-sts: unreadable cached policy;'))).toBe(true);
    expect(r).toMatchObject({ fetch: 'fetched', applied: { id: 'p2' } });
    expect((await new PolicyStore(q).read(s.domain))?.entry.id).toBe('p2');
  });
});

describe('MTA-STS cache: a file that exists but cannot be read is never "no policy"', () => {
  // Each way the stored enforce policy can become unreadable after a restart, with the policy host blocked
  // (an on-path attacker) and the TXT record there, changed, or gone.
  const breakers: [string, (file: string, q: string) => void][] = [
    ['a directory in place of the policy file (EISDIR)', (f) => (rmSync(f), mkdirSync(f))],
    ['a corrupt file (truncated JSON)', (f) => writeFileSync(f, readFileSync(f, 'utf8').slice(0, 40))],
    ['a file of another domain', (f) => writeFileSync(f, readFileSync(f, 'utf8').replace(/"domain":"[^"]+"/, '"domain":"other.test"'))],
    ['an unknown format', (f) => writeFileSync(f, readFileSync(f, 'utf8').replace('"format":1', '"format":99'))],
    ['a symbolic link in place of the file (ELOOP)', (f) => (rmSync(f), execFileSync('ln', ['-s', '/etc/hostname', f]))],
    [
      'a file where the mta-sts directory should be (ENOTDIR)',
      (_f, q) => (rmSync(join(q, 'mta-sts'), { recursive: true }), writeFileSync(join(q, 'mta-sts'), 'x')),
    ],
  ];
  it.each(breakers)(
    'STS-33 STS-16 %s: after a restart with the policy fetch blocked, lookup rejects (StsStateError), never returns no policy',
    async (_name, breakIt) => {
      const s = await site('a1', policy('enforce'));
      const q = queueDir();
      const file = await stored(q, s);
      breakIt(file, q);
      s.host.set({ status: 500 }); // the attacker blocks the fetch
      const p = policies(q, s.host.port);
      await p.load(); // the start does not fail on it
      // same id (no fetch due), a new id (fetch fails), the TXT record stripped, the TXT answer SERVFAIL
      await expect(p.lookup(s.domain)).rejects.toBeInstanceOf(StsStateError);
      s.setId('a2');
      await expect(p.lookup(s.domain)).rejects.toBeInstanceOf(StsStateError);
      await expect(p.lookup(s.domain)).rejects.toBeInstanceOf(StsStateError); // in the 5-minute backoff too
      s.setId(undefined);
      await expect(p.lookup(s.domain)).rejects.toBeInstanceOf(StsStateError);
      dns.behave(`_mta-sts.${s.domain}`, 'TXT', 'servfail');
      await expect(p.lookup(s.domain)).rejects.toThrow(/MTA-STS policy cache for cache\d+\.test cannot be read/);
      dns.behave(`_mta-sts.${s.domain}`, 'TXT', undefined);
      expect(logs.some((l) => l.level === 'warn' && l.obj.domain === s.domain && /cannot read|unreadable/.test(l.msg))).toBe(true);
    },
  );

  it('STS-33 an unreadable file with a TXT record and a working policy host: the fetched policy applies (and replaces the file)', async () => {
    const s = await site('b1', policy('enforce'));
    const q = queueDir();
    const file = await stored(q, s);
    writeFileSync(file, '{"format":1,"dom');
    s.setId('b2');
    s.host.set({ body: policy('enforce', 604800, ['mx2.example.test']) });
    const r = await policies(q, s.host.port).lookup(s.domain);
    expect(r).toMatchObject({ fetch: 'fetched', applied: { id: 'b2', policy: { mode: 'enforce', mx: ['mx2.example.test'] } } });
    expect((await new PolicyStore(q).read(s.domain))?.entry.id).toBe('b2');
  });

  it('STS-33 an unreadable file while this process holds the policy in memory: the copy in memory stays in force', async () => {
    const s = await site('c1', policy('enforce'));
    const q = queueDir();
    const p = policies(q, s.host.port);
    const file = await stored(q, s);
    expect((await p.lookup(s.domain)).applied?.id).toBe('c1');
    rmSync(file);
    mkdirSync(file);
    s.host.set({ status: 500 });
    s.setId('c2');
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'failed', applied: { id: 'c1', policy: { mode: 'enforce' } } });
    s.setId(undefined);
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'c1', policy: { mode: 'enforce' } } });
  });

  it('STS-16 a domain that cannot be a cache file name (not LDH) has nothing on disk: no record, no policy — not an unreadable cache', async () => {
    const p = policies(queueDir(), 1);
    expect(await p.lookup('under_score.test')).toMatchObject({ fetch: 'cached', applied: undefined, discovery: { kind: 'none' } });
  });
});

describe('MTA-STS cache: a policy that cannot be written still applies', () => {
  it("STS-30 STS-33 the start's background load reading an older file while a lookup fetches a policy it cannot write: the newer policy stays in force", async () => {
    const s = await site('t1', policy('testing'));
    const q = queueDir();
    await policies(q, s.host.port).lookup(s.domain); // "before the restart": testing, id t1, on disk
    s.host.set({ body: policy('enforce') });
    s.setId('t2');
    // a real file store whose reads wait for the test, and whose writes fail (disk full)
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let reads = 0;
    class SlowFullStore extends PolicyStore {
      override async read(domain: string) {
        const r = await super.read(domain);
        if (reads++ === 0) await gate; // only the load's read is held
        return r;
      }
      override async write(): Promise<number> {
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      }
    }
    const p = new StsPolicies({
      store: new SlowFullStore(q),
      resolver,
      log,
      now: () => clock,
      random: () => 0.5,
      fetch: (d) => fetchPolicy(d, { resolver, ca: ca.certPem, port: s.host.port, timeoutMs: 20_000 }),
    });
    const loading = p.load(); // reads the old file, held at the gate
    while (reads === 0) await new Promise((r) => setTimeout(r, 5));
    // the first delivery: t2 is fetched (enforce), the write fails, memory is ahead of the disk
    expect(await p.lookup(s.domain)).toMatchObject({ applied: { id: 't2', policy: { mode: 'enforce' } } });
    release(); // the load's read of the older file lands now
    await loading;
    // the policy host is now blocked: the enforce policy in memory must still be the one in force, not the older file's testing
    s.host.set({ status: 500 });
    expect(await p.lookup(s.domain)).toMatchObject({ applied: { id: 't2', policy: { mode: 'enforce' } } });
  });

  it('STS-30 STS-33 a directory where the file goes (mkdir ok, rename EISDIR): the fetched enforce policy applies from memory, the failure is logged once, and the write is retried until it succeeds', async () => {
    const s = await site('d1', policy('enforce'));
    const q = queueDir();
    mkdirSync(join(q, 'mta-sts', `${s.domain}.json`), { recursive: true });
    const p = policies(q, s.host.port);
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'fetched', applied: { id: 'd1', policy: { mode: 'enforce' } } });
    expect(logs.filter((l) => l.msg === 'mta-sts: cannot write the policy cache; the policy applies from memory and the write is retried')).toHaveLength(1);
    // later lookups: still enforced, from memory, without a fetch and without another warning
    s.host.set({ status: 500 });
    s.setId(undefined);
    for (let i = 0; i < 3; i++) expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'd1', policy: { mode: 'enforce' } } });
    expect(s.host.requests).toHaveLength(1);
    expect(logs.filter((l) => l.msg.startsWith('mta-sts: cannot write the policy cache'))).toHaveLength(1);
    // the disk is repaired: the hourly maintenance writes it
    rmSync(join(q, 'mta-sts', `${s.domain}.json`), { recursive: true });
    expect(await p.maintain()).toEqual({ refreshed: [], failed: [], dropped: [] });
    expect((await new PolicyStore(q).read(s.domain))?.entry).toMatchObject({ id: 'd1', policy: { mode: 'enforce' } });
    expect(logs.some((l) => l.msg === 'mta-sts: policy written to the cache after earlier failures')).toBe(true);
    // and a restart reads it
    expect(await policies(q, s.host.port).lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'd1' } });
  });

  it('STS-30 a file where the mta-sts directory should be (mkdir fails, stat ENOTDIR): the fetched policy still applies', async () => {
    const s = await site('e1', policy('enforce'));
    const q = queueDir();
    writeFileSync(join(q, 'mta-sts'), 'not a directory');
    const p = policies(q, s.host.port);
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'fetched', applied: { policy: { mode: 'enforce' } } });
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { policy: { mode: 'enforce' } } });
    await p.maintain(); // does not throw on the unlistable directory
    expect(logs.some((l) => l.msg === 'mta-sts: cannot list the policy cache')).toBe(true);
  });

  it('STS-33 a failed refetch whose note cannot be written keeps the cached enforce policy (no exception, no downgrade)', async () => {
    const s = await site('f1', policy('enforce'));
    const q = queueDir();
    const p = policies(q, s.host.port);
    const file = await stored(q, s);
    await p.lookup(s.domain);
    rmSync(file);
    mkdirSync(file); // the note's write (rename) fails
    s.setId('f2');
    s.host.set({ status: 404 });
    expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'failed', applied: { id: 'f1', policy: { mode: 'enforce' } } });
  });

  it.skipIf(!canMount)(
    'STS-30 STS-33 ENOSPC (a full tmpfs): a new enforce policy replacing a cached testing one applies in memory; the old file is left, a restart before the write rereads it',
    async () => {
      const s = await site('g1', policy('testing'));
      const q = tmpfsQueueDir();
      const p = policies(q, s.host.port);
      expect((await p.lookup(s.domain)).applied?.policy.mode).toBe('testing');
      fill(q);
      s.setId('g2');
      s.host.set({ body: policy('enforce') });
      expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'fetched', applied: { id: 'g2', policy: { mode: 'enforce' } } });
      expect(logs.find((l) => l.msg.startsWith('mta-sts: cannot write the policy cache'))?.obj.err).toMatch(/ENOSPC/);
      // the file on disk is still the old testing policy (never half-written), and memory wins over it
      expect((await new PolicyStore(q).read(s.domain))?.entry.policy.mode).toBe('testing');
      s.host.set({ status: 500 });
      expect(await p.lookup(s.domain)).toMatchObject({ fetch: 'cached', applied: { id: 'g2', policy: { mode: 'enforce' } } });
      // space again: the next lookup writes it
      execFileSync('sh', ['-c', `rm -f ${q}/filler-*`]);
      await p.lookup(s.domain);
      expect((await new PolicyStore(q).read(s.domain))?.entry).toMatchObject({ id: 'g2', policy: { mode: 'enforce' } });
    },
  );

  it.skipIf(!canMount)(
    'STS-32 STS-30 EROFS (the queue filesystem remounted read-only): a proactive refresh to enforce applies; lastUsed write-back failures are harmless',
    async () => {
      const s = await site('h1', policy('testing', 10 * 86400));
      const q = tmpfsQueueDir();
      const p = policies(q, s.host.port);
      const t0 = clock;
      await p.lookup(s.domain);
      execFileSync('mount', ['-o', 'remount,ro', q]);
      try {
        s.host.set({ body: policy('enforce', 10 * 86400) });
        clock = t0 + REFRESH_INTERVAL_MS;
        expect((await p.maintain()).refreshed).toEqual([s.domain]);
        expect(logs.find((l) => l.msg.startsWith('mta-sts: cannot write the policy cache'))?.obj.err).toMatch(/EROFS/);
        s.host.set({ status: 500 });
        expect(await p.lookup(s.domain)).toMatchObject({ applied: { policy: { mode: 'enforce' } } });
        clock += 2 * 3600_000;
        await p.lookup(s.domain);
        await p.maintain(); // lastUsed write-back on a read-only disk: no throw
        expect(await p.lookup(s.domain)).toMatchObject({ applied: { policy: { mode: 'enforce' } } });
      } finally {
        execFileSync('mount', ['-o', 'remount,rw', q]);
        clock = t0;
      }
    },
  );
});
