/**
 * BENCHMARKS.md is written by several commands (`npm run bench`, `bench:postfix`, `bench:dos`, `bench:cluster`),
 * each owning its own `## ` sections: a command replaces only what it owns and keeps every other section.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

interface Section {
  heading: string;
  text: string;
}

function split(doc: string): { head: string; sections: Section[] } {
  const parts = doc.split(/\n(?=## )/);
  const head = parts[0]!.startsWith('## ') ? '' : parts.shift()!;
  return { head, sections: parts.map((text) => ({ heading: text.slice(0, text.indexOf('\n') >>> 0), text: text.replace(/\n*$/, '\n') })) };
}

/**
 * Write `text` (its own `## ` sections, optionally preceded by a document head) into `file`: existing sections
 * for which `owns(heading)` is true are dropped (the new text takes the place of the first of them), the others
 * are kept in their order.
 */
export function writeOwnSections(file: string, text: string, owns: (heading: string) => boolean): void {
  const old = split(existsSync(file) ? readFileSync(file, 'utf8') : '# dane-relay benchmarks\n');
  const mine = split(text);
  const out: string[] = [mine.head || old.head];
  let placed = false;
  for (const s of old.sections) {
    if (!owns(s.heading)) {
      out.push(s.text);
      continue;
    }
    if (!placed) {
      out.push(...mine.sections.map((m) => m.text));
      placed = true;
    }
  }
  if (!placed) out.push(...mine.sections.map((m) => m.text));
  writeFileSync(file, out.map((p) => p.replace(/\n*$/, '\n')).join('\n'));
}
