/**
 * Issue 14 item 2: the folders of src/ form layers, and imports run only downwards.
 *
 * The layers are the numbered list between the `layers:begin` / `layers:end` markers of ARCHITECTURE.md
 * (lowest first): a module may import its own folder and folders on lower lines, nothing on its own line
 * or above. The files directly in src/ (relay.ts, cli.ts, preflight.ts, log.ts: the composition) are the
 * top layer; nothing imports them. Type-only imports count: a type shared across folders is coupling
 * too, and it is what tied ten folders into one cycle before.
 *
 * The import statements are read from the real sources (TypeScript 7 has no compiler API to ask, so a
 * careful scanner: every `import`/`export … from` declaration, side-effect imports, dynamic `import()`
 * with a literal specifier), and the scanner checks itself: every line of src/ that begins an import
 * declaration must have been read, and a dynamic import with a computed specifier is refused.
 */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const srcDir = join(root, 'src');
const ROOT_LAYER = '(src)';

export interface ImportRef {
  from: string;
  specifier: string;
  line: number;
}

/** Static declarations: the clause between the keyword and `from` holds only names, braces, commas, `*`, `as`, `type`. */
const STATIC = /^[ \t]*(?:import|export)\s+(?:type\s+)?(?:[\w$\s{},*]*?\s*from\s*)?(['"])([^'"\n]+)\1/gm;
const DYNAMIC = /\bimport\s*\(\s*(['"])([^'"\n]+)\1\s*\)/g;
const DYNAMIC_ANY = /\bimport\s*\(/g;
const DECLARATION_LINE = /^[ \t]*import\b(?!\s*[(.])/gm;

function lineOf(text: string, index: number): number {
  let n = 1;
  for (let i = 0; i < index; i++) if (text.charCodeAt(i) === 10) n++;
  return n;
}

/** The relative imports of one source file (package and node: imports are not layers of ours). */
export function importsOf(file: string, text: string): { refs: ImportRef[]; problems: string[] } {
  const refs: ImportRef[] = [];
  const problems: string[] = [];
  const staticLines = new Set<number>();
  for (const m of text.matchAll(STATIC)) {
    const start = lineOf(text, m.index);
    staticLines.add(start);
    refs.push({ from: file, specifier: m[2]!, line: start });
  }
  // Self-check: a declaration the pattern did not read (an unusual shape) must not pass unchecked.
  for (const m of text.matchAll(DECLARATION_LINE)) {
    const l = lineOf(text, m.index);
    if (!staticLines.has(l)) problems.push(`${file}:${l}: an import declaration the layer test cannot read`);
  }
  const literal = new Set<number>();
  for (const m of text.matchAll(DYNAMIC)) {
    literal.add(m.index);
    refs.push({ from: file, specifier: m[2]!, line: lineOf(text, m.index) });
  }
  for (const m of text.matchAll(DYNAMIC_ANY)) {
    if (!literal.has(m.index)) problems.push(`${file}:${lineOf(text, m.index)}: dynamic import with a computed specifier (the layers cannot be checked)`);
  }
  return { refs: refs.filter((r) => r.specifier.startsWith('.')), problems };
}

/** The layer unit of a file of src/: its top folder, or ROOT_LAYER for the files directly in src/. */
export function unitOf(srcRelative: string): string {
  const parts = srcRelative.split(sep);
  return parts.length > 1 ? parts[0]! : ROOT_LAYER;
}

/** The numbered list of ARCHITECTURE.md between the markers: unit → rank (lowest 0). */
export function parseLayers(markdown: string): Map<string, number> {
  const m = /<!-- layers:begin -->([\s\S]*?)<!-- layers:end -->/.exec(markdown);
  if (!m) throw new Error('ARCHITECTURE.md: no <!-- layers:begin --> … <!-- layers:end --> block');
  const ranks = new Map<string, number>();
  let rank = 0;
  for (const line of m[1]!.split('\n')) {
    const item = /^\s*\d+\.\s+(.*)$/.exec(line);
    if (!item) continue;
    // "`text`, `files` — why" : the folder names are the code spans before the dash
    const names = [...item[1]!.split(/\s+[—-]\s+/)[0]!.matchAll(/`([^`]+)`/g)].map((x) => x[1]!.replace(/^src\//, '').replace(/\/$/, ''));
    for (const n of names) {
      if (ranks.has(n)) throw new Error(`ARCHITECTURE.md layers: ${n} listed twice`);
      ranks.set(n, rank);
    }
    rank++;
  }
  return ranks;
}

export interface Edge {
  from: string;
  to: string;
  where: string;
}

/** Imports that run sideways or up: the target's layer is not strictly below the importer's. */
export function layerViolations(edges: Edge[], ranks: Map<string, number>): string[] {
  const out: string[] = [];
  for (const e of edges) {
    if (e.from === e.to) continue;
    const a = ranks.get(e.from);
    const b = ranks.get(e.to);
    if (a === undefined) out.push(`${e.where}: folder ${e.from} is in no layer of ARCHITECTURE.md`);
    else if (b === undefined) out.push(`${e.where}: imports ${e.to}, which is in no layer of ARCHITECTURE.md`);
    else if (b >= a) out.push(`${e.where}: ${e.from} (layer ${a + 1}) imports ${e.to} (layer ${b + 1}): ${b === a ? 'sideways' : 'up'} the layers`);
  }
  return out;
}

/** Cycles between folders (strongly connected components of more than one folder), Tarjan's algorithm. */
export function folderCycles(edges: Edge[]): string[][] {
  const next = new Map<string, Set<string>>();
  for (const e of edges) {
    if (e.from === e.to) continue;
    if (!next.has(e.from)) next.set(e.from, new Set());
    if (!next.has(e.to)) next.set(e.to, new Set());
    next.get(e.from)!.add(e.to);
  }
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const sccs: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    on.add(v);
    for (const w of next.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) {
        low.set(v, Math.min(low.get(v)!, idx.get(w)!));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) sccs.push(scc.sort());
    }
  };
  for (const v of [...next.keys()].sort()) if (!idx.has(v)) visit(v);
  return sccs;
}

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...sourceFiles(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out.sort();
}

/** Every import of src/ between two units, read from the files as they are. */
function srcEdges(): { edges: Edge[]; problems: string[]; units: Set<string> } {
  const edges: Edge[] = [];
  const problems: string[] = [];
  const units = new Set<string>();
  for (const file of sourceFiles(srcDir)) {
    const rel = relative(srcDir, file);
    units.add(unitOf(rel));
    const r = importsOf(`src/${rel}`, readFileSync(file, 'utf8'));
    problems.push(...r.problems);
    for (const ref of r.refs) {
      const target = relative(srcDir, resolve(dirname(file), ref.specifier));
      if (target.startsWith('..')) {
        problems.push(`src/${rel}:${ref.line}: imports ${ref.specifier}, outside src/`);
        continue;
      }
      edges.push({ from: unitOf(rel), to: unitOf(target), where: `src/${rel}:${ref.line} (${ref.specifier})` });
    }
  }
  return { edges, problems, units };
}

describe('issue 14: one-way layers of src/', () => {
  const ranks = parseLayers(readFileSync(join(root, 'ARCHITECTURE.md'), 'utf8'));
  const { edges, problems, units } = srcEdges();

  it('the scanner reads every import declaration of src/ (none it cannot read, no computed dynamic import)', () => {
    expect(problems).toEqual([]);
    // it found the imports: every folder imports something, or is imported
    expect(edges.length).toBeGreaterThan(100);
  });

  it('every folder of src/ is in exactly one layer of ARCHITECTURE.md, and every listed layer exists', () => {
    expect([...units].filter((u) => !ranks.has(u)).sort()).toEqual([]);
    expect([...ranks.keys()].filter((u) => !units.has(u)).sort()).toEqual([]);
    expect(ranks.get(ROOT_LAYER)).toBe(Math.max(...ranks.values()));
  });

  it('no import runs sideways or up the layers', () => {
    expect(layerViolations(edges, ranks)).toEqual([]);
  });

  it('no cycle between folders', () => {
    expect(folderCycles(edges)).toEqual([]);
  });
});

describe('the layer checker itself (what it must catch)', () => {
  const ranks = parseLayers('<!-- layers:begin -->\n1. `text`, `files` — leaves\n2. `dns` — wire\n3. `config` — c\n4. `(src)` — top\n<!-- layers:end -->');

  it('parses the numbered list, lowest first', () => {
    expect([...ranks]).toEqual([
      ['text', 0],
      ['files', 0],
      ['dns', 1],
      ['config', 2],
      ['(src)', 3],
    ]);
  });

  it('reads every shape of import declaration, including multi-line and type-only ones, and no look-alike', () => {
    const text = [
      "import 'reflect-metadata';",
      'import { a,',
      "  b } from '../dns/wire.js';",
      'import type { C } from "../config/schema.js";',
      "export * from './x.js';",
      "export { d } from '../text/printable.js';",
      "const m = await import('../files/private.js');",
      "// a comment that mentions import and from 'nowhere'",
      'const s = \'import x from "../config/load.js"\';',
    ].join('\n');
    const r = importsOf('f.ts', text);
    expect(r.problems).toEqual([]);
    expect(r.refs.map((x) => [x.specifier, x.line])).toEqual([
      ['../dns/wire.js', 2],
      ['../config/schema.js', 4],
      ['./x.js', 5],
      ['../text/printable.js', 6],
      ['../files/private.js', 7],
    ]);
  });

  it('refuses what it cannot read: a computed dynamic import, a declaration of an unknown shape', () => {
    expect(importsOf('f.ts', 'const m = await import(name);').problems).toEqual([
      'f.ts:1: dynamic import with a computed specifier (the layers cannot be checked)',
    ]);
    expect(importsOf('f.ts', "import x = require('../config/load.js');").problems).toHaveLength(1);
  });

  it('an import up or sideways is a violation; down is not', () => {
    const edges: Edge[] = [
      { from: 'dns', to: 'config', where: 'src/dns/trust.ts:11' },
      { from: 'text', to: 'files', where: 'src/text/a.ts:1' },
      { from: 'config', to: 'dns', where: 'src/config/resolver.ts:3' },
      { from: 'dns', to: 'dns', where: 'src/dns/stub.ts:12' },
      { from: 'route', to: 'dns', where: 'src/route/mx.ts:1' },
    ];
    expect(layerViolations(edges, ranks)).toEqual([
      'src/dns/trust.ts:11: dns (layer 2) imports config (layer 3): up the layers',
      'src/text/a.ts:1: text (layer 1) imports files (layer 1): sideways the layers',
      'src/route/mx.ts:1: folder route is in no layer of ARCHITECTURE.md',
    ]);
  });

  it('finds a cycle through several folders, and none in a chain', () => {
    const e = (from: string, to: string): Edge => ({ from, to, where: '' });
    expect(folderCycles([e('a', 'b'), e('b', 'c'), e('c', 'a'), e('c', 'd'), e('d', 'd')])).toEqual([['a', 'b', 'c']]);
    expect(folderCycles([e('a', 'b'), e('b', 'c'), e('a', 'c')])).toEqual([]);
  });
});
