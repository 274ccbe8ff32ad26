/**
 * Policy file parsing (tls_policy, danefail) and the one resolution function, as tables.
 */
import { describe, expect, it } from 'vitest';
import { parseDanefail, parseTlsPolicy, PolicyFileError, normalizeDomain } from '../../src/policy/tables.js';
import { exceptionConflicts, mentionsDane, resolvePolicy, type ExceptionLevel, type PolicyInputs } from '../../src/policy/resolve.js';
import type { TlsLevel } from '../../src/dane/levels.js';

const table = parseTlsPolicy(
  [
    '# header',
    'example.org        dane-only', // 2
    '.example.org       dane', // 3
    '.deep.example.org  encrypt', // 4
    'x.deep.example.org none', // 5
    'legacy.test        may', // 6
    '  Mixed.Case.TEST.   ENCRYPT  ', // 7
    '.insecure.test     dane  trust-insecure-mx', // 8
    'audited.test       dane  audit', // 9
    '',
  ].join('\n'),
  'policy/tls_policy',
);
const exceptions = parseDanefail(
  ['# list', '  broken.test  ', 'BROKEN2.test.', '## mx.broken.test', 'example.org', 'legacy.test', 'a.example.org'].join('\n'),
  'policy/danefail',
);

describe('tls_policy resolution (most specific wins)', () => {
  const base: PolicyInputs = { defaultLevel: 'dane', table, exceptions: undefined, exceptionLevel: 'may' };
  const rows: [string, TlsLevel, string][] = [
    ['example.org', 'dane-only', 'policy/tls_policy:2 example.org dane-only'],
    ['EXAMPLE.ORG.', 'dane-only', 'policy/tls_policy:2 example.org dane-only'],
    ['a.example.org', 'dane', 'policy/tls_policy:3 .example.org dane'],
    ['a.b.example.org', 'dane', 'policy/tls_policy:3 .example.org dane'],
    ['deep.example.org', 'dane', 'policy/tls_policy:3 .example.org dane'], // ".deep" covers subdomains only
    ['y.deep.example.org', 'encrypt', 'policy/tls_policy:4 .deep.example.org encrypt'],
    ['x.deep.example.org', 'none', 'policy/tls_policy:5 x.deep.example.org none'],
    ['z.x.deep.example.org', 'encrypt', 'policy/tls_policy:4 .deep.example.org encrypt'],
    ['legacy.test', 'may', 'policy/tls_policy:6 legacy.test may'],
    ['mixed.case.test', 'encrypt', 'policy/tls_policy:7 mixed.case.test encrypt'],
    ['notexample.org', 'dane', 'delivery.tls_level=dane'],
    ['org', 'dane', 'delivery.tls_level=dane'],
    ['[192.0.2.1]', 'dane', 'delivery.tls_level=dane'],
    ['a.insecure.test', 'dane', 'policy/tls_policy:8 .insecure.test dane trust-insecure-mx'],
    ['audited.test', 'dane', 'policy/tls_policy:9 audited.test dane audit'],
  ];
  for (const [domain, level, rule] of rows) {
    it(`issue7: ${domain} → ${level} by ${rule}`, () => {
      expect(resolvePolicy(domain, base)).toMatchObject({ level, rule });
    });
  }
  it('DANE-15 trust-insecure-mx is carried only by entries that set it', () => {
    expect(resolvePolicy('a.insecure.test', base).trustInsecureMx).toBe(true);
    expect(resolvePolicy('example.org', base).trustInsecureMx).toBeUndefined();
  });
  it('issue13 nsec3-iterations-insecure: parsed for dane/dane-only, carried and named in the rule; refused for other levels', () => {
    const t = parseTlsPolicy(
      'hi.test dane nsec3-iterations-insecure\n.hi2.test dane-only NSEC3-iterations-insecure trust-insecure-mx\nlo.test dane\n',
      'policy/tls_policy',
    );
    const p = { defaultLevel: 'dane' as TlsLevel, table: t, exceptionLevel: 'may' as ExceptionLevel };
    expect(resolvePolicy('hi.test', p)).toMatchObject({ nsec3IterationsInsecure: true, rule: 'policy/tls_policy:1 hi.test dane nsec3-iterations-insecure' });
    expect(resolvePolicy('a.hi2.test', p)).toMatchObject({ nsec3IterationsInsecure: true, trustInsecureMx: true });
    expect(resolvePolicy('lo.test', p).nsec3IterationsInsecure).toBeUndefined();
    expect(resolvePolicy('other.test', p).nsec3IterationsInsecure).toBeUndefined();
    expect(() => parseTlsPolicy('x.test may nsec3-iterations-insecure\n', 'f')).toThrow(/line 1: nsec3-iterations-insecure only applies to dane and dane-only/);
  });
  it('DANE-46 audit is carried only by entries that set it', () => {
    expect(resolvePolicy('audited.test', base).audit).toBe(true);
    expect(resolvePolicy('example.org', base).audit).toBeUndefined();
  });
  it('issue7: no table: every domain gets the default', () => {
    for (const l of ['none', 'may', 'encrypt', 'dane', 'dane-only'] as TlsLevel[]) {
      expect(resolvePolicy('any.test', { defaultLevel: l, exceptionLevel: 'may' })).toEqual({ level: l, rule: `delivery.tls_level=${l}` });
    }
  });
});

describe('issue15 sts-ignore in tls_policy', () => {
  const t = parseTlsPolicy(
    [
      'alone.test        sts-ignore', // 1
      'withlevel.test    may  sts-ignore', // 2
      '.parent.test      encrypt', // 3
      'child.parent.test STS-IGNORE', // 4
      '.ignored.test     sts-ignore', // 5
      'kept.ignored.test dane-only', // 6
      'strict.test       dane-only sts-ignore', // 7
      '',
    ].join('\n'),
    'policy/tls_policy',
  );
  const inputs: PolicyInputs = { defaultLevel: 'dane', table: t, exceptions: parseDanefail('alone.test\n', 'policy/danefail'), exceptionLevel: 'may' };
  const rows: [string, TlsLevel, string, boolean][] = [
    // alone: the ordinary level (the default), the rule names both the entry and where the level came from
    ['alone.test', 'may', 'policy/danefail:1 alone.test exception dane→may', true],
    ['withlevel.test', 'may', 'policy/tls_policy:2 withlevel.test may sts-ignore', true],
    ['child.parent.test', 'encrypt', 'policy/tls_policy:4 child.parent.test sts-ignore (level: policy/tls_policy:3 .parent.test encrypt)', true],
    ['other.parent.test', 'encrypt', 'policy/tls_policy:3 .parent.test encrypt', false],
    ['a.ignored.test', 'dane', 'policy/tls_policy:5 .ignored.test sts-ignore (level: delivery.tls_level=dane)', true],
    // the most specific entry decides the option as every option: a more specific entry without it keeps MTA-STS
    ['kept.ignored.test', 'dane-only', 'policy/tls_policy:6 kept.ignored.test dane-only', false],
    ['strict.test', 'dane-only', 'policy/tls_policy:7 strict.test dane-only sts-ignore', true],
    ['unlisted.test', 'dane', 'delivery.tls_level=dane', false],
  ];
  for (const [domain, level, rule, ignore] of rows) {
    it(`issue15 ${domain} → ${level}${ignore ? ' sts-ignore' : ''} by ${rule}`, () => {
      const r = resolvePolicy(domain, inputs);
      expect(r).toMatchObject({ level, rule });
      expect(r.stsIgnore).toBe(ignore ? true : undefined);
    });
  }
  it('issue15 an sts-ignore-only entry sets no level: parsed without one, and it does not make the table mention DANE', () => {
    expect(t.entries.get('alone.test')).toMatchObject({ key: 'alone.test', stsIgnore: true, line: 1 });
    expect(t.entries.get('alone.test')!.level).toBeUndefined();
    expect(mentionsDane({ table: parseTlsPolicy('a.test sts-ignore\n', 'x') })).toBe(false);
  });
  it('issue15 without a danefail listing the sts-ignore-only entry keeps the default level (explicit only through a level entry)', () => {
    const r = resolvePolicy('alone.test', { ...inputs, exceptions: undefined });
    expect(r).toMatchObject({ level: 'dane', rule: 'policy/tls_policy:1 alone.test sts-ignore (level: delivery.tls_level=dane)', stsIgnore: true });
    expect(r.explicit).toBeUndefined();
  });
});

describe('DANE-70 exception list in resolution', () => {
  const p = (defaultLevel: TlsLevel, exceptionLevel: ExceptionLevel = 'may'): PolicyInputs => ({ defaultLevel, table, exceptions, exceptionLevel });
  // domain, default level, expected level, exception?
  const rows: [string, TlsLevel, TlsLevel, boolean][] = [
    ['broken.test', 'dane', 'may', true],
    ['broken.test', 'dane-only', 'may', true],
    ['broken.test', 'may', 'may', false], // DANE not asked for: nothing to lower
    ['broken.test', 'none', 'none', false], // never raised
    ['broken.test', 'encrypt', 'encrypt', false],
    ['broken2.test', 'dane', 'may', true], // listed with upper case and trailing dot
    ['sub.broken.test', 'dane', 'dane', false], // exact match only, no wildcards
    ['example.org', 'may', 'dane-only', false], // explicit table dane-only: the operator's entry wins over the list
    ['legacy.test', 'dane', 'may', false], // table says may already
    ['a.example.org', 'none', 'may', true], // table .example.org dane → lowered
    ['mx.broken.test', 'dane', 'dane', false], // "##" lines are comments
  ];
  for (const [domain, def, level, ex] of rows) {
    it(`DANE-70 ${domain} with default ${def} → ${level}${ex ? ' (exception)' : ''}`, () => {
      const r = resolvePolicy(domain, p(def));
      expect(r.level).toBe(level);
      expect(!!r.exception).toBe(ex);
      if (ex) expect(r.rule).toMatch(/^policy\/danefail:\d+ /);
    });
  }
  it('DANE-70 an explicit .parent dane-only entry also wins; a .parent dane entry is lowered; the default dane-only is lowered', () => {
    const t = parseTlsPolicy('.strict.test dane-only\n.soft.test dane\n', 'policy/tls_policy');
    const ex = parseDanefail('a.strict.test\na.soft.test\nother.test\n', 'policy/danefail');
    const q: PolicyInputs = { defaultLevel: 'dane-only', table: t, exceptions: ex, exceptionLevel: 'may' };
    expect(resolvePolicy('a.strict.test', q)).toEqual({ explicit: true, level: 'dane-only', rule: 'policy/tls_policy:1 .strict.test dane-only' });
    expect(resolvePolicy('a.soft.test', q)).toMatchObject({ level: 'may', exception: { underlying: 'dane', line: 2 } });
    expect(resolvePolicy('other.test', q)).toMatchObject({
      level: 'may',
      exception: { underlying: 'dane-only', underlyingRule: 'delivery.tls_level=dane-only', line: 3 },
    });
    expect(exceptionConflicts(q)).toEqual([{ domain: 'a.strict.test', exception: 'policy/danefail:1', entry: 'policy/tls_policy:1 .strict.test dane-only' }]);
  });
  it('DANE-70 exceptionConflicts names both files and lines for every listed domain an explicit dane-only entry keeps strict', () => {
    expect(exceptionConflicts(p('dane'))).toEqual([
      { domain: 'example.org', exception: 'policy/danefail:5', entry: 'policy/tls_policy:2 example.org dane-only' },
    ]);
    expect(exceptionConflicts({ defaultLevel: 'dane', exceptionLevel: 'may', exceptions })).toEqual([]);
  });
  it('DANE-70 the exception rule names the line and both levels', () => {
    expect(resolvePolicy('broken.test', p('dane'))).toEqual({
      level: 'may',
      rule: 'policy/danefail:2 broken.test exception dane→may',
      exception: { underlying: 'dane', underlyingRule: 'delivery.tls_level=dane', line: 2 },
    });
    expect(resolvePolicy('broken.test', p('dane', 'encrypt')).level).toBe('encrypt');
  });
});

describe('file errors name their line; the whole file is rejected', () => {
  const bad: [string, string, number, RegExp][] = [
    ['tls_policy', 'ok.test dane\nbad.test dane-sometimes\n', 2, /unknown TLS level "dane-sometimes"/],
    ['tls_policy', '\n\nlonely.test\n', 3, /no TLS level/],
    ['tls_policy', 'a.test dane\n# c\na.test may\n', 3, /already given on line 1/],
    ['tls_policy', 'bad_domain-.test dane\n', 1, /not a domain/],
    ['tls_policy', 'a.test dane frobnicate\n', 1, /unknown option "frobnicate"/],
    ['tls_policy', 'a.test may trust-insecure-mx\n', 1, /only applies to dane/],
    ['tls_policy', '[192.0.2.1]:25 encrypt\n', 1, /not a domain/],
    ['tls_policy', 'a.test dane-only audit\n', 1, /audit only applies to dane/],
    ['tls_policy', 'a.test may audit\n', 1, /audit only applies to dane/],
    ['tls_policy', 'a.test sts-ignore audit\n', 1, /without a TLS level may only carry sts-ignore/],
    ['tls_policy', 'a.test sts-ignore may\n', 1, /without a TLS level may only carry sts-ignore/],
    ['tls_policy', 'a.test may sts-ignorez\n', 1, /unknown option "sts-ignorez"/],
    ['danefail', 'good.test\nbad.test extra words\n', 2, /one bare domain per line/],
    ['danefail', 'a.test\n\n*.wild.test\n', 3, /no wildcards/],
    ['danefail', '.parent.test\n', 1, /no wildcards or \.parent/],
    ['danefail', 'x..test\n', 1, /not a domain name/],
  ];
  for (const [kind, text, line, re] of bad) {
    it(`issue7: ${kind}: ${JSON.stringify(text)} → line ${line}`, () => {
      let e: unknown;
      try {
        (kind === 'tls_policy' ? parseTlsPolicy : parseDanefail)(text, `policy/${kind}`);
      } catch (x) {
        e = x;
      }
      expect(e).toBeInstanceOf(PolicyFileError);
      const pe = e as PolicyFileError;
      expect(pe.problems[0]!.line).toBe(line);
      expect(pe.problems[0]!.message).toMatch(re);
      expect(pe.message).toContain(`line ${line}:`);
    });
  }
  it('DANE-70 danefail format: trims, skips # and blank lines, lowercases, drops a trailing dot, CRLF tolerated', () => {
    const l = parseDanefail('# c\r\n  Example.COM.  \r\n\r\n## mx.example.com\r\nother.test\t\r\nexample.com\r\n', 'f');
    expect([...l.domains.entries()]).toEqual([
      ['example.com', 2],
      ['other.test', 5],
    ]);
  });
  it('issue7: the shipped files parse and are empty of entries', async () => {
    const { readFileSync } = await import('node:fs');
    expect(parseTlsPolicy(readFileSync('policy/tls_policy', 'utf8'), 'x').entries.size).toBe(0);
    expect(parseDanefail(readFileSync('policy/danefail', 'utf8'), 'x').domains.size).toBe(0);
  });
  it('issue7: normalizeDomain table', () => {
    expect(normalizeDomain('A.B.')).toBe('a.b');
    expect(normalizeDomain('')).toBeUndefined();
    expect(normalizeDomain('-a.b')).toBeUndefined();
    expect(normalizeDomain('a'.repeat(64) + '.b')).toBeUndefined();
    expect(normalizeDomain('_25._tcp.a.b')).toBe('_25._tcp.a.b');
  });
});
