/**
 * Issue 21 item 9: configuration errors point the right way — one row per mistake an operator makes,
 * with the exact message the relay gives (or that it accepts the file), through the real parser, the
 * real policy-file reader and the real `dane-relay config check`.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { editDistance, keysAt, suggestKey } from '../../src/config/keys.js';
import { effectiveConfigLines, formatDuration } from '../../src/config/show.js';
import { parseTlsPolicy, PolicyFileError, POSTFIX_ONLY_LEVELS } from '../../src/policy/tables.js';
import { main } from '../../src/cli.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'dane-relay-cfgerr-'));
  dirs.push(d);
  return d;
}
function problemsOf(text: string): string[] {
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
      w.text += String(c);
      cb();
    },
  }) as Writable & { text: string };
  w.text = '';
  return w;
}

/** [what the operator wrote, the exact problem lines ([] = accepted)] */
const CASES: [string, string, string[]][] = [
  ['a scalar where a list is meant is a list of one (listen)', 'listen: 127.0.0.1:10040\n', []],
  ['a scalar where a list is meant is a list of one (relay_clients, dns.resolvers)', 'relay_clients: 10.0.0.0/8\ndns:\n  resolvers: 127.0.0.1:53\n', []],
  [
    'a section where a list is meant: what was expected and what is there',
    'listen: { a: 1 }\n',
    ['line 1, column 9: listen: expected a list, e.g. ["…"], got a section (key: value pairs)'],
  ],
  ['an empty list', 'listen: []\n', ['line 1, column 9: listen: expected at least 1 entry']],
  ['a quoted number is a string, not "required"', 'delivery:\n  port: "25"\n', ['line 2, column 9: delivery.port: expected a number, got string "25"']],
  ['a key that is really missing is "required"', 'tlsrpt:\n  dkim: { domain: example.net }\n', ['line 2, column 9: tlsrpt.dkim.key_file: required']],
  [
    'a bad metrics port names the port, not loopback',
    'metrics:\n  listen: 127.0.0.1:99999\n',
    ['line 2, column 11: metrics.listen: port "99999" is not a port number (0-65535)'],
  ],
  ['a metrics address without a port', 'metrics:\n  listen: 127.0.0.1\n', ['line 2, column 11: metrics.listen: no port: expected "127.0.0.1:PORT"']],
  [
    'an IPv6 metrics address without brackets',
    'metrics:\n  listen: "::1:9100"\n',
    ['line 2, column 11: metrics.listen: an IPv6 address needs brackets: "[::1]:9100"'],
  ],
  [
    'a host name where an address is meant',
    'metrics:\n  listen: localhost:9100\n',
    ['line 2, column 11: metrics.listen: "localhost" is not an IP address (expected "address:port", IPv6 as "[::1]:2525"; names are not resolved here)'],
  ],
  [
    'a real non-loopback metrics address is the loopback rule',
    'metrics:\n  listen: 10.0.0.1:9100\n',
    ['line 2, column 11: metrics.listen: metrics.listen must be a loopback address (127.0.0.0/8 or ::1) unless metrics.allow_remote is true'],
  ],
  ['an IPv6 listen port out of range', 'listen: ["[::1]:70000"]\n', ['line 1, column 10: listen.0: port "70000" is not a port number (0-65535)']],
  ['a typo in a key: did you mean', 'delivery:\n  tls_levl: dane\n', ['line 2, column 3: delivery.tls_levl: unknown key; did you mean `delivery.tls_level`?']],
  [
    'two typos and a wrong case',
    'queue:\n  lifetme: 5d\n  maxbackoff: 1h\nDelivery: {}\n',
    [
      'line 2, column 3: queue.lifetme: unknown key; did you mean `queue.lifetime`?',
      'line 3, column 3: queue.maxbackoff: unknown key; did you mean `queue.max_backoff`?',
      'line 4, column 1: Delivery: unknown key; did you mean `delivery`?',
    ],
  ],
  ['a key at the wrong level', 'tls_level: dane-only\n', ['line 1, column 1: tls_level: unknown key; did you mean `delivery.tls_level`?']],
  ['a dash for an underscore', 'ingress:\n  max-hops: 30\n', ['line 2, column 3: ingress.max-hops: unknown key; did you mean `ingress.max_hops`?']],
  ['nothing close: no guess', 'delivery:\n  frobnicate: 1\n', ['line 2, column 3: delivery.frobnicate: unknown key']],
];

describe('issue21 item 9: configuration errors that point the right way', () => {
  for (const [name, text, expected] of CASES)
    it(name, () => {
      expect(problemsOf(text)).toEqual(expected);
    });

  it('a scalar list is the same configuration as the list of one', () => {
    const a = parseConfigText('listen: 127.0.0.1:10040\ndns:\n  resolvers: 127.0.0.1:53\n');
    const b = parseConfigText('listen: ["127.0.0.1:10040"]\ndns:\n  resolvers: ["127.0.0.1:53"]\n');
    expect(a).toEqual(b);
    expect(a.listen).toEqual(['127.0.0.1:10040']);
  });

  it('did-you-mean reads the schema: every key of every section is its own best guess, and the distance counts a swap as one', () => {
    for (const path of [[], ['delivery'], ['delivery', 'timeouts'], ['ingress'], ['queue'], ['tlsrpt'], ['policy']])
      for (const k of keysAt(path)) expect(suggestKey(path, k.toUpperCase())).toBe([...path, k].join('.'));
    expect(keysAt(['delivery'])).toContain('tls_level');
    expect(editDistance('tls_levle', 'tls_level')).toBe(1);
    expect(editDistance('', 'abc')).toBe(3);
  });
});

describe('issue21 item 9: Postfix level names in policy files: a clear refusal naming the nearest level, never a silent mapping', () => {
  for (const level of ['verify', 'secure', 'fingerprint', 'Secure'])
    it(`"${level}" is refused with the reason and "dane-only"`, () => {
      let err: unknown;
      try {
        parseTlsPolicy(`# table\nexample.com ${level}\n`, 'tls_policy');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PolicyFileError);
      const p = (err as PolicyFileError).problems;
      expect(p).toHaveLength(1);
      expect(p[0]!.line).toBe(2);
      expect(p[0]!.message).toBe(POSTFIX_ONLY_LEVELS[level.toLowerCase()]);
      expect(p[0]!.message).toMatch(/not supported/);
      expect(p[0]!.message).toMatch(/Nearest level that is not weaker: "dane-only"/);
    });

  it('`config check` refuses a policy file with "secure" (exit 2, the line and the reason)', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'tls_policy'), 'example.com secure match=.example.com\n');
    writeFileSync(join(dir, 'c.yml'), 'dns:\n  resolvers: ["127.0.0.1:53"]\npolicy:\n  tls_policy: tls_policy\nqueue_dir: q\n');
    const out = sink();
    const err = sink();
    expect(await main(['config', 'check', join(dir, 'c.yml')], out, err)).toBe(2);
    expect(err.text).toContain('line 1: Postfix\'s "secure"');
    expect(err.text).toContain('"dane-only"');
  });
});

describe('issue21 item 9: `config check` prints the effective configuration (postconf -n, --all like postconf)', () => {
  it('the keys the file sets, normalised (a scalar list, durations in units, paths made absolute); --all adds every default', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'c.yml'), 'listen: 127.0.0.1:2600\ndns:\n  resolvers: 127.0.0.1:53\nqueue:\n  lifetime: 72h\nqueue_dir: q\n');
    const out = sink();
    const err = sink();
    expect(await main(['config', 'check', join(dir, 'c.yml')], out, err)).toBe(0);
    expect(out.text).toBe(
      `${join(dir, 'c.yml')}: ok\nlisten = 127.0.0.1:2600\nqueue_dir = ${join(dir, 'q')}\ndns.resolvers = 127.0.0.1:53\nqueue.lifetime = 3d\n`,
    );
    const all = sink();
    expect(await main(['config', 'check', '--all', join(dir, 'c.yml')], all, err)).toBe(0);
    for (const line of [
      'delivery.tls_level = dane',
      'queue.min_backoff = 30m',
      'delivery.timeouts.connect = 30s',
      'relay_clients = 127.0.0.0/8, ::1/128',
      'queue.lifetime = 3d',
    ])
      expect(all.text.split('\n')).toContain(line);
    expect(all.text).not.toMatch(/baseDir|resolvedResolvers/);
    expect(err.text).toBe('');
  });

  it('secrets are never printed: a key named like a password, and a password in a database URL', () => {
    const cfg = parseConfigText('spool:\n  backend: postgres\n  postgres: { url: "postgresql://relay@db/relay" }\n');
    const withSecret = {
      ...cfg,
      spool: { ...cfg.spool, postgres: { ...cfg.spool.postgres!, url: 'postgresql://relay:hunter2@db/relay', password: 'hunter2' } },
    };
    const lines = effectiveConfigLines(withSecret as typeof cfg);
    expect(lines).toContain('spool.postgres.url = postgresql://relay:(redacted)@db/relay');
    expect(lines).toContain('spool.postgres.password = (redacted)');
    expect(lines.join('\n')).not.toContain('hunter2');
    expect(lines).toContain('spool.postgres.password_env = PGPASSWORD'); // the name of the variable is no secret
  });

  it('durations print in the largest exact unit, in a form the file accepts back', () => {
    expect([0, 250, 1000, 90_000, 1_800_000, 14_400_000, 432_000_000].map(formatDuration)).toEqual(['0', '250ms', '1s', '90s', '30m', '4h', '5d']);
  });
});
