/**
 * Issue 14 item 7: every command and subcommand answers `--help`/`-h` with its usage (exit 0, stdout),
 * and an unknown option is a usage error naming it (exit 2, stderr) — the table of commands is the
 * CLI's contract (README, examples/), so the table drives the test.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { Writable } from 'node:stream';
import { COMMAND_TABLE, main } from '../../src/cli.js';
import { CLI, ensureBuilt } from '../support/build.js';

function sink(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(c, _e, cb) {
      chunks.push(Buffer.from(c));
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString('utf8') };
}

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = sink();
  const err = sink();
  const code = await main(argv, out.stream, err.stream);
  return { code, out: out.text(), err: err.text() };
}

/** The words of every command README and examples/ use; the table must still hold each of them. */
const CONTRACT = [
  'serve',
  'config check',
  'hash-password',
  'queue list',
  'queue show',
  'queue flush',
  'queue hold',
  'queue release',
  'queue delete',
  'queue requeue',
  'queue shape', // issue 21 item 8
  'check',
  'tlsa',
  'tlsrpt show',
  'tlsrpt send',
  'dkim keygen',
  'dns lookup',
  'db migrate',
  'nodes', // issue 16
  'mta-sts show',
  'mta-sts refresh',
  'mta-sts purge', // issue 15
];

describe('CLI: --help, unknown options (issue 14 item 7)', () => {
  it('the table holds every command of the contract, and nothing else', () => {
    expect(COMMAND_TABLE.map((c) => c.words.join(' ')).sort()).toEqual([...CONTRACT].sort());
  });

  for (const c of COMMAND_TABLE) {
    const words = c.words.join(' ');
    for (const help of ['--help', '-h']) {
      it(`dane-relay ${words} ${help}: usage on stdout, exit 0, nothing else done`, async () => {
        // the required operands and options are missing: help wins over them
        const r = await run([...c.words, help]);
        expect(r).toMatchObject({ code: 0, err: '' });
        expect(r.out).toMatch(/^usage:\n/);
        expect(r.out).toContain(`dane-relay ${words}`);
      });
    }

    it(`dane-relay ${words} --no-such-option: exit 2, the option named, the usage shown`, async () => {
      const r = await run([...c.words, '--no-such-option']);
      expect(r.code).toBe(2);
      expect(r.out).toBe('');
      expect(r.err).toContain(`dane-relay ${words}: unknown option --no-such-option`);
      expect(r.err).toContain(`usage:\n  dane-relay ${words}`);
    });
  }

  it('every option a command names takes its value both as "--opt VALUE" and "--opt=VALUE"; a missing value is exit 2', async () => {
    for (const argv of [
      ['tlsa', '--cert'],
      ['check', 'example.com', '--config'],
      ['queue', 'list', '--config'],
    ]) {
      const r = await run(argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toContain(`option ${argv.at(-1)} needs a value`);
    }
    const missing = '/nonexistent/dane-relay-cli-test.yml';
    for (const argv of [
      ['check', 'example.com', '--config', missing],
      ['check', 'example.com', `--config=${missing}`],
    ]) {
      const r = await run(argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.err).toContain(`cannot read: ENOENT`);
    }
  });

  it('a boolean option takes no value; a wrong number of operands is exit 2', async () => {
    expect((await run(['check', 'example.com', '--json=yes'])).err).toContain('option --json takes no value');
    const extra = await run(['check', 'a.example', 'b.example']);
    expect(extra.code).toBe(2);
    expect(extra.err).toContain('unexpected operand b.example');
    const few = await run(['dns', 'lookup', 'example.com']);
    expect(few.code).toBe(2);
    expect(few.err).toContain('expected 2 operands');
    expect((await run(['config', 'check'])).code).toBe(2);
  });

  it('the command groups and the bare command answer --help with the usage of what was named (exit 0)', async () => {
    for (const [argv, first] of [
      [['--help'], 'serve'],
      [['-h'], 'serve'],
      [['queue', '--help'], 'queue list'],
      [['tlsrpt', '-h'], 'tlsrpt show'],
      [['config', '--help'], 'config check'],
      [['dns', '--help'], 'dns lookup'],
      [['dkim', '--help'], 'dkim keygen'],
    ] as const) {
      const r = await run([...argv]);
      expect(r.code, argv.join(' ')).toBe(0);
      expect(r.out).toContain(`usage:\n  dane-relay ${first}`);
    }
    const all = await run(['--help']);
    for (const c of COMMAND_TABLE) expect(all.out).toContain(`dane-relay ${c.words.join(' ')}`);
  });

  it('no command, an unknown command or subcommand: the usage on stderr, exit 2', async () => {
    for (const argv of [[], ['frobnicate'], ['queue'], ['queue', 'frobnicate'], ['tlsrpt', 'mail'], ['config']]) {
      const r = await run(argv);
      expect(r.code, argv.join(' ')).toBe(2);
      expect(r.out).toBe('');
      expect(r.err).toMatch(/^usage:\n {2}dane-relay /);
    }
  });

  it('the installed launcher exits with the same codes (a real process)', () => {
    ensureBuilt();
    const help = execFileSync(process.execPath, [CLI, 'tlsrpt', 'send', '--help'], { encoding: 'utf8' });
    expect(help).toContain('dane-relay tlsrpt send --day YYYY-MM-DD');
    const bad = spawnSync(process.execPath, [CLI, 'queue', 'list', '--bogus'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain('dane-relay queue list: unknown option --bogus');
  });
});
