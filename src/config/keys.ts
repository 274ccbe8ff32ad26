/**
 * The schema as a tree of key names (issue 21 item 9): what keys exist at a level, which are
 * durations, and the "did you mean" for an unknown key. Reads the zod schema itself, so a key added
 * to schema.ts is known here without a second list.
 */
import type { z } from 'zod';
import { configSchema, duration } from './schema.js';

type Def = { type: string; innerType?: z.ZodType; in?: z.ZodType; out?: z.ZodType; shape?: Record<string, z.ZodType> };
const defOf = (s: z.ZodType) => (s as unknown as { def: Def }).def;

/** The schema under its wrappers (optional, default, prefault, nullable; a preprocess pipe's output). */
function unwrap(s: z.ZodType): z.ZodType {
  for (;;) {
    const d = defOf(s);
    if ((d.type === 'optional' || d.type === 'default' || d.type === 'prefault' || d.type === 'nullable') && d.innerType) s = d.innerType;
    else if (d.type === 'pipe' && d.in && d.out) s = defOf(d.in).type === 'transform' ? d.out : d.in;
    else return s;
  }
}

function shapeOf(s: z.ZodType): Record<string, z.ZodType> | undefined {
  const u = unwrap(s);
  return defOf(u).type === 'object' ? (u as unknown as { shape: Record<string, z.ZodType> }).shape : undefined;
}

/** The keys the schema allows at `path` (a section), or [] when `path` is not a section. */
export function keysAt(path: readonly string[], schema: z.ZodType = configSchema): string[] {
  let s: z.ZodType | undefined = schema;
  for (const k of path) s = s && shapeOf(s)?.[k];
  return s ? Object.keys(shapeOf(s) ?? {}) : [];
}

/** Every key path of the schema (sections and leaves), dotted. */
export function allKeyPaths(schema: z.ZodType = configSchema, prefix: string[] = []): string[][] {
  const shape = shapeOf(schema);
  if (!shape) return [];
  return Object.entries(shape).flatMap(([k, v]) => [[...prefix, k], ...allKeyPaths(v, [...prefix, k])]);
}

/** Is the key at `path` a duration (printed back as "30m", not milliseconds)? */
export function isDurationKey(path: readonly string[]): boolean {
  let s: z.ZodType | undefined = configSchema;
  for (const k of path) s = s && shapeOf(s)?.[k];
  while (s) {
    if (s === duration) return true;
    const d = defOf(s);
    s = d.type === 'optional' || d.type === 'default' || d.type === 'prefault' ? d.innerType : undefined;
  }
  return false;
}

/** Levenshtein distance (insert, delete, substitute; a swap of neighbours counts 1, as typos go). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  return d[a.length]![b.length]!;
}

/**
 * The key an unknown `key` under `path` was probably meant to be: the nearest key at the same level
 * (case and `-`/`_` ignored, then at most a third of its letters off), else the same name at another
 * level (`tls_level` at the top: `delivery.tls_level`). Undefined when nothing is close.
 */
export function suggestKey(path: readonly string[], key: string, schema: z.ZodType = configSchema): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/-/g, '_');
  const here = keysAt(path, schema);
  let best: { k: string; d: number } | undefined;
  for (const k of here) {
    const dist = norm(k) === norm(key) ? 0 : editDistance(norm(key), norm(k));
    if (!best || dist < best.d) best = { k, d: dist };
  }
  if (best && best.d <= Math.max(1, Math.floor(Math.max(key.length, best.k.length) / 3))) return [...path, best.k].join('.');
  const elsewhere = allKeyPaths(schema).filter((p) => norm(p[p.length - 1]!) === norm(key) && p.join('.') !== [...path, key].join('.'));
  return elsewhere.length === 1 ? elsewhere[0]!.join('.') : undefined;
}
