/**
 * The deployment examples in examples/ are run, not just read: the systemd unit through
 * systemd-analyze, the nodemailer and swaks snippets against a relay started here, the
 * Postfix main.cf lines through Postfix's own postconf.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, CLI } from '../support/build.js';
import { World } from '../support/world.js';
import { parseConfigText } from '../../src/config/load.js';
import { parseHostPort } from '../../src/config/schema.js';
import { findTool } from '../support/tools.js';

const EX = join(ROOT, 'examples');
const run = (cmd: string, args: string[], env: Record<string, string> = {}) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (e, stdout, stderr) => {
      resolve({ code: e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : 1) : 0, stdout, stderr });
    });
  });
const which = findTool;

/** systemd unit file → section → key → values (a key may repeat; an empty assignment resets). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = new Map();
      out.set(s[1]!, section);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv || !section) throw new Error(`not a unit file line: ${line}`);
    const [, k, v] = kv as unknown as [string, string, string];
    section.set(k, v === '' ? [''] : [...(section.get(k)?.filter((x) => x !== '') ?? []), v]);
  }
  return out;
}

describe('examples/dane-relay.service', () => {
  const unitText = readFileSync(join(EX, 'dane-relay.service'), 'utf8');
  const svc = parseUnit(unitText).get('Service')!;
  const one = (k: string) => {
    const v = svc.get(k);
    expect(v, k).toBeDefined();
    expect(v!.length, k).toBe(1);
    return v![0]!;
  };

  it("has the hardening the issue asks for, and a stop timeout above the relay's grace", () => {
    expect(one('ProtectSystem')).toBe('strict');
    expect(one('NoNewPrivileges')).toBe('yes');
    expect(one('RestrictAddressFamilies').split(/\s+/).sort()).toEqual(['AF_INET', 'AF_INET6', 'AF_UNIX']);
    expect(one('User')).toBe('dane-relay');
    // The spool is the only writable path; it is the queue_dir the unit's comments configure.
    expect(one('ReadWritePaths')).toBe('/var/spool/dane-relay');
    expect(unitText).toContain('queue_dir: /var/spool/dane-relay');
    // Listening on 2525 (≥ 1024) needs no capability at all.
    expect(one('CapabilityBoundingSet')).toBe('');
    expect(one('AmbientCapabilities')).toBe('');
    expect(one('ExecStart')).toMatch(/ serve --config \/etc\/dane-relay\/config\.yml$/);
    expect(one('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(one('KillSignal')).toBe('SIGTERM');
    const grace = Number(/^DANE_RELAY_STOP_GRACE_MS=(\d+)$/.exec(one('Environment'))![1]);
    const stop = Number(/^(\d+)s$/.exec(one('TimeoutStopSec'))![1]) * 1000;
    // relay.stop: grace, then up to 2 s to cut deliveries off, then closing; systemd must not SIGKILL before.
    expect(stop).toBeGreaterThan(grace + 2000 + 5000);
  });

  it.skipIf(!which('systemd-analyze'))('passes systemd-analyze verify and scores "OK" in systemd-analyze security', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dr-unit-'));
    try {
      // verify checks that ExecStart exists: point it at this checkout's launcher, change nothing else.
      // Quoted as systemd unquotes it: the checkout may sit in a path with spaces.
      const quoted = `"${CLI.replace(/[\\"]/g, '\\$&').replace(/%/g, '%%').replace(/\$/g, '$$$$')}"`;
      const unit = join(dir, 'dane-relay.service');
      // 0644 whatever the umask: systemd warns about a world-writable unit file.
      writeFileSync(
        unit,
        unitText.replace(/^ExecStart=\/usr\/local\/bin\/dane-relay /m, () => `ExecStart=${quoted} `),
      );
      chmodSync(unit, 0o644);
      const v = await run('systemd-analyze', ['verify', unit]);
      expect(v.stderr + v.stdout).toBe('');
      expect(v.code).toBe(0);
      const sec = await run('systemd-analyze', ['security', '--offline=yes', unit]);
      const score = Number(/Overall exposure level for dane-relay\.service: ([\d.]+)/.exec(sec.stdout)?.[1]);
      expect(score).toBeLessThan(2.5);
      // And verify is not a rubber stamp: a broken value is reported.
      const broken = join(dir, 'broken.service');
      writeFileSync(
        broken,
        unitText.replace(/^ExecStart=\/usr\/local\/bin\/dane-relay /m, () => `ExecStart=${quoted} `).replace('ProtectSystem=strict', 'ProtectSystem=stricter'),
      );
      chmodSync(broken, 0o644);
      expect((await run('systemd-analyze', ['verify', broken])).stderr).toContain('Failed to parse protect system value');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('smarthost snippets against a running relay', () => {
  let w: World;
  beforeEach(async () => {
    w = await World.create();
  });
  afterEach(async () => {
    await w.close();
  });

  async function destination() {
    const rx = await w.receiver();
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: rx.host });
    await w.start();
    return rx;
  }

  it('examples/nodemailer-smarthost.js: queued with 250 and delivered', async () => {
    const rx = await destination();
    const r = await run(process.execPath, [join(EX, 'nodemailer-smarthost.js')], {
      SMARTHOST_PORT: String(w.ingressPort),
      MAIL_TO: 'user@dest.test',
      MAIL_FROM: 'app@sender.test',
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const id = /^250 2\.0\.0 Ok: queued as (\S+)$/m.exec(r.stdout)?.[1];
    expect(id).toBeTruthy();
    await w.settle();
    expect(rx.messages).toHaveLength(1);
    expect(rx.messages[0]!.to).toEqual(['user@dest.test']);
    expect(rx.messages[0]!.body.toString()).toContain('Subject: Hello through dane-relay');
  });

  it.skipIf(!which('swaks'))('examples/swaks.sh: the swaks command line is accepted and delivered', async () => {
    const rx = await destination();
    const r = await run('sh', [join(EX, 'swaks.sh')], { SMARTHOST_PORT: String(w.ingressPort), MAIL_TO: 'user@dest.test', MAIL_FROM: 'app@sender.test' });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^<- {1,2}250 2\.0\.0 Ok: queued as \S+$/m);
    await w.settle();
    expect(rx.messages).toHaveLength(1);
    expect(rx.messages[0]!.from).toBe('app@sender.test');
    expect(rx.messages[0]!.body.toString()).toContain('Subject: dane-relay smarthost test');
  });
});

describe('examples/postfix-sidecar.md', () => {
  const md = readFileSync(join(EX, 'postfix-sidecar.md'), 'utf8');
  const block = (lang: string) => new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(md)?.[1] ?? '';

  it.skipIf(!which('postconf'))('its main.cf lines are valid Postfix settings and point relayhost at the dane-relay config shown beside them', async () => {
    const relayCfg = parseConfigText(block('yaml'));
    const listen = parseHostPort(relayCfg.listen[0]!)!;
    const dir = mkdtempSync(join(tmpdir(), 'dr-postfix-'));
    try {
      writeFileSync(join(dir, 'main.cf'), block('main.cf'));
      copyFileSync('/etc/postfix/master.cf', join(dir, 'master.cf'));
      const r = await run(which('postconf')!, ['-c', dir, '-n']);
      expect(r.stderr).toBe(''); // postconf warns about any unknown or misspelt parameter
      expect(r.code).toBe(0);
      const set = new Map(
        r.stdout
          .trim()
          .split('\n')
          .map((l) => l.split(' = ') as [string, string]),
      );
      expect(set.get('relayhost')).toBe(`[${listen.host}]:${listen.port}`);
      expect(set.get('smtp_tls_security_level')).toBe('none');
      expect(Number(set.get('message_size_limit'))).toBeLessThanOrEqual(relayCfg.ingress.max_message_size);
      // Postfix connects from loopback: the relay must relay for it without AUTH.
      expect(relayCfg.relay_clients).toContain('127.0.0.0/8');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
