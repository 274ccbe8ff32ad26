/**
 * The durable MTA-STS policy cache (RFC 8461 §3.3, digest STS-30): one file per Policy Domain,
 * `<queue_dir>/mta-sts/<domain>.json`, 0600 in a 0700 directory (files/private.ts), replaced
 * atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves the old policy or
 * the new one, never none: losing the cache on restart would reopen the first-contact window (§10.2).
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { ensurePrivateSubdir, readFileNoFollow, syncDir, writePrivateFileAtomic } from '../files/private.js';
import { parseMxPattern, type StsMode, type StsPolicy } from './policy.js';
import type { FetchFailureType } from './fetch.js';

export const STORE_FORMAT = 1;

export interface CachedPolicy {
  /** the Policy Domain, A-label, lower case */
  domain: string;
  /** the TXT id the policy was fetched under ('' when fetched while no TXT record was seen) */
  id: string;
  /** epoch ms */
  fetchedAt: number;
  /** fetchedAt + max_age (STS-30) */
  expiresAt: number;
  policy: StsPolicy;
  /** epoch ms of the last delivery that looked at it (written back at most hourly) */
  lastUsed: number;
  /** the last refresh that failed while this policy stayed cached (STS-33, STS-34); cleared by a successful one */
  refreshFailure?: { at: number; resultType: FetchFailureType; reason: string };
}

/** A file name for a domain: only a syntactically valid lower-case name ever becomes one. */
export function fileNameOf(domain: string): string | undefined {
  const p = parseMxPattern(domain);
  if (p === undefined || p.startsWith('*') || p !== domain) return undefined;
  return `${domain}.json`;
}

const MODES: readonly StsMode[] = ['enforce', 'testing', 'none'];

/** A stored entry read back; anything malformed is refused with the reason (the file is left for the operator). */
export function decodeEntry(text: string, domain: string): CachedPolicy | string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    return `not JSON: ${(e as Error).message}`;
  }
  if (o === null || typeof o !== 'object') return 'not an object';
  if (o.format !== STORE_FORMAT) return `unknown format ${JSON.stringify(o.format)}`;
  const p = o.policy as Record<string, unknown> | undefined;
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (o.domain !== domain) return `holds ${JSON.stringify(o.domain)}, not ${domain}`;
  if (typeof o.id !== 'string' || !num(o.fetchedAt) || !num(o.expiresAt) || !num(o.lastUsed)) return 'missing or malformed id/fetchedAt/expiresAt/lastUsed';
  if (
    !p ||
    !MODES.includes(p.mode as StsMode) ||
    !num(p.maxAge) ||
    !Array.isArray(p.mx) ||
    !p.mx.every((m) => typeof m === 'string' && parseMxPattern(m) === m) ||
    !Array.isArray(p.lines) ||
    !p.lines.every((l) => typeof l === 'string')
  )
    return 'malformed policy';
  const e: CachedPolicy = {
    domain,
    id: o.id,
    fetchedAt: o.fetchedAt as number,
    expiresAt: o.expiresAt as number,
    lastUsed: o.lastUsed as number,
    policy: { mode: p.mode as StsMode, maxAge: p.maxAge as number, mx: p.mx as string[], lines: p.lines as string[] },
  };
  const f = o.refreshFailure as CachedPolicy['refreshFailure'];
  if (f && typeof f === 'object' && num(f.at) && typeof f.reason === 'string' && typeof f.resultType === 'string') e.refreshFailure = f;
  return e;
}

/**
 * Where cached policies live, as the policy rules (policies.ts) use it: one file per domain under queue_dir
 * (PolicyStore, the file backend's default), or rows shared by a cluster's nodes (pgStore.ts, spool.backend
 * postgres). `mtimeMs` is a change marker: equal values mean the entry has not changed since it was read.
 */
export interface StsPolicyStore {
  /** where the entries live, for log lines (a directory, a database table) */
  readonly where: string;
  /** the stored entry and its change marker; undefined when there is none; throws on a malformed entry */
  read(domain: string): Promise<{ entry: CachedPolicy; mtimeMs: number } | undefined>;
  /** the change marker of the stored entry, undefined when there is none */
  mtimeOf(domain: string): Promise<number | undefined>;
  /** durable replace; returns the new change marker */
  write(entry: CachedPolicy): Promise<number>;
  /** durable removal; true when there was something to remove */
  remove(domain: string): Promise<boolean>;
  /** every stored domain */
  domains(): Promise<string[]>;
}

export class PolicyStore implements StsPolicyStore {
  readonly dir: string;

  constructor(readonly queueDir: string) {
    this.dir = join(queueDir, 'mta-sts');
  }

  get where(): string {
    return this.dir;
  }

  pathOf(domain: string): string {
    const name = fileNameOf(domain);
    if (!name) throw new Error(`not a domain name: ${JSON.stringify(domain)}`);
    return join(this.dir, name);
  }

  /** The stored entry with the file's mtime; undefined when there is none. Throws on a malformed file. */
  async read(domain: string): Promise<{ entry: CachedPolicy; mtimeMs: number } | undefined> {
    const path = this.pathOf(domain);
    let text: string;
    let mtimeMs: number;
    try {
      const st = await fsp.lstat(path);
      mtimeMs = st.mtimeMs;
      text = await readFileNoFollow(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const entry = decodeEntry(text, domain);
    if (typeof entry === 'string') throw new Error(`${path}: ${entry}`);
    return { entry, mtimeMs };
  }

  /** mtime of the stored file, or undefined when there is none (purged by the CLI, say). */
  async mtimeOf(domain: string): Promise<number | undefined> {
    try {
      return (await fsp.lstat(this.pathOf(domain))).mtimeMs;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** Durable replace; returns the new file's mtime. */
  async write(entry: CachedPolicy): Promise<number> {
    await ensurePrivateSubdir(this.queueDir, 'mta-sts');
    const path = this.pathOf(entry.domain);
    await writePrivateFileAtomic(path, `${JSON.stringify({ format: STORE_FORMAT, ...entry })}\n`);
    return (await fsp.lstat(path)).mtimeMs;
  }

  /** Durable removal; true when there was something to remove. */
  async remove(domain: string): Promise<boolean> {
    try {
      await fsp.unlink(this.pathOf(domain));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
    await syncDir(this.dir);
    return true;
  }

  /** Every stored domain (file names that are domains; temp files and strangers skipped). */
  async domains(): Promise<string[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return names
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5))
      .filter((d) => fileNameOf(d) !== undefined);
  }
}
