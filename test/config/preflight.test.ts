/**
 * Issue 13: `dane-relay config check` runs every check `serve` runs before it listens
 * (src/preflight.ts, called by both), so a configuration that passes the check cannot fail
 * at start. Over a table of bad configurations both must refuse, with the same reason; a good one
 * passes both (the relay really starts, on loopback, and stops).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sink } from '../support/sink.js';
import { pino } from 'pino';
import { main } from '../../src/cli.js';
import { loadConfig } from '../../src/config/load.js';
import { Relay } from '../../src/relay.js';
import { makeSelfSigned, type Issued } from '../support/pki.js';

let dir: string;
let certA: Issued, certB: Issued;
const rsaKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'preflight-'));
  certA = await makeSelfSigned({ dnsNames: ['relay.test'] });
  certB = await makeSelfSigned({ dnsNames: ['relay.test'] });
  writeFileSync(join(dir, 'a.crt'), certA.certPem);
  writeFileSync(join(dir, 'a.key'), certA.keyPem);
  writeFileSync(join(dir, 'b.key'), certB.keyPem);
  writeFileSync(join(dir, 'dkim.key'), rsaKey, { mode: 0o600 });
  writeFileSync(join(dir, 'junk.key'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
  writeFileSync(join(dir, 'bad_policy'), 'example.org paranoid\n');
  writeFileSync(join(dir, 'dane_policy'), 'example.org dane\n');
  writeFileSync(join(dir, 'users'), 'no-colon-here\n');
  writeFileSync(join(dir, 'anchors.key'), '. IN DS 12345 13 2 NOTHEX\n');
  writeFileSync(join(dir, 'a-file'), 'not a directory\n');
  // issue 23's file checks: a secret others can write, and a spool others can write that holds something
  writeFileSync(join(dir, 'users-0666'), '');
  chmodSync(join(dir, 'users-0666'), 0o666);
  mkdirSync(join(dir, 'open-spool', 'msg'), { recursive: true });
  chmodSync(join(dir, 'open-spool'), 0o777);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** A configuration file: a loopback relay with its own spool, plus `extra` YAML lines. */
function configFile(extra: string[], dns = ['dns:', '  mode: trust-ad', '  resolvers: ["127.0.0.1:53"]']): string {
  const f = join(dir, `c${++n}.yml`);
  const hasDns = extra.some((l) => l.startsWith('dns:'));
  writeFileSync(f, ['listen: ["127.0.0.1:0"]', 'hostname: relay.test', `queue_dir: q${n}`, ...(hasDns ? [] : dns), ...extra, ''].join('\n'));
  return f;
}

async function configCheck(file: string): Promise<{ code: number; err: string }> {
  const o = sink();
  const e = sink();
  const code = await main(['config', 'check', file], o.stream, e.stream);
  return { code, err: e.text() };
}

/** What `serve` does with the file: load it, start the relay (then stop it again). */
async function serve(file: string): Promise<{ ok: true } | { ok: false; message: string }> {
  try {
    const relay = await Relay.start({ config: loadConfig(file), log: pino({ level: 'silent' }) });
    await relay.stop(100);
    return { ok: true };
  } catch (e) {
    return { ok: false, message: (e as Error).message };
  }
}

const BAD: [string, string[], RegExp][] = [
  ['DKIM key file missing', ['tlsrpt:', '  dkim: { domain: relay.test, key_file: nowhere.key }'], /tlsrpt\.dkim\.key_file: cannot read/],
  ['DKIM key that cannot sign', ['tlsrpt:', '  dkim: { domain: relay.test, key_file: junk.key }'], /tlsrpt\.dkim\.key_file: the key cannot sign/],
  ['tls_policy with a bad level', ['policy:', '  tls_policy: bad_policy'], /line 1: unknown TLS level "paranoid"/],
  ['danefail file missing', ['policy:', '  danefail: no_such_list'], /no_such_list/],
  [
    'trust anchors that do not parse (validate)',
    ['dns:', '  mode: validate', '  resolvers: ["127.0.0.1:53"]', '  trust_anchors: anchors.key'],
    /dns\.trust_anchors: .*line 1/,
  ],
  [
    'DANE-2 trust-ad with an off-host resolver under dane',
    ['dns:', '  mode: trust-ad', '  resolvers: ["192.0.2.53:53"]'],
    /192\.0\.2\.53:53 are not on loopback/,
  ],
  ['DANE-2 trust-ad with systemd-resolved under dane', ['dns:', '  mode: trust-ad', '  resolvers: ["127.0.0.53:53"]'], /systemd-resolved's stub listener/],
  [
    'DANE-2 a tls_policy dane entry with an off-host trust-ad resolver',
    ['dns:', '  mode: trust-ad', '  resolvers: ["192.0.2.53:53"]', 'delivery:', '  tls_level: may', 'policy:', '  tls_policy: dane_policy'],
    /a DANE entry in dane_policy/,
  ],
  ['ingress certificate missing', ['ingress:', '  tls: { cert: missing.crt, key: a.key }'], /ingress\.tls: .*missing\.crt/],
  ['ingress key not matching the certificate', ['ingress:', '  tls: { cert: a.crt, key: b.key }'], /ingress\.tls: .*(mismatch|does not match)/i],
  ['users file with a bad line', ['ingress:', '  users_file: users'], /ingress\.users_file: .*line 1/],
  ['mta_sts.ca_file missing', ['mta_sts:', '  ca_file: no-such-ca.pem'], /mta_sts\.ca_file: .*no-such-ca\.pem/],
  ['mta_sts.ca_file without a certificate', ['mta_sts:', '  ca_file: a-file'], /mta_sts\.ca_file: .*no PEM certificate/],
  ['queue_dir below a regular file', ['queue_dir: a-file/q'], /a-file.*not a directory/],
  ['issue 23 a users file others can write', ['ingress:', '  users_file: users-0666'], /users-0666 is writable by all users/],
  ['issue 23 a spool others can write, not empty', ['queue_dir: open-spool'], /open-spool is writable by all users/],
];

describe('issue13 config check runs every check serve runs before listening', () => {
  for (const [name, extra, why] of BAD) {
    it(`${name}: config check refuses (exit 2) and serve refuses to start, for the same reason`, async () => {
      const file = configFile(
        extra.filter((l) => !l.startsWith('queue_dir')),
        ['dns:', '  mode: trust-ad', '  resolvers: ["127.0.0.1:53"]'],
      );
      if (extra.some((l) => l.startsWith('queue_dir'))) {
        // replace the default spool line with the table's
        const text = (await import('node:fs')).readFileSync(file, 'utf8').replace(/^queue_dir: .*$/m, extra.find((l) => l.startsWith('queue_dir'))!);
        writeFileSync(file, text);
      }
      const c = await configCheck(file);
      expect(c.code, c.err).toBe(2);
      expect(c.err).toMatch(why);
      const s = await serve(file);
      expect(s.ok).toBe(false);
      expect(s.ok ? '' : s.message).toMatch(why);
    });
  }

  it('a good configuration (DKIM key, ingress TLS, policy file, loopback trust-ad resolver) passes config check and starts', async () => {
    const file = configFile([
      'tlsrpt:',
      '  dkim: { domain: relay.test, key_file: dkim.key }',
      'ingress:',
      '  tls: { cert: a.crt, key: a.key }',
      'policy:',
      '  tls_policy: dane_policy',
    ]);
    const c = await configCheck(file);
    expect(c.err).toBe('');
    expect(c.code).toBe(0);
    expect(await serve(file)).toEqual({ ok: true });
  });

  it('issue 23 an empty spool others can write (a fresh clone under umask 000) passes config check unchanged, and serve tightens it and starts', async () => {
    const fresh = join(dir, 'fresh-spool');
    mkdirSync(fresh);
    chmodSync(fresh, 0o777);
    const file = configFile([]);
    writeFileSync(file, (await import('node:fs')).readFileSync(file, 'utf8').replace(/^queue_dir: .*$/m, 'queue_dir: fresh-spool'));
    const c = await configCheck(file);
    expect([c.code, c.err]).toEqual([0, '']);
    expect(statSync(fresh).mode & 0o777).toBe(0o777); // config check changed nothing
    expect(await serve(file)).toEqual({ ok: true });
    expect(statSync(fresh).mode & 0o777).toBe(0o700);
  });
});
