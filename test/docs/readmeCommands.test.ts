/**
 * Issue 21 item 8: the commands README's command table documents are the CLI's: each one, run with
 * `--help`, exits 0 with its usage, and that usage names every option the README row shows (a row
 * can't promise an option the command would refuse with exit 2). `dane-relay --version` runs as
 * documented. The examples/ commands are run by test/examples/examples.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { CLI, ROOT, ensureBuilt, launcherNodeFlags } from '../support/build.js';
import { runCliIn } from '../support/relayProcess.js';
import { main } from '../../src/cli.js';

/** The command cells of README's table: "dane-relay WORDS… [OPERANDS] [--options]" → the words and the options. */
function readmeCommands(): { cell: string; words: string[]; options: string[] }[] {
  const out: { cell: string; words: string[]; options: string[] }[] = [];
  for (const line of readFileSync(join(ROOT, 'README.md'), 'utf8').split('\n')) {
    const m = /^\| `dane-relay ([^`]*)`(?: \/ `([^`]*)`)? \|/.exec(line);
    if (!m) continue;
    const cell = m[1]!.replace(/\\\|/g, '|');
    const tokens = cell.split(/\s+/);
    const words: string[] = [];
    for (const t of tokens) {
      if (!/^[a-z][a-z-]*(\|[a-z-]+)*$/.test(t)) break;
      words.push(t);
    }
    const options = [...cell.matchAll(/(--[a-z][a-z-]*)/g)].map((o) => o[1]!);
    // "show|refresh|purge": one command per alternative; "hold ID` / `release ID": the second shares the first's group
    const alternatives = (words.at(-1) ?? '').split('|');
    for (const a of alternatives) out.push({ cell, words: [...words.slice(0, -1), a].filter(Boolean), options });
    if (m[2])
      out.push({ cell: m[2], words: [...words.slice(0, -1), m[2].split(/\s+/)[0]!], options: [...m[2].matchAll(/(--[a-z][a-z-]*)/g)].map((o) => o[1]!) });
  }
  return out;
}

describe('issue21 item 8: the README command table runs as documented', () => {
  const rows = readmeCommands();

  it('the table documents the commands (a parse of nothing would pass everything below)', () => {
    expect(rows.length).toBeGreaterThanOrEqual(20);
    expect(rows.map((r) => r.words.join(' '))).toEqual(expect.arrayContaining(['serve', 'queue shape', 'queue release', 'mta-sts purge', 'config check']));
  });

  for (const r of readmeCommands().filter((x) => x.words.length > 0))
    it(`dane-relay ${r.words.join(' ')} --help: exit 0, and its usage names ${r.options.join(' ') || 'no option'}`, async () => {
      const res = await runCliIn(main, [...r.words, '--help']);
      expect(res.code, res.stderr).toBe(0);
      expect(res.stdout).toContain(`dane-relay ${r.words.join(' ')}`);
      for (const o of r.options) expect(res.stdout, `${r.cell}: ${o}`).toContain(o);
    });

  it('dane-relay --version (the installed launcher): exit 0, the version of package.json', () => {
    ensureBuilt();
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    expect(rows.some((r) => r.words.length === 0 && r.options.includes('--version'))).toBe(true);
    expect(execFileSync(process.execPath, [CLI, '--version'], { encoding: 'utf8' })).toBe(`dane-relay ${version}\n`);
  });

  it('the launcher runs as a program: /bin/sh execs node with its flags, which this node accepts (npm start, the systemd unit)', () => {
    ensureBuilt();
    const flags = launcherNodeFlags();
    expect(flags).toContain('--initial-old-space-size=64');
    expect(flags).toContain('--interrupt-budget=16896');
    // executed through its #! line, not `node file`: a flag node refused fails here
    expect(execFileSync(CLI, ['--version'], { encoding: 'utf8' })).toMatch(/^dane-relay \d+\.\d+\.\d+/);
    // and node starts with them: a preloaded script notes process.execArgv of the launched process
    const dir = mkdtempSync(join(tmpdir(), 'launcher-'));
    try {
      writeFileSync(join(dir, 'note.cjs'), "require('node:fs').writeFileSync(process.env.ARGV_OUT, JSON.stringify(process.execArgv));\n");
      const env = { ...process.env, ARGV_OUT: join(dir, 'argv.json'), NODE_OPTIONS: `--require ${join(dir, 'note.cjs')}` };
      execFileSync(CLI, ['--version'], { encoding: 'utf8', env });
      expect(JSON.parse(readFileSync(join(dir, 'argv.json'), 'utf8'))).toEqual(flags);
      // through a symbolic link, as npm installs it (…/bin/dane-relay → …/bin/dane-relay.js), and from another directory
      symlinkSync(CLI, join(dir, 'dane-relay'));
      expect(execFileSync(join(dir, 'dane-relay'), ['--version'], { encoding: 'utf8', cwd: tmpdir() })).toMatch(/^dane-relay \d+\.\d+\.\d+/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts.start).toMatch(/&& \.\/bin\/dane-relay\.js serve /);
  });
});
