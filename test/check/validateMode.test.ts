/**
 * Issue 13: one resolver factory (src/config/resolver.ts) for `serve`, `check` and `dns lookup`. Under
 * `dns.mode: validate`, `dane-relay check` must validate in-process like the relay, not read the AD bit
 * of whatever resolver is configured. The signed test DNS server (test/support/signedDnsServer.ts)
 * behaves like a non-validating recursive resolver: it never sets AD. A check that trusted AD would
 * call every destination insecure ("deliverable without DANE", exit 3) while the relay delivers with
 * DANE; with the factory both reach the same verdict, for a good and for a forged destination.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sink } from '../support/sink.js';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { chainPem, makeSelfSigned, tlsaData } from '../support/pki.js';
import { Zone, rd } from '../support/signer.js';
import { buildTree, key, type Tree } from '../dnssec/fixture.js';
import { main } from '../../src/cli.js';

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

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = sink();
  const e = sink();
  const code = await main(argv, o.stream, e.stream);
  return { code, out: o.text(), err: e.text() };
}

async function setUp(): Promise<{ file: string; anchors: string }> {
  const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
  const rx = await w.receiver({ tls: { key: ee.keyPem, cert: chainPem(ee) } });
  const dest = new Zone({ name: 'dest.test', keys: [key('factory-dest', 13)] });
  dest.add('dest.test', 'MX', rd.MX(10, 'mx.dest.test'));
  dest.add('mx.dest.test', 'A', rd.A(rx.host));
  dest.add(`_${w.port}._tcp.mx.dest.test`, 'TLSA', rd.TLSA(3, 1, 1, tlsaData(ee, 1, 1)));
  t = await buildTree([dest]);
  const anchors = join(w.dir, 'anchors.key');
  writeFileSync(anchors, t.anchors);
  const file = join(w.dir, 'relay.yml');
  writeFileSync(
    file,
    [
      'hostname: relay.test',
      'queue_dir: queue',
      'dns:',
      '  mode: validate',
      `  resolvers: ["${t.dns.server}"]`,
      `  trust_anchors: ${anchors}`,
      '  timeout: 2s',
      '  attempts: 1',
      'delivery:',
      `  port: ${w.port}`,
      '  timeouts: { connect: 2s, greeting: 3s, ehlo: 3s, starttls: 3s }',
      '',
    ].join('\n'),
  );
  return { file, anchors };
}

describe('issue13 one resolver factory: check under dns.mode validate', () => {
  it('DANE-1 DANE-3 check validates in-process (CD=1 to a resolver that never sets AD) and agrees with the relay: DANE, exit 0', async () => {
    const { file, anchors } = await setUp();
    const from = t!.dns.queries.length;
    const r = await run(['check', 'dest.test', '--config', file]);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/verdict: deliverable with DANE/);
    expect(r.code).toBe(0);
    const asked = t!.dns.queries.slice(from);
    expect(asked.length).toBeGreaterThan(0);
    expect(asked.every((q) => q.cd && q.do)).toBe(true); // the validator's query pattern, never a stub's CD=0
    expect(asked.some((q) => q.type === 'DNSKEY')).toBe(true); // it walked the chain itself

    // The relay with the same settings reaches the same verdict.
    await w.start({ dns: { mode: 'validate', resolvers: [t!.dns.server], trust_anchors: anchors } });
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@dest.test'] });
    await w.receivers[0]!.waitFor(1);
    await w.settle();
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', dane: 'Verified' });
  });

  it('DANE-33 a forged (unsigned) TLSA RRset: check says defer (exit 1) exactly as the relay defers', async () => {
    const { file, anchors } = await setUp();
    t!.dns.mutate = (q, r) => (q.type === 'TLSA' ? { ...r, answers: r.answers.filter((x) => x.type !== 'RRSIG') } : r);
    const r = await run(['check', 'dest.test', '--config', file]);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/TLSA _\d+\._tcp\.mx\.dest\.test: bogus/);
    expect(r.out).toMatch(/verdict: would defer/);
    await w.start({ dns: { mode: 'validate', resolvers: [t!.dns.server], trust_anchors: anchors } });
    await submit({ port: w.ingressPort, from: 'app@sender.test', to: ['user@dest.test'] });
    await w.settle();
    expect(w.receivers[0]!.connections).toBe(0);
    expect(w.relay!.scheduler.list()[0]!.recipients[0]).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
  });

  it('DANE-1 dns lookup under validate mode is the same validator: secure TLSA with its chain traced', async () => {
    const { file } = await setUp();
    const r = await run(['dns', 'lookup', `_${w.port}._tcp.mx.dest.test`, 'TLSA', '--config', file]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/TLSA: secure/);
    expect(r.out).toMatch(/DNSKEY/);
  });
});
