/**
 * The commands as an operator runs them (the compiled CLI as a real process): `dkim keygen`,
 * `tlsrpt show`, `tlsrpt send --out`, and `tlsrpt send` beside a running relay, whose report
 * travels through the outbox into the relay's spool and out over its own delivery code.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CLI, ensureBuilt } from '../support/build.js';
import { World, type Patch } from '../support/world.js';
import { publishDkim, readMailedReport } from '../support/tlsrpt.js';
import { TlsrptStore } from '../../src/reporting/tlsrpt/store.js';
import { detailKey, policyKey, dayRange, dayOf, nextDay } from '../../src/reporting/tlsrpt/report.js';
import { main } from '../../src/cli.js';
import { clearOfUtcMidnight } from '../support/utcDay.js';
import { runCliIn } from '../support/relayProcess.js';

const run = promisify(execFile);
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { timeout: 20_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/**
 * `dane-relay tlsrpt ARGS…` run in this process (the CLI's own main(), same files, same clock): for a test that
 * makes many calls in a row. As processes, each Node start-up took 3-5 s of wall time on the busy 2-core machine and
 * the six calls of the refusal test went past the 30 s test limit there.
 */
// Each test's first call, the refusal to overwrite a key (the process's error handling) and the send beside the
// running relay stay real processes; the rest run in-process: as processes, a test's calls took 24-27 s of its 30 s
// limit on the busy 2-core machine.
const tlsrptIn = (args: string[]) => runCliIn(main, args);

beforeAll(() => ensureBuilt(), 120_000);

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const DAY = '2025-03-01';
const TLSA = '3 1 1 AABB';

/** The same settings as World.config, as a file for the CLI. */
function configFile(patch: Patch): string {
  const file = join(w.dir, 'relay.yml');
  const cfg = {
    listen: ['127.0.0.1:0'],
    hostname: 'relay.test',
    queue_dir: join(w.dir, 'queue'),
    dns: { mode: 'trust-ad', resolvers: [w.dns.server], timeout: '1s', attempts: 1 },
    delivery: { port: w.port || 25 },
    ...patch,
  };
  writeFileSync(file, JSON.stringify(cfg));
  return file;
}

async function seed(dir: string, DAY = '2025-03-01'): Promise<void> {
  const s = await TlsrptStore.open(dir);
  const p = policyKey({ type: 'tlsa', strings: [TLSA], domain: 'mx.dest.test' });
  for (let i = 0; i < 3; i++) s.add(DAY, 'dest.test', p, true);
  s.add(
    DAY,
    'dest.test',
    p,
    false,
    detailKey({ resultType: 'certificate-not-trusted', receivingMx: 'mx.dest.test', receivingIp: '192.0.2.1', reasonCode: 'dane-no-match' }),
  );
  await s.close();
}

describe('dane-relay dkim keygen', () => {
  it('TLSRPT-44 writes a private key (0600, never overwritten) and prints the TXT record with s=email:tlsrpt', async () => {
    const out = join(w.dir, 'k.pem');
    const r = await cli(['dkim', 'keygen', '--selector', 's2025', '--domain', 'relay.example.net', '--out', out]);
    expect(r.code).toBe(0);
    expect(readFileSync(out, 'utf8')).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    expect(r.stdout).toMatch(/^s2025\._domainkey\.relay\.example\.net\. IN TXT \( "v=DKIM1; k=rsa; s=email:tlsrpt; p=/m);
    const again = await cli(['dkim', 'keygen', '--out', out]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/EEXIST/);
  });
});

describe('dane-relay tlsrpt', () => {
  it('TLSRPT-30 show prints what would be reported (text and --json); send --out writes gzip files named per TLSRPT-40', async () => {
    const file = configFile({ tlsrpt: { contact_info: 'tlsrpt@relay.test', organization_name: 'CLI Test' } });
    await seed(join(w.dir, 'queue', 'tlsrpt'));
    const text = await cli(['tlsrpt', 'show', '--config', file, '--day', DAY]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('dest.test');
    expect(text.stdout).toContain('successful 3, failed 1');
    expect(text.stdout).toContain('1 × certificate-not-trusted (dane-no-match)');
    const json = await tlsrptIn(['tlsrpt', 'show', '--config', file, '--day', DAY, '--domain', 'dest.test', '--json']);
    const reports = JSON.parse(json.stdout);
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({
      'organization-name': 'CLI Test',
      'contact-info': 'tlsrpt@relay.test',
      policies: [{ summary: { 'total-successful-session-count': 3, 'total-failure-session-count': 1 } }],
    });
    expect((await tlsrptIn(['tlsrpt', 'show', '--config', file, '--day', '2025-02-30'])).code).toBe(2);
    expect((await tlsrptIn(['tlsrpt', 'send', '--config', file])).code).toBe(2);

    const outDir = join(w.dir, 'out');
    const sent = await tlsrptIn(['tlsrpt', 'send', '--config', file, '--day', DAY, '--out', outDir]);
    expect(sent.code).toBe(0);
    const { begin, end } = dayRange(DAY);
    expect(readdirSync(outDir)).toEqual([`relay.test!dest.test!${begin}!${end}.json.gz`]);
    const gz = readFileSync(join(outDir, readdirSync(outDir)[0]!));
    expect(JSON.parse(gunzipSync(gz).toString()).policies[0].policy['policy-string']).toEqual([TLSA]);
  });

  it("TLSRPT-45 send beside a running relay: the mailed report goes through the outbox into the relay's spool (kind tlsrpt) and is delivered", async () => {
    const rx = await w.receiver();
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } });
    w.dns.add({ name: 'mx.dest.test', type: 'A', data: rx.host });
    w.dns.add({ name: '_smtp._tls.dest.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:reports@dest.test' });
    const keyFile = join(w.dir, 'dkim.pem');
    const kg = await tlsrptIn(['dkim', 'keygen', '--domain', 'relay.test', '--out', keyFile]);
    const txt = /IN TXT \( (.*) \)/.exec(kg.stdout)![1]!.split(/"\s*"/).join('').replace(/"/g, '');
    publishDkim(w.dns, 'tlsrpt._domainkey.relay.test', txt);
    // Yesterday (inside the retention window); the relay's own job would send it only a day later.
    const DAY = nextDay(dayOf(Date.now()), -1);
    const tlsrpt = { contact_info: 'tlsrpt@relay.test', max_delay: '2d', dkim: { domain: 'relay.test', key_file: keyFile } };
    await seed(join(w.dir, 'queue', 'tlsrpt'), DAY);
    const relay = await w.start({ tlsrpt });
    const file = configFile({ tlsrpt });

    const dry = await tlsrptIn(['tlsrpt', 'send', '--config', file, '--day', DAY, '--dry-run']);
    expect(dry.stdout).toContain('dest.test: relay.test!dest.test!');
    expect(dry.stdout).toContain('→ mailto:reports@dest.test');
    expect(existsSync(join(w.dir, 'queue', 'tlsrpt', 'outbox'))).toBe(false);

    const r = await cli(['tlsrpt', 'send', '--config', file, '--day', DAY]);
    expect(r.stderr).not.toMatch(/warning/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^dest\.test: sent: mail queued as outbox\//m);
    expect(readdirSync(join(w.dir, 'queue', 'tlsrpt', 'outbox'))).toHaveLength(1);
    await relay.tlsrpt!.tick();
    expect(readdirSync(join(w.dir, 'queue', 'tlsrpt', 'outbox'))).toEqual([]);
    expect(relay.scheduler.list().map((m) => m.envelope.kind)).toEqual(['tlsrpt']);
    await w.settle();
    await rx.waitFor(1);
    const rep = await readMailedReport(rx.messages[0]!.body, w.dns);
    expect(rep.dkim.results[0]!.status.result).toBe('pass');
    expect(rep.parsed.headers.get('tls-report-domain')).toBe('dest.test');
    // The job does not send the same day again: the CLI marked it.
    expect(await relay.tlsrpt!.wasSent(DAY, 'dest.test')).toBe(true);
  });

  it('TLSRPT-32 TLSRPT-34 send refuses today and future days; a second send of a (day, domain) is skipped unless --force', async () => {
    w.dns.add({ name: '_smtp._tls.dest.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:reports@dest.test' });
    const keyFile = join(w.dir, 'dkim.pem');
    expect((await tlsrptIn(['dkim', 'keygen', '--domain', 'relay.test', '--out', keyFile])).code).toBe(0);
    const file = configFile({ tlsrpt: { contact_info: 'tlsrpt@relay.test', dkim: { domain: 'relay.test', key_file: keyFile } } });
    const today = await clearOfUtcMidnight(20_000); // the CLI must judge the same day "today"
    const yesterday = nextDay(today, -1);
    const dir = join(w.dir, 'queue', 'tlsrpt');
    await seed(dir, today);
    await seed(dir, yesterday);
    for (const day of [today, nextDay(today, 1)]) {
      const r = await tlsrptIn(['tlsrpt', 'send', '--config', file, '--day', day]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--day ${day} is not a closed UTC day`);
    }
    expect(existsSync(join(dir, 'sent', today))).toBe(false); // the daily job will still send today's complete report
    expect(existsSync(join(dir, 'outbox'))).toBe(false);

    const first = await tlsrptIn(['tlsrpt', 'send', '--config', file, '--day', yesterday]);
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(/^dest\.test: sent: mail queued as outbox\//m);
    const second = await tlsrptIn(['tlsrpt', 'send', '--config', file, '--day', yesterday]);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`dest.test: skipped: already sent for ${yesterday} (use --force to send again)`);
    expect(readdirSync(join(dir, 'outbox'))).toHaveLength(1);
    const forced = await tlsrptIn(['tlsrpt', 'send', '--config', file, '--day', yesterday, '--force']);
    expect(forced.stdout).toMatch(/^dest\.test: sent: mail queued as outbox\//m);
    expect(readdirSync(join(dir, 'outbox'))).toHaveLength(2);
  }, 90_000); // may first wait out a UTC midnight (clearOfUtcMidnight)
});
