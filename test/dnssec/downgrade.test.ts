/**
 * Issue 13, "find the class": a downgrade search for the validator. Every code path that can produce
 * an `insecure` verdict is listed below (PRODUCERS, the same table as ARCHITECTURE.md "Where insecure
 * comes from") with the proof it requires, and for each path a test shows the legitimate insecure
 * answer (with its reason) and that the same answer WITHOUT the proof — stripped, replayed or forged,
 * the way an on-path attacker or a lying upstream could — is bogus or indeterminate, never insecure.
 *
 * The table is checked against the source: every line of src/dnssec/*.ts and src/dns/*.ts that
 * produces `insecure` is attributed to its enclosing function, and the per-function counts must equal
 * the table. A new producer cannot be added without a row here (and, by the row's `tests`, a test).
 *
 * Signed zones: test/support/signer.ts, served on loopback by test/support/signedDnsServer.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { dsRdata, dsText, rd, type Rec } from '../support/signer.js';
import { ZoneSet, type Reply } from '../support/signedDnsServer.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { StubResolver, statusFromFlags } from '../../src/dns/stub.js';
import type { DnsAnswer, QueryType } from '../../src/dns/types.js';

const ROOT = join(import.meta.dirname, '..', '..');

/**
 * Every producer of `insecure`: file, enclosing function, how many producing lines it has, the
 * reasons it can give, the proof it requires, and the tests (names start with `issue13-downgrade`)
 * that show the same answer without the proof is an error.
 */
const PRODUCERS: { file: string; fn: string; lines: number; reasons: string[]; proof: string; tests: string[] }[] = [
  {
    file: 'src/dnssec/chain.ts',
    fn: 'walk',
    lines: 1,
    reasons: ['no-trust-anchor'],
    proof: 'configuration: no trust anchor at or above the name',
    tests: ['issue13-downgrade no-trust-anchor'],
  },
  {
    file: 'src/dnssec/chain.ts',
    fn: 'anchorKeys',
    lines: 1,
    reasons: ['unsupported-algorithm'],
    proof: 'configuration: the anchor lists only algorithms/digests we do not implement',
    tests: ['issue13-downgrade anchor-algorithm'],
  },
  {
    file: 'src/dnssec/chain.ts',
    fn: 'computeStep',
    lines: 2,
    reasons: ['unsupported-algorithm', 'unsigned-delegation', 'opt-out'],
    proof: 'a DS RRset validated by the parent listing only unsupported algorithms; or a validated cut proof (nsecCut / nsec3Cut)',
    tests: ['issue13-downgrade ds-algorithm', 'issue13-downgrade nsec-cut', 'issue13-downgrade nsec3-cut', 'issue13-downgrade nsec3-opt-out-cut'],
  },
  {
    file: 'src/dnssec/nsec.ts',
    fn: 'nsecCut',
    lines: 1,
    reasons: ['unsigned-delegation'],
    proof: 'an NSEC signed by the parent, owned by the name, NS without DS and SOA (RFC 4035 §5.2)',
    tests: ['issue13-downgrade nsec-cut'],
  },
  {
    file: 'src/dnssec/nsec3.ts',
    fn: 'nsec3Cut',
    lines: 2,
    reasons: ['unsigned-delegation', 'opt-out'],
    proof:
      'an NSEC3 matching the name with NS without DS/SOA, or the closest encloser proof with an opt-out NSEC3 covering the next closer name (RFC 5155 §8.6)',
    tests: ['issue13-downgrade nsec3-cut', 'issue13-downgrade nsec3-opt-out-cut', 'issue13-downgrade nsec3-iterations cut'],
  },
  {
    file: 'src/dnssec/nsec3.ts',
    fn: 'nsec3ProveNxdomain',
    lines: 1,
    reasons: ['opt-out'],
    proof: 'closest encloser, next closer covered by an opt-out NSEC3, wildcard covered (RFC 5155 §8.4)',
    tests: ['issue13-downgrade nsec3-opt-out-denial'],
  },
  {
    file: 'src/dnssec/nsec3.ts',
    fn: 'nsec3ProveNodata',
    lines: 2,
    reasons: ['opt-out'],
    proof: 'DS NODATA under an opt-out span (§8.6) or wildcard NODATA whose next closer is in one (§8.7)',
    tests: ['issue13-downgrade nsec3-opt-out-denial'],
  },
  {
    file: 'src/dnssec/nsec3.ts',
    fn: 'nsec3ProveWildcardAnswer',
    lines: 1,
    reasons: ['opt-out'],
    proof: 'the next closer name of the expansion covered by an opt-out NSEC3 (§8.8)',
    tests: ['issue13-downgrade nsec3-opt-out-wildcard'],
  },
  {
    file: 'src/dnssec/resolver.ts',
    fn: 'follow',
    lines: 1,
    reasons: ["(any hop's)"],
    proof: 'every hop (alias, answer) validated; one insecure hop makes the answer insecure (DANE-5)',
    tests: ['issue13-downgrade alias'],
  },
  {
    file: 'src/dnssec/resolver.ts',
    fn: 'validateRRset',
    lines: 1,
    reasons: ["(the walk's)"],
    proof: 'no RRSIG counts and the walk to the owner ends below a proven insecure cut',
    tests: ['issue13-downgrade rrset-below-insecure-cut'],
  },
  {
    file: 'src/dnssec/resolver.ts',
    fn: 'provenVerdict',
    lines: 2,
    reasons: ['opt-out', 'nsec3-iterations'],
    proof: 'a denial or wildcard proof that passed every check; then opt-out, or NSEC3 over the iteration limit (RFC 9276 §3.2)',
    tests: [
      'issue13-downgrade nsec3-opt-out-denial',
      'issue13-downgrade nsec3-opt-out-wildcard',
      'issue13-downgrade nsec3-iterations denial',
      'issue13-downgrade nsec3-iterations wildcard',
    ],
  },
  {
    file: 'src/dnssec/resolver.ts',
    fn: 'validateDenial',
    lines: 1,
    reasons: ["(the walk's)"],
    proof: 'no denial by a secure signer counts and the walk to the name ends below a proven insecure cut',
    tests: ['issue13-downgrade denial-below-insecure-cut'],
  },
  {
    file: 'src/dns/stub.ts',
    fn: 'statusFromFlags',
    lines: 1,
    reasons: ['resolver'],
    proof: 'trust-ad: NOERROR/NXDOMAIN without AD from a resolver the trust rules accept (dns/trust.ts) while the self-test passes (else held)',
    tests: ['issue13-downgrade trust-ad'],
  },
  {
    file: 'src/dns/stub.ts',
    fn: 'resolve',
    lines: 1,
    reasons: ['resolver'],
    proof: 'every response of the alias chain from the trusted resolver; one without AD makes the answer insecure',
    tests: ['issue13-downgrade trust-ad'],
  },
];

/** Lines that produce an `insecure` verdict (not type declarations, comparisons or trace output). */
const PRODUCING = [/kind: 'insecure'/, /'secure' : 'insecure'/, /\binsecure: (true|optOut)\b/, /return 'insecure'/, /status: 'insecure'/];
const HEADER = /^(?: {2})?(?:export\s+)?(?:(?:private|public|protected|static)\s+)*(?:async\s+)?(?:function\s+)?([A-Za-z_$][\w$]*)\s*(?:<[^(]*>)?\(/;
const KEYWORDS = new Set(['if', 'for', 'while', 'switch', 'catch', 'return', 'function', 'constructor']);

function producersInSource(): Map<string, number> {
  const out = new Map<string, number>();
  const files = [
    ...readdirSync(join(ROOT, 'src/dnssec'))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => `src/dnssec/${f}`),
    ...readdirSync(join(ROOT, 'src/dns'))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => `src/dns/${f}`),
  ];
  for (const file of files) {
    const lines = readFileSync(join(ROOT, file), 'utf8').split('\n');
    let fn = '(top level)';
    for (const line of lines) {
      const h = HEADER.exec(line);
      if (h && !KEYWORDS.has(h[1]!)) fn = h[1]!;
      const code = line.replace(/\/\/.*$/, '');
      // Comments, table rows, type aliases and interface members (`status: 'insecure';` declares, it produces nothing).
      if (/^\s*(\*|\/\*|\/\/)/.test(line) || /^\s*\|/.test(line) || /\btype\b.*=/.test(code) || /^\s*\w+\??: [^,=]*;\s*$/.test(code)) continue;
      if (PRODUCING.some((p) => p.test(code))) out.set(`${file}#${fn}`, (out.get(`${file}#${fn}`) ?? 0) + 1);
    }
  }
  return out;
}

function testNamesInRepo(): string {
  const texts: string[] = [];
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name.endsWith('.test.ts')) texts.push(readFileSync(join(dir, e.name), 'utf8'));
    }
  };
  walk(join(ROOT, 'test'));
  return texts.join('\n');
}

describe('issue13 downgrade search: the list of insecure producers is complete', () => {
  it('every line that produces insecure in src/dnssec/ and src/dns/ is in the table (and nothing in the table is stale)', () => {
    const found = Object.fromEntries([...producersInSource()].sort());
    const listed = Object.fromEntries(PRODUCERS.map((p) => [`${p.file}#${p.fn}`, p.lines]).sort());
    expect(found).toEqual(listed);
  });

  it('every producer names tests that exist, and ARCHITECTURE.md lists every producer', () => {
    const tests = testNamesInRepo();
    const arch = readFileSync(join(ROOT, 'ARCHITECTURE.md'), 'utf8');
    for (const p of PRODUCERS) {
      for (const t of p.tests) expect(tests.includes(`'${t}`) || tests.includes(`\`${t}`), `${p.fn}: no test named "${t} …"`).toBe(true);
      expect(arch.includes(`\`${p.fn}\``), `ARCHITECTURE.md does not list ${p.fn}`).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Each path: the legitimate insecure answer, and the same answer without its proof.

let t: Tree;
const sigOver = (r: Rec, type: number) => r.type === 'RRSIG' && r.rdata.readUInt16BE(0) === type;
const T = { A: 1, CNAME: 5, NSEC: 47, NSEC3: 50, DS: 43, DNSKEY: 48 };
const genuine = (name: string, type: string): Reply => new ZoneSet(t.dns.zones).resolve(name, type, true);

beforeAll(async () => {
  const dz = mailZone('dz.test', { keys: [key('dg-dz', 13)] }); // NSEC
  dz.add('alias.dz.test', 'CNAME', rd.CNAME('mx.child.dz.test'));
  dz.add('secure-alias.dz.test', 'CNAME', rd.CNAME('mx.dz.test'));
  const child = mailZone('child.dz.test'); // unsigned, delegated without DS
  const dz3 = mailZone('dz3.test', { keys: [key('dg-dz3', 13)], denial: { nsec3: { iterations: 0 } } });
  const child3 = mailZone('child.dz3.test');
  const oo = mailZone('oo.test', { keys: [key('dg-oo', 13)], denial: { nsec3: { iterations: 0, optOut: true } } });
  oo.add('*.w.oo.test', 'A', rd.A('192.0.2.77'));
  const island = mailZone('island.oo.test');
  const alg = mailZone('alg.test', { keys: [key('dg-alg', 13)] });
  t = await buildTree([dz, child, dz3, child3, oo, island, alg]);
  // alg.test: its parent publishes a DS for an algorithm no validator implements (253): insecure.
  t.tld.records = t.tld.records.filter((r) => !(r.name === 'alg.test' && r.type === 'DS'));
  t.tld.add('alg.test', 'DS', dsRdata('alg.test', key('dg-alg', 13), 2, 253));
  t.resign();
}, 60_000);
afterAll(async () => t?.close());

async function ask(name: string, type: QueryType, o: { anchors?: string } = {}): Promise<DnsAnswer> {
  return (await t.resolver(o).lookupTrace(name, type)).answer;
}
async function withMutation<R>(m: NonNullable<Tree['dns']['mutate']>, f: () => Promise<R>): Promise<R> {
  t.dns.mutate = m;
  try {
    return await f();
  } finally {
    t.dns.mutate = undefined;
  }
}
const isError = (a: DnsAnswer) =>
  expect([a.status, a.error !== undefined, a.records, a.insecureReason]).toEqual([expect.stringMatching(/^(bogus|indeterminate)$/), true, [], undefined]);
const stripAllSigs = (_q: { name: string }, r: Reply): Reply => ({
  ...r,
  answers: r.answers.filter((x) => x.type !== 'RRSIG'),
  authorities: r.authorities.filter((x) => x.type !== 'RRSIG'),
});

/**
 * The attacker's move against a cut proof: a forged, unsigned answer for `name` (in a signed zone),
 * plus a genuine signed denial of another name (`replayOf`) replayed as "no DS at `names`".
 */
async function forgedBelowReplayedCut(name: string, type: 'A' | 'TLSA', replayOf: string, dsAt: (n: string) => boolean): Promise<void> {
  const replay = genuine(replayOf, 'A');
  const rdata = type === 'A' ? rd.A('192.0.2.66') : rd.TLSA(3, 1, 1, Buffer.alloc(32, 0xee));
  await withMutation(
    (q, r) => {
      if (q.type === type && q.name === name) return { rcode: 0, answers: [{ name, type, ttl: 300, rdata }], authorities: [] };
      if (q.type === 'DS' && dsAt(q.name)) return { rcode: 0, answers: [], authorities: replay.authorities };
      return r;
    },
    async () => isError(await ask(name, type)),
  );
}

describe('issue13 downgrade search: each insecure path, with and without its proof', () => {
  it('issue13-downgrade no-trust-anchor: DANE-1 a name outside every configured anchor is insecure; under its anchor the same unsigned answer is bogus', async () => {
    const dzOnly = dsText('dz.test', t.zones.get('dz.test')!.ksks[0]!);
    const a = await ask('mx.dz3.test', 'A', { anchors: dzOnly });
    expect([a.status, a.insecureReason]).toEqual(['insecure', 'no-trust-anchor']);
    await withMutation(stripAllSigs, async () => isError(await ask('mx.dz3.test', 'A')));
  });

  it('issue13-downgrade anchor-algorithm: DANE-1 an anchor of only unsupported algorithms makes its tree insecure; a supported anchor with the DNSKEY RRset stripped of signatures is bogus', async () => {
    const unsupported = `. IN DS 12345 253 2 ${'ab'.repeat(32)}\n`;
    const a = await ask('mx.dz.test', 'A', { anchors: unsupported });
    expect([a.status, a.insecureReason]).toEqual(['insecure', 'unsupported-algorithm']);
    await withMutation(
      (q, r) => (q.type === 'DNSKEY' ? stripAllSigs(q, r) : r),
      async () => isError(await ask('mx.dz.test', 'A')),
    );
  });

  it('issue13-downgrade ds-algorithm: DANE-1 a validated DS RRset of only unsupported algorithms is insecure; the same DS RRset without its RRSIG is bogus', async () => {
    const a = await ask('mx.alg.test', 'A');
    expect([a.status, a.insecureReason]).toEqual(['insecure', 'unsupported-algorithm']);
    await withMutation(
      (q, r) => (q.type === 'DS' && q.name === 'alg.test' ? { ...r, answers: r.answers.filter((x) => !sigOver(x, T.DS)) } : r),
      async () => isError(await ask('mx.alg.test', 'A')),
    );
  });

  it('issue13-downgrade nsec-cut: DANE-15 DANE-33 an unsigned delegation proven by a signed NSEC is insecure; the NSEC unsigned, or replayed from another name, is bogus', async () => {
    const a = await ask('_25._tcp.mx.child.dz.test', 'TLSA');
    expect([a.status, a.insecureReason, a.records.length]).toEqual(['insecure', 'unsigned-delegation', 1]);
    // the "no DS" proof without signatures
    await withMutation(
      (q, r) => (q.type === 'DS' ? { ...r, authorities: r.authorities.filter((x) => !sigOver(x, T.NSEC)) } : r),
      async () => isError(await ask('_25._tcp.mx.child.dz.test', 'TLSA')),
    );
    // a forged unsigned TLSA in the signed zone, with a genuine signed NSEC of another name as "no DS at mx.dz.test"
    await forgedBelowReplayedCut('_25._tcp.mx.dz.test', 'TLSA', 'nope.dz.test', (n) => n.endsWith('.dz.test'));
  });

  it('issue13-downgrade nsec3-cut: DANE-15 DANE-33 an unsigned delegation proven by NSEC3 is insecure; a replayed NSEC3 proof of another name is bogus', async () => {
    const a = await ask('mx.child.dz3.test', 'A');
    expect([a.status, a.insecureReason]).toEqual(['insecure', 'unsigned-delegation']);
    await forgedBelowReplayedCut('mx.dz3.test', 'A', 'nope.dz3.test', (n) => n === 'mx.dz3.test');
  });

  it('issue13-downgrade nsec3-opt-out-cut: DANE-15 a delegation in an opt-out span is insecure; a signed name claimed to be in one (replayed opt-out NSEC3) is bogus', async () => {
    const a = await ask('mx.island.oo.test', 'A');
    expect([a.status, a.insecureReason]).toEqual(['insecure', 'opt-out']);
    await forgedBelowReplayedCut('mx.oo.test', 'A', 'nope.oo.test', (n) => n === 'mx.oo.test');
  });

  it('issue13-downgrade nsec3-opt-out-denial: DANE-32 an NXDOMAIN over an opt-out span is insecure; the same NSEC3 records unsigned, or for another name, are bogus', async () => {
    const a = await ask('nothing.oo.test', 'A');
    expect([a.rcode, a.status, a.insecureReason]).toEqual(['NXDOMAIN', 'insecure', 'opt-out']);
    await withMutation(
      (_q, r) => ({ ...r, authorities: r.authorities.filter((x) => !sigOver(x, T.NSEC3)) }),
      async () => isError(await ask('nothing.oo.test', 'A')),
    );
    // a TLSA NODATA for a name that exists, "proven" by the opt-out records of another name's denial
    const replay = genuine('nothing.oo.test', 'A');
    await withMutation(
      (q, r) => (q.type === 'TLSA' ? { rcode: 0, answers: [], authorities: replay.authorities } : r),
      async () => isError(await ask('_25._tcp.mx.oo.test', 'TLSA')),
    );
  });

  it('issue13-downgrade nsec3-opt-out-wildcard: DANE-12 a wildcard expansion whose next closer is in an opt-out span is insecure; the expansion replayed for a name that exists is bogus', async () => {
    const a = await ask('x.w.oo.test', 'A');
    expect([a.status, a.insecureReason, a.records]).toEqual(['insecure', 'opt-out', ['192.0.2.77']]);
    const other = genuine('x.w.oo.test', 'A');
    await withMutation(
      (q, r) =>
        q.type === 'A' && q.name === 'mx.oo.test'
          ? { rcode: 0, answers: other.answers.map((x) => ({ ...x, name: q.name })), authorities: other.authorities }
          : r,
      async () => isError(await ask('mx.oo.test', 'A')),
    );
  });

  it('issue13-downgrade rrset-below-insecure-cut: DANE-15 an unsigned RRset below a proven unsigned delegation is insecure; in the signed zone the same RRset stripped of its RRSIG is bogus', async () => {
    const a = await ask('mx.child.dz.test', 'A');
    expect([a.status, a.insecureReason]).toEqual(['insecure', 'unsigned-delegation']);
    await withMutation(
      (q, r) => (q.name === 'mx.dz.test' ? { ...r, answers: r.answers.filter((x) => x.type !== 'RRSIG') } : r),
      async () => isError(await ask('mx.dz.test', 'A')),
    );
  });

  it('issue13-downgrade denial-below-insecure-cut: DANE-32 an unsigned NXDOMAIN below a proven unsigned delegation is insecure; in the signed zone an NXDOMAIN without its NSEC proof is bogus', async () => {
    const a = await ask('nope.child.dz.test', 'A');
    expect([a.rcode, a.status, a.insecureReason]).toEqual(['NXDOMAIN', 'insecure', 'unsigned-delegation']);
    await withMutation(
      (q, r) => (q.name === 'nope.dz.test' ? { ...r, authorities: r.authorities.filter((x) => x.type !== 'NSEC' && !sigOver(x, T.NSEC)) } : r),
      async () => isError(await ask('nope.dz.test', 'A')),
    );
    // and a forged NXDOMAIN for a name that exists in the signed zone
    await withMutation(
      (q, r) => (q.name === 'mx.dz.test' ? { rcode: 3, answers: [], authorities: genuine('nope.dz.test', 'A').authorities } : r),
      async () => isError(await ask('mx.dz.test', 'A')),
    );
  });

  it("issue13-downgrade alias: DANE-5 a signed CNAME into an unsigned zone is insecure with the target hop's reason; a CNAME stripped of its RRSIG in the signed zone is bogus", async () => {
    const a = await ask('alias.dz.test', 'A');
    expect([a.status, a.firstStatus, a.insecureReason, a.chain.map((h) => h.status)]).toEqual(['insecure', 'secure', 'unsigned-delegation', ['secure']]);
    await withMutation(
      (q, r) => (q.name === 'secure-alias.dz.test' ? { ...r, answers: r.answers.filter((x) => !sigOver(x, T.CNAME)) } : r),
      async () => isError(await ask('secure-alias.dz.test', 'A')),
    );
  });
});

describe('issue13 downgrade search: trust-ad (src/dns/stub.ts)', () => {
  let dns: TestDns;
  let r: StubResolver;
  beforeAll(async () => {
    dns = await startDnsServer();
    dns.addZone({ name: 'signed.test', secure: true });
    dns.add({ name: 'mx.signed.test', type: 'A', data: '192.0.2.1' }, { name: 'mx.plain.test', type: 'A', data: '192.0.2.2' });
    dns.add({ name: 'hop.signed.test', type: 'CNAME', data: 'mx.plain.test' });
    r = new StubResolver({ servers: [dns.server], timeoutMs: 1000, attempts: 1, cache: false });
  });
  afterAll(async () => {
    await r.close();
    await dns.close();
  });

  it('issue13-downgrade trust-ad: DANE-1 DANE-3 AD clear from the trusted resolver is insecure (reason resolver); SERVFAIL and REFUSED are errors, never insecure', async () => {
    expect(statusFromFlags('NOERROR', false)).toBe('insecure');
    expect(statusFromFlags('SERVFAIL', false)).toBe('indeterminate');
    const plain = await r.lookup('mx.plain.test', 'A');
    expect([plain.status, plain.insecureReason]).toEqual(['insecure', 'resolver']);
    const hop = await r.lookup('hop.signed.test', 'A');
    expect([hop.status, hop.insecureReason]).toEqual(['insecure', 'resolver']);
    for (const b of ['servfail', 'refused'] as const) {
      dns.behave('mx.signed.test', 'A', b);
      const a = await r.lookup('mx.signed.test', 'A');
      expect([a.status, a.error !== undefined, a.insecureReason]).toEqual(['indeterminate', true, undefined]);
    }
    dns.behave('mx.signed.test', 'A', undefined);
    // The other proofs trust-ad rests on are tested where they live: a "secure" denial without its SOA is
    // malformed (test/dns/secureDenial.test.ts), the trust rules refuse an untrusted
    // resolver (test/config/config.test.ts, test/config/preflight.test.ts: systemd-resolved, off-host), and
    // a failing self-test holds DANE deliveries (test/dns/selftestHold.test.ts).
  });
});
