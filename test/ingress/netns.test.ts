/**
 * Issue 23 §2: IPv6 clients count per /64 (ingress.client_ipv6_prefix), with real sockets from
 * several addresses of one /64. Those addresses exist only in a private network namespace this
 * test creates (`unshare --net`, then `ip addr add fd00::…/64 dev lo`): the real relay process and
 * the clients (test/support/netnsAuth.mjs) run inside it; nothing outside is touched. Needs root
 * (or an unprivileged user namespace) and iproute2; otherwise it says why and is skipped.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt, CLI, ROOT } from '../support/build.js';
import { makeSelfSigned } from '../support/pki.js';
import { hashPassword } from '../../src/ingress/users.js';

function netnsProblem(): string | undefined {
  try {
    execFileSync('unshare', ['--net', 'sh', '-c', 'ip link set lo up && ip addr add fd00::1/64 dev lo nodad'], { stdio: 'pipe' });
    return undefined;
  } catch (e) {
    return `cannot create a private network namespace with fd00:: addresses (unshare --net, ip addr add): ${(e as Error).message.split('\n')[0]}`;
  }
}
const problem = netnsProblem();
if (problem)
  console.warn(`SKIPPED test/ingress/netns.test.ts: ${problem}; the /64 key is still covered by the clientKey unit and the ::1 session in limits.test.ts`);

const SAME_64 = ['fd00::2', 'fd00::3', 'fd00::4', 'fd00::a:5', 'fd00::ffff:6', 'fd00::1:0:0:7', 'fd00::8', 'fd00::9'];
const OTHER_64 = ['fd00:0:0:1::2'];

async function run(prefix: number | undefined): Promise<{ waves: { from: string; code: number; text: string }[][]; log: string }> {
  ensureBuilt();
  const dir = mkdtempSync(join(tmpdir(), 'dr-netns-'));
  try {
    const { certPem, keyPem } = await makeSelfSigned({ dnsNames: ['relay.test'] });
    writeFileSync(join(dir, 'cert.pem'), certPem);
    writeFileSync(join(dir, 'key.pem'), keyPem, { mode: 0o600 });
    writeFileSync(join(dir, 'users'), `alice:${await hashPassword('wonderland')}\n`, { mode: 0o600 });
    const cfg = join(dir, 'relay.yml');
    writeFileSync(
      cfg,
      `listen: ["[fd00::1]:2525"]\nrelay_clients: []\nhostname: relay.test\nqueue_dir: ${join(dir, 'queue')}\n` +
        `dns:\n  mode: trust-ad\n  resolvers: ["[fd00::1]:53"]\n  timeout: 1s\n  attempts: 1\ndelivery:\n  tls_level: may\ntlsrpt:\n  enabled: false\n` +
        `ingress:\n  tls: { cert: cert.pem, key: key.pem }\n  users_file: users\n  max_auth_per_client: 100\n${prefix ? `  client_ipv6_prefix: ${prefix}\n` : ''}`,
    );
    const addrs = [...SAME_64, ...OTHER_64, 'fd00::1'];
    const setup = ['ip link set lo up', ...addrs.map((a) => `ip addr add ${a}/64 dev lo nodad`)].join(' && ');
    const bad = Buffer.from('\0alice\0looking-glass').toString('base64');
    const out = execFileSync(
      'unshare',
      [
        '--net',
        'sh',
        '-c',
        `${setup} && exec "$0" "$@"`,
        process.execPath,
        join(ROOT, 'test', 'support', 'netnsAuth.mjs'),
        CLI,
        cfg,
        'fd00::1',
        bad,
        JSON.stringify([SAME_64, OTHER_64]),
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    return JSON.parse(out.trim().split('\n').pop()!);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(problem !== undefined)('IPv6 clients per /64, real sockets from several addresses (private network namespace)', () => {
  it('8 addresses of one /64 share one failed-AUTH budget (5 checks, 3 × 454); another /64 has its own', async () => {
    const { waves, log } = await run(undefined);
    const [same, other] = waves as [{ from: string; code: number; text: string }[], { from: string; code: number; text: string }[]];
    expect(new Set(same.map((x) => x.from)).size).toBe(8);
    expect(same.filter((x) => x.code === 535)).toHaveLength(5);
    expect(same.filter((x) => x.code === 454).map((x) => x.text)).toEqual(Array(3).fill('4.7.0 Too many failed authentication attempts, try again later'));
    expect(other.map((x) => x.code)).toEqual([535]);
    expect(log).toContain('"client_key":"fd00:0:0:0:0:0:0:0/64"');
  }, 90_000);

  it('client_ipv6_prefix: 128 counts each address on its own: all 8 get their password checked', async () => {
    const { waves } = await run(128);
    expect(waves[0]!.map((x) => x.code)).toEqual(Array(8).fill(535));
  }, 90_000);
});
