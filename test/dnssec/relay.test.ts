/**
 * The whole relay in dns.mode validate: the DNSSEC verdicts of the in-process
 * validator drive DANE (RFC 7672) exactly as the AD bit did in trust-ad mode.
 * Signed zones come from test/support/signer.ts; the receivers are real TLS
 * servers on 127.0.0.x.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { chainPem, makeSelfSigned, tlsaData } from '../support/pki.js';
import { Zone, rd } from '../support/signer.js';
import { ZoneSet } from '../support/signedDnsServer.js';
import { buildTree, key, type Tree } from './fixture.js';
import { inspectDomain } from '../../src/check/inspect.js';
import { formatReport } from '../../src/check/format.js';

let w: World;
let t: Tree | undefined;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
  await t?.close();
  t = undefined;
});

const now = Math.floor(Date.now() / 1000);
const send = (to: string) => submit({ port: w.ingressPort, from: 'app@sender.test', to: [to] });
const queued = () => w.relay!.scheduler.list();

async function start(zones: Zone[], patch: Record<string, unknown> = {}) {
  t = await buildTree(zones);
  const anchors = join(w.dir, 'anchors.key');
  writeFileSync(anchors, t.anchors);
  await w.start({ dns: { mode: 'validate', resolvers: [t.dns.server], trust_anchors: anchors }, ...patch });
}

describe('relay in dns.mode validate', () => {
  it('DANE-1 DANE-33 signed MX + TLSA validated in-process → delivered with the certificate verified against TLSA', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const dest = new Zone({ name: 'dest.test', keys: [key('relay-dest', 13)] });
    dest.add('dest.test', 'MX', rd.MX(10, 'mx.dest.test'));
    dest.add('mx.dest.test', 'A', rd.A(rx.host));
    dest.add(`_${w.port}._tcp.mx.dest.test`, 'TLSA', rd.TLSA(3, 1, 1, tlsaData(ee, 1, 1)));
    await start([dest]);
    await send('user@dest.test');
    await rx.waitFor(1);
    await w.settle();
    expect(rx.messages[0]!.secure).toBe(true);
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Verified' });
  });

  it('DANE-11 a bogus (expired) signed MX → deferred 4.4.3 with no connection', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.stale.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const stale = new Zone({ name: 'stale.test', keys: [key('relay-stale', 13)], inception: now - 30 * 86400, expiration: now - 86400 });
    stale.add('stale.test', 'MX', rd.MX(10, 'mx.stale.test'));
    stale.add('mx.stale.test', 'A', rd.A(rx.host));
    await start([stale]);
    await send('user@stale.test');
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
  });

  it('DANE-15 an unsigned delegation (proven by NSEC) → opportunistic TLS, never logged as verified', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.plain.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const plain = new Zone({ name: 'plain.test' });
    plain.add('plain.test', 'MX', rd.MX(10, 'mx.plain.test'));
    plain.add('mx.plain.test', 'A', rd.A(rx.host));
    await start([plain]);
    await send('user@plain.test');
    await rx.waitFor(1);
    await w.settle();
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Untrusted' });
  });
});

/**
 * Issue 13, defect 6 through the whole relay: an answer insecure only because of the NSEC3 iteration
 * limit (RFC 9276 §3.2) is a lookup failure for DANE (host skipped, 4.7.5, logged, shown by `check`),
 * unless the destination opts in with `nsec3-iterations-insecure`; a forged denial is bogus either way.
 */
describe('issue13 defect 6: NSEC3 over the iteration limit through the relay (dns.mode validate)', () => {
  /** `iter.test`: 200 NSEC3 iterations; its MX host has A and AAAA (::1, never reached: A comes first) and no TLSA. */
  async function iterZone(host: string, withTlsa?: Buffer): Promise<Zone> {
    const z = new Zone({ name: 'iter.test', keys: [key('relay-iter', 13)], denial: { nsec3: { iterations: 200 } } });
    z.add('iter.test', 'MX', rd.MX(10, 'mx.iter.test'));
    z.add('mx.iter.test', 'A', rd.A(host));
    z.add('mx.iter.test', 'AAAA', rd.AAAA('::1'));
    if (withTlsa) z.add(`_${w.port}._tcp.mx.iter.test`, 'TLSA', rd.TLSA(3, 1, 1, withTlsa));
    return z;
  }
  const policyFile = (text: string) => {
    const f = join(w.dir, 'tls_policy');
    writeFileSync(f, text);
    return f;
  };

  it('DANE-32 DANE-33 a genuine high-iteration TLSA denial under dane: host skipped, deferred 4.7.5, said in the log and by check', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.iter.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    await start([await iterZone(rx.host)]);
    await send('user@iter.test');
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    const skipped = w.logs.find((l) => l.msg === 'MX host skipped' && l.mx === 'mx.iter.test');
    expect(skipped?.skipped).toMatch(/TLSA lookup for _\d+\._tcp\.mx\.iter\.test is insecure only because its NSEC3 uses more than 150 iterations/);
    expect(skipped?.tlsa_status).toBe('insecure');
    // `check` runs the same planHost: the same skip and the same code.
    const report = await inspectDomain('iter.test', w.relay!.policy!.resolve('iter.test'), {
      resolver: t!.resolver(),
      selfNames: ['relay.test'],
      heloName: 'relay.test',
      port: w.port,
      timeouts: w.config().delivery.timeouts,
      digestPreference: ['sha512', 'sha256'],
      now: Date.now,
    });
    expect(report.verdict.kind).toBe('defer');
    expect(report.hosts[0]!.skip).toMatchObject({ code: '4.7.5', reason: expect.stringMatching(/NSEC3 uses more than 150 iterations/) });
    expect(report.hosts[0]!.tlsaInsecureReason).toBe('nsec3-iterations');
    expect(formatReport(report, [])).toMatch(/TLSA _\d+\._tcp\.mx\.iter\.test: insecure \(nsec3-iterations\)/);
  });

  it('DANE-32 with nsec3-iterations-insecure for the destination the same denial is insecure: delivered over opportunistic TLS, logged untrusted', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.iter.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    await start([await iterZone(rx.host)], { policy: { tls_policy: policyFile('iter.test dane nsec3-iterations-insecure\n') } });
    await send('user@iter.test');
    await rx.waitFor(1);
    await w.settle();
    expect(w.deliveries()[0]).toMatchObject({
      status: 'sent',
      dane: 'Untrusted',
      tls_rule: expect.stringMatching(/iter\.test dane nsec3-iterations-insecure$/),
    });
  });

  it('DANE-20 a host with A only: its AAAA NODATA over the limit decides DANE-21 too, so it is skipped (4.7.5) under dane-only', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.iter.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const z = await iterZone(rx.host);
    z.records = z.records.filter((r) => r.type !== 'AAAA');
    await start([z], { delivery: { tls_level: 'dane-only' } });
    await send('user@iter.test');
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(w.logs.find((l) => l.msg === 'MX host skipped')?.skipped).toMatch(/the AAAA lookup for mx\.iter\.test is insecure only because/);
  });

  it('DANE-12 DANE-16 an MX NODATA over the limit (implicit MX) skips the host 4.7.5 under dane; the opt-in takes it as an insecure MX (no TLSA asked)', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['implicit.iter.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    const z = await iterZone(rx.host);
    z.add('implicit.iter.test', 'A', rd.A(rx.host)); // no MX: the domain itself is the host (RFC 5321 §5.1)
    await start([z], { policy: { tls_policy: policyFile('.iter.test dane nsec3-iterations-insecure\n') } });
    const deps = {
      resolver: t!.resolver(),
      selfNames: ['relay.test'],
      heloName: 'relay.test',
      port: w.port,
      timeouts: w.config().delivery.timeouts,
      digestPreference: ['sha512', 'sha256'] as ('sha512' | 'sha256')[],
      now: Date.now,
      diagnose: false,
    };
    const strict = await inspectDomain('implicit.iter.test', { level: 'dane', rule: 'test' }, deps);
    expect(strict.mx).toMatchObject({ kind: 'hosts', status: 'insecure', insecureReason: 'nsec3-iterations', implicit: true });
    expect(strict.hosts[0]!.skip).toMatchObject({
      code: '4.7.5',
      reason: expect.stringMatching(/the MX lookup for implicit\.iter\.test is insecure only because/),
    });
    expect(strict.hosts[0]!.connections).toEqual([]);
    // with the opt-in (the relay's own policy for .iter.test): an insecure MX, so no DANE and no TLSA query
    const from = t!.dns.queries.length;
    const optIn = await inspectDomain('implicit.iter.test', w.relay!.policy!.resolve('implicit.iter.test'), deps);
    expect(optIn.hosts[0]!.skip).toBeUndefined();
    expect(optIn.hosts[0]!.plan).toMatchObject({ kind: 'may' });
    expect(t!.dns.queries.slice(from).some((q) => q.type === 'TLSA')).toBe(false);
  });

  it('issue13-downgrade nsec3-iterations denial: DANE-33 a forged TLSA NODATA with replayed high-iteration NSEC3 is bogus: skipped 4.4.3 even with the opt-in, nothing sent', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.iter.test'] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
    await start([await iterZone(rx.host, tlsaData(ee, 1, 1))], { policy: { tls_policy: policyFile('iter.test dane nsec3-iterations-insecure\n') } });
    const replay = new ZoneSet(t!.dns.zones).resolve('nope.iter.test', 'A', true);
    t!.dns.mutate = (q, r) => (q.type === 'TLSA' ? { rcode: 0, answers: [], authorities: replay.authorities } : r);
    await send('user@iter.test');
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
    expect(w.logs.find((l) => l.msg === 'MX host skipped')).toMatchObject({ tlsa_status: 'bogus' });
  });
});

/** A nonexistent name of 100 labels: its NXDOMAIN proof hashes every ancestor (RFC 5155 §8.3). */
const longName = (zone: string): string => `${Array.from({ length: 100 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('.')}.${zone}`;

/** `hosts` MX hosts, each a long nonexistent name in its own NSEC3-150 zone (issue 22's attack). */
function floodZones(domain: string, hosts: number): Zone[] {
  const flood = new Zone({ name: domain, keys: [key('relay-flood', 13)] });
  const zones = [flood];
  for (let i = 0; i < hosts; i++) {
    zones.push(new Zone({ name: `f${i}.test`, keys: [key('relay-flood-z', 13)], denial: { nsec3: { iterations: 150, salt: 'ab' } } }));
    flood.add(domain, 'MX', rd.MX(10 + i, longName(`f${i}.test`)));
  }
  return zones;
}

describe('issue 22 through the relay: what a hostile domain can make one message cost', () => {
  it('delivery.mx_host_limit: hosts beyond it are never planned, and the log says which', async () => {
    const rx = await w.receiver({});
    await start(floodZones('flood.test', 6), { delivery: { tls_level: 'dane', mx_host_limit: 2 } });
    await send('user@flood.test');
    await w.settle();
    expect(queued()[0]!.recipients[0]).toMatchObject({ state: 'deferred' });
    const capped = w.logs.find((l) => l.msg === 'MX hosts beyond delivery.mx_host_limit are not tried');
    expect(capped).toMatchObject({ domain: 'flood.test', mx_host_limit: 2 });
    expect((capped!.not_tried as string[]).length).toBe(4);
    const asked = new Set(t!.dns.queries.filter((q) => q.type === 'A' || q.type === 'AAAA').map((q) => q.name.toLowerCase().replace(/\.$/, '')));
    for (const h of capped!.not_tried as string[]) expect(asked.has(h), h).toBe(false);
    expect(w.logs.filter((l) => l.msg === 'MX host skipped').length).toBe(2);
    expect(rx.connections).toBe(0);
  });

  it("the message's work budget: with no host cap, planning stops once spent; deferred 4.4.3 with the reason, logged", async () => {
    const rx = await w.receiver({});
    await start(floodZones('flood.test', 10), { delivery: { tls_level: 'dane', mx_host_limit: 0 } });
    await send('user@flood.test');
    await w.settle();
    const r = queued()[0]!.recipients[0]!;
    expect(r).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
    expect(r.lastReason).toMatch(/DNSSEC work budget for flood\.test spent \(more than \d+ NSEC3 hash rounds/);
    const spent = w.logs.find((l) => l.msg === 'DNSSEC work budget of the message spent: remaining MX hosts not planned');
    expect(spent).toBeDefined();
    const planned = w.logs.filter((l) => l.msg === 'MX host skipped').length;
    expect(planned).toBeLessThan(10);
    expect((spent!.not_planned as string[]).length).toBe(10 - planned);
    expect(rx.connections).toBe(0);
  });
});
