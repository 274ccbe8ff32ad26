/**
 * Reports over https (RFC 8460 §5.4, digest TLSRPT-46…48): POST the gzipped JSON with
 * `Content-Type: application/tlsrpt+gzip`; only a 2xx reply is success; failures are retried
 * with exponential backoff for 24 hours from durable state (PendingStore: `<dir>/pending/`, or the cluster's
 * rows), then dropped.
 * Any one accepting endpoint completes the report (TLSRPT-47).
 *
 * node:https rather than the built-in fetch: fetch cannot take a per-request CA (tests, private
 * report endpoints) or a timeout per stage without undici, which is not a dependency here.
 *
 * The report host is resolved through the relay's Resolver and checked (targets.ts, issue 13); the
 * connection goes to that checked address, with the URL's host as SNI, Host header and certificate name.
 */
import https from 'node:https';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import type { Resolver } from '../../dns/types.js';
import { pinnedLookup } from '../../dns/addresses.js';
import { writeFileDurable } from './store.js';
import { ensurePrivateSubdir, readFileNoFollow } from '../../files/private.js';
import { httpsTarget, type HttpsTarget } from './targets.js';

export interface PostResult {
  ok: boolean;
  status?: number;
  error?: string /** the target was not allowed (targets.ts): not retried */;
  refused?: boolean;
}

export interface HttpsOptions {
  /** extra trust anchors for report endpoints (PEM); default: the system store */
  ca?: string | Buffer;
  timeoutMs?: number;
}

/**
 * One POST to `target` (the checked address of the URL's host: `httpsTarget`); resolves with the
 * outcome, never rejects. TLS is checked against the URL's host name, as for any https URL.
 */
export function postReport(url: string, body: Buffer, opts: HttpsOptions & { target: HttpsTarget; gzip?: boolean; userAgent?: string }): Promise<PostResult> {
  return new Promise((resolve) => {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      resolve({ ok: false, error: `bad URL ${url}` });
      return;
    }
    if (u.protocol !== 'https:') {
      resolve({ ok: false, error: `not https: ${url}` });
      return;
    }
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let done = false;
    const finish = (r: PostResult) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        resolve(r);
      }
    };
    const req = https.request(
      u,
      {
        method: 'POST',
        headers: {
          'Content-Type': opts.gzip === false ? 'application/tlsrpt+json' : 'application/tlsrpt+gzip',
          'Content-Length': body.length,
          'User-Agent': opts.userAgent ?? 'dane-relay-tlsrpt',
        },
        ...(opts.ca ? { ca: opts.ca } : {}),
        lookup: pinnedLookup(opts.target.address, opts.target.family),
      },
      (res) => {
        res.resume();
        res.on('end', () => finish({ ok: res.statusCode! >= 200 && res.statusCode! < 300, status: res.statusCode }));
        res.on('error', (e) => finish({ ok: false, status: res.statusCode, error: e.message }));
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (e) => finish({ ok: false, error: e.message }));
    req.end(body);
  });
}

export type SendOutcome = 'accepted' | 'pending' | 'refused' | 'dropped';

export const RETRY_WINDOW_MS = 24 * 3600_000;
const FIRST_RETRY_MS = 60_000;
const MAX_RETRY_MS = 2 * 3600_000;

/** TLSRPT-48: delay before retry number `attempt` (1 = after the first failure): 1 min, 2, 4, … capped at 2 h. */
export function retryDelay(attempt: number): number {
  return Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, attempt - 1));
}

export interface PendingSend {
  id: string;
  day: string;
  domain: string;
  filename: string;
  urls: string[];
  /** epoch ms of the first attempt */
  created: number;
  attempts: number;
  next: number;
  lastError?: string;
  /** base64 of the gzip body */
  body: string;
}

export interface HttpsLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * Where https sends awaiting retry are kept: files under `<dir>/pending/` (FilePendingStore), or, with
 * spool.backend postgres, rows every node can retry (pgStore.ts PgPendingStore, one attempt at a time).
 */
export interface PendingStore {
  /** keeps a send for a retry (insert or replace), durably */
  save(p: PendingSend): Promise<void>;
  /** forgets it (accepted, refused, given up, or another endpoint took the report) */
  remove(id: string): Promise<void>;
  /** the sends due at `now` this node may attempt now (in a cluster: claimed for this attempt) */
  due(now: number): Promise<PendingSend[]>;
  /** every send kept */
  list(): Promise<PendingSend[]>;
}

/** The pending sends of one node: one 0600 file per send under `<dir>/pending/`. */
export class FilePendingStore implements PendingStore {
  readonly pendingDir: string;

  constructor(
    private readonly dir: string,
    private readonly log?: HttpsLog,
  ) {
    this.pendingDir = join(dir, 'pending');
  }

  private file(id: string): string {
    return join(this.pendingDir, `${id}.json`);
  }

  async save(p: PendingSend): Promise<void> {
    await ensurePrivateSubdir(this.dir, 'pending');
    await writeFileDurable(this.file(p.id), JSON.stringify(p));
  }

  async remove(id: string): Promise<void> {
    await fsp.rm(this.file(id), { force: true });
  }

  async due(now: number): Promise<PendingSend[]> {
    return (await this.list()).filter((p) => p.next <= now);
  }

  async list(): Promise<PendingSend[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.pendingDir);
    } catch {
      return [];
    }
    const out: PendingSend[] = [];
    for (const n of names.filter((x) => x.endsWith('.json'))) {
      try {
        out.push(JSON.parse(await readFileNoFollow(join(this.pendingDir, n), 'utf8')) as PendingSend);
      } catch (e) {
        this.log?.warn({ file: n, err: (e as Error).message }, 'tlsrpt: unreadable pending send left in place');
      }
    }
    return out;
  }
}

export interface SenderOptions extends HttpsOptions {
  now: () => number;
  /** where retries are kept; default the files under `<dir>/pending/` */
  store?: PendingStore;
  log?: HttpsLog;
  /** the relay's Resolver: report hosts are looked up through it */
  resolver?: Resolver;
  /** `tlsrpt.allow_private_targets` */
  allowPrivateTargets?: boolean;
}

/** Durable https sends: first attempt now, then retries from `<dir>/pending/<id>.json` until accepted or 24 h passed. */
export class HttpsSender {
  readonly store: PendingStore;

  constructor(
    dir: string,
    private readonly opts: SenderOptions,
  ) {
    this.store = opts.store ?? new FilePendingStore(dir, opts.log);
  }

  /** Resolve and check the target (targets.ts), then POST to it. */
  async post(url: string, body: Buffer, what: { day?: string; domain?: string } = {}): Promise<PostResult> {
    const t = await httpsTarget(url, { resolver: this.opts.resolver, allowPrivate: !!this.opts.allowPrivateTargets });
    if (!t.ok) {
      if (t.refused) this.opts.log?.warn({ ...what, url, reason: t.reason }, 'tlsrpt: rua target refused');
      return { ok: false, error: t.reason, refused: t.refused };
    }
    return postReport(url, body, { ...this.opts, target: t });
  }

  private async tryAll(p: PendingSend): Promise<PostResult & { url?: string }> {
    const body = Buffer.from(p.body, 'base64');
    const errors: string[] = [];
    let refused = 0;
    for (const url of p.urls) {
      const r = await this.post(url, body, { day: p.day, domain: p.domain });
      if (r.ok) return { ...r, url };
      if (r.refused) refused++;
      errors.push(r.refused ? `refused: ${r.error}` : `${url}: ${r.status ? `HTTP ${r.status}` : r.error}`);
    }
    return { ok: false, error: errors.join('; '), refused: refused === p.urls.length };
  }

  /**
   * First attempt; on failure the send is kept on disk for retries (`pending`). `refused`: every target
   * is one the relay must not send to (targets.ts), nothing is kept; `dropped`: the retry window is over.
   */
  async send(p: Omit<PendingSend, 'created' | 'attempts' | 'next'>): Promise<SendOutcome> {
    const now = this.opts.now();
    const full: PendingSend = { ...p, created: now, attempts: 0, next: now };
    return this.attempt(full);
  }

  private async attempt(p: PendingSend): Promise<SendOutcome> {
    const r = await this.tryAll(p);
    p.attempts++;
    if (r.ok) {
      this.opts.log?.info({ day: p.day, domain: p.domain, url: r.url, status: r.status, attempts: p.attempts }, 'tlsrpt: report accepted over https');
      await this.store.remove(p.id);
      return 'accepted';
    }
    p.lastError = r.error;
    if (r.refused) {
      // Every target is one the relay must not send to: retrying cannot help.
      this.opts.log?.warn({ day: p.day, domain: p.domain, error: r.error }, 'tlsrpt: https report not sent: every rua target refused');
      await this.store.remove(p.id);
      return 'refused';
    }
    p.next = this.opts.now() + retryDelay(p.attempts);
    if (p.next > p.created + RETRY_WINDOW_MS) {
      // TLSRPT-48: reports are optional; after 24 hours the report is dropped.
      this.opts.log?.warn({ day: p.day, domain: p.domain, attempts: p.attempts, error: r.error }, 'tlsrpt: https report given up after 24 hours');
      await this.store.remove(p.id);
      return 'dropped';
    }
    this.opts.log?.warn(
      { day: p.day, domain: p.domain, attempts: p.attempts, error: r.error, next: new Date(p.next).toISOString() },
      'tlsrpt: https report failed; will retry',
    );
    await this.store.save(p);
    return 'pending';
  }

  pending(): Promise<PendingSend[]> {
    return this.store.list();
  }

  /** Retries every pending send that is due; returns how many were attempted. */
  async retryDue(): Promise<number> {
    let n = 0;
    for (const p of await this.store.due(this.opts.now())) {
      n++;
      await this.attempt(p);
    }
    return n;
  }
}
