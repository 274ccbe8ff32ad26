import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfigText, resolvConfNameservers } from '../../src/config/load.js';
import { trustAdProblem, isLoopbackServer } from '../../src/dns/trust.js';
import { main } from '../../src/cli.js';
import { Writable } from 'node:stream';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
/** a temp directory of this file's, removed at its end */
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'cfg-'));
  dirs.push(d);
  return d;
}

function errorsOf(text: string): string[] {
  try {
    parseConfigText(text);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

function sink(): Writable & { text: string } {
  const w = new Writable({
    write(c, _e, cb) {
      (w as any).text += c.toString();
      cb();
    },
  }) as Writable & { text: string };
  w.text = '';
  return w;
}

describe('configuration', () => {
  it('the contract keys parse with their documented meaning', () => {
    const c = parseConfigText(
      `listen: ["127.0.0.1:2525", "[::1]:2525"]\nrelay_clients: ["127.0.0.0/8", "::1/128"]\nqueue_dir: q\nhostname: relay.example.net\ndns:\n  resolvers: ["127.0.0.1:53"]\ndelivery:\n  port: 2526\n`,
    );
    expect(c.listen).toEqual(['127.0.0.1:2525', '[::1]:2525']);
    expect(c.dns.resolvers).toEqual(['127.0.0.1:53']);
    expect(c.delivery.port).toBe(2526);
    expect(c.delivery.tls_level).toBe('dane');
    expect(c.queue.lifetime).toBe(5 * 86_400_000);
  });
  it('unknown keys and bad values name the key, line and column', () => {
    const errs = errorsOf('hostname: relay.example.net\ndelivery:\n  port: 99999\n  colour: blue\nfoo: 1\n');
    expect(errs).toContain('line 3, column 9: delivery.port: Too big: expected number to be <=65535');
    expect(errs).toContain('line 4, column 3: delivery.colour: unknown key');
    expect(errs).toContain('line 5, column 1: foo: unknown key');
  });
  it('delivery.discard_ehlo_keywords: the extensions whose absence costs no protection; starttls or requiretls is refused with the allowed list', () => {
    expect(parseConfigText('hostname: relay.example.net\n').delivery.discard_ehlo_keywords).toEqual([]);
    expect(parseConfigText('hostname: relay.example.net\ndelivery:\n  discard_ehlo_keywords: [chunking, dsn]\n').delivery.discard_ehlo_keywords).toEqual([
      'chunking',
      'dsn',
    ]);
    for (const kw of ['starttls', 'requiretls', 'CHUNKING']) {
      const errs = errorsOf(`hostname: relay.example.net\ndelivery:\n  discard_ehlo_keywords: [${kw}]\n`);
      expect(errs).toHaveLength(1);
      expect(errs[0]).toMatch(/^line 3, column \d+: delivery\.discard_ehlo_keywords\.0: .*"chunking"\|"pipelining"\|"8bitmime"\|"dsn"\|"size"/);
    }
  });
  it('bad addresses, CIDRs, durations and YAML syntax are errors with positions', () => {
    expect(errorsOf('listen: ["localhost:25"]\n')[0]).toMatch(/^line 1, column 10: listen.0: "localhost" is not an IP address \(expected "address:port"/);
    expect(errorsOf('relay_clients: ["10.0.0.0/33"]\n')[0]).toMatch(/^line 1, column 17: relay_clients.0: expected an address or CIDR/);
    expect(errorsOf('queue:\n  lifetime: forever\n')[0]).toMatch(/^line 2, column 13: queue.lifetime: expected a duration/);
    expect(errorsOf('listen: [\n')[0]).toMatch(/^line \d+, column \d+: YAML syntax/);
    expect(errorsOf('delivery:\n  tls_level: paranoid\n')[0]).toMatch(/^line 2, column 14: delivery.tls_level/);
  });
  it('resolvers default to /etc/resolv.conf nameservers', () => {
    expect(resolvConfNameservers('# c\nnameserver 10.1.2.3\nnameserver fe80::1%eth0\nsearch x\n')).toEqual(['10.1.2.3:53', '[fe80::1]:53']);
    const dir = tempDir();
    writeFileSync(join(dir, 'c.yml'), 'queue_dir: spool\n');
    writeFileSync(join(dir, 'resolv.conf'), 'nameserver 127.0.0.53\n');
    const c = loadConfig(join(dir, 'c.yml'), { resolvConf: join(dir, 'resolv.conf') });
    expect(c.resolvedResolvers).toEqual(['127.0.0.53:53']);
    expect(c.queue_dir).toBe(join(dir, 'spool'));
  });
  it('DANE-2 loopback means 127.0.0.0/8 and ::1', () => {
    expect(['127.0.0.1:53', '127.9.9.9:5353', '[::1]:53'].every(isLoopbackServer)).toBe(true);
    expect(['10.0.0.1:53', '[fe80::1]:53', '128.0.0.1:53'].some(isLoopbackServer)).toBe(false);
  });
  it('DANE-2 a non-loopback resolver is not trusted for AD in a DANE level unless listed', () => {
    const base = parseConfigText('dns:\n  mode: trust-ad\n  resolvers: ["10.0.0.53:53"]\n');
    expect(trustAdProblem({ ...base, resolvedResolvers: ['10.0.0.53:53'] })).toMatch(/not on loopback/);
    expect(trustAdProblem({ ...base, resolvedResolvers: ['127.0.0.1:53', '[::1]:53'] })).toBeUndefined();
    expect(trustAdProblem({ ...base, dns: { ...base.dns, trusted_resolvers: ['10.0.0.53:53'] }, resolvedResolvers: ['10.0.0.53:53'] })).toBeUndefined();
    expect(trustAdProblem({ ...base, delivery: { ...base.delivery, tls_level: 'may' }, resolvedResolvers: ['10.0.0.53:53'] })).toBeUndefined();
  });
  it('DANE-2 issue13 systemd-resolved (127.0.0.53, 127.0.0.54) is refused for trust-ad in a DANE level unless listed in trusted_resolvers, and the message says why', () => {
    const base = parseConfigText('dns:\n  mode: trust-ad\n');
    for (const stub of ['127.0.0.53:53', '127.0.0.54:53', '127.0.0.53']) {
      const p = trustAdProblem({ ...base, resolvedResolvers: [stub] });
      expect(p, stub).toMatch(
        /systemd-resolved's stub listener: for DNSSEC \(DO\) queries it passes the upstream resolver's AD bit through without validating \(systemd issue 34121\)/,
      );
      expect(p).toMatch(/dns\.mode: validate/);
    }
    // a second, good resolver does not make the stub acceptable: every listed resolver is asked
    expect(trustAdProblem({ ...base, resolvedResolvers: ['127.0.0.1:53', '127.0.0.53:53'] })).toMatch(/127\.0\.0\.53:53 are systemd-resolved/);
    // listed (with or without the port) → the operator vouches for it
    expect(trustAdProblem({ ...base, dns: { ...base.dns, trusted_resolvers: ['127.0.0.53:53'] }, resolvedResolvers: ['127.0.0.53:53'] })).toBeUndefined();
    expect(trustAdProblem({ ...base, dns: { ...base.dns, trusted_resolvers: ['127.0.0.53'] }, resolvedResolvers: ['127.0.0.53:53'] })).toBeUndefined();
    // not a DANE level, or not trust-ad: no AD bit is believed, nothing to refuse
    expect(trustAdProblem({ ...base, delivery: { ...base.delivery, tls_level: 'may' }, resolvedResolvers: ['127.0.0.53:53'] })).toBeUndefined();
    expect(trustAdProblem({ ...base, dns: { ...base.dns, mode: 'validate' }, resolvedResolvers: ['127.0.0.53:53'] })).toBeUndefined();
    // the rest of 127.0.0.0/8 stays trusted
    expect(trustAdProblem({ ...base, resolvedResolvers: ['127.0.0.55:53', '127.0.0.1:53'] })).toBeUndefined();
  });
  it('`dane-relay config check` exits 0 on a good file and 2 with the error on a bad one', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'good.yml'), 'dns:\n  resolvers: ["127.0.0.1:53"]\n');
    writeFileSync(join(dir, 'bad.yml'), 'delivery:\n  prot: 25\n');
    writeFileSync(join(dir, 'remote.yml'), 'dns:\n  mode: trust-ad\n  resolvers: ["10.0.0.53:53"]\n');
    const out = sink(),
      err = sink();
    expect(await main(['config', 'check', join(dir, 'good.yml')], out, err)).toBe(0);
    expect(out.text).toContain('ok');
    expect(await main(['config', 'check', join(dir, 'bad.yml')], out, err)).toBe(2);
    expect(err.text).toContain('line 2, column 3: delivery.prot: unknown key');
    expect(await main(['config', 'check', join(dir, 'remote.yml')], out, err)).toBe(2);
    expect(err.text).toContain('not on loopback');
  });
  it('config.example.yml is valid', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'resolv.conf'), 'nameserver 127.0.0.53\n');
    const ex = loadConfig(join(__dirname, '../../config.example.yml'), { resolvConf: join(dir, 'resolv.conf') });
    expect(ex.resolvedResolvers).toEqual(['127.0.0.53:53']);
    expect(ex.dns.mode).toBe('validate');
    const c = parseConfigText(readFileSync(join(__dirname, '../../config.example.yml'), 'utf8'));
    expect(c.listen).toEqual(['127.0.0.1:2525']);
  });
});
