/**
 * MTA-STS (RFC 8461, issue 15) against Postfix: our relay as a real process, nsd + unbound serving the
 * destinations (unsigned zones under the signed private root: no DANE applies, STS-52), a policy host
 * speaking real HTTPS on loopback with a test CA (`mta_sts.ca_file`), Postfix 3.7 as the receiver.
 *
 * - sts.tst: an `enforce` policy naming the MX, whose Postfix listener presents a certificate from the test
 *   CA valid for the MX name → delivered over TLS (Postfix's Received header says ESMTPS), and TLSRPT
 *   (`dane-relay tlsrpt show --json`) counts one successful session under the `sts` policy (STS-61).
 * - mismatch.tst: an `enforce` policy whose mx patterns do not cover the MX (STS-40, STS-43) → the
 *   listener is never connected to (the host is skipped on the policy alone), deferred
 *   4.7.5, and TLSRPT counts validation-failure / mx-mismatch under the sts policy.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsWorld, type DnsWorld, type ZoneSpec } from './support/dnsworld.js';
import { startPostfixReceivers, type Listener, type PostfixReceivers } from './support/postfix.js';
import { startRelay, swaks, type RelayProcessHandle } from './support/relay.js';
import { ensureBuilt } from '../support/build.js';
import { chainPem, makeCa, makeLeaf, type Issued } from '../support/pki.js';
import { policyByHost, startPolicyHost, type PolicyHost } from '../support/stsHost.js';
import { clearOfUtcMidnight } from '../support/utcDay.js';

const GOOD = { name: 'mx.sts.tst', address: '127.0.93.1' };
const OFF = { name: 'mx.mismatch.tst', address: '127.0.93.2' };
const POLICY_HOST = '127.0.0.1'; // the test's own HTTPS server (test/support/stsHost.ts), inside the namespace
const policyOf: Record<string, string> = {
  'sts.tst': 'version: STSv1\nmode: enforce\nmx: mx.sts.tst\nmax_age: 604800\n',
  // the MX is mx.mismatch.tst: not covered (a wildcard covers one label only, and this names another host)
  'mismatch.tst': 'version: STSv1\nmode: enforce\nmx: mail.mismatch.tst\nmax_age: 604800\n',
};
const zone = (name: string, mx: { address: string }): ZoneSpec => ({
  name,
  sign: false, // MTA-STS is for destinations without DNSSEC: no DANE can apply (STS-52)
  records: [
    '@ MX 10 mx',
    `mx A ${mx.address}`,
    `mta-sts A ${POLICY_HOST}`,
    '_mta-sts TXT "v=STSv1; id=20261207"',
    `_smtp._tls TXT "v=TLSRPTv1; rua=mailto:tlsrpt@${name}"`,
  ],
});
const zones: ZoneSpec[] = [zone('sts.tst', GOOD), zone('mismatch.tst', OFF)];

let dns: DnsWorld | undefined;
let rx: PostfixReceivers | undefined;
let relay: RelayProcessHandle | undefined;
let host: PolicyHost | undefined;
let ca: Issued;
const dir = mkdtempSync(join(tmpdir(), 'dane-relay-sts-interop-'));
/** the UTC day the whole file runs in (the relay counts under its clock, the CLI is asked for this day) */
let day = '';

beforeAll(async () => {
  ensureBuilt();
  day = await clearOfUtcMidnight(5 * 60_000);
  ca = await makeCa({ cn: 'MTA-STS interop CA' });
  const caFile = join(dir, 'sts-ca.pem');
  writeFileSync(caFile, ca.certPem);
  const tlsFor = async (name: string) => {
    const leaf = await makeLeaf(ca, { dnsNames: [name] });
    return { keyPem: leaf.keyPem, chainPem: chainPem(leaf, ca) };
  };
  const listeners: Listener[] = [
    { ...GOOD, tls: await tlsFor(GOOD.name) },
    { ...OFF, tls: await tlsFor(OFF.name) },
  ];
  try {
    dns = await startDnsWorld({ zones });
    rx = await startPostfixReceivers({ listeners, resolver: dns.unbound });
    const leaf = await makeLeaf(ca, { dnsNames: Object.keys(policyOf).map((d) => `mta-sts.${d}`) });
    host = await startPolicyHost({ key: leaf.keyPem, cert: chainPem(leaf) });
    host.set(policyByHost((d) => policyOf[d]));
    relay = await startRelay({
      resolver: dns.unbound,
      listen: '127.0.0.31:2525',
      extraYaml: ['mta_sts:', `  ca_file: ${caFile}`, `  port: ${host.port}`].join('\n'),
    });
  } catch (e) {
    await relay?.stop();
    await host?.close();
    await rx?.stop();
    await dns?.stop();
    throw e;
  }
}, 600_000); // may first wait out a UTC midnight (clearOfUtcMidnight)

afterAll(async () => {
  await relay?.stop().catch(() => undefined);
  await host?.close().catch(() => undefined);
  await rx?.stop().catch(() => undefined);
  await dns?.stop().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

/** Polls `check` until it returns a value (the relay works on its own schedule); the diagnostics say what each side saw. */
async function until<T>(what: string, check: () => Promise<T | undefined> | T | undefined, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline)
      throw new Error(`${what}: not within ${ms} ms\n--- relay ---\n${relay!.output().slice(-6000)}\n--- postfix ---\n${rx!.log().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface ReportJson {
  policies: {
    policy: { 'policy-type': string; 'policy-string': string[]; 'policy-domain': string; 'mx-host'?: string[] };
    summary: { 'total-successful-session-count': number; 'total-failure-session-count': number };
    'failure-details'?: { 'result-type': string; 'failure-reason-code'?: string; 'receiving-mx-hostname'?: string; 'failed-session-count': number }[];
  }[];
}

/** What the relay has counted for `domain` today (it flushes its counts about a second late). */
async function counted(domain: string, want: (r: ReportJson) => boolean): Promise<ReportJson> {
  return until(`TLSRPT counts for ${domain}`, async () => {
    const r = await relay!.cli('tlsrpt', 'show', '--day', day, '--domain', domain, '--json');
    if (r.code !== 0) throw new Error(`tlsrpt show: ${r.stdout}${r.stderr}`);
    const [report] = JSON.parse(r.stdout) as ReportJson[];
    return report && want(report) ? report : undefined;
  });
}

describe('MTA-STS enforce with Postfix as the receiver', () => {
  it('STS-41 STS-61 an MX matching the enforce policy with a certificate valid for its name: delivered over TLS; TLSRPT counts a success under the sts policy', async () => {
    await swaks({ server: `${relay!.host}:${relay!.port}`, from: 'app@sender.tst', to: 'user@sts.tst' });
    const m = await until('delivery to mx.sts.tst', () => rx!.messages().find((x) => x.to === 'user@sts.tst'));
    expect(m.by).toBe(GOOD.name);
    expect(m.tls).toBe(true);
    // our side: the session ran under the policy's plan, WebPKI-verified (not opportunistic TLS)
    const line = relay!
      .output()
      .split('\n')
      .map((l) => (l.startsWith('{') ? (JSON.parse(l) as Record<string, unknown>) : {}))
      .find((l) => l.msg === 'delivery' && l.to === 'user@sts.tst');
    expect(line).toMatchObject({ status: 'sent', dane: 'Verified', tls: { verified: true } });
    expect(host!.requests.some((r) => r.servername === 'mta-sts.sts.tst' && r.path === '/.well-known/mta-sts.txt')).toBe(true);
    const report = await counted('sts.tst', (r) => r.policies.some((p) => p.summary['total-successful-session-count'] >= 1));
    expect(report.policies).toEqual([
      {
        policy: {
          'policy-type': 'sts',
          'policy-string': policyOf['sts.tst']!.trimEnd().split('\n'),
          'policy-domain': 'sts.tst',
          'mx-host': ['mx.sts.tst'],
        },
        summary: { 'total-successful-session-count': 1, 'total-failure-session-count': 0 },
      },
    ]);
  });

  it('STS-40 STS-43 STS-60 an MX outside the enforce policy: never given the message, deferred 4.7.5; TLSRPT counts validation-failure / mx-mismatch', async () => {
    await swaks({ server: `${relay!.host}:${relay!.port}`, from: 'app@sender.tst', to: 'user@mismatch.tst' });
    const r = await until('deferral for mismatch.tst', async () => {
      const l = await relay!.queueList();
      return l.messages.flatMap((x) => x.recipients).find((x) => x.address === 'user@mismatch.tst' && x.state === 'deferred' && x.attempts > 0);
    });
    expect(r.dsnCode).toBe('4.7.5');
    expect(r.lastReason).toMatch(/mx\.mismatch\.tst matches no mx pattern \(mail\.mismatch\.tst\)/);
    // skipped before any connection (the reason is the policy's, not a TLS or SMTP one), and nothing arrived
    expect(r.lastReason).not.toMatch(/127\.0\.93\.2/);
    expect(rx!.messages().some((x) => x.to === 'user@mismatch.tst')).toBe(false);
    const report = await counted('mismatch.tst', (x) => x.policies.some((p) => p.summary['total-failure-session-count'] >= 1));
    expect(report.policies).toMatchObject([
      {
        policy: { 'policy-type': 'sts', 'policy-domain': 'mismatch.tst', 'mx-host': ['mail.mismatch.tst'] },
        summary: { 'total-successful-session-count': 0, 'total-failure-session-count': 1 },
        'failure-details': [{ 'result-type': 'validation-failure', 'failure-reason-code': 'mx-mismatch', 'receiving-mx-hostname': 'mx.mismatch.tst' }],
      },
    ]);
  });
});
