/**
 * Reports over https (RFC 8460 §5.4, digest case 8): a real HTTPS endpoint on loopback with a
 * certificate from the test PKI, answering 201, 500 or never; retries from durable state with a
 * controllable clock.
 */
import { mkdtempSync, rmSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { HttpsSender, postReport, retryDelay, RETRY_WINDOW_MS } from '../../src/reporting/tlsrpt/https.js';
import type { HttpsTarget } from '../../src/reporting/tlsrpt/targets.js';
import { startHttpsEndpoint, type HttpsEndpoint } from '../support/tlsrpt.js';

let eps: HttpsEndpoint[] = [];
const dirs: string[] = [];
afterEach(async () => {
  await Promise.all(eps.map((e) => e.close()));
  eps = [];
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const endpoint = async (mode: HttpsEndpoint['mode']) => {
  const e = await startHttpsEndpoint(mode);
  eps.push(e);
  return e;
};
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'tlsrpt-https-'));
  dirs.push(d);
  return d;
};

/** The endpoints listen on loopback; the checked target (targets.ts) is given explicitly here. */
const target: HttpsTarget = { host: 'localhost', address: '127.0.0.1', family: 4 };
const report = { 'organization-name': 'o', 'report-id': 'r1' };
const body = gzipSync(JSON.stringify(report));
const job = (urls: string[]) => ({
  id: 'r1',
  day: '2025-03-01',
  domain: 'example.org',
  filename: 'relay.test!example.org!1740787200!1740873599.json.gz',
  urls,
  body: body.toString('base64'),
});

describe('TLSRPT over https', () => {
  it('TLSRPT-46 TLSRPT-41 POST with Content-Type application/tlsrpt+gzip and a gzip body; 201 is success', async () => {
    const ep = await endpoint(201);
    const r = await postReport(ep.url(), body, { ca: ep.ca, target });
    expect(r).toEqual({ ok: true, status: 201 });
    expect(ep.requests[0]!.contentType).toBe('application/tlsrpt+gzip');
    expect(ep.requests[0]!.body.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    expect(JSON.parse(gunzipSync(ep.requests[0]!.body).toString())).toEqual(report);
    // Without the test CA the certificate is not trusted: that is a failure, not a silent success.
    expect((await postReport(ep.url(), body, { target })).ok).toBe(false);
  });

  it('TLSRPT-46 a 500 and a timeout are failures', async () => {
    const bad = await endpoint(500);
    expect(await postReport(bad.url(), body, { ca: bad.ca, target })).toEqual({ ok: false, status: 500 });
    const slow = await endpoint('stall');
    const r = await postReport(slow.url(), body, { ca: slow.ca, timeoutMs: 300, target });
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/timed out/);
  });

  it('TLSRPT-48 (case 8) a 500 is retried with exponential backoff from disk and given up after 24 hours', async () => {
    const ep = await endpoint(500);
    const dir = tmp();
    let t = Date.parse('2025-03-02T03:00:00Z');
    const sender = new HttpsSender(dir, { ca: ep.ca, now: () => t, allowPrivateTargets: true });
    expect(await sender.send(job([ep.url()]))).toBe('pending');
    const file = join(dir, 'pending', 'r1.json');
    expect(JSON.parse(readFileSync(file, 'utf8'))).toMatchObject({ attempts: 1, next: t + 60_000 });
    const start = t;
    const times: number[] = [start];
    // Not due yet: nothing is sent.
    t += 59_000;
    expect(await sender.retryDue()).toBe(0);
    // A fresh sender (a restart) finds the pending send on disk.
    const again = new HttpsSender(dir, { ca: ep.ca, now: () => t, allowPrivateTargets: true });
    for (let guard = 0; guard < 100; guard++) {
      const pending = await again.pending();
      if (pending.length === 0) break;
      t = pending[0]!.next;
      expect(await again.retryDue()).toBe(1);
      times.push(t);
    }
    expect(readdirSync(join(dir, 'pending'))).toEqual([]);
    const gaps = times.slice(1).map((x, i) => x - times[i]!);
    expect(gaps.slice(0, 4)).toEqual([60_000, 120_000, 240_000, 480_000]);
    expect(gaps.every((g, i) => i === 0 || g >= gaps[i - 1]!)).toBe(true);
    expect(Math.max(...gaps)).toBe(retryDelay(100));
    expect(times.at(-1)! - start).toBeLessThanOrEqual(RETRY_WINDOW_MS);
    expect(times.at(-1)! - start + retryDelay(times.length)).toBeGreaterThan(RETRY_WINDOW_MS);
    expect(ep.requests.length).toBe(times.length);
  });

  it('TLSRPT-47 with several endpoints, one accepting endpoint completes the report', async () => {
    const bad = await endpoint(500);
    const good = await startHttpsEndpoint(201);
    eps.push(good);
    const dir = tmp();
    const sender = new HttpsSender(dir, { ca: bad.ca, now: Date.now, allowPrivateTargets: true });
    expect(await sender.send(job([bad.url(), good.url()]))).toBe('accepted');
    expect(bad.requests).toHaveLength(1);
    expect(good.requests).toHaveLength(1);
    expect(await sender.pending()).toEqual([]);
  });
});
