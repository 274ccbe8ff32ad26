/**
 * Metrics scraped over HTTP from an in-process relay after real deliveries: a DANE-verified
 * one, a DANE mismatch, a TLSA lookup failure and a refused connection.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import { httpGet, parsePrometheus, scrape, value, type Scrape } from '../support/prom.js';
import { parseConfigText } from '../../src/config/load.js';
import { metricsEndpoint } from '../../src/config/schema.js';
import { RelayMetrics } from '../../src/metrics/registry.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const tlsa311 = (c: Issued) => ({ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(c, 1, 1) });

/** What a validating resolver shows the start-up self-test (DANE-4). */
function validatingSelfTestNames(): void {
  w.dns.addZone({ name: 'ietf.org', secure: true });
  w.dns.add({ name: 'ietf.org', type: 'A', data: '192.0.2.1' });
  w.dns.behave('dnssec-failed.org', 'A', 'servfail');
}

describe('metrics', () => {
  it('counters move after real deliveries and deferrals; queue gauges and DNS series read the relay', async () => {
    const good = await makeSelfSigned({ dnsNames: ['mx.secure.test'] });
    const other = await makeSelfSigned({ dnsNames: ['mx.bad.test'] });
    const rxGood = await w.receiver({ tls: { key: good.keyPem, cert: good.certPem } });
    const rxBad = await w.receiver({ tls: { key: other.keyPem, cert: other.certPem } });
    validatingSelfTestNames();
    for (const [d, rx, t] of [
      ['secure.test', rxGood, tlsa311(good)],
      ['bad.test', rxBad, tlsa311(good)],
      ['tlsafail.test', rxGood, tlsa311(good)],
    ] as const) {
      w.dns.addZone({ name: d, secure: true });
      w.dns.add(
        { name: d, type: 'MX', data: { preference: 10, exchange: `mx.${d}` } },
        { name: `mx.${d}`, type: 'A', data: rx.host },
        { name: `_${w.port}._tcp.mx.${d}`, type: 'TLSA', data: t },
      );
    }
    w.dns.behave(`_${w.port}._tcp.mx.tlsafail.test`, 'TLSA', 'servfail');
    w.dns.add({ name: 'dead.test', type: 'MX', data: { preference: 10, exchange: 'mx.dead.test' } }, { name: 'mx.dead.test', type: 'A', data: w.deadHost() });
    const relay = await w.start({ metrics: { listen: '127.0.0.1:0' } });
    const port = relay.metrics!.server.address.port;
    await relay.metrics!.readiness.settled();

    const before = await scrape('127.0.0.1', port);
    expect(value(before, 'dane_relay_messages_received_total')).toBe(0);
    expect(before.types.get('dane_relay_dns_lookup_duration_seconds')).toBe('histogram');

    for (const d of ['secure.test', 'bad.test', 'tlsafail.test', 'dead.test'])
      await submit({ port: w.ingressPort, from: 'app@sender.test', to: [`u@${d}`, ...(d === 'secure.test' ? ['v@secure.test'] : [])] });
    await w.settle();
    expect(rxGood.messages).toHaveLength(1);

    const s = await scrape('127.0.0.1', port);
    expect(value(s, 'dane_relay_messages_received_total')).toBe(4);
    expect(value(s, 'dane_relay_received_recipients_total')).toBe(5);
    expect(value(s, 'dane_relay_received_bytes_total')).toBe(relay.scheduler.list().reduce((n, m) => n + m.size, 0) + rxGood.messages[0]!.size);
    expect(value(s, 'dane_relay_deliveries_total', { outcome: 'sent', dane: 'Verified' })).toBe(2);
    expect(value(s, 'dane_relay_deliveries_total', { outcome: 'deferred', dane: 'none' })).toBe(3);
    expect(value(s, 'dane_relay_deliveries_total')).toBe(5);
    expect(value(s, 'dane_relay_deferrals_total', { reason: 'dane-no-match' })).toBe(1);
    expect(value(s, 'dane_relay_deferrals_total', { reason: 'tlsa-lookup-failed' })).toBe(1);
    expect(value(s, 'dane_relay_deferrals_total', { reason: 'connect' })).toBe(1);
    expect(value(s, 'dane_relay_tls_handshakes_total', { result: 'ok' })).toBe(1);
    expect(value(s, 'dane_relay_tls_handshakes_total', { result: 'verify-failed' })).toBe(1);
    expect(value(s, 'dane_relay_queue_messages')).toBe(3);
    expect(value(s, 'dane_relay_queue_recipients', { state: 'deferred' })).toBe(3);
    expect(value(s, 'dane_relay_queue_oldest_age_seconds')).toBeGreaterThanOrEqual(0);
    // DNS: every lookup of the deliveries is counted with its DNSSEC status, and timed.
    expect(value(s, 'dane_relay_dns_lookups_total', { type: 'MX', status: 'secure' })).toBe(3);
    expect(value(s, 'dane_relay_dns_lookups_total', { type: 'MX', status: 'insecure' })).toBe(1);
    expect(value(s, 'dane_relay_dns_lookups_total', { type: 'TLSA', status: 'error-servfail' })).toBeGreaterThanOrEqual(1);
    expect(value(s, 'dane_relay_dns_lookup_duration_seconds_count')).toBe(value(s, 'dane_relay_dns_lookups_total'));
    expect(value(s, 'dane_relay_dns_lookup_duration_seconds_bucket', { type: 'MX', le: '+Inf' })).toBe(4);

    // An hour later the retries run: the deferral counters move again, the age gauge follows the clock.
    await w.advance(60 * 60_000);
    const s2 = await scrape('127.0.0.1', port);
    expect(value(s2, 'dane_relay_deferrals_total', { reason: 'connect' })).toBe(2);
    expect(value(s2, 'dane_relay_deferrals_total', { reason: 'dane-no-match' })).toBe(2);
    expect(value(s2, 'dane_relay_queue_oldest_age_seconds')).toBeGreaterThanOrEqual(3600);
    expect(value(s2, 'dane_relay_messages_received_total')).toBe(4);
  });

  it('outcomes over unauthenticated TLS and cleartext carry their protection label; a remote 4xx is counted as such', async () => {
    const cert = await makeSelfSigned({ dnsNames: ['mx.tls.test'] });
    const rxTls = await w.receiver({ tls: { key: cert.keyPem, cert: cert.certPem }, data: () => ({ code: 451, message: '4.3.0 try later' }) });
    const rxPlain = await w.receiver();
    w.dns.add({ name: 'tls.test', type: 'MX', data: { preference: 10, exchange: 'mx.tls.test' } }, { name: 'mx.tls.test', type: 'A', data: rxTls.host });
    w.dns.add(
      { name: 'plain.test', type: 'MX', data: { preference: 10, exchange: 'mx.plain.test' } },
      { name: 'mx.plain.test', type: 'A', data: rxPlain.host },
    );
    const relay = await w.start({ delivery: { tls_level: 'may' }, metrics: { listen: '127.0.0.1:0' } });
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['u@tls.test'] });
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['u@plain.test'] });
    await w.settle();
    const s = await scrape('127.0.0.1', relay.metrics!.server.address.port);
    expect(value(s, 'dane_relay_deliveries_total', { outcome: 'deferred', dane: 'Untrusted' })).toBe(1);
    expect(value(s, 'dane_relay_deliveries_total', { outcome: 'sent', dane: 'Cleartext' })).toBe(1);
    expect(value(s, 'dane_relay_deferrals_total', { reason: 'remote-temporary' })).toBe(1);
    expect(value(s, 'dane_relay_tls_handshakes_total', { result: 'ok' })).toBe(1);
    expect(rxPlain.messages).toHaveLength(1);
  });

  it('policy counters (exception downgrades, recoveries, rollover warnings) are exposed when the policy code reports them', async () => {
    await w.receiver();
    const relay = await w.start({ delivery: { tls_level: 'may' }, metrics: { listen: '127.0.0.1:0' } });
    const ev = relay.metrics!.events;
    ev.exceptionDowngrade({ domain: 'legacy.test', level: 'may' });
    ev.exceptionDowngrade({ domain: 'legacy.test', level: 'may' });
    ev.exceptionRecovered({ domain: 'legacy.test', host: 'mx.legacy.test' });
    ev.rolloverWarning({ domain: 'x.test', host: 'mx.x.test', kind: 'single-tlsa-ee', detail: 'one 3 1 1 record only' });
    const s = await scrape('127.0.0.1', relay.metrics!.server.address.port);
    expect(value(s, 'dane_relay_exception_downgrades_total', { domain: 'legacy.test', level: 'may' })).toBe(2);
    expect(value(s, 'dane_relay_exception_recovered_total', { domain: 'legacy.test' })).toBe(1);
    expect(value(s, 'dane_relay_rollover_warnings_total', { kind: 'single-tlsa-ee' })).toBe(1);
  });

  it('/healthz is 200; /readyz is 200 with a writable spool and no DNSSEC need, 404 elsewhere; two relays do not share counters', async () => {
    await w.receiver();
    const relay = await w.start({ delivery: { tls_level: 'may' }, metrics: { listen: '127.0.0.1:0' } });
    const port = relay.metrics!.server.address.port;
    expect((await httpGet('127.0.0.1', port, '/healthz')).status).toBe(200);
    const ready = await httpGet('127.0.0.1', port, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toContain('spool: ok');
    expect(ready.body).toContain('selftest: ok: not required');
    expect((await httpGet('127.0.0.1', port, '/nope')).status).toBe(404);
    // Its own registry: a second one counting does not show up here.
    new RelayMetrics({ defaultMetrics: false }).messageReceived({ recipients: 1, bytes: 1 });
    expect(value(await scrape('127.0.0.1', port), 'dane_relay_messages_received_total')).toBe(0);
  });

  it('metrics.listen must be loopback unless metrics.allow_remote is true (config and server refuse)', async () => {
    expect(() => parseConfigText('metrics: { listen: "0.0.0.0:9425" }')).toThrow(/metrics\.listen: metrics\.listen must be a loopback address/);
    expect(() => parseConfigText('metrics: { listen: "[::]:9425" }')).toThrow(/loopback/);
    expect(parseConfigText('metrics: { listen: "0.0.0.0:9425", allow_remote: true }').metrics).toMatchObject({ listen: '0.0.0.0:9425', allow_remote: true });
    expect(parseConfigText('metrics: { listen: "127.0.0.2:9425" }').metrics?.allow_remote).toBe(false);
    expect(parseConfigText('metrics: { listen: "[::1]:9425" }').metrics?.ready_cache).toBe(5000);
    expect(parseConfigText('{}').metrics).toBeUndefined();
    // the listener's endpoint, for a configuration built in code (relay.ts: the relay runs on without metrics)
    expect(() => metricsEndpoint({ listen: '192.0.2.1:9425', allow_remote: false })).toThrow('not a loopback address');
    expect(() => metricsEndpoint({ listen: 'nonsense', allow_remote: true })).toThrow('expected "address:port"');
    expect(metricsEndpoint({ listen: '[::1]:0', allow_remote: false })).toEqual({ host: '::1', port: 0 });
  });

  it('the Prometheus text parser reads what prom-client writes, escapes included', async () => {
    const m = new RelayMetrics({ defaultMetrics: false });
    m.exceptionDowngrade({ domain: 'we"ird\\dom\nain', level: 'may' });
    const s: Scrape = parsePrometheus(await m.registry.metrics());
    // The label value is printable (a newline in outside text is shown as \n); prom-client escapes " and \ on top.
    expect(value(s, 'dane_relay_exception_downgrades_total', { domain: 'we"ird\\dom\\nain' })).toBe(1);
    expect(() => parsePrometheus('garbage line here x')).toThrow('not a Prometheus sample line');
  });
});
