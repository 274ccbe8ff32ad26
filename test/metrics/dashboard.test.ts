/**
 * Issue 21 item 7: the metrics dashboards need, from a real relay process — ingress rejections by reason,
 * attempt and queue-wait histograms, DSNs by action, config and policy reload results, the DNSSEC
 * self-test status, build info with the version, TLSRPT sends, the queue by domain and age, and the
 * standard process_… and nodejs_… names — and the shipped Grafana dashboard (examples/grafana/dane-relay.json):
 * every query it makes reads series this relay's /metrics has, and its panels drawn from the scrapes of
 * this run (test/support/dashboardSvg.ts; `DASHBOARD_SVG=docs/grafana-dashboard.svg` writes the picture
 * the README shows).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ensureBuilt, ROOT } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { submit } from '../support/mail.js';
import { SmtpTestClient } from '../support/submit.js';
import { RelayProcess, freePort, sleep } from '../support/relayProcess.js';
import { scrape, value, type Scrape } from '../support/prom.js';
import { evaluate, metricNames, parsePromQL, type TimedScrape } from '../support/promql.js';
import { renderDashboardSvg, type DashboardPanel } from '../support/dashboardSvg.js';
import { INGRESS_REJECT_REASONS } from '../../src/metrics/labels.js';

const DASHBOARD = join(ROOT, 'examples', 'grafana', 'dane-relay.json');
const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { title: string; panels: DashboardPanel[] };

let dns: TestDns;
let rx: Receiver;
let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  rx = await startReceiver({ host: '127.0.0.30' });
  dns.add(
    { name: 'live.test', type: 'MX', data: { preference: 10, exchange: 'mx.live.test' } },
    { name: 'mx.live.test', type: 'A', data: '127.0.0.30' },
    // nothing listens there: refused, deferred
    { name: 'dead.test', type: 'MX', data: { preference: 10, exchange: 'mx.dead.test' } },
    { name: 'mx.dead.test', type: 'A', data: '127.0.0.31' },
  );
  dir = mkdtempSync(join(tmpdir(), 'dr-dash-'));
}, 120_000);
afterAll(async () => {
  await rx?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('issue21 item 7: metrics for dashboards, and the shipped Grafana dashboard', () => {
  it('a relay run shows every new series with the values of what happened; every dashboard query reads series that exist; the panels draw from the scrapes', async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const cfgFile = join(dir, 'relay.yml');
    writeFileSync(join(dir, 'tls_policy'), 'live.test may\n');
    const config = (extra = '') =>
      `listen: ["127.0.0.1:${port}"]\nrelay_clients: ["127.0.0.1/32"]\nhostname: relay.test\nqueue_dir: ${join(dir, 'q')}\n` +
      `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
      `delivery:\n  port: ${rx.port}\n  tls_level: may\n  timeouts: { connect: 2s }\n` +
      `queue:\n  min_backoff: 1h\n  max_backoff: 2h\n  run_interval: 200ms\n` +
      `metrics:\n  listen: "127.0.0.1:${metricsPort}"\npolicy:\n  tls_policy: tls_policy\n${extra}`;
    writeFileSync(cfgFile, config());
    const relay = new RelayProcess(cfgFile);
    await relay.start();

    const scrapes: TimedScrape[] = [];
    let last: Scrape | undefined;
    const take = async () => {
      last = await scrape('127.0.0.1', metricsPort);
      scrapes.push({ t: performance.now() / 1000, samples: last.samples });
      return last;
    };
    /** scrapes until `ok` holds (the test's own timeout bounds the wait) */
    const until = async (ok: (s: Scrape) => boolean) => {
      for (;;) {
        if (ok(await take())) return;
        await sleep(100);
      }
    };
    await take();

    // delivered
    for (let i = 0; i < 3; i++) await submit({ port, from: 'app@sender.test', to: [`u${i}@live.test`], subject: `live ${i}` });
    await until((s) => value(s, 'dane_relay_deliveries_total', { outcome: 'sent' }) >= 3);
    // deferred: nothing listens at the MX
    for (let i = 0; i < 2; i++) await submit({ port, from: 'app@sender.test', to: [`d${i}@dead.test`], subject: `dead ${i}` });
    await until((s) => value(s, 'dane_relay_deferrals_total') >= 2);
    // bounced (the domain does not exist) and its DSN queued
    await submit({ port, from: 'app@sender.test', to: ['x@nowhere.test'], subject: 'nowhere' });
    await until((s) => value(s, 'dane_relay_dsns_total', { action: 'failed' }) >= 1);
    // refused at ingress: <Postmaster> without ingress.postmaster; relaying for a client not in relay_clients
    const c = await SmtpTestClient.connect({ port, timeout: 60_000 });
    await c.ehlo();
    await c.cmd('MAIL FROM:<someone@example.net>');
    expect((await c.cmd('RCPT TO:<Postmaster>')).code).toBe(550);
    await c.quit();
    // a client outside relay_clients
    const outsider = await SmtpTestClient.connect({ port, timeout: 60_000, localAddress: '127.0.0.2' });
    await outsider.ehlo();
    await outsider.cmd('MAIL FROM:<someone@example.net>');
    expect((await outsider.cmd('RCPT TO:<u@live.test>')).code).toBe(554);
    await outsider.quit();
    await until(
      (s) =>
        value(s, 'dane_relay_ingress_rejections_total', { reason: 'no-postmaster' }) === 1 &&
        value(s, 'dane_relay_ingress_rejections_total', { reason: 'relay-denied' }) === 1,
    );
    // SIGHUP: a changed policy file and a valid config (ok), then a config with an error (refused)
    writeFileSync(join(dir, 'tls_policy'), 'live.test may\ndead.test may\n');
    writeFileSync(cfgFile, config('log:\n  level: info\n'));
    relay.child!.kill('SIGHUP');
    await until(
      (s) =>
        value(s, 'dane_relay_reloads_total', { what: 'config', result: 'ok' }) === 1 &&
        value(s, 'dane_relay_reloads_total', { what: 'policy', result: 'ok' }) >= 1,
    );
    writeFileSync(cfgFile, config('delivery_typo: 1\n'));
    relay.child!.kill('SIGHUP');
    await until((s) => value(s, 'dane_relay_reloads_total', { what: 'config', result: 'refused' }) === 1);
    await take();
    const s = last!;
    expect(await relay.stop()).toBe(0);

    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const one = (name: string) => s.samples.filter((x) => x.name === name);
    expect(one('dane_relay_build_info')).toEqual([{ name: 'dane_relay_build_info', labels: { version, nodejs: process.versions.node }, value: 1 }]);
    // every reason is there from the start (0), so a panel shows "none" rather than "no data"
    expect(
      one('dane_relay_ingress_rejections_total')
        .map((x) => x.labels.reason)
        .sort(),
    ).toEqual([...INGRESS_REJECT_REASONS].sort());
    expect(
      one('dane_relay_ingress_rejections_total')
        .filter((x) => x.value > 0)
        .map((x) => [x.labels.reason, x.value]),
    ).toEqual([
      ['no-postmaster', 1],
      ['relay-denied', 1],
    ]);
    // one observation per recipient attempt: 3 delivered, 2 deferred, 1 bounced, and the DSN's own attempt(s)
    const attempts = value(s, 'dane_relay_deliveries_total');
    expect(attempts).toBeGreaterThanOrEqual(6);
    expect(value(s, 'dane_relay_delivery_attempt_duration_seconds_count')).toBe(attempts);
    expect(value(s, 'dane_relay_queue_wait_seconds_count')).toBe(attempts);
    expect(value(s, 'dane_relay_delivery_attempt_duration_seconds_bucket', { le: '+Inf' })).toBe(attempts);
    expect(value(s, 'dane_relay_reloads_total', { what: 'policy', result: 'refused' })).toBe(0);
    // tls_level may, no DANE entry: the self-test does not run
    expect(value(s, 'dane_relay_dnssec_selftest_status')).toBe(-1);
    expect(
      one('dane_relay_tlsrpt_reports_total')
        .map((x) => x.labels.result)
        .sort(),
    ).toEqual(['failed', 'sent']);
    // the queue by destination and age: the two deferred recipients, minutes old
    expect(one('dane_relay_queue_recipients_by_domain_age').map((x) => [x.labels.domain, x.labels.age, x.value])).toContainEqual(['dead.test', '0-5m', 2]);
    // stock dashboards' names, and the prefixed ones README documents
    for (const n of [
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_p99_seconds',
      'nodejs_heap_size_used_bytes',
      'dane_relay_nodejs_eventloop_lag_seconds',
    ])
      expect(one(n).length, n).toBeGreaterThan(0);

    // the dashboard: every query parses in the subset and names series this relay exposes
    const present = new Set(s.samples.map((x) => x.name));
    const queries = dashboard.panels.flatMap((p) => p.targets.map((t) => ({ panel: p.title, expr: t.expr })));
    expect(queries.length).toBeGreaterThanOrEqual(dashboard.panels.length);
    for (const q of queries) for (const n of metricNames(parsePromQL(q.expr))) expect(present.has(n), `${q.panel}: ${n}`).toBe(true);
    // the panels the issue names have data from this run
    const at = (title: string) => {
      const p = dashboard.panels.find((x) => x.title === title)!;
      return scrapes.map((_, i) => p.targets.flatMap((t) => evaluate(parsePromQL(t.expr), scrapes, i)));
    };
    expect(at('Queue by destination and age').at(-1)).toContainEqual({ labels: { domain: 'dead.test', age: '0-5m' }, value: 2 });
    expect(at('Deferrals by reason').some((v) => v.some((x) => x.labels.reason === 'connect' && x.value > 0))).toBe(true);
    expect(at('DANE verdicts over time').some((v) => v.some((x) => x.value > 0))).toBe(true);
    // no rollover risk in this world: the panel reads 0 for every kind, not "no data"
    expect(
      at('Rollover warnings')
        .at(-1)!
        .map((x) => x.value),
    ).toEqual([0, 0, 0, 0, 0]);

    const svg = renderDashboardSvg(
      dashboard,
      scrapes,
      `drawn from ${scrapes.length} scrapes of a test relay (test/metrics/dashboard.test.ts), dane-relay ${version}`,
    );
    expect(svg.startsWith('<svg ')).toBe(true);
    for (const p of dashboard.panels) expect(svg).toContain(`>${p.title.replace(/&/g, '&amp;')}</text>`);
    const out = process.env.DASHBOARD_SVG ? resolve(ROOT, process.env.DASHBOARD_SVG) : join(dir, 'dashboard.svg');
    writeFileSync(out, svg);
  }, 300_000);

  it('the dashboard JSON is a Grafana dashboard: unique panel ids, a Prometheus datasource input, every panel on the 24-column grid', () => {
    const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { uid: string; __inputs: { pluginId: string }[]; panels: (DashboardPanel & { id: number })[] };
    expect(d.uid).toBe('dane-relay');
    expect(d.__inputs.map((i) => i.pluginId)).toEqual(['prometheus']);
    expect(new Set(d.panels.map((p) => p.id)).size).toBe(d.panels.length);
    for (const p of d.panels) expect(p.gridPos.x + p.gridPos.w, p.title).toBeLessThanOrEqual(24);
  });
});
