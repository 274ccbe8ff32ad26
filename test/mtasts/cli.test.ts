/**
 * `dane-relay mta-sts show|refresh|purge DOMAIN` as the operator runs it (the CLI's main, a config
 * file, the loopback DNS server and a real HTTPS policy host with a test CA given as mta_sts.ca_file).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { main } from '../../src/cli.js';
import { PolicyStore } from '../../src/mtasts/store.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { chainPem, makeCa, makeLeaf } from '../support/pki.js';
import { startPolicyHost, type PolicyHost } from '../support/stsHost.js';

let dir: string;
let dns: TestDns;
let host: PolicyHost;
let config: string;
const DOMAIN = 'cli-sts.test';
const POLICY = 'version: STSv1\nmode: enforce\nmx: mx1.cli-sts.test\nmx: *.backup.test\nmax_age: 1209600\n';

async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o: string[] = [];
  const e: string[] = [];
  const sink = (a: string[]) =>
    new Writable({
      write(c, _x, cb) {
        a.push(c.toString());
        cb();
      },
    });
  const code = await main(args, sink(o), sink(e));
  return { code, out: o.join(''), err: e.join('') };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sts-cli-'));
  const ca = await makeCa({ cn: 'MTA-STS CLI test CA' });
  const leaf = await makeLeaf(ca, { dnsNames: [`mta-sts.${DOMAIN}`] });
  host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) }, { body: POLICY });
  dns = await startDnsServer({
    records: [
      { name: `_mta-sts.${DOMAIN}`, type: 'TXT', data: 'v=STSv1; id=cli1' },
      { name: `mta-sts.${DOMAIN}`, type: 'A', data: '127.0.0.1' },
    ],
  });
  writeFileSync(join(dir, 'ca.pem'), ca.certPem);
  config = join(dir, 'relay.yml');
  writeFileSync(
    config,
    JSON.stringify({
      listen: ['127.0.0.1:0'],
      hostname: 'relay.test',
      queue_dir: join(dir, 'queue'),
      dns: { mode: 'trust-ad', resolvers: [dns.server], timeout: '1s', attempts: 1 },
      mta_sts: { ca_file: 'ca.pem', port: host.port },
    }),
  );
});
afterAll(async () => {
  await host.close();
  await dns.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('dane-relay mta-sts', () => {
  it('STS-30 refresh fetches and stores; show prints it (and --json); purge forgets it; show then exits 1', async () => {
    expect(await run('mta-sts', 'show', DOMAIN, '--config', config)).toMatchObject({ code: 1, out: `${DOMAIN}: no cached MTA-STS policy\n` });
    const r = await run('mta-sts', 'refresh', DOMAIN, '--config', config);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      new RegExp(
        `^${DOMAIN}: MTA-STS policy id cli1\n  mode enforce, max_age 1209600\n  mx mx1.cli-sts.test\n  mx \\*.backup.test\n  fetched .*, expires .*, last used .*\n$`,
      ),
    );
    expect(statSync(join(dir, 'queue', 'mta-sts', `${DOMAIN}.json`)).mode & 0o777).toBe(0o600);
    const s = await run('mta-sts', 'show', `${DOMAIN.toUpperCase()}.`, '--config', config);
    expect(s).toMatchObject({ code: 0, out: r.out });
    const j = await run('mta-sts', 'show', DOMAIN, '--config', config, '--json');
    expect(JSON.parse(j.out)).toMatchObject({
      domain: DOMAIN,
      id: 'cli1',
      policy: { mode: 'enforce', mx: ['mx1.cli-sts.test', '*.backup.test'], lines: POLICY.trim().split('\n') },
    });
    expect(await run('mta-sts', 'purge', DOMAIN, '--config', config)).toMatchObject({ code: 0, out: `${DOMAIN}: cached MTA-STS policy removed\n` });
    expect(await new PolicyStore(join(dir, 'queue')).read(DOMAIN)).toBeUndefined();
    expect(await run('mta-sts', 'purge', DOMAIN, '--config', config)).toMatchObject({ code: 0, out: `${DOMAIN}: nothing cached\n` });
    expect((await run('mta-sts', 'show', DOMAIN, '--config', config)).code).toBe(1);
  });

  it('STS-33 a failed refresh says so, exits 1, and keeps the cached policy (show then names the failure)', async () => {
    expect((await run('mta-sts', 'refresh', DOMAIN, '--config', config)).code).toBe(0);
    host.set({ status: 404 });
    try {
      const r = await run('mta-sts', 'refresh', DOMAIN, '--config', config);
      expect(r.code).toBe(1);
      expect(r.out).toMatch(/fetch failed: sts-policy-fetch-error: .*HTTP 404\nthe cached policy stays in force:\n.*id cli1/);
      const s = await run('mta-sts', 'show', DOMAIN, '--config', config);
      expect(s.out).toMatch(/last refresh FAILED .*: sts-policy-fetch-error: .*HTTP 404 \(the policy above stays in force until it expires\)/);
    } finally {
      host.set({ body: POLICY });
    }
  });

  it('usage errors exit 2: unknown verb, missing or bad domain, stray arguments', async () => {
    for (const args of [
      ['mta-sts'],
      ['mta-sts', 'list'],
      ['mta-sts', 'show'],
      ['mta-sts', 'show', 'a..b'],
      ['mta-sts', 'show', '*.x.test'],
      ['mta-sts', 'show', 'a.test', 'b.test'],
      ['mta-sts', 'show', 'a.test', '--bogus'],
    ]) {
      expect((await run(...args, '--config', config)).code, args.join(' ')).toBe(2);
    }
  });
});
