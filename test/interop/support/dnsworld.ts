/**
 * A private DNSSEC world on loopback: zones signed with ldns-signzone under a PRIVATE root, served by
 * Debian's `nsd`, and `unbound` validating with that root's DS as its only trust anchor (root hints
 * point at nsd). Nothing leaves 127.0.0.0/8: the root zone is ours, so a query for a name we do not
 * serve ends in NXDOMAIN at our root, never at the Internet.
 *
 * Reusable on purpose: the DANE interop suite builds its destinations with it, and a DNSSEC
 * differential suite (in-process validator vs Unbound) can start it with `standardZones()` and
 * compare answers name by name (`names` says what each name is expected to validate as).
 *
 * Layout: every zone's NS is `ns.` (an address record in the root zone pointing at nsd), so one nsd
 * hosts the root, every TLD and every destination zone. Parents are derived from the zone list;
 * missing TLD zones are created (signed, ECDSA) automatically.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { own } from './reaper.js';

export type DnssecAlgorithm = 'RSASHA256' | 'ECDSAP256SHA256' | 'ED25519';

export interface SigningSpec {
  /** one KSK + ZSK pair per algorithm; two or more = a mixed-algorithm zone (RFC 6840 §5.11) */
  algorithms?: DnssecAlgorithm[];
  /** NSEC3 instead of NSEC (RFC 5155); optOut sets the opt-out flag on every NSEC3 RR */
  nsec3?: boolean | { optOut?: boolean; iterations?: number };
  /** signatures whose validity period ended in the past: the zone is bogus (RFC 4035 §5.3.1) */
  expired?: boolean;
  /** signatures whose validity period starts in the future: bogus too (RFC 4035 §5.3.1) */
  notYetValid?: boolean;
}

export interface ZoneSpec {
  /** zone apex without the trailing dot, e.g. "dest.tst"; "." is the root */
  name: string;
  /** zone-file lines; owner names ending in "." are absolute, others relative to the apex */
  records?: string[];
  /** undefined → signed with ECDSA P-256 and NSEC; false → unsigned */
  sign?: SigningSpec | false;
  /**
   * what the parent publishes for this zone:
   * valid (DS for the KSK), missing (signed zone, insecure delegation), wrong (a DS whose digest
   * matches no key: bogus), rollover (DS for the current KSK and for a next KSK not yet in the
   * DNSKEY RRset — double-DS KSK rollover, RFC 6781 §4.1.2),
   * extra-alg (DS for the KSK plus a DS for an unpublished key of an algorithm the zone does not
   * use: still secure, RFC 6840 §5.11), unknown-alg (the only DS names algorithm 253, which no
   * validator implements: insecure, RFC 4035 §5.2), unknown-digest (the only DS uses digest type
   * 200, unassigned: insecure, RFC 6840 §5.2)
   */
  ds?: 'valid' | 'missing' | 'wrong' | 'rollover' | 'extra-alg' | 'unknown-alg' | 'unknown-digest';
  /** RRsets whose RRSIGs are corrupted after signing (bogus answers for exactly these) */
  breakSignatures?: { owner: string; type: string }[];
  /** RRsets whose RRSIGs are removed after signing (a secure zone serving unsigned data: bogus) */
  stripSignatures?: SignatureTarget[];
  /**
   * Questions a differential asks about this zone (`DnsWorld.probes`): owner relative to the apex
   * unless it ends in ".", and what a correct validator says — by default the zone's verdict.
   */
  probes?: ProbeSpec[];
}

/** RRSIGs covering owner/type ("*" = any owner), optionally only those of one algorithm number */
export interface SignatureTarget {
  owner: string;
  type: string;
  algorithm?: number;
}

export type ProbeType = 'A' | 'MX' | 'TLSA' | 'TXT';
export type Expect = 'secure' | 'insecure' | 'bogus';

export interface ProbeSpec {
  name: string;
  type: ProbeType;
  expect?: Expect;
  /** what the question exercises, e.g. "NSEC3 NXDOMAIN" */
  note?: string;
}

export interface Probe {
  name: string;
  type: ProbeType;
  zone: string;
  expect: Expect;
  note: string;
}

export interface DnsWorld {
  /** "ip:port" of the validating resolver */
  unbound: string;
  /** "ip:port" of the authoritative server */
  nsd: string;
  /** the root DS in zone-file form (Unbound's `trust-anchor-file`) */
  trustAnchorFile: string;
  /** the root DNSKEY RRset (a validator's trust anchor) */
  rootKeysFile: string;
  dir: string;
  zones: ZoneSpec[];
  /** for each zone: its apex and what a correct validator must say about names in it */
  names: Record<string, { zone: string; expect: 'secure' | 'insecure' | 'bogus' }>;
  /** every question the zones' `probes` ask (absolute names without the trailing dot), with the verdict expected */
  probes: Probe[];
  query(name: string, type: string, server?: string): Promise<DnsAnswer>;
  stop(): Promise<void>;
}

export interface DnsAnswer {
  rcode: string;
  ad: boolean;
  answers: dnsPacket.Answer[];
}

export interface DnsWorldOptions {
  zones: ZoneSpec[];
  /**
   * Also serve the names of the relay's DNSSEC self-test (src/dns/selftest.ts: ietf.org signed,
   * dnssec-failed.org with a broken signature), as the real Internet does; default true. In trust-ad
   * mode a failing self-test holds every delivery that needs DANE (issue 13).
   */
  selfTestZones?: boolean;
  /** default 127.0.53.1 port 10053 (Unbound reaches it through a stub zone for the root, so a
   * system nsd or resolver on a wildcard :53 does not collide with it) */
  nsdAddress?: string;
  nsdPort?: number;
  /** default 127.0.53.53 port 53: Postfix's libc resolver cannot use another port */
  unboundAddress?: string;
  port?: number;
}

const NSD_BIN = '/usr/sbin/nsd';
const UNBOUND_BIN = '/usr/sbin/unbound';

const fqdn = (n: string) => (n === '.' || n === '' ? '.' : n.endsWith('.') ? n : `${n}.`);
const bare = (n: string) => (n === '.' ? '.' : n.replace(/\.$/, '').toLowerCase());

function parentOf(name: string, all: Set<string>): string {
  if (name === '.') throw new Error('the root has no parent');
  const labels = name.split('.');
  for (let i = 1; i < labels.length; i++) {
    const p = labels.slice(i).join('.');
    if (all.has(p)) return p;
  }
  return '.';
}

/** Zones under test plus the root and any TLD they need. Order: children before parents. */
function completeZones(zones: ZoneSpec[]): ZoneSpec[] {
  const byName = new Map<string, ZoneSpec>();
  for (const z of zones) byName.set(bare(z.name), { ...z, name: bare(z.name) });
  if (!byName.has('.')) byName.set('.', { name: '.' });
  for (const z of [...byName.values()]) {
    if (z.name === '.') continue;
    const tld = z.name.split('.').pop()!;
    if (!byName.has(tld)) byName.set(tld, { name: tld });
  }
  const depth = (n: string) => (n === '.' ? 0 : n.split('.').length);
  return [...byName.values()].sort((a, b) => depth(b.name) - depth(a.name));
}

async function assertFree(host: string, port: number, what: string): Promise<void> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `${what}: ${host}:${port} is not available (${e.code}). Something else (a system ${what} service?) ` +
            'is listening there; the interop harness never stops system services — stop it or free the address.',
        ),
      ),
    );
    s.listen({ host, port, exclusive: true }, () => resolve());
  });
  await new Promise((r) => s.close(r));
}

function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr || err.message}`);
  }
}

interface Keys {
  ksk: string[];
  zsk: string[];
  dsLines: string[];
  nextDs: string[];
}

function keygen(dir: string, zone: string, alg: DnssecAlgorithm, ksk: boolean): string {
  const args = ['-a', alg];
  if (alg === 'RSASHA256') args.push('-b', '2048');
  if (ksk) args.push('-k');
  args.push(fqdn(zone));
  return run('ldns-keygen', args, dir).trim();
}

function dsOf(dir: string, base: string): string {
  // SHA-256 digest (RFC 4509); -n prints to stdout
  return run('ldns-key2ds', ['-n', '-2', `${base}.key`], dir).trim();
}

function corruptDs(line: string): string {
  const parts = line.split(/\s+/);
  const digest = parts[parts.length - 1]!;
  parts[parts.length - 1] = digest.slice(0, -4) + (digest.endsWith('0000') ? '1111' : '0000');
  return parts.join('\t');
}

function timestamp(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/** Remove every RRSIG a target names; each target must remove at least one. */
function stripSignatures(signed: string, targets: SignatureTarget[]): string {
  const hits = targets.map(() => 0);
  const out = signed.split('\n').filter((line) => {
    const f = line.split(/\s+/);
    if (f.length < 13 || f[3] !== 'RRSIG') return true;
    const t = targets.findIndex(
      (x) =>
        (x.owner === '*' || fqdn(x.owner).toLowerCase() === f[0]!.toLowerCase()) &&
        x.type.toUpperCase() === f[4]!.toUpperCase() &&
        (x.algorithm === undefined || Number(f[5]) === x.algorithm),
    );
    if (t < 0) return true;
    hits[t]!++;
    return false;
  });
  const missed = targets.filter((_, i) => hits[i] === 0);
  if (missed.length) throw new Error(`stripSignatures: no RRSIG for ${missed.map((m) => `${m.owner}/${m.type}`).join(', ')}`);
  return out.join('\n');
}

/** The DS line with one RDATA field replaced (RFC 4034 §5.3: 0 key tag, 1 algorithm, 2 digest type, 3 digest). */
function withDsField(line: string, field: number, value: number): string {
  const parts = line.split(/\s+/);
  const i = parts.indexOf('DS');
  parts[i + 1 + field] = String(value);
  return parts.join('\t');
}

/** Flip bits in the signature of every RRSIG covering owner/type (it stays valid base64). */
function breakSignatures(signed: string, targets: { owner: string; type: string }[]): string {
  const want = new Set(targets.map((t) => `${fqdn(t.owner).toLowerCase()}|${t.type.toUpperCase()}`));
  let hits = 0;
  const out = signed.split('\n').map((line) => {
    const f = line.split(/\s+/);
    if (f.length < 13 || f[3] !== 'RRSIG') return line;
    if (!want.has(`${f[0]!.toLowerCase()}|${f[4]!.toUpperCase()}`)) return line;
    hits++;
    const sig = f.slice(12).join('');
    const i = Math.floor(sig.length / 2);
    const c = sig[i] === 'A' ? 'B' : 'A';
    return [...f.slice(0, 12), sig.slice(0, i) + c + sig.slice(i + 1)].join('\t');
  });
  if (hits < want.size) throw new Error(`breakSignatures: found ${hits} RRSIGs for ${[...want].join(', ')}`);
  return out.join('\n');
}

export const NS_NAME = 'ns.';

/** Build, sign and serve the zones; resolve when Unbound answers a validated root query. */
/** The self-test's names (SelfTestResult's defaults) under the private root: one signed, one with a broken signature. */
export const SELFTEST_ZONES: ZoneSpec[] = [
  { name: 'ietf.org', records: ['@ A 127.0.99.80', 'txt TXT "dane-relay self-test: signed"'] },
  {
    name: 'dnssec-failed.org',
    records: ['@ A 127.0.99.81', 'txt TXT "dane-relay self-test: broken"'],
    breakSignatures: [{ owner: 'dnssec-failed.org', type: 'A' }],
  },
];

export async function startDnsWorld(opts: DnsWorldOptions): Promise<DnsWorld> {
  const nsdIp = opts.nsdAddress ?? '127.0.53.1';
  const unboundIp = opts.unboundAddress ?? '127.0.53.53';
  const port = opts.port ?? 53;
  const nsdPort = opts.nsdPort ?? 10053;
  await assertFree(nsdIp, nsdPort, 'nsd');
  await assertFree(unboundIp, port, 'unbound');

  const dir = mkdtempSync(join(tmpdir(), 'dane-relay-dnsworld-'));
  const keysDir = join(dir, 'keys');
  const zonesDir = join(dir, 'zones');
  mkdirSync(keysDir);
  mkdirSync(zonesDir);
  const zones = completeZones([...opts.zones, ...(opts.selfTestZones === false ? [] : SELFTEST_ZONES)]);
  const all = new Set(zones.map((z) => z.name));
  const childrenOf = new Map<string, ZoneSpec[]>();
  for (const z of zones) {
    if (z.name === '.') continue;
    const p = parentOf(z.name, all);
    childrenOf.set(p, [...(childrenOf.get(p) ?? []), z]);
  }
  const keys = new Map<string, Keys>();
  const now = Date.now();

  try {
    // Children first: a parent needs its children's DS before it is signed.
    for (const z of zones) {
      const origin = fqdn(z.name);
      const lines = [
        `$ORIGIN ${origin}`,
        '$TTL 300',
        `@ 300 IN SOA ${NS_NAME} hostmaster.${origin === '.' ? '' : origin} ${Math.floor(now / 1000)} 3600 600 86400 300`,
        `@ 300 IN NS ${NS_NAME}`,
      ];
      if (z.name === '.') lines.push(`${NS_NAME} 300 IN A ${nsdIp}`);
      lines.push(...(z.records ?? []));
      for (const c of childrenOf.get(z.name) ?? []) {
        lines.push(`${fqdn(c.name)} 300 IN NS ${NS_NAME}`);
        const ck = keys.get(c.name);
        const mode = c.ds ?? 'valid';
        if (!ck || mode === 'missing') continue;
        if (mode === 'wrong') lines.push(...ck.dsLines.map(corruptDs));
        else if (mode === 'unknown-alg') lines.push(...ck.dsLines.map((l) => withDsField(l, 1, 253)));
        else if (mode === 'unknown-digest') lines.push(...ck.dsLines.map((l) => withDsField(l, 2, 200)));
        else lines.push(...ck.dsLines, ...(mode === 'rollover' || mode === 'extra-alg' ? ck.nextDs : []));
      }
      const file = join(zonesDir, `${z.name === '.' ? 'root' : z.name}.zone`);
      writeFileSync(file, `${lines.join('\n')}\n`);
      if (z.sign === false) {
        writeFileSync(`${file}.signed`, readFileSync(file));
        continue;
      }
      const spec = z.sign ?? {};
      const algs = spec.algorithms ?? ['ECDSAP256SHA256'];
      const k: Keys = { ksk: [], zsk: [], dsLines: [], nextDs: [] };
      for (const alg of algs) {
        const ksk = keygen(keysDir, z.name, alg, true);
        k.ksk.push(ksk);
        k.zsk.push(keygen(keysDir, z.name, alg, false));
        k.dsLines.push(dsOf(keysDir, ksk));
      }
      if (z.ds === 'rollover') k.nextDs.push(dsOf(keysDir, keygen(keysDir, z.name, algs[0]!, true)));
      if (z.ds === 'extra-alg') {
        const other = (['ED25519', 'ECDSAP256SHA256', 'RSASHA256'] as const).find((a) => !algs.includes(a))!;
        k.nextDs.push(dsOf(keysDir, keygen(keysDir, z.name, other, true)));
      }
      keys.set(z.name, k);
      const args: string[] = ['-f', `${file}.signed`, '-o', origin];
      if (spec.notYetValid) args.push('-i', timestamp(new Date(now + 30 * 86400_000)), '-e', timestamp(new Date(now + 60 * 86400_000)));
      else if (spec.expired) args.push('-i', timestamp(new Date(now - 60 * 86400_000)), '-e', timestamp(new Date(now - 30 * 86400_000)));
      else args.push('-i', timestamp(new Date(now - 3600_000)), '-e', timestamp(new Date(now + 30 * 86400_000)));
      if (spec.nsec3) {
        // RFC 9276 §3.1: zero extra iterations, no salt (Unbound treats high counts as insecure)
        args.push('-n', '-t', String(typeof spec.nsec3 === 'object' ? (spec.nsec3.iterations ?? 0) : 0));
        if (typeof spec.nsec3 === 'object' && spec.nsec3.optOut) args.push('-p');
      }
      args.push(file, ...k.ksk.map((b) => join(keysDir, b)), ...k.zsk.map((b) => join(keysDir, b)));
      run('ldns-signzone', args, keysDir);
      if (z.breakSignatures?.length) writeFileSync(`${file}.signed`, breakSignatures(readFileSync(`${file}.signed`, 'utf8'), z.breakSignatures));
      if (z.stripSignatures?.length) writeFileSync(`${file}.signed`, stripSignatures(readFileSync(`${file}.signed`, 'utf8'), z.stripSignatures));
    }
  } catch (e) {
    rmSync(dir, { recursive: true, force: true }); // a key or signing failure leaves nothing behind
    throw e;
  }

  const root = keys.get('.')!;
  const trustAnchorFile = join(dir, 'root.ds');
  writeFileSync(trustAnchorFile, `${root.dsLines.join('\n')}\n`);
  const rootKeysFile = join(dir, 'root.keys');
  writeFileSync(
    rootKeysFile,
    root.ksk
      .map((b) =>
        readFileSync(join(keysDir, `${b}.key`), 'utf8')
          .replace(/;.*$/gm, '')
          .trim(),
      )
      .join('\n') + '\n',
  );

  writeFileSync(
    join(dir, 'nsd.conf'),
    [
      'server:',
      `  ip-address: ${nsdIp}@${nsdPort}`,
      '  do-ip6: no',
      '  username: ""',
      '  chroot: ""',
      `  zonesdir: "${zonesDir}"`,
      '  database: ""',
      `  pidfile: "${join(dir, 'nsd.pid')}"`,
      `  logfile: "${join(dir, 'nsd.log')}"`,
      `  xfrdfile: "${join(dir, 'xfrd.state')}"`,
      `  zonelistfile: "${join(dir, 'zone.list')}"`,
      `  xfrdir: "${dir}"`,
      '  server-count: 1',
      '  verbosity: 1',
      '  hide-version: yes',
      '  refuse-any: yes',
      'remote-control:',
      '  control-enable: no',
      ...zones.flatMap((z) => ['zone:', `  name: "${fqdn(z.name)}"`, `  zonefile: "${z.name === '.' ? 'root' : z.name}.zone.signed"`]),
    ].join('\n') + '\n',
  );
  writeFileSync(
    join(dir, 'unbound.conf'),
    [
      'server:',
      `  interface: ${unboundIp}@${port}`,
      `  outgoing-interface: ${unboundIp}`,
      '  do-ip6: no',
      '  do-not-query-localhost: no',
      '  username: ""',
      '  chroot: ""',
      `  directory: "${dir}"`,
      `  pidfile: "${join(dir, 'unbound.pid')}"`,
      '  use-syslog: no',
      `  logfile: "${join(dir, 'unbound.log')}"`,
      '  verbosity: 1',
      '  val-log-level: 2',
      `  trust-anchor-file: "${trustAnchorFile}"`,
      '  access-control: 127.0.0.0/8 allow',
      // deterministic answers per case: no synthesis from cached NSEC, no stale answers, no prefetch
      '  aggressive-nsec: no',
      '  serve-expired: no',
      '  prefetch: no',
      '  qname-minimisation: no',
      '  num-threads: 1',
      '  so-reuseport: no',
      '  module-config: "validator iterator"',
      '  val-bogus-ttl: 5',
      '  infra-host-ttl: 60',
      // nsd listens on its own port, which NS records cannot say: one stub zone per hosted zone
      // (the root's replaces root hints) sends every query to it; validation still walks DS → DNSKEY
      ...zones.flatMap((z) => ['stub-zone:', `  name: "${fqdn(z.name)}"`, `  stub-addr: ${nsdIp}@${nsdPort}`, '  stub-prime: no']),
      'remote-control:',
      '  control-enable: no',
    ].join('\n') + '\n',
  );

  const procs: ChildProcess[] = [];
  const logs = { nsd: '', unbound: '' };
  const stop = async () => {
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null || p.signalCode !== null) return resolve();
            const t = setTimeout(() => p.kill('SIGKILL'), 3000);
            p.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            p.kill('SIGTERM');
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    run('nsd-checkconf', [join(dir, 'nsd.conf')], dir);
    const nsd = spawn(NSD_BIN, ['-d', '-c', join(dir, 'nsd.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(nsd);
    own(nsd);
    nsd.stdout!.on('data', (d) => {
      logs.nsd += d;
    });
    nsd.stderr!.on('data', (d) => {
      logs.nsd += d;
    });
    await waitFor(
      async () => (await query(`${nsdIp}:${nsdPort}`, '.', 'SOA', false)).rcode === 'NOERROR',
      () => `nsd did not start: ${logs.nsd}${safeRead(join(dir, 'nsd.log'))}`,
      nsd,
    );
    const unbound = spawn(UNBOUND_BIN, ['-d', '-c', join(dir, 'unbound.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(unbound);
    own(unbound);
    unbound.stdout!.on('data', (d) => {
      logs.unbound += d;
    });
    unbound.stderr!.on('data', (d) => {
      logs.unbound += d;
    });
    await waitFor(
      async () => {
        const a = await query(`${unboundIp}:${port}`, '.', 'SOA');
        return a.rcode === 'NOERROR' && a.ad;
      },
      () => `unbound did not validate the private root: ${logs.unbound}${safeRead(join(dir, 'unbound.log'))}`,
      unbound,
    );
  } catch (e) {
    await stop();
    throw e;
  }

  const names: DnsWorld['names'] = {};
  const expectOf = (z: ZoneSpec): 'secure' | 'insecure' | 'bogus' => {
    if (z.name === '.') return 'secure';
    const parent = expectOf(zones.find((p) => p.name === parentOf(z.name, all))!);
    if (parent !== 'secure') return parent;
    if (z.sign === false || z.ds === 'missing') return 'insecure';
    if (z.ds === 'unknown-alg') return 'insecure';
    if (z.ds === 'unknown-digest') return 'insecure';
    // no trusted DNSKEY RRset, no trusted key: everything in the zone is bogus (RFC 4035 §5.2)
    if (z.breakSignatures?.some((t) => bare(t.owner) === z.name && t.type.toUpperCase() === 'DNSKEY')) return 'bogus';
    if (z.ds === 'wrong' || (z.sign && (z.sign.expired || z.sign.notYetValid))) return 'bogus';
    return 'secure';
  };
  for (const z of zones) names[z.name] = { zone: z.name, expect: expectOf(z) };
  const probes: Probe[] = zones.flatMap((z) =>
    (z.probes ?? []).map((p) => ({
      name: bare(p.name.endsWith('.') ? p.name : p.name === '@' ? fqdn(z.name) : `${p.name}.${z.name === '.' ? '' : fqdn(z.name)}`),
      type: p.type,
      zone: z.name,
      expect: p.expect ?? expectOf(z),
      note: p.note ?? '',
    })),
  );

  return {
    unbound: `${unboundIp}:${port}`,
    nsd: `${nsdIp}:${nsdPort}`,
    trustAnchorFile,
    rootKeysFile,
    dir,
    zones,
    names,
    probes,
    query: (name, type, server = `${unboundIp}:${port}`) => query(server, name, type),
    stop,
  };
}

function safeRead(f: string): string {
  try {
    return readFileSync(f, 'utf8');
  } catch {
    return '';
  }
}

async function waitFor(ok: () => Promise<boolean>, msg: () => string, proc: ChildProcess, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(msg());
    try {
      if (await ok()) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(msg());
}

/** One UDP query with EDNS DO (RD set): rcode, AD and the answer section. */
export function query(server: string, name: string, type: string, rd = true, timeoutMs = 3000): Promise<DnsAnswer> {
  const i = server.lastIndexOf(':');
  const host = server.slice(0, i);
  const port = Number(server.slice(i + 1));
  const id = Math.floor(Math.random() * 65535);
  const msg = dnsPacket.encode({
    type: 'query',
    id,
    flags: (rd ? dnsPacket.RECURSION_DESIRED : 0) | dnsPacket.AUTHENTIC_DATA,
    questions: [{ type: type as dnsPacket.RecordType, name: name === '.' ? '.' : bare(name), class: 'IN' }],
    additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, flags: dnsPacket.DNSSEC_OK } as dnsPacket.Answer],
  });
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error(`query ${name}/${type} to ${server}: timeout`));
    }, timeoutMs);
    s.on('message', (buf) => {
      const p = dnsPacket.decode(buf);
      if (p.id !== id) return;
      clearTimeout(t);
      s.close();
      resolve({ rcode: (p as { rcode?: string }).rcode ?? 'NOERROR', ad: ((p.flags ?? 0) & dnsPacket.AUTHENTIC_DATA) !== 0, answers: p.answers ?? [] });
    });
    s.on('error', (e) => {
      clearTimeout(t);
      s.close();
      reject(e);
    });
    s.bind(0, '127.0.0.1', () => s.send(msg, port, host));
  });
}

/**
 * The zones a DNSSEC differential needs, under the TLD `dnssec.` (expectation per zone in `names`,
 * per question in `probes`): NSEC, NSEC3, NSEC3 opt-out (with an unsigned delegation), Ed25519,
 * ECDSA, RSA, mixed algorithms, a KSK rollover in progress, a missing DS, an unsigned zone, a DS for
 * an extra algorithm the zone does not use, a DS for an algorithm no validator implements, expired
 * signatures, signatures not yet valid, a wrong DS, a DS with an unknown digest type, NSEC3 at 150
 * and 151 iterations, a broken DNSKEY signature, unsigned NSEC records, an RRset with a broken
 * signature, an RRset stripped of its signature (and one stripped of one of its two algorithms),
 * and aliases from a secure zone into insecure and bogus ones.
 *
 * Every zone holds an A, MX, TLSA, TXT and a wildcard, and is asked for each of them, for a name
 * that does not exist (NXDOMAIN), for types the names do not have (NODATA, also at the empty
 * non-terminal `_tcp.www`) and for a wildcard expansion and a wildcard NODATA.
 */
export function standardZones(tld = 'dnssec'): ZoneSpec[] {
  const tlsa = `_25._tcp.www TLSA 3 1 1 ${'ab'.repeat(32)}`;
  const host = (extra: string[] = []) => ['@ A 127.0.99.1', 'www A 127.0.99.2', 'txt TXT "hello"', '@ MX 10 www', tlsa, '*.wild A 127.0.99.3', ...extra];
  const ask = (extra: ProbeSpec[] = []): ProbeSpec[] => [
    { name: '@', type: 'A' },
    { name: 'www', type: 'A' },
    { name: '@', type: 'MX', note: 'MX' },
    { name: '_25._tcp.www', type: 'TLSA', note: 'TLSA' },
    { name: 'txt', type: 'TXT' },
    { name: 'nope', type: 'A', note: 'NXDOMAIN' },
    { name: '_25._tcp.nope', type: 'TLSA', note: 'NXDOMAIN' },
    { name: 'www', type: 'TLSA', note: 'NODATA' },
    { name: 'www', type: 'MX', note: 'NODATA' },
    { name: '_tcp.www', type: 'TLSA', note: 'NODATA at an empty non-terminal' },
    { name: 'x.wild', type: 'A', note: 'wildcard expansion' },
    { name: 'x.wild', type: 'TLSA', note: 'wildcard NODATA' },
    ...extra,
  ];
  /** `except`: probes ("name" or "name|type") whose verdict differs from the zone's, and why */
  const zone = (z: ZoneSpec, extraProbes: ProbeSpec[] = [], except: Record<string, Expect> = {}, why = ''): ZoneSpec => ({
    records: host(),
    ...z,
    probes: ask(extraProbes).map((p) => {
      const e = except[`${p.name}|${p.type}`] ?? except[p.name];
      return e ? { ...p, expect: e, note: `${p.note ?? ''} ${why}`.trim() } : p;
    }),
  });
  const abs = (n: string) => `${n}.${tld}.`;
  return [
    zone(
      {
        name: `nsec.${tld}`,
        records: host([
          `to-insecure CNAME ${abs('www.missing-ds')}`,
          `to-unsigned CNAME ${abs('www.unsigned')}`,
          `to-bogus CNAME ${abs('www.wrong-ds')}`,
          `to-badsig CNAME ${abs('www.badsig')}`,
          `to-nxdomain CNAME ${abs('nope.nsec3')}`,
          `to-secure CNAME ${abs('www.nsec3')}`,
        ]),
      },
      [
        { name: 'to-insecure', type: 'A', expect: 'insecure', note: 'CNAME into an insecure delegation' },
        { name: 'to-unsigned', type: 'A', expect: 'insecure', note: 'CNAME into an unsigned zone' },
        { name: 'to-bogus', type: 'A', expect: 'bogus', note: 'CNAME into a bogus zone (wrong DS)' },
        { name: 'to-badsig', type: 'A', expect: 'bogus', note: 'CNAME to a bogus RRset' },
        { name: 'to-nxdomain', type: 'A', expect: 'secure', note: 'CNAME to a secure NXDOMAIN' },
        { name: 'to-secure', type: 'TLSA', expect: 'secure', note: 'CNAME to a secure NODATA' },
      ],
    ),
    zone({ name: `nsec3.${tld}`, sign: { nsec3: true } }),
    // ldns-signzone -p sets opt-out on every NSEC3, so the next closer name of anything absent is
    // in an opt-out span: it may be an unsigned delegation, so neither its absence nor a wildcard
    // expansion at it is authenticated (RFC 5155 §12.2: "this also includes signed wildcard
    // expansions ... its expanded name is an unsigned name") — insecure, as Unbound says.
    zone(
      { name: `optout.${tld}`, sign: { nsec3: { optOut: true } } },
      [{ name: 'www.unsigned-child', type: 'A', expect: 'insecure', note: 'below an opt-out unsigned delegation' }],
      { nope: 'insecure', '_25._tcp.nope': 'insecure', 'x.wild': 'insecure' },
      'over an opt-out span',
    ),
    { name: `unsigned-child.optout.${tld}`, records: host(), sign: false },
    zone({ name: `ed25519.${tld}`, sign: { algorithms: ['ED25519'] } }),
    zone({ name: `ecdsa.${tld}`, sign: { algorithms: ['ECDSAP256SHA256'] } }),
    zone({ name: `rsa.${tld}`, sign: { algorithms: ['RSASHA256'] } }),
    zone({ name: `mixed.${tld}`, sign: { algorithms: ['ECDSAP256SHA256', 'ED25519'] } }),
    zone({ name: `rollover.${tld}`, ds: 'rollover' }),
    zone({ name: `extra-alg.${tld}`, ds: 'extra-alg' }),
    zone({ name: `unknown-alg.${tld}`, ds: 'unknown-alg' }),
    zone({ name: `missing-ds.${tld}`, ds: 'missing' }),
    zone({ name: `unsigned.${tld}`, sign: false, records: host([`to-secure CNAME ${abs('www.nsec')}`]) }, [
      { name: 'to-secure', type: 'A', expect: 'insecure', note: 'insecure CNAME to a secure name' },
    ]),
    zone({ name: `expired.${tld}`, sign: { expired: true } }),
    zone({ name: `not-yet-valid.${tld}`, sign: { notYetValid: true } }),
    zone({ name: `unknown-digest.${tld}`, ds: 'unknown-digest' }),
    // RFC 9276 §3.2 / Unbound 1.17: up to 150 extra iterations are validated, above that the
    // denial is treated as insecure (positive answers stay secure)
    zone({ name: `iter150.${tld}`, sign: { nsec3: { iterations: 150 } } }),
    zone(
      { name: `iter151.${tld}`, sign: { nsec3: { iterations: 151 } } },
      [],
      { nope: 'insecure', '_25._tcp.nope': 'insecure', 'www|TLSA': 'insecure', 'www|MX': 'insecure', '_tcp.www': 'insecure', 'x.wild': 'insecure' },
      '(NSEC3 iterations above 150)',
    ),
    // the DNSKEY RRset's own signature is broken: no key of the zone is trusted
    zone({ name: `bad-dnskey-sig.${tld}`, breakSignatures: [{ owner: `bad-dnskey-sig.${tld}`, type: 'DNSKEY' }] }),
    // every NSEC unsigned: no denial and no wildcard expansion can be proven (RFC 4035 §5.4)
    zone(
      { name: `unsigned-nsec.${tld}`, stripSignatures: [{ owner: '*', type: 'NSEC' }] },
      [],
      { nope: 'bogus', '_25._tcp.nope': 'bogus', 'www|TLSA': 'bogus', 'www|MX': 'bogus', '_tcp.www': 'bogus', 'x.wild': 'bogus' },
      '(NSEC RRSIGs removed)',
    ),
    // mixed algorithms, one algorithm's signature missing on one RRset: any valid path is enough
    // (RFC 6840 §5.11; Unbound's harden-algo-downgrade is off by default)
    zone({
      name: `mixed-half.${tld}`,
      sign: { algorithms: ['ECDSAP256SHA256', 'ED25519'] },
      stripSignatures: [{ owner: `www.mixed-half.${tld}`, type: 'A', algorithm: 15 }],
    }),
    zone({ name: `wrong-ds.${tld}`, ds: 'wrong' }),
    zone({ name: `badsig.${tld}`, breakSignatures: [{ owner: `www.badsig.${tld}`, type: 'A' }] }, [], { 'www|A': 'bogus' }, '(RRSIG damaged)'),
    zone({ name: `nosig.${tld}`, stripSignatures: [{ owner: `www.nosig.${tld}`, type: 'A' }] }, [], { 'www|A': 'bogus' }, '(RRSIG removed)'),
  ];
}
