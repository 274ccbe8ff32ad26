/**
 * The `tlsrpt:` config section: names and defaults as given in issue 6, clear errors for bad input.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig, parseConfigText, ConfigError } from '../../src/config/load.js';
import { tlsrptSettings } from '../../src/reporting/tlsrpt/daily.js';
import { dkimKeygen } from '../../src/reporting/tlsrpt/mail.js';
import { TlsrptService } from '../../src/reporting/tlsrpt/daily.js';
import { generateKeyPairSync } from 'node:crypto';
import type { Resolver } from '../../src/dns/types.js';

const dir = mkdtempSync(join(tmpdir(), 'tlsrpt-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function load(yaml: string) {
  const file = join(dir, `c${Math.random().toString(36).slice(2)}.yml`);
  writeFileSync(file, `dns: { resolvers: ["127.0.0.1:53"] }\nqueue_dir: q\nhostname: relay.example.net\n${yaml}`);
  return loadConfig(file);
}

describe('tlsrpt config', () => {
  it('TLSRPT-33 defaults: enabled, 30 days, 4 h delay, contact postmaster@hostname, submitter = its domain, dir under queue_dir', () => {
    const s = tlsrptSettings(load(''));
    expect(s).toEqual({
      dir: join(dir, 'q', 'tlsrpt'),
      organizationName: 'relay.example.net',
      contactInfo: 'postmaster@relay.example.net',
      submitter: 'relay.example.net',
      retentionDays: 30,
      maxDelayMs: 4 * 3600_000,
      dkim: undefined,
      allowPrivateTargets: false,
    });
    expect(load('').tlsrpt.enabled).toBe(true);
  });

  it('TLSRPT-44 every key named in the issue is accepted; the DKIM key file is read relative to the config', () => {
    writeFileSync(join(dir, 'k.pem'), dkimKeygen({}).privateKeyPem, { mode: 0o600 }); // a secret: 0600 whatever the umask
    const s = tlsrptSettings(
      load(`tlsrpt:
  enabled: true
  organization_name: Example Operator
  contact_info: tls-reports@mta.example.net
  submitter: mta.example.net
  dir: reports
  retention_days: 7
  max_delay: 30m
  dkim: { domain: example.net, selector: s1, key_file: k.pem }
`),
    );
    expect(s).toMatchObject({
      dir: join(dir, 'reports'),
      organizationName: 'Example Operator',
      contactInfo: 'tls-reports@mta.example.net',
      submitter: 'mta.example.net',
      retentionDays: 7,
      maxDelayMs: 1_800_000,
    });
    expect(s.dkim).toMatchObject({ domain: 'example.net', selector: 's1' });
    expect(s.dkim!.privateKey).toMatch(/BEGIN PRIVATE KEY/);
  });

  it('TLSRPT-33 bad input is a clear error: unknown key, bad contact, unreadable key file', () => {
    expect(() => parseConfigText('tlsrpt: { enable: true }')).toThrow(/tlsrpt\.enable: unknown key/);
    expect(() => parseConfigText('tlsrpt: { contact_info: "not an address" }')).toThrow(ConfigError);
    expect(() => tlsrptSettings(load('tlsrpt: { dkim: { domain: example.net, key_file: missing.pem } }'))).toThrow(/tlsrpt\.dkim\.key_file: cannot read/);
  });

  it('TLSRPT-44 the DKIM key is test-signed when the service opens: a key nodemailer cannot sign with is a clear start-up error', async () => {
    const noDns = {} as Resolver; // not reached: the key check comes first
    const log = { info() {}, warn() {}, debug() {} };
    const open = (pem: string) => {
      const f = `k${Math.random().toString(36).slice(2)}.pem`;
      writeFileSync(join(dir, f), pem, { mode: 0o600 });
      const settings = tlsrptSettings(load(`tlsrpt: { contact_info: r@relay.example.net, dir: t-${f}, dkim: { domain: relay.example.net, key_file: ${f} } }`));
      return TlsrptService.open({ settings, resolver: noDns, log, now: Date.now });
    };
    const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    await expect(open(ed)).rejects.toThrow(/tlsrpt\.dkim\.key_file: the key cannot sign/);
    await expect(open('-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n')).rejects.toThrow(/tlsrpt\.dkim\.key_file: the key cannot sign/);
    const ok = await open(dkimKeygen({}).privateKeyPem);
    await ok.stop();
  });
});
