/**
 * Hostile upstream data: malformed and truncated messages, compression loops,
 * absurd counts, KeyTrap key-tag collisions and signature floods
 * (CVE-2023-50387), NSEC3 hash floods (CVE-2023-50868). Each must end in
 * bounded work and an error verdict — never a crash, a hang, or "insecure".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import dnsPacket from 'dns-packet';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { makeKey, tagOf, type Key, type Rec } from '../support/signer.js';
import { MAX_KEYS_PER_SIGNATURE, MAX_NSEC3_HASHES, MAX_SIGNATURE_VERIFICATIONS } from '../../src/dnssec/budget.js';
import { isAnswer } from '../../src/dns/types.js';
import type { TraceStep } from '../../src/dnssec/trace.js';

let t: Tree;
let zsk: Key;
let fakes: Key[];

/** A key whose tag equals `tag`: tune the last 16-bit word of an Ed25519 public key. */
function collidingKey(tag: number, seed: number): Key {
  const base = makeKey(15, 256);
  const pub = Buffer.from(base.pub);
  pub[0] = seed & 0xff;
  pub[1] = (seed >> 8) & 0xff;
  for (let w = 0; w < 0x10000; w++) {
    pub.writeUInt16BE(w, 30);
    const rdata = Buffer.concat([Buffer.from([1, 0, 3, 15]), pub]);
    if (tagOf(rdata) === tag) return { ...base, pub: Buffer.from(pub), rdata, tag };
  }
  throw new Error('no colliding key');
}

function spent(trace: TraceStep[]): { verifications: number; hashes: number; queries: number } {
  const s = trace.find((x) => x.kind === 'budget')!;
  const m = /^(\d+) signature verifications, (\d+) NSEC3 hashes, (\d+) upstream queries, (\d+) yields$/.exec(s.detail)!;
  const [v, h, q] = [m[1], m[2], m[3]].map(Number);
  return { verifications: v!, hashes: h!, queries: q! };
}

beforeAll(async () => {
  const ksk = key('kt-ksk', 15, 257);
  zsk = key('kt-zsk', 15, 256);
  fakes = Array.from({ length: 40 }, (_, i) => collidingKey(zsk.tag, i + 1));
  const keytrap = mailZone('keytrap.test', { keys: [ksk, zsk, ...fakes], ksks: [ksk], zsks: [zsk] });
  const deep = mailZone('deep.test', { keys: [key('deep', 13)], denial: { nsec3: { iterations: 150, salt: 'ab' } } });
  t = await buildTree([keytrap, deep, mailZone('plain.test', { keys: [key('plain', 13)] })]);
}, 60_000);
afterAll(async () => t?.close());

const reply = (query: Buffer, build: (q: dnsPacket.DecodedPacket) => Buffer): Buffer => build(dnsPacket.decode(query));
const header = (id: number, an: number, ns = 0, ar = 0) => {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(0x8180 | 0x0010, 2);
  b.writeUInt16BE(1, 4);
  b.writeUInt16BE(an, 6);
  b.writeUInt16BE(ns, 8);
  b.writeUInt16BE(ar, 10);
  return b;
};
const question = (name: string, type: number) => {
  const parts = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const q = Buffer.alloc(4);
  q.writeUInt16BE(type, 0);
  q.writeUInt16BE(1, 2);
  return Buffer.concat([...parts, Buffer.from([0]), q]);
};

async function expectError(name: string, type: 'A' | 'MX' = 'A') {
  const r = t.resolver();
  const { answer, trace } = await r.lookupTrace(name, type);
  expect(answer.error).toBeDefined();
  expect(['bogus', 'indeterminate']).toContain(answer.status);
  expect(isAnswer(answer)).toBe(false);
  return { answer, trace };
}

describe('validator: hostile input', () => {
  it('DANE-1 malformed, truncated, looping and absurd-count replies end as errors (never a crash or insecure)', async () => {
    const cases: Array<(q: dnsPacket.DecodedPacket) => Buffer> = [
      // truncated in the middle of the answer
      (q) => Buffer.concat([header(q.id!, 1), question('mx.plain.test', 1), Buffer.from([0xc0, 0x0c, 0, 1, 0])]),
      // compression pointer to itself in the answer owner
      (q) => {
        const h = Buffer.concat([header(q.id!, 1), question('mx.plain.test', 1)]);
        const p = h.length;
        return Buffer.concat([h, Buffer.from([0xc0 | (p >> 8), p & 0xff, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4])]);
      },
      // 65535 answers announced, one present
      (q) => Buffer.concat([header(q.id!, 65535), question('mx.plain.test', 1), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4])]),
      // RDATA length beyond the message
      (q) => Buffer.concat([header(q.id!, 1), question('mx.plain.test', 1), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0xff, 0xff, 1])]),
      // A record with a 3-byte RDATA
      (q) => Buffer.concat([header(q.id!, 1), question('mx.plain.test', 1), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 1, 2, 3])]),
    ];
    for (const build of cases) {
      t.dns.raw = (info, query) => (info.name === 'mx.plain.test' ? reply(query, build) : undefined);
      try {
        const { answer } = await expectError('mx.plain.test');
        expect(answer.error!.message).toMatch(/malformed|no usable reply|RDATA|pointer|truncated|runs past/i);
      } finally {
        t.dns.raw = undefined;
      }
    }
  });

  it('DANE-1 garbage RRSIG and DNSKEY RDATA are bogus, not insecure', async () => {
    t.dns.mutate = (q, r) =>
      q.name === 'mx.plain.test' ? { ...r, answers: r.answers.map((x) => (x.type === 'RRSIG' ? { ...x, rdata: Buffer.from([0, 1, 13, 3, 0]) } : x)) } : r;
    try {
      await expectError('mx.plain.test');
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it(`DANE-1 KeyTrap: ${fakes?.length ?? 40} keys sharing one tag and a flood of RRSIGs cost at most ${MAX_SIGNATURE_VERIFICATIONS} verifications`, async () => {
    // The zone legitimately publishes 40 extra keys with the ZSK's tag (its DNSKEY set is validly
    // signed); the reply carries 60 RRSIGs with that tag and garbage signatures before the real one.
    t.dns.mutate = (q, r) => {
      if (q.name !== 'mx.keytrap.test' || q.type !== 'A') return r;
      const real = r.answers.find((x) => x.type === 'RRSIG')!;
      const junk: Rec[] = Array.from({ length: 60 }, (_, i) => {
        const rdata = Buffer.from(real.rdata);
        rdata[rdata.length - 1] ^= (i + 1) & 0xff;
        rdata[rdata.length - 2] ^= ((i + 1) >> 8) | 1;
        return { ...real, rdata };
      });
      return { ...r, answers: [...r.answers.filter((x) => x.type !== 'RRSIG'), ...junk, real] };
    };
    try {
      const { answer, trace } = await expectError('mx.keytrap.test');
      expect(answer.status).toBe('bogus');
      const s = spent(trace);
      expect(s.verifications).toBeLessThanOrEqual(MAX_SIGNATURE_VERIFICATIONS);
      expect(trace.some((x) => /more than \d+ (keys share tag|RRSIGs tried)/.test(x.detail))).toBe(true);
      expect(MAX_KEYS_PER_SIGNATURE).toBeLessThan(fakes.length);
    } finally {
      t.dns.mutate = undefined;
    }
    // Without the flood the same zone validates: the colliding keys alone do not break it.
    const ok = await t.resolver().lookupTrace('mx.keytrap.test', 'A');
    expect(ok.answer.status).toBe('secure');
  });

  it(`DANE-1 NSEC3 closest-encloser flood (CVE-2023-50868): a 120-label name costs at most ${MAX_NSEC3_HASHES} hashes`, async () => {
    // 120 one-character labels: the longest name DNS allows (RFC 1035 §2.3.4) below deep.test.
    const deepName = Array.from({ length: 120 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('.') + '.deep.test';
    const r = t.resolver();
    const { answer, trace } = await r.lookupTrace(deepName, 'A');
    const s = spent(trace);
    expect(s.hashes).toBeLessThanOrEqual(MAX_NSEC3_HASHES);
    // Either proven (secure NXDOMAIN) within the budget, or stopped by it: never insecure.
    expect(answer.status === 'secure' || answer.error !== undefined).toBe(true);
  });

  it('DANE-1 a hundred forged NSEC3 records in a denial are bogus, not insecure', async () => {
    t.dns.mutate = (q, r) => {
      if (q.name !== 'nope.deep.test') return r;
      const n3 = r.authorities.find((x) => x.type === 'NSEC3')!;
      const sig = r.authorities.find((x) => x.type === 'RRSIG' && x.name === n3.name)!;
      const forged: Rec[] = [];
      for (let i = 0; i < 100; i++) {
        const name = `${i.toString(32).padStart(32, '0')}.deep.test`;
        forged.push({ ...n3, name }, { ...sig, name });
      }
      return { ...r, authorities: [...forged, ...r.authorities] };
    };
    try {
      const { trace } = await expectError('nope.deep.test');
      expect(spent(trace).verifications).toBeLessThanOrEqual(MAX_SIGNATURE_VERIFICATIONS);
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 an upstream that never answers gives indeterminate after the timeout, not a hang', async () => {
    t.dns.mutate = (q, r) => (q.name === 'plain.test' && q.type === 'MX' ? undefined : r);
    try {
      const r = t.resolver();
      const a = await r.lookup('plain.test', 'MX');
      expect(a.status).toBe('indeterminate');
      expect(a.error).toBeDefined();
    } finally {
      t.dns.mutate = undefined;
    }
  });

  it('DANE-1 an unsigned answer stripped of everything in a secure zone is bogus (no downgrade)', async () => {
    t.dns.mutate = (_q, r) => ({ ...r, answers: r.answers.filter((x) => x.type !== 'RRSIG'), authorities: r.authorities.filter((x) => x.type !== 'RRSIG') });
    try {
      await expectError('mx.plain.test');
    } finally {
      t.dns.mutate = undefined;
    }
  });
});

describe('validator: fuzzed replies (fast-check)', () => {
  it('DANE-1 any single corrupted byte after the question never yields "insecure", nor "secure" with different data', async () => {
    const fc = (await import('fast-check')).default;
    const { ZoneSet, encodeReply } = await import('../support/signedDnsServer.js');
    const zs = new ZoneSet(t.dns.zones);
    const good = zs.resolve('mx.plain.test', 'A', true);
    const probe = encodeReply(0, 'mx.plain.test', 1, { rd: true, cd: true, do: true, edns: true }, good);
    const qEnd = 12 + 'mx.plain.test'.length + 2 + 4;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: qEnd, max: probe.length - 1 }), fc.integer({ min: 1, max: 255 }), async (pos, xor) => {
        t.dns.raw = (info, query) => {
          if (info.name !== 'mx.plain.test' || info.type !== 'A') return undefined;
          const id = query.readUInt16BE(0);
          const out = encodeReply(id, 'mx.plain.test', 1, { rd: true, cd: true, do: true, edns: true }, good);
          out[pos] = out[pos]! ^ xor;
          return out;
        };
        try {
          const a = await t.resolver().lookup('mx.plain.test', 'A');
          expect(a.status).not.toBe('insecure');
          if (a.status === 'secure' && !a.error) expect(a.records).toEqual(['192.0.2.25']);
        } finally {
          t.dns.raw = undefined;
        }
      }),
      { numRuns: 150 },
    );
  }, 120_000);
});
