/**
 * `dane-relay config check FILE` prints the configuration the relay would run with, one `key = value`
 * per line like Postfix's `postconf -n` (the keys the file sets, normalised: durations in units, lists
 * joined) or, with `--all`, every key with the defaults filled in (`postconf`). Values that are secrets
 * are never printed (issue 21 item 9).
 */
import { isDurationKey, keysAt } from './keys.js';
import type { Config } from './schema.js';

/**
 * Keys whose value is a secret itself. None of today's keys holds one (the database password is read
 * from `password_file` or the environment variable `password_env` names, and the URL may not carry it),
 * but a key of this shape added later is redacted without a second thought.
 */
const SECRET = /(?:^|_)(?:password|secret|token|passphrase)$/;

/** ms as the largest unit that divides it exactly ("4h", "90s", "250ms"), the form the file accepts. */
export function formatDuration(ms: number): string {
  for (const [unit, n] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const)
    if (ms !== 0 && ms % n === 0) return `${ms / n}${unit}`;
  return ms === 0 ? '0' : `${ms}ms`;
}

function formatValue(path: string[], v: unknown): string {
  if (SECRET.test(path[path.length - 1]!)) return '(redacted)';
  if (typeof v === 'string' && /^postgres(?:ql)?:\/\//.test(v)) return v.replace(/^(postgres(?:ql)?:\/\/[^/@:]*):[^/@]*@/, '$1:(redacted)@');
  if (typeof v === 'number' && isDurationKey(path)) return formatDuration(v);
  if (Array.isArray(v)) return v.map((x) => formatValue(path, x)).join(', ');
  return String(v);
}

const isSection = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The leaves of `cfg` as `a.b = value` lines, in schema order; `only` (the raw document) limits them to keys it sets. */
export function effectiveConfigLines(cfg: Config, only?: unknown): string[] {
  const out: string[] = [];
  const walk = (v: unknown, raw: unknown, path: string[]) => {
    if (isSection(v)) {
      for (const [k, sub] of Object.entries(v)) {
        const rawSub = isSection(raw) ? raw[k] : only === undefined ? {} : undefined;
        // a section the file sets as a whole (`metrics: {listen: …}`) counts for its keys it names; its defaults do not
        if (only !== undefined && rawSub === undefined) continue;
        walk(sub, rawSub, [...path, k]);
      }
      return;
    }
    if (v === undefined) return;
    out.push(`${path.join('.')} = ${formatValue(path, v)}`);
  };
  // the schema's keys only: loadConfig's derived fields (baseDir, resolvedResolvers) are not settings
  const top = Object.fromEntries(keysAt([]).map((k) => [k, (cfg as unknown as Record<string, unknown>)[k]]));
  walk(top, only ?? {}, []);
  return out;
}
