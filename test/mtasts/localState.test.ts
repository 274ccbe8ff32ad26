/**
 * The MTA-STS cache when the local disk fails (RFC 8461 §3.3, §5, §10.2; digest STS-16, STS-30, STS-33):
 * every local failure path of a lookup — stat, read, parse of the cache file, mkdir, write, rename, fsync
 * (ENOSPC on a full tmpfs, EROFS on a read-only mount) — either applies the policy that is in force or
 * rejects (StsStateError), never answers "no policy" while an `enforce` policy may be in that file.
 * Real files, real HTTPS policy hosts on loopback with a test CA, the loopback test DNS server.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { fetchPolicy } from '../../src/mtasts/fetch.js';
import { REFRESH_INTERVAL_MS, StsPolicies, StsStateError } from '../../src/mtasts/policies.js';
import { PolicyStore } from '../../src/mtasts/store.js';
import { StubResolver } from '../../src/dns/stub.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { chainPem, makeCa, makeLeaf, type Issued } from '../support/pki.js';
import { startPolicyHost, type PolicyHost } from '../support/stsHost.js';

const policy = (mode: string, mx = ['mail.example.test'], maxAge = 604800) =>
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
  info: (obj: object, msg: string) => void logs.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
  warn: (obj: object, msg: string) => void logs.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
};

async function site(id: string | undefined, body: string) {
  const domain = `local${++n}.test`;
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
  const d = mkdtempSync(join(tmpdir(), 'sts-local-'));
  dirs.push(d);
  return d;
}

function policies(q: string, port: number): StsPolicies {
  return new StsPolicies({
    store: new PolicyStore(q),
    resolver,
    log,
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
  ca = await makeCa({ cn: 'MTA-STS local-state test CA' });
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
      await expect(p.lookup(s.domain)).rejects.toThrow(/MTA-STS policy cache for local\d+\.test cannot be read/);
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
    s.host.set({ body: policy('enforce', ['mx2.example.test']) });
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
      const s = await site('h1', policy('testing', ['mail.example.test'], 10 * 86400));
      const q = tmpfsQueueDir();
      const p = policies(q, s.host.port);
      const t0 = clock;
      await p.lookup(s.domain);
      execFileSync('mount', ['-o', 'remount,ro', q]);
      try {
        s.host.set({ body: policy('enforce', ['mail.example.test'], 10 * 86400) });
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
