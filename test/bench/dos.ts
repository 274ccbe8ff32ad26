/**
 * `npm run bench:dos` (issue 22): what one message to an attacker's signed domain costs. Real signed
 * zones on loopback (test/support/signer.ts), planned by `dane-relay check`'s path (route/nexthop.ts
 * lookupMx + route/host.ts planHost under the message's PlanBudget — the calls delivery makes), each
 * run on a cold validator. Per attack: the CPU of the plan (process.cpuUsage), the longest event-loop
 * stall (the largest gap between two ticks of a 1 ms interval timer, and the slowest SMTP NOOP round trip
 * to an smtp-server — the ingress library — in the same process while the plan runs), the DNSSEC work
 * counted (verifications, NSEC3 hashes, yields) and the verdict. Medians of BENCH_N runs (default 5).
 * Writes its own section of BENCHMARKS.md; `BENCH_NO_WRITE=1` only prints it.
 */
import { writeOwnSections } from './sections.js';
import net from 'node:net';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SMTPServer } from 'smtp-server';
import { buildTree, key, type Tree } from '../dnssec/fixture.js';
import { Zone, rd, TYPE } from '../support/signer.js';
import { inspectDomain, type InspectDeps, type InspectReport } from '../../src/check/inspect.js';
import type { DnsAnswer, QueryType, Resolver } from '../../src/dns/types.js';
import { DEFAULT_MX_HOST_LIMIT } from '../../src/route/mx.js';
import { nsec3Hash } from '../../src/dnssec/nsec3.js';
import { YIELD_EVERY } from '../../src/dnssec/budget.js';
import { generateKeyPairSync, sign, verify } from 'node:crypto';

/** CPU ms of the largest slice validation runs without yielding: YIELD_EVERY NSEC3-150 hashes, or YIELD_EVERY P-256 / RSA-2048 verifications. */
function sliceCosts(): { nsec3: number; p256: number; rsa: number } {
  const cpu = (f: () => void, reps = 200): number => {
    const c0 = process.cpuUsage();
    for (let i = 0; i < reps; i++) f();
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1000 / reps;
  };
  const salt = Buffer.from('ab', 'hex');
  const nsec3 = cpu(() => {
    for (let i = 0; i < YIELD_EVERY; i++) nsec3Hash(`x${i}.example.com`, salt, 150);
  }, 50);
  const data = Buffer.alloc(512, 1);
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecSig = sign('sha256', data, ec.privateKey);
  const p256 = cpu(() => {
    for (let i = 0; i < YIELD_EVERY; i++) verify('sha256', data, ec.publicKey, ecSig);
  }, 50);
  const rk = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rSig = sign('sha256', data, rk.privateKey);
  const rsa = cpu(() => {
    for (let i = 0; i < YIELD_EVERY; i++) verify('sha256', data, rk.publicKey, rSig);
  }, 50);
  return { nsec3, p256, rsa };
}

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..', '..');
const N = Number(process.env.BENCH_N ?? 5);
const longName = (zone: string): string => `${Array.from({ length: 100 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('.')}.${zone}`;

interface Attack {
  name: string;
  what: string;
  domain: string;
  hostLimit?: number;
  names?: string[];
}

async function world(): Promise<{ t: Tree; attacks: Attack[] }> {
  const zones: Zone[] = [];
  const honest = new Zone({ name: 'honest.test', keys: [key('honest', 13)] });
  honest.add('honest.test', 'MX', rd.MX(10, 'mx.honest.test'));
  honest.add('mx.honest.test', 'A', rd.A('127.0.0.1'));
  honest.add('_25._tcp.mx.honest.test', 'TLSA', rd.TLSA(3, 1, 1, Buffer.alloc(32, 0xab)));
  zones.push(honest);
  const one = new Zone({ name: 'one.test', keys: [key('one', 13)] });
  one.add('one.test', 'MX', rd.MX(10, longName('n0.test')));
  zones.push(one);
  const flood = new Zone({ name: 'flood.test', keys: [key('flood', 13)] });
  for (let i = 0; i < 40; i++) {
    zones.push(new Zone({ name: `n${i}.test`, keys: [key('n', 13)], denial: { nsec3: { iterations: 150, salt: 'ab' } } }));
    flood.add('flood.test', 'MX', rd.MX(10 + i, longName(`n${i}.test`)));
  }
  zones.push(flood);
  const bad = new Zone({ name: 'badkey.test', keys: [key('bad-ksk', 13), key('bad-zsk', 13, 256)] });
  bad.add('badkey.test', 'MX', rd.MX(10, 'mx.badkey.test'));
  zones.push(bad);
  const t = await buildTree(zones);
  const sig = bad.signed.find((r) => r.type === 'RRSIG' && r.rdata.readUInt16BE(0) === TYPE.DNSKEY)!;
  sig.rdata = Buffer.from(sig.rdata);
  sig.rdata[sig.rdata.length - 1]! ^= 0xff;
  return {
    t,
    attacks: [
      { name: 'honest', what: 'one MX host, signed, TLSA (baseline)', domain: 'honest.test' },
      { name: 'nsec3-one', what: 'one MX host: a 100-label nonexistent name in an NSEC3-150 zone', domain: 'one.test' },
      {
        name: 'flood-40',
        what: `40 MX hosts, each a 100-label nonexistent name in its own NSEC3-150 zone (mx_host_limit ${DEFAULT_MX_HOST_LIMIT})`,
        domain: 'flood.test',
      },
      { name: 'flood-40-nocap', what: '…the same with mx_host_limit 0 (no cap: only the work budget bounds it)', domain: 'flood.test', hostLimit: 0 },
      {
        name: 'badkey-30',
        what: '30 names below a zone whose DNSKEY RRset signature is broken (one resolver)',
        domain: 'badkey.test',
        names: Array.from({ length: 30 }, (_, i) => `r${i}.badkey.test`),
      },
    ],
  };
}

/** Counts the validation work of every answer passing through (the check path's resolver). */
class Counting implements Resolver {
  verifications = 0;
  hashes = 0;
  yields = 0;
  constructor(private readonly inner: Resolver) {}
  async lookup<T extends QueryType>(name: string, type: T): Promise<DnsAnswer<T>> {
    const a = await this.inner.lookup(name, type);
    this.verifications += a.work?.verifications ?? 0;
    this.hashes += a.work?.nsec3Hashes ?? 0;
    this.yields += a.work?.yields ?? 0;
    return a;
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** The slowest NOOP round trip to `port` while `busy` runs. */
async function noopProbe(port: number): Promise<{ stop: () => Promise<number> }> {
  const sock = net.connect(port, '127.0.0.1');
  let buf = '';
  let waiting: (() => void) | undefined;
  sock.on('data', (d) => {
    buf += d.toString();
    if (buf.endsWith('\r\n')) {
      buf = '';
      waiting?.();
    }
  });
  await new Promise<void>((r) => {
    waiting = r;
  });
  let running = true;
  let max = 0;
  const loop = (async () => {
    while (running) {
      const t0 = performance.now();
      await new Promise<void>((r) => {
        waiting = r;
        sock.write('NOOP\r\n');
      });
      max = Math.max(max, performance.now() - t0);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      sock.destroy();
      return max;
    },
  };
}

interface Sample {
  cpuMs: number;
  stallMs: number;
  rttMs: number;
  verifications: number;
  hashes: number;
  yields: number;
  hostsPlanned: number;
  verdict: string;
}

async function once(t: Tree, a: Attack, smtpPort: number): Promise<Sample> {
  const r = new Counting(t.resolver());
  const deps: InspectDeps = {
    resolver: r,
    selfNames: ['relay.invalid'],
    heloName: 'relay.invalid',
    port: 1,
    digestPreference: ['sha512', 'sha256'],
    now: Date.now,
    diagnose: false,
    timeouts: { connect: 2000, greeting: 2000, ehlo: 2000, starttls: 2000, mail: 2000, rcpt: 2000, data: 2000, data_block: 2000, data_done: 2000 },
    ...(a.hostLimit !== undefined ? { mxHostLimit: a.hostLimit } : {}),
  };
  const probe = await noopProbe(smtpPort);
  let last = performance.now();
  let stall = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - last);
    last = now;
  }, 1);
  const cpu0 = process.cpuUsage();
  let report: InspectReport | undefined;
  let verdict = '';
  if (a.names) {
    const kinds = new Map<string, number>();
    for (const n of a.names) {
      const ans = await r.lookup(n, 'A');
      kinds.set(ans.status, (kinds.get(ans.status) ?? 0) + 1);
    }
    verdict = [...kinds].map(([k, v]) => `${v} ${k}`).join(', ');
  } else {
    report = await inspectDomain(a.domain, { level: 'dane', rule: 'bench' }, deps);
    verdict = `${report.verdict.kind}${report.budget ? ' (work budget spent)' : ''}`;
  }
  const c = process.cpuUsage(cpu0);
  clearInterval(tick);
  const rtt = await probe.stop();
  await r.close();
  return {
    cpuMs: (c.user + c.system) / 1000,
    stallMs: stall,
    rttMs: rtt,
    verifications: r.verifications,
    hashes: r.hashes,
    yields: r.yields,
    hostsPlanned: report?.hosts.length ?? 0,
    verdict,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
};

async function main(): Promise<void> {
  const { t, attacks } = await world();
  const smtp = new SMTPServer({ disabledCommands: ['AUTH', 'STARTTLS'], logger: false });
  await new Promise<void>((r) => smtp.listen(0, '127.0.0.1', () => r()));
  const smtpPort = (smtp.server.address() as net.AddressInfo).port;
  const rows: string[] = [];
  try {
    for (const a of attacks) {
      const runs: Sample[] = [];
      for (let i = 0; i < N; i++) runs.push(await once(t, a, smtpPort));
      const m = (f: (s: Sample) => number): number => median(runs.map(f));
      const row = `| ${a.name} | ${a.what} | ${m((s) => s.cpuMs).toFixed(0)} | ${m((s) => s.stallMs).toFixed(1)} | ${m((s) => s.rttMs).toFixed(1)} | ${m((s) => s.hostsPlanned)} | ${m((s) => s.verifications)} | ${m((s) => s.hashes)} | ${m((s) => s.yields)} | ${runs[0]!.verdict} |`;
      console.log(row);
      rows.push(row);
    }
  } finally {
    await new Promise<void>((r) => smtp.close(() => r()));
    await t.close();
  }
  const cpus = os.cpus();
  const slice = sliceCosts();
  const lines = [
    '## Hostile domains: CPU and stalls per message (issue 22)',
    '',
    `Command: \`npm run bench:dos\` (\`BENCH_N\`, default 5). ${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${cpus.length} × ${cpus[0]?.model ?? 'cpu'}, load average ${os.loadavg()[0]!.toFixed(1)} (a shared machine: absolute numbers move between runs).`,
    "Each row plans one message to the domain the way delivery does (lookupMx, planHost, the message's work budget; `dane-relay check`'s path, `tls_level: dane`) on a cold in-process",
    'validator against signed zones on loopback. CPU: process CPU time of the plan. Stall: the longest gap between two ticks of a 1 ms interval timer during the plan. NOOP RTT: the',
    'slowest SMTP NOOP round trip to an smtp-server (the ingress library) in the same process meanwhile. Work: signature verifications, NSEC3 hashes and event-loop yields the lookups reported.',
    'Medians of the runs.',
    '',
    '| attack | what | CPU ms | longest stall ms | NOOP RTT ms | hosts planned | verifications | NSEC3 hashes | yields | verdict |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    `The largest piece of validation that runs without yielding (YIELD_EVERY = ${YIELD_EVERY}, src/dnssec/budget.ts): ${YIELD_EVERY} NSEC3 hashes at 150 iterations cost`,
    `${slice.nsec3.toFixed(2)} ms CPU, ${YIELD_EVERY} P-256 verifications ${slice.p256.toFixed(2)} ms, ${YIELD_EVERY} RSA-2048 verifications ${slice.rsa.toFixed(2)} ms — the bound on the stall validation adds,`,
    "whatever the attacker publishes; the stall column above also holds the machine's own scheduling delays (a loaded 2-core box).",
    '',
  ];
  const text = lines.join('\n');
  console.log(text);
  if (process.env.BENCH_NO_WRITE) return;
  writeOwnSections(join(ROOT, 'BENCHMARKS.md'), text, (h) => h.startsWith('## Hostile domains'));
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
