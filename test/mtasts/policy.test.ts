/**
 * MTA-STS policy parser (RFC 8461 §3.2) and MX matching (§4.1): golden tables, one per rule, and
 * properties over generated inputs.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MAX_MAX_AGE, matchingPattern, mxMatches, parseMxPattern, parsePolicy } from '../../src/mtasts/policy.js';

const good = 'version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\n';
const parse = (s: string) => {
  const r = parsePolicy(s);
  if (!r.ok) throw new Error(r.why);
  return r.policy;
};
const invalid = (s: string) => {
  const r = parsePolicy(s);
  return r.ok ? undefined : r.why;
};

describe('MTA-STS policy syntax', () => {
  it('STS-20 line ends: LF, CRLF, mixed, last line end optional; trailing whitespace allowed; leading whitespace not', () => {
    const want = { mode: 'enforce', maxAge: 604800, mx: ['mail.example.com', '*.example.net'] };
    expect(parse(good)).toMatchObject(want);
    expect(parse(good.replace(/\n/g, '\r\n'))).toMatchObject(want);
    expect(parse(good.trimEnd())).toMatchObject(want);
    expect(parse('version: STSv1\r\nmode: enforce\nmx: mail.example.com\r\nmx: *.example.net\nmax_age: 604800')).toMatchObject(want);
    expect(parse('version:STSv1\nmode:\tenforce  \nmx: mail.example.com \t\r\nmx:*.example.net\nmax_age: 604800\t')).toMatchObject(want);
    expect(invalid(' version: STSv1\nmode: none\nmax_age: 1')).toMatch(/line 1/);
    expect(invalid('version STSv1\nmode: none\nmax_age: 1')).toMatch(/not "key: value"/);
  });

  it('STS-20 keys and fixed values are case-sensitive: "Mode: Enforce" is invalid', () => {
    expect(invalid('version: STSv1\nMode: enforce\nmx: a.example\nmax_age: 1')).toBe('no mode field'); // "Mode" is an extension
    expect(invalid('version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1')).toMatch(/not enforce, testing or none/);
    expect(invalid('version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 1')).toMatch(/not STSv1/);
    expect(invalid('Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1')).toBe('no version field');
    expect(invalid('version: STSv1\nmode: enforce\nMX: a.example\nmax_age: 1')).toBe('mode enforce without any mx field');
  });

  it('STS-21 version, mode, max_age required; mx required unless mode none; each mode value', () => {
    expect(invalid('mode: enforce\nmx: a.example\nmax_age: 1')).toBe('no version field');
    expect(invalid('version: STSv1\nmx: a.example\nmax_age: 1')).toBe('no mode field');
    expect(invalid('version: STSv1\nmode: enforce\nmx: a.example')).toBe('no max_age field');
    expect(invalid('version: STSv1\nmode: enforce\nmax_age: 1')).toBe('mode enforce without any mx field');
    expect(invalid('version: STSv1\nmode: testing\nmax_age: 1')).toBe('mode testing without any mx field');
    expect(parse('version: STSv1\nmode: none\nmax_age: 86400')).toEqual({
      mode: 'none',
      maxAge: 86400,
      mx: [],
      lines: ['version: STSv1', 'mode: none', 'max_age: 86400'],
    });
    expect(parse('version: STSv1\nmode: testing\nmx: a.example\nmax_age: 1').mode).toBe('testing');
    expect(invalid('')).toBe('no version field');
    expect(invalid('<html><body>policy</body></html>')).toMatch(/not "key: value"/);
  });

  it('STS-22 a repeated key other than mx: the first wins; unknown keys are ignored and left out of policy-string', () => {
    const r = parsePolicy(
      'version: STSv1\nmode: enforce\nmode: none\nmx: a.example\nmx: b.example\nmax_age: 100\nmax_age: 5\nfoo_bar.x-1: some value ü\nversion: STSv2\n',
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.policy).toEqual({
      mode: 'enforce',
      maxAge: 100,
      mx: ['a.example', 'b.example'],
      lines: ['version: STSv1', 'mode: enforce', 'mx: a.example', 'mx: b.example', 'max_age: 100'],
    });
    expect(r.notes).toEqual([
      'line 3: mode repeated; the first one counts',
      'line 7: max_age repeated; the first one counts',
      'line 9: version repeated; the first one counts',
    ]);
    // extension syntax still applies
    expect(invalid(`${good}_x: 1`)).toMatch(/malformed field/);
    expect(invalid(`${good}${'e'.repeat(33)}: 1`)).toMatch(/malformed field/);
    expect(invalid(`${good}ext:`)).toMatch(/malformed field/);
    expect(invalid(`${good}ext: a\x01b`)).toMatch(/malformed field/);
  });

  it('STS-23 mx patterns table: "*." only as a whole leftmost label, A-labels only, case and trailing dot folded', () => {
    const table: [string, string | undefined][] = [
      ['mail.example.com', 'mail.example.com'],
      ['MAIL.Example.COM', 'mail.example.com'],
      ['mail.example.com.', 'mail.example.com'],
      ['*.example.com', '*.example.com'],
      ['xn--bcher-kva.example', 'xn--bcher-kva.example'],
      ['localhost', 'localhost'],
      ['*example.com', undefined],
      ['a.*.example.com', undefined],
      ['*', undefined],
      ['*.', undefined],
      ['**.example.com', undefined],
      ['*.*.example.com', undefined],
      ['bücher.example', undefined], // U-label: A-labels are a MUST
      ['-mail.example.com', undefined],
      ['mail-.example.com', undefined],
      ['mail..example.com', undefined],
      ['mail_1.example.com', undefined],
      ['mail.example.com:25', undefined],
      ['[192.0.2.1]', undefined],
      [`${'a'.repeat(64)}.example`, undefined],
      ['', undefined],
    ];
    for (const [v, want] of table) expect(parseMxPattern(v), v).toBe(want);
  });

  it('STS-23 one bad mx line invalidates the whole policy; one pattern per mx line', () => {
    expect(invalid(`${good}mx: a.*.example.com\n`)).toMatch(/line 6: mx/);
    expect(invalid(`${good}mx: a.example.com b.example.com\n`)).toMatch(/line 6: mx/);
    expect(invalid(`${good}mx: a.example.com, b.example.com\n`)).toMatch(/line 6: mx/);
  });

  it('STS-24 max_age: 0…31557600, up to 10 digits (errata 7282), larger values capped (never a smaller cap)', () => {
    const age = (v: string) => {
      const r = parsePolicy(`version: STSv1\nmode: enforce\nmx: a.example\nmax_age: ${v}`);
      return r.ok ? [r.policy.maxAge, r.notes.length] : r.why;
    };
    expect(age('0')).toEqual([0, 0]);
    expect(age('86400')).toEqual([86400, 0]);
    expect(age(String(MAX_MAX_AGE))).toEqual([31557600, 0]);
    expect(age('31557601')).toEqual([31557600, 1]);
    expect(age('9999999999')).toEqual([31557600, 1]);
    expect(age('0000086400')).toEqual([86400, 0]);
    expect(age('99999999999')).toMatch(/1 to 10 digits/);
    expect(age('-1')).toMatch(/1 to 10 digits/);
    expect(age('1d')).toMatch(/1 to 10 digits/);
    expect(age('1.5')).toMatch(/1 to 10 digits/);
    expect(age('')).toMatch(/1 to 10 digits/);
  });

  it('STS-20 STS-22 property: any valid policy with extra unknown lines and either line end parses to the same policy', () => {
    const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/);
    const host = fc.array(label, { minLength: 2, maxLength: 4 }).map((l) => l.join('.'));
    const pattern = fc.tuple(fc.boolean(), host).map(([w, h]) => (w ? `*.${h}` : h));
    const ext = fc
      .tuple(fc.stringMatching(/^[a-z0-9][a-z0-9_.-]{0,10}$/), fc.stringMatching(/^[!-~]{1,10}$/))
      .filter(([k]) => !['version', 'mode', 'max_age', 'mx'].includes(k))
      .map(([k, v]) => `${k}: ${v}`);
    fc.assert(
      fc.property(
        fc.constantFrom('enforce', 'testing', 'none'),
        fc.integer({ min: 0, max: MAX_MAX_AGE }),
        fc.array(pattern, { minLength: 1, maxLength: 5 }),
        fc.array(ext, { maxLength: 3 }),
        fc.constantFrom('\n', '\r\n'),
        fc.boolean(),
        (mode, maxAge, mx, exts, eol, lastEol) => {
          const lines = ['version: STSv1', `mode: ${mode}`, ...mx.map((m) => `mx: ${m}`), `max_age: ${maxAge}`];
          const body = [...lines, ...exts].join(eol) + (lastEol ? eol : '');
          const r = parsePolicy(body);
          expect(r.ok).toBe(true);
          if (r.ok) expect(r.policy).toEqual({ mode, maxAge, mx, lines });
        },
      ),
    );
  });
});

describe('MTA-STS MX matching', () => {
  it('STS-40 exact and one-label wildcard matches against the MX name, case-insensitive; never deeper, never the bare domain', () => {
    const table: [string, string, boolean][] = [
      ['mail.example.net', 'mail.example.net', true],
      ['mail.example.net', 'MAIL.Example.NET.', true],
      ['mail.example.net', 'mail2.example.net', false],
      ['mail.example.net', 'example.net', false],
      ['*.example.net', 'mail.example.net', true],
      ['*.example.net', 'Mx1.EXAMPLE.net.', true],
      ['*.example.net', 'example.net', false],
      ['*.example.net', 'a.b.example.net', false],
      ['*.example.net', 'mail.example.net.evil.test', false],
      ['*.example.net', 'mailexample.net', false],
      ['*.example.net', '.example.net', false],
    ];
    for (const [p, host, want] of table) expect(mxMatches(p, host), `${p} ~ ${host}`).toBe(want);
    expect(matchingPattern({ mx: ['a.example', '*.example.net'] }, 'mx.example.net')).toBe('*.example.net');
    expect(matchingPattern({ mx: ['a.example'] }, 'b.example')).toBeUndefined();
  });
});
