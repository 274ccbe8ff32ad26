/**
 * Reports over https (RFC 8460 §5.4, digest TLSRPT-46…48): POST the gzipped JSON with
 * `Content-Type: application/tlsrpt+gzip`; only a 2xx reply is success; failures are retried
 * with exponential backoff for 24 hours from durable state under `<dir>/pending/`, then dropped.
 * Any one accepting endpoint completes the report (TLSRPT-47).
 *
 * node:https rather than the built-in fetch: fetch cannot take a per-request CA (tests, private
 * report endpoints) or a timeout per stage without undici, which is not a dependency here.
 */
import https from 'node:https';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { writeFileDurable } from './store.js';
import { ensurePrivateSubdir, readFileNoFollow } from '../../files/private.js';

export interface PostResult { ok: boolean; status?: number; error?: string }

export interface HttpsOptions {
  /** extra trust anchors for report endpoints (PEM); default: the system store */
  ca?: string | Buffer;
  timeoutMs?: number;
}

/** One POST; resolves with the outcome, never rejects. */
export function postReport(url: string, body: Buffer, opts: HttpsOptions & { gzip?: boolean; userAgent?: string } = {}): Promise<PostResult> {
  return new Promise((resolve) => {
    let u: URL;
    try { u = new URL(url); } catch { resolve({ ok: false, error: `bad URL ${url}` }); return; }
    if (u.protocol !== 'https:') { resolve({ ok: false, error: `not https: ${url}` }); return; }
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let done = false;
    const finish = (r: PostResult) => { if (!done) { done = true; clearTimeout(timer); resolve(r); } };
    const req = https.request(u, {
      method: 'POST',
      headers: {
        'Content-Type': opts.gzip === false ? 'application/tlsrpt+json' : 'application/tlsrpt+gzip',
        'Content-Length': body.length,
        'User-Agent': opts.userAgent ?? 'dane-relay-tlsrpt',
      },
      ...(opts.ca ? { ca: opts.ca } : {}),
    }, (res) => {
      res.resume();
      res.on('end', () => finish({ ok: res.statusCode! >= 200 && res.statusCode! < 300, status: res.statusCode }));
      res.on('error', (e) => finish({ ok: false, status: res.statusCode, error: e.message }));
    });
    const timer = setTimeout(() => { req.destroy(new Error(`timed out after ${timeoutMs} ms`)); }, timeoutMs);
    req.on('error', (e) => finish({ ok: false, error: e.message }));
    req.end(body);
  });
}

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

/** Durable https sends: first attempt now, then retries from `<dir>/pending/<id>.json` until accepted or 24 h passed. */
export class HttpsSender {
  readonly pendingDir: string;

  constructor(private readonly dir: string, private readonly opts: HttpsOptions & { now: () => number; log?: HttpsLog }) {
    this.pendingDir = join(dir, 'pending');
  }

  private async tryAll(p: PendingSend): Promise<PostResult & { url?: string }> {
    const body = Buffer.from(p.body, 'base64');
    const errors: string[] = [];
    for (const url of p.urls) {
      const r = await postReport(url, body, this.opts);
      if (r.ok) return { ...r, url };
      errors.push(`${url}: ${r.status ? `HTTP ${r.status}` : r.error}`);
    }
    return { ok: false, error: errors.join('; ') };
  }

  /** First attempt; on failure the send is kept on disk for retries. Returns whether an endpoint accepted it. */
  async send(p: Omit<PendingSend, 'created' | 'attempts' | 'next'>): Promise<boolean> {
    const now = this.opts.now();
    const full: PendingSend = { ...p, created: now, attempts: 0, next: now };
    return this.attempt(full);
  }

  private async attempt(p: PendingSend): Promise<boolean> {
    const r = await this.tryAll(p);
    const file = join(this.pendingDir, `${p.id}.json`);
    p.attempts++;
    if (r.ok) {
      this.opts.log?.info({ day: p.day, domain: p.domain, url: r.url, status: r.status, attempts: p.attempts }, 'tlsrpt: report accepted over https');
      await fsp.rm(file, { force: true });
      return true;
    }
    p.lastError = r.error;
    p.next = this.opts.now() + retryDelay(p.attempts);
    if (p.next > p.created + RETRY_WINDOW_MS) {
      // TLSRPT-48: reports are optional; after 24 hours the report is dropped.
      this.opts.log?.warn({ day: p.day, domain: p.domain, attempts: p.attempts, error: r.error }, 'tlsrpt: https report given up after 24 hours');
      await fsp.rm(file, { force: true });
      return false;
    }
    this.opts.log?.warn({ day: p.day, domain: p.domain, attempts: p.attempts, error: r.error, next: new Date(p.next).toISOString() }, 'tlsrpt: https report failed; will retry');
    await ensurePrivateSubdir(this.dir, 'pending');
    await writeFileDurable(file, JSON.stringify(p));
    return false;
  }

  async pending(): Promise<PendingSend[]> {
    let names: string[];
    try { names = await fsp.readdir(this.pendingDir); } catch { return []; }
    const out: PendingSend[] = [];
    for (const n of names.filter((x) => x.endsWith('.json'))) {
      try { out.push(JSON.parse(await readFileNoFollow(join(this.pendingDir, n), 'utf8')) as PendingSend); } catch (e) {
        this.opts.log?.warn({ file: n, err: (e as Error).message }, 'tlsrpt: unreadable pending send left in place');
      }
    }
    return out;
  }

  /** Retries every pending send that is due; returns how many were attempted. */
  async retryDue(): Promise<number> {
    let n = 0;
    for (const p of await this.pending()) {
      if (p.next > this.opts.now()) continue;
      n++;
      await this.attempt(p);
    }
    return n;
  }
}
