/**
 * Reads a YAML config, validates it against the schema and reports each problem
 * with its key path, line and column, so an operator can fix it without guessing.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { configSchema, type Config } from './schema.js';
import { parseTrustAnchors, TrustAnchorError } from '../dnssec/anchors.js';
import { suggestKey } from './keys.js';

export class ConfigError extends Error {
  constructor(
    public readonly file: string,
    public readonly problems: string[],
  ) {
    super(`${file}: invalid configuration\n` + problems.map((p) => `  - ${p}`).join('\n'));
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig extends Config {
  /** directory the config file is in; relative paths in it are resolved against it */
  baseDir: string;
  /** the config file (absolute), when it came from one: the start-up checks look at its mode */
  file?: string;
  /** resolvers after defaulting from /etc/resolv.conf */
  resolvedResolvers: string[];
}

export function parseConfigText(text: string, file = '<config>'): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const problems: string[] = [];
  for (const e of doc.errors) {
    const pos = lc.linePos(e.pos[0]);
    problems.push(`line ${pos.line}, column ${pos.col}: YAML syntax: ${e.message.split('\n')[0]}`);
  }
  if (problems.length) throw new ConfigError(file, problems);
  const raw = doc.toJS() ?? {};
  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  for (const issue of result.error.issues) {
    const path = issue.path.map(String);
    // For an unknown key, point at the key itself.
    let keyPath = path;
    let what = issue.message;
    if (issue.code === 'unrecognized_keys') {
      for (const k of issue.keys) {
        keyPath = [...path, k];
        const hint = suggestKey(path, k);
        problems.push(`${where(doc, lc, keyPath, true)}${keyPath.join('.')}: unknown key${hint ? `; did you mean \`${hint}\`?` : ''}`);
      }
      continue;
    }
    // zod does not say what it was given: look at the document (a wrong type is not a missing key)
    if (issue.code === 'invalid_type') what = typeProblem(issue.expected, valueAt(raw, path));
    problems.push(`${where(doc, lc, keyPath, false)}${keyPath.join('.') || '(top level)'}: ${what}`);
  }
  throw new ConfigError(file, problems);
}

function valueAt(raw: unknown, path: readonly string[]): unknown {
  return path.reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), raw);
}

/** "required" only for a key that is absent; otherwise what was expected and what the file has. */
function typeProblem(expected: string, got: unknown): string {
  if (got === undefined) return 'required';
  const kind =
    got === null
      ? 'nothing (null)'
      : Array.isArray(got)
        ? 'a list'
        : typeof got === 'object'
          ? 'a section (key: value pairs)'
          : `${typeof got} ${JSON.stringify(got)}`;
  const want =
    { array: 'a list, e.g. ["…"]', object: 'a section (key: value pairs)', string: 'a string', number: 'a number', boolean: 'true or false' }[expected] ??
    expected;
  return `expected ${want}, got ${kind}`;
}

function where(doc: Document, lc: LineCounter, path: string[], keyNode: boolean): string {
  // Walk up until a node exists (a missing key is reported at its parent).
  for (let i = path.length; i >= 0; i--) {
    const p = path.slice(0, i).map((s) => (/^\d+$/.test(s) ? Number(s) : s));
    let offset: number | undefined;
    if (keyNode && i === path.length && i > 0) {
      const parent = p.length > 1 ? doc.getIn(p.slice(0, -1), true) : doc.contents;
      const items = (parent as { items?: Array<{ key: unknown }> } | null)?.items;
      const pair = items?.find((it) => isNode(it.key) && (it.key as { value?: unknown }).value === p[p.length - 1]);
      if (pair && isNode(pair.key) && pair.key.range) offset = pair.key.range[0];
    }
    if (offset === undefined) {
      const node = p.length ? doc.getIn(p, true) : doc.contents;
      if (isNode(node) && node.range) offset = node.range[0];
    }
    if (offset !== undefined) {
      const pos = lc.linePos(offset);
      return `line ${pos.line}, column ${pos.col}: `;
    }
  }
  return '';
}

/** Nameservers of resolv.conf as "ip:53" (DANE-2 decides later whether their AD bit counts). */
export function resolvConfNameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const ip = m[1]!.split('%')[0]!;
    out.push(ip.includes(':') ? `[${ip}]:53` : `${ip}:53`);
  }
  return out;
}

export function loadConfig(file: string, opts: { resolvConf?: string } = {}): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(file, [`cannot read: ${(e as Error).message}`]);
  }
  const cfg = parseConfigText(text, file);
  const baseDir = dirname(resolve(file));
  let resolvers = cfg.dns.resolvers;
  if (!resolvers) {
    let rc = '';
    try {
      rc = readFileSync(opts.resolvConf ?? '/etc/resolv.conf', 'utf8');
    } catch {
      /* none */
    }
    resolvers = resolvConfNameservers(rc);
    if (resolvers.length === 0) throw new ConfigError(file, ['dns.resolvers: not set and /etc/resolv.conf lists no nameserver']);
  }
  const abs = (p: string) => configPath({ baseDir }, p);
  if (cfg.dns.mode === 'validate' && cfg.dns.trust_anchors) {
    // A bad anchors file is a configuration error, reported with its line (dns.mode validate).
    const problem = trustAnchorsProblem(abs(cfg.dns.trust_anchors));
    if (problem) throw new ConfigError(file, [`dns.trust_anchors: ${problem}`]);
  }
  return {
    ...cfg,
    queue_dir: abs(cfg.queue_dir),
    ingress: {
      ...cfg.ingress,
      tls: cfg.ingress.tls ? { cert: abs(cfg.ingress.tls.cert), key: abs(cfg.ingress.tls.key) } : undefined,
      users_file: cfg.ingress.users_file ? abs(cfg.ingress.users_file) : undefined,
    },
    spool: cfg.spool.postgres?.password_file
      ? { ...cfg.spool, postgres: { ...cfg.spool.postgres, password_file: abs(cfg.spool.postgres.password_file) } }
      : cfg.spool,
    dns: { ...cfg.dns, trust_anchors: cfg.dns.trust_anchors ? abs(cfg.dns.trust_anchors) : undefined },
    baseDir,
    file: resolve(file),
    resolvedResolvers: resolvers,
  };
}

/**
 * A path named in the configuration: a relative one is relative to the config file's directory. The
 * one place such paths are resolved (loadConfig, the start-up checks, the policy files, TLSRPT, the
 * control socket); a path given on the command line is the operator's, relative to where the command runs.
 */
export function configPath(cfg: { baseDir: string }, p: string): string {
  return isAbsolute(p) ? p : resolve(cfg.baseDir, p);
}

/** `tlsrpt.dir` when TLSRPT is on and the key is set (its default, under queue_dir, is checked with queue_dir). */
export function configuredTlsrptDir(cfg: LoadedConfig): string | undefined {
  return cfg.tlsrpt.enabled && cfg.tlsrpt.dir ? configPath(cfg, cfg.tlsrpt.dir) : undefined;
}

/** Why the trust anchor file cannot be used ("FILE line N: …"), or undefined. */
export function trustAnchorsProblem(path: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    return `cannot read ${path}: ${(e as Error).message}`;
  }
  try {
    parseTrustAnchors(text);
  } catch (e) {
    if (e instanceof TrustAnchorError) return `${path} line ${e.line}: ${e.message.replace(/^line \d+: /, '')}`;
    return `${path}: ${(e as Error).message}`;
  }
  return undefined;
}
