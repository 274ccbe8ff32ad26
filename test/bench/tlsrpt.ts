/**
 * TLSRPT recording cost (issue 6): end-to-end DANE delivery with TLSRPT recording on and off, and the
 * cost of one `record` call. Used by run.ts (section 5); also runnable alone:
 * `node dist/test/bench/tlsrpt.js` prints the section without touching BENCHMARKS.md.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SmtpTestClient } from '../support/submit.js';
import { World } from '../support/world.js';
import { timedDelivery } from './load.js';
import { makeSelfSigned, tlsaData } from '../support/pki.js';
import { TlsrptStore } from '../../src/reporting/tlsrpt/store.js';
import { TlsrptRecorder } from '../../src/reporting/tlsrpt/recorder.js';
import { TlsrptDiscovery } from '../../src/reporting/tlsrpt/discovery.js';
import type { Resolver } from '../../src/dns/types.js';

async function run(tlsrpt: boolean, total: number, clients: number): Promise<{ ms: number; got: number; counted: number }> {
  const w = await World.create();
  try {
    const mx = 'mx.dest.test';
    const ee = await makeSelfSigned({ dnsNames: [mx] });
    const rx = await w.receiver({ tls: { key: ee.keyPem, cert: ee.certPem }, keepBody: false });
    w.dns.addZone({ name: 'dest.test', secure: true });
    w.dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: mx } });
    w.dns.add({ name: mx, type: 'A', data: rx.host });
    w.dns.add({ name: `_${w.port}._tcp.${mx}`, type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(ee, 1, 1) } });
    w.dns.add({ name: '_smtp._tls.dest.test', type: 'TXT', data: 'v=TLSRPTv1; rua=mailto:tlsrpt@dest.test' });
    // One message per connection: every delivery is a TLS session, so every delivery is recorded.
    await w.start({ log: { level: 'info' }, delivery: { max_messages_per_connection: 1 }, tlsrpt: { enabled: tlsrpt } });
    const payload = SmtpTestClient.dataPayload(Buffer.from('From: a@sender.test\r\nSubject: bench\r\n\r\n' + 'x'.repeat(2000) + '\r\n'));
    const ms = await timedDelivery(w.ingressPort, rx, clients, total, payload, 120_000);
    let counted = 0;
    const svc = w.relay!.tlsrpt;
    if (svc) {
      await svc.store.flush();
      for (const day of await svc.store.days()) for (const p of (await svc.store.read(day)).get('dest.test') ?? []) counted += p.success + p.failure;
    }
    return { ms, got: rx.messages.length, counted };
  } finally {
    await w.close();
  }
}

/** ns per `record` call on the hot path (cache hit, in-memory increment). */
export async function recordCost(n: number): Promise<number> {
  const dir = mkdtempSync(join(os.tmpdir(), 'dane-relay-bench-tlsrpt-'));
  try {
    const store = await TlsrptStore.open(dir);
    const resolver: Resolver = {
      lookup: async (name, qtype) => ({
        qname: name,
        qtype,
        rcode: 'NOERROR',
        status: 'insecure',
        firstStatus: 'insecure',
        canonicalName: name,
        chain: [],
        records: ['v=TLSRPTv1; rua=mailto:r@dest.test'] as never[],
        ttl: 3600,
        insecureReason: 'unsigned-delegation',
      }),
      close: async () => undefined,
    };
    const rec = new TlsrptRecorder({ store, discovery: new TlsrptDiscovery(resolver), now: Date.now });
    const r = {
      domain: 'dest.test',
      host: 'mx.dest.test',
      address: '127.0.0.10',
      ok: true,
      tlsa: { baseDomain: 'mx.dest.test', records: ['3 1 1 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF'] },
      sendingIp: '127.0.0.1',
    };
    rec.record(r);
    await new Promise((res) => setTimeout(res, 50)); // discovery answer cached
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) rec.record(r);
    const ns = Number(process.hrtime.bigint() - t0) / n;
    await store.close();
    return ns;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function tlsrptSection(say: (s?: string) => void): Promise<void> {
  const TOTAL = 600,
    CLIENTS = 20,
    PAIRS = 4;
  say('## 5. TLSRPT recording on vs off');
  say();
  say(
    `End to end as in (3) to a DANE-EE destination that publishes a TLSRPT record, but with \`delivery.max_messages_per_connection: 1\`, so each of the ${TOTAL} messages is its own TLS session and its own TLSRPT result. ${PAIRS} pairs, fresh relay each, the order inside a pair alternating (off→on, on→off) so warm-up and drift cancel; the ratio is on/off throughput per pair, median reported (the machine is shared, single runs are noisy).`,
  );
  say();
  say('| pair | off msgs/s | on msgs/s | on/off | sessions counted (on) |');
  say('|---:|---:|---:|---:|---:|');
  const ratios: number[] = [];
  for (let i = 1; i <= PAIRS; i++) {
    const first = await run(i % 2 === 0, TOTAL, CLIENTS);
    const second = await run(i % 2 !== 0, TOTAL, CLIENTS);
    const [off, on] = i % 2 === 0 ? [second, first] : [first, second];
    const rOff = off.got / (off.ms / 1000);
    const rOn = on.got / (on.ms / 1000);
    ratios.push(rOn / rOff);
    say(`| ${i} | ${rOff.toFixed(0)} | ${rOn.toFixed(0)} | ${(rOn / rOff).toFixed(3)} | ${on.counted}/${TOTAL} |`);
  }
  ratios.sort((a, b) => a - b);
  const median = ratios.length % 2 ? ratios[(ratios.length - 1) / 2]! : (ratios[ratios.length / 2 - 1]! + ratios[ratios.length / 2]!) / 2;
  const ns = await recordCost(1_000_000);
  say();
  say(`- Median on/off ratio: **${median.toFixed(3)}** → target ≥ 0.97 → **${median >= 0.97 ? 'PASS' : 'MISS'}**`);
  say(`- One \`record\` call on the hot path (cache hit, in-memory increment, flush batched once per second): **${ns.toFixed(0)} ns**`);
  say();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  tlsrptSection((s = '') => console.log(s)).then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
