/**
 * The requirement IDs (DANE-n, TLSRPT-n, STS-n, RT-n) are the repository's own: the digests that define
 * them are in docs/spec/, every ID the code, tests and documents cite is defined there, and every ID
 * defined there is either in the list of IDs that starts a test's name or documented in ARCHITECTURE.md
 * under a "… without a test of their own …" heading, in a bullet that starts with it and says why.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ROOT } from '../support/build.js';
import { citations, citedIn, definedIds, exceptionBullets, filesUnder, leadingList, namedIds, testTitles } from '../support/specIds.js';

const SPEC = join(ROOT, 'docs', 'spec');
const digests = readdirSync(SPEC)
  .filter((f) => f.endsWith('.md'))
  .sort();
const defined = new Map<string, string>(); // ID → digest
for (const d of digests) for (const id of definedIds(readFileSync(join(SPEC, d), 'utf8'))) defined.set(id, d);
const known = new Set(defined.keys());

/** Everything that may cite an ID: code, tests, examples, scripts and the top-level documents. */
const citing = [
  ...['src', 'test', 'bin', 'examples', '.ci', 'docs'].flatMap((d) => filesUnder(join(ROOT, d), /\.(ts|js|md|sh|yml|service)$|^run$/)),
  ...readdirSync(ROOT)
    .filter((f) => f.endsWith('.md'))
    .map((f) => join(ROOT, f)),
];

describe('the citation rules (so the checks below are not rubber stamps)', () => {
  it('shorthand after an ID names each number; a range names its ends and the existing IDs inside', () => {
    const k = new Set(['DANE-41', 'DANE-43', 'DANE-50', 'DANE-51', 'DANE-56', 'TLSRPT-10', 'TLSRPT-16']);
    expect([...namedIds(citations('(DANE-41/43/63, DANE-41, -43)'), k)].sort()).toEqual(['DANE-41', 'DANE-43', 'DANE-63']);
    expect([...namedIds(citations('verify.ts: DANE-50…56'), k)].sort()).toEqual(['DANE-50', 'DANE-51', 'DANE-56']);
    expect([...namedIds(citations('TLSRPT-10, 16): x; DANE-50..51 and DANE-50–51'), k)].sort()).toEqual(['DANE-50', 'DANE-51', 'TLSRPT-10', 'TLSRPT-16']);
    // words that merely end like an ID are not citations
    expect(citations('SHA-256, UTF-8, START-1, SORT-2').exact).toEqual([]);
  });

  it("a test's ID list is the IDs its name starts with, in any call form", () => {
    const src = [
      "it('TLSRPT-45 TLSRPT-42 loop guard; TLSRPT-10 later', async () => {});",
      "it.skipIf(!which('x'))(`DANE-4 ready${why ? ` (skipped: ${why})` : ''}`, () => {});",
      "describe.skipIf(off)('DANE-1 vs Unbound', () => {}); test('plain', () => {}); x.it('DANE-2 no');",
      "if (/re/.test('DANE-3 no')) {}",
    ].join('\n');
    const titles = testTitles(src);
    expect(titles).toEqual(['TLSRPT-45 TLSRPT-42 loop guard; TLSRPT-10 later', "DANE-4 ready${why ? ` (skipped: ${why})` : ''}", 'DANE-1 vs Unbound', 'plain']);
    expect(titles.flatMap((t) => leadingList(t).exact)).toEqual(['TLSRPT-45', 'TLSRPT-42', 'DANE-4', 'DANE-1']);
    expect(leadingList('DANE-80, DANE-81 (MTA-STS): not implemented').exact).toEqual(['DANE-80', 'DANE-81']);
    expect(leadingList('TLSRPT-12 / 14: mx-host is omitted').exact).toEqual(['TLSRPT-12', 'TLSRPT-14']);
    expect(leadingList("Digest vs RFC: DANE-34's retry").exact).toEqual([]);
  });
});

describe('requirement IDs live in docs/spec', () => {
  it('the four digests are in docs/spec and define their IDs', () => {
    expect(digests).toEqual(['dane-smtp.md', 'mta-sts.md', 'requiretls.md', 'tlsrpt.md']);
    const prefixes = new Map([...defined].map(([id, d]) => [id.replace(/-\d+$/, ''), d]));
    expect(Object.fromEntries(prefixes)).toEqual({ DANE: 'dane-smtp.md', TLSRPT: 'tlsrpt.md', STS: 'mta-sts.md', RT: 'requiretls.md' });
    expect(known.size).toBeGreaterThan(150);
  });

  it('every ID cited in src/, test/, the documents and the digests themselves is defined in docs/spec', () => {
    const at = citedIn(ROOT, citing, known);
    const dangling = [...at].filter(([id]) => !known.has(id)).map(([id, w]) => `${id} (${w.file}:${w.line})`);
    expect(dangling, 'cited but defined in no docs/spec digest (a shorthand like "DANE-12, 3" cites DANE-3 too)').toEqual([]);
    expect(at.size).toBeGreaterThan(100);
  });

  it('nothing points at the digests outside the repository any more', () => {
    const outside = ['shared', 'spec'].join('/');
    const hits = citing.filter((f) => readFileSync(f, 'utf8').includes(outside)).map((f) => relative(ROOT, f));
    expect(hits).toEqual([]);
  });

  it('every ID of docs/spec starts the name of a test, or ARCHITECTURE.md says why it has no test of its own', () => {
    const tested = new Set<string>();
    for (const f of filesUnder(join(ROOT, 'test'), /\.ts$/)) {
      for (const t of testTitles(readFileSync(f, 'utf8'))) for (const id of namedIds(leadingList(t), known)) tested.add(id);
    }
    const excused = new Set<string>();
    for (const b of exceptionBullets(readFileSync(join(ROOT, 'ARCHITECTURE.md'), 'utf8'))) {
      for (const id of namedIds(leadingList(b), known)) excused.add(id);
    }
    const missing = [...known].filter((id) => !tested.has(id) && !excused.has(id)).map((id) => `${id} (${defined.get(id)})`);
    expect(missing, 'name a test after it (it(\'ID …\')) or add a bullet "- ID: why" under a "without a test of their own" heading of ARCHITECTURE.md').toEqual(
      [],
    );
    expect(tested.size).toBeGreaterThan(60);
  });
});
