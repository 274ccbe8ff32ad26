/** `dane-relay dns lookup`, `config check` of dns.trust_anchors, and the relay built in dns.mode validate. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { main } from '../../src/cli.js';
import { ValidatingResolver } from '../../src/dnssec/resolver.js';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { World } from '../support/world.js';

let t: Tree;
let dir: string;
let cfg: string;

function sink(): Writable & { text: string } {
  const w = new Writable({
    write(c, _e, cb) {
      (w as unknown as { text: string }).text += c.toString();
      cb();
    },
  }) as Writable & { text: string };
  w.text = '';
  return w;
}

beforeAll(async () => {
  t = await buildTree([
    mailZone('cli.test', { keys: [key('cli', 13)], denial: { nsec3: { iterations: 0 } } }),
    mailZone('broken.test', { keys: [key('broken', 13)], expiration: Math.floor(Date.now() / 1000) - 3600, inception: Math.floor(Date.now() / 1000) - 86400 }),
  ]);
  dir = mkdtempSync(join(tmpdir(), 'dnssec-cli-'));
  writeFileSync(join(dir, 'anchors.key'), `; private root for the tests\n${t.anchors}`);
  cfg = join(dir, 'relay.yml');
  writeFileSync(cfg, `queue_dir: q\ndns:\n  mode: validate\n  resolvers: ["${t.dns.server}"]\n  trust_anchors: anchors.key\n  timeout: 2s\n  attempts: 1\n`);
}, 60_000);
afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('dane-relay dns lookup', () => {
  it('DANE-1 prints the verdict and the chain walked: anchor, DS→DNSKEY matches, the RRSIG that validated', async () => {
    const out = sink(),
      err = sink();
    expect(await main(['dns', 'lookup', '_25._tcp.mx.cli.test', 'TLSA', '--config', cfg], out, err)).toBe(0);
    expect(out.text).toMatch(/DS\s+cli\.test\s+ok\s+DS \d+\/ECDSAP256SHA256\/SHA-256 matches DNSKEY \d+/);
    expect(out.text).toMatch(/RRSIG\s+_25\._tcp\.mx\.cli\.test\/TLSA\s+ok/);
    expect(out.text).toContain('; _25._tcp.mx.cli.test TLSA: secure');
    expect(out.text).toContain('3 1 1 ' + 'ab'.repeat(32));
  });

  it('explains a denial with the NSEC3 proof, as JSON', async () => {
    const out = sink(),
      err = sink();
    expect(await main(['dns', 'lookup', 'nothing.cli.test', 'MX', '--json', '--config', cfg], out, err)).toBe(0);
    const j = JSON.parse(out.text);
    expect(j.mode).toBe('validate');
    expect(j.answer).toMatchObject({ rcode: 'NXDOMAIN', status: 'secure' });
    expect(j.trace.some((s: { kind: string; result: string }) => s.kind === 'NSEC3' && s.result === 'ok')).toBe(true);
  });

  it('exits 1 for a bogus answer and says why', async () => {
    const out = sink(),
      err = sink();
    expect(await main(['dns', 'lookup', 'mx.broken.test', 'A', '--config', cfg], out, err)).toBe(1);
    expect(out.text).toMatch(/bogus \(bogus: .*expired/);
  });

  it("in dns.mode trust-ad it reports the resolver's AD bit instead of a chain", async () => {
    writeFileSync(join(dir, 'ad.yml'), `dns:\n  mode: trust-ad\n  resolvers: ["${t.dns.server}"]\n  timeout: 2s\n  attempts: 1\n`);
    const out = sink(),
      err = sink();
    expect(await main(['dns', 'lookup', 'cli.test', 'MX', '--config', join(dir, 'ad.yml')], out, err)).toBe(0);
    // The look-alike never sets AD: a trust-ad relay would call this insecure.
    expect(out.text).toMatch(/trust-ad .* insecure .*AD bit/);
  });

  it('exits 2 on a usage error', async () => {
    const out = sink(),
      err = sink();
    expect(await main(['dns', 'lookup', 'cli.test', 'SRV', '--config', cfg], out, err)).toBe(2);
    expect(await main(['dns', 'lookup', 'cli.test'], out, err)).toBe(2);
  });
});

describe('config: dns.mode validate', () => {
  it('`config check` reports an invalid or unreadable trust anchor file with its line number', async () => {
    writeFileSync(join(dir, 'bad.key'), '; comment\n. IN DS 20326 8 2 NOTHEX\n');
    writeFileSync(join(dir, 'bad.yml'), 'dns:\n  trust_anchors: bad.key\n  resolvers: ["127.0.0.1:53"]\n');
    writeFileSync(join(dir, 'missing.yml'), 'dns:\n  trust_anchors: nowhere.key\n  resolvers: ["127.0.0.1:53"]\n');
    const out = sink(),
      err = sink();
    expect(await main(['config', 'check', join(dir, 'bad.yml')], out, err)).toBe(2);
    expect(err.text).toMatch(/dns\.trust_anchors: .*bad\.key line 2: DS digest is not hexadecimal/);
    expect(await main(['config', 'check', join(dir, 'missing.yml')], out, err)).toBe(2);
    expect(err.text).toMatch(/dns\.trust_anchors: cannot read .*nowhere\.key/);
    expect(await main(['config', 'check', cfg], out, err)).toBe(0);
  });

  it('DANE-2 an off-host resolver is accepted in validate mode (the relay validates itself)', async () => {
    writeFileSync(join(dir, 'remote.yml'), 'dns:\n  resolvers: ["192.0.2.53:53"]\n');
    const out = sink(),
      err = sink();
    expect(await main(['config', 'check', join(dir, 'remote.yml')], out, err)).toBe(0);
  });

  it('the relay starts in dns.mode validate with a ValidatingResolver that uses the anchors file', async () => {
    const w = await World.create();
    try {
      const relay = await w.start({ dns: { mode: 'validate', resolvers: [t.dns.server], trust_anchors: join(dir, 'anchors.key') }, delivery: { port: 25 } });
      expect(relay.resolver).toBeInstanceOf(ValidatingResolver);
      const a = await relay.resolver.lookup('cli.test', 'MX');
      expect([a.status, a.records]).toEqual(['secure', [{ preference: 10, exchange: 'mx.cli.test' }]]);
    } finally {
      await w.close();
    }
  });
});
