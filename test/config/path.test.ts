/**
 * Issue 21 item 2: which configuration file a command reads when `--config` is not given —
 * `$DANE_RELAY_CONFIG`, then /etc/dane-relay/config.yml, then the package's example, found from the
 * package and not from the working directory — and the command says which it used.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chooseConfig, packageDir, SYSTEM_CONFIG } from '../../src/config/path.js';
import { CLI, ensureBuilt } from '../support/build.js';

describe('default config path (issue 21 item 2)', () => {
  const pkg = '/opt/dane-relay';
  const example = join(pkg, 'config.example.yml');
  it.each([
    // flag, env, /etc file exists, → file, source
    ['a.yml', 'b.yml', true, 'a.yml', '--config'],
    ['a.yml', undefined, false, 'a.yml', '--config'],
    [undefined, 'b.yml', true, 'b.yml', '$DANE_RELAY_CONFIG'],
    [undefined, 'b.yml', false, 'b.yml', '$DANE_RELAY_CONFIG'],
    [undefined, undefined, true, SYSTEM_CONFIG, SYSTEM_CONFIG],
    [undefined, '', true, SYSTEM_CONFIG, SYSTEM_CONFIG], // an empty variable counts as unset
    ['', undefined, true, SYSTEM_CONFIG, SYSTEM_CONFIG],
    [undefined, undefined, false, example, 'package example'],
    [undefined, '', false, example, 'package example'],
  ] as const)('issue21: --config %s, $DANE_RELAY_CONFIG %s, /etc file exists %s → %s (%s)', (flag, env, etc, file, source) => {
    const asked: string[] = [];
    const c = chooseConfig({
      flag,
      env,
      exists: (f) => {
        asked.push(f);
        return etc && f === SYSTEM_CONFIG;
      },
      packageDir: pkg,
    });
    expect(c).toEqual({ file, source });
    // /etc is looked at only when neither the flag nor the variable says
    expect(asked.length > 0).toBe(!flag && !env);
  });

  it('issue21: the package example is found from the package, whatever the working directory', () => {
    expect(existsSync(join(packageDir(), 'config.example.yml'))).toBe(true);
    expect(packageDir()).toBe(resolve(__dirname, '../..'));
  });

  it('issue21: from another directory, `dane-relay queue list` reads $DANE_RELAY_CONFIG and says so on stderr', async () => {
    ensureBuilt();
    const dir = mkdtempSync(join(tmpdir(), 'dane-relay-cfgpath-'));
    const elsewhere = mkdtempSync(join(tmpdir(), 'dane-relay-cwd-'));
    try {
      const cfg = join(dir, 'relay.yml');
      writeFileSync(cfg, 'listen: ["127.0.0.1:0"]\nqueue_dir: queue\ndns: { resolvers: ["127.0.0.1:53"] }\n');
      const env = { ...process.env, DANE_RELAY_CONFIG: cfg };
      const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => {
        const c = spawn(process.execPath, [CLI, 'queue', 'list', '--json'], { cwd: elsewhere, env, stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (d) => {
          stdout += d;
        });
        c.stderr.on('data', (d) => {
          stderr += d;
        });
        c.on('close', (code) => res({ code, stdout, stderr }));
      });
      expect(r.stderr).toContain(`dane-relay: config ${cfg} (from $DANE_RELAY_CONFIG)`);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toBeDefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(elsewhere, { recursive: true, force: true });
    }
  });
});
