/**
 * Requirement IDs of the spec digests in docs/spec/ (DANE-n, TLSRPT-n, STS-n, RT-n) and where the
 * repository cites them: the rules behind test/docs/specIds.test.ts (as mox checks its `rfc/` links).
 *
 * A citation is an ID plus the shorthand the texts use after it: `DANE-41/43`, `DANE-20, 23, 33`,
 * `DANE-41, -43`, `TLSRPT-12 / 14` name each number; `TLSRPT-11…14`, `TLSRPT-12..14`, `DANE-40–45` name a
 * range, whose ends must exist and whose inside cites the IDs that do (the numbering has gaps).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

export const PREFIXES = ['DANE', 'TLSRPT', 'STS', 'RT'] as const;

const HEAD = new RegExp(`\\b(${PREFIXES.join('|')})-(\\d+)\\b`, 'g');
/** one shorthand step after an ID: a separator and a bare number (optionally written -n) */
const NEXT = /^(\s*\/\s*|\s*,\s*|\s*…\s*|\.\.|–)-?(\d+)\b/;

export interface Cited {
  /** IDs named one by one (and range ends): each must exist */
  exact: string[];
  /** ranges [prefix, from, to]: the existing IDs inside are cited */
  ranges: Array<[string, number, number]>;
}

/** Every ID a text cites, shorthand expanded. */
export function citations(text: string): Cited {
  const out: Cited = { exact: [], ranges: [] };
  for (const m of text.matchAll(HEAD)) {
    const prefix = m[1]!;
    let last = Number(m[2]);
    out.exact.push(`${prefix}-${last}`);
    let rest = text.slice(m.index! + m[0].length);
    for (let s = NEXT.exec(rest); s; s = NEXT.exec(rest)) {
      const n = Number(s[2]);
      out.exact.push(`${prefix}-${n}`);
      if (/[….–]/.test(s[1]!)) out.ranges.push([prefix, last, n]);
      last = n;
      rest = rest.slice(s[0].length);
    }
  }
  return out;
}

/** The IDs a citation set names, given the IDs that exist (range insides only where they exist). */
export function namedIds(c: Cited, known: Set<string>): Set<string> {
  const ids = new Set(c.exact);
  for (const [prefix, from, to] of c.ranges) {
    for (let n = Math.min(from, to); n <= Math.max(from, to); n++) if (known.has(`${prefix}-${n}`)) ids.add(`${prefix}-${n}`);
  }
  return ids;
}

/** The list of IDs a title or a bullet starts with: "TLSRPT-45 TLSRPT-42 loop guard", "DANE-80, DANE-81 (MTA-STS)". */
export function leadingList(text: string): Cited {
  const one = `(?:${PREFIXES.join('|')})-\\d+(?:(?:\\s*[/,…]\\s*|\\.\\.|–)-?\\d+\\b)*`;
  const m = new RegExp(`^(?:${one}(?:[\\s,/]+|(?=\\W)|$))+`).exec(text.trimStart());
  return m ? citations(m[0]) : { exact: [], ranges: [] };
}

/** The IDs a digest defines: its bullets `- DANE-12 [§2.2] …`. */
export function definedIds(digest: string): string[] {
  return [...digest.matchAll(new RegExp(`^- ((?:${PREFIXES.join('|')})-\\d+)\\b`, 'gm'))].map((m) => m[1]!);
}

/** Skips a balanced `( … )` starting at `i` (which must be '('); returns the index after it, or -1. */
function skipParens(src: string, i: number): number {
  let depth = 0;
  for (let j = i; j < src.length; j++) {
    if (src[j] === '(') depth++;
    else if (src[j] === ')' && --depth === 0) return j + 1;
  }
  return -1;
}

/** Reads the string literal ('…', "…" or `…`, escapes kept raw) starting at `i`; undefined if there is none. */
function literalAt(src: string, i: number): string | undefined {
  const q = src[i];
  if (q !== "'" && q !== '"' && q !== '`') return undefined;
  let j = i + 1;
  let depth = 0; // inside ${ … } of a template
  for (; j < src.length; j++) {
    const c = src[j];
    if (c === '\\') {
      j++;
      continue;
    }
    if (q === '`' && c === '$' && src[j + 1] === '{') {
      depth++;
      j++;
      continue;
    }
    if (depth > 0 && c === '}') {
      depth--;
      continue;
    }
    if (depth === 0 && c === q) return src.slice(i + 1, j);
  }
  return undefined;
}

/**
 * The titles of the tests and suites a test file declares: the first argument of `it`, `test` and
 * `describe` (with any `.skipIf(…)`, `.each(…)`, `.only` … in between) when it is a string literal.
 */
export function testTitles(src: string): string[] {
  const titles: string[] = [];
  for (const m of src.matchAll(/\b(?:it|test|describe)\b/g)) {
    let i = m.index! + m[0].length;
    if (m.index! > 0 && /[\w.$]/.test(src[m.index! - 1]!)) continue; // x.it, $test
    for (;;) {
      const mod = /^\.\w+/.exec(src.slice(i));
      if (mod) {
        i += mod[0].length;
        continue;
      }
      if (src[i] !== '(') break;
      // A literal first argument is the title; anything else is a modifier's arguments
      // (it.skipIf(cond)(title, …), it.each(rows)(title, …)), which short expressions are.
      const title = literalAt(src, i + 1 + /^\s*/.exec(src.slice(i + 1))![0].length);
      if (title !== undefined) {
        titles.push(title);
        break;
      }
      const end = skipParens(src, i);
      if (end < 0 || src[end] !== '(') break;
      i = end;
    }
  }
  return titles;
}

/** Files under `dir` (recursively) whose names match `ext`, skipping node_modules/dist/.git. */
export function filesUnder(dir: string, ext: RegExp): string[] {
  const out: string[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    if (['node_modules', 'dist', '.git'].includes(e.name)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p, ext));
    else if (ext.test(e.name)) out.push(p);
  }
  return out;
}

/** The bullets of ARCHITECTURE.md's "… without a test of their own …" sections: the documented exceptions. */
export function exceptionBullets(architecture: string): string[] {
  const bullets: string[] = [];
  let inside = false;
  for (const line of architecture.split('\n')) {
    if (/^#+ /.test(line)) inside = /without a test of their own/i.test(line);
    else if (inside && line.startsWith('- ')) bullets.push(line.slice(2));
  }
  return bullets;
}

export interface Where {
  file: string;
  line: number;
}

/** Each ID cited in `files` (paths relative to `root`), with the first place it appears. */
export function citedIn(root: string, files: string[], known: Set<string>): Map<string, Where> {
  const at = new Map<string, Where>();
  for (const f of files) {
    readFileSync(f, 'utf8')
      .split('\n')
      .forEach((text, i) => {
        for (const id of namedIds(citations(text), known)) if (!at.has(id)) at.set(id, { file: relative(root, f), line: i + 1 });
      });
  }
  return at;
}
