/**
 * The interop cases: each is a destination domain in the private DNSSEC world, one or more
 * Postfix listeners with real certificate chains (or no STARTTLS), and the verdict RFC 7672
 * demands — where the message ends up (which listener, over TLS or not), or that it stays
 * deferred, or that it bounces. The same cases drive our relay and Postfix (the differential).
 *
 * Sources: the DANE digest's ten test cases (docs/spec/dane-smtp.md) and the breakages field
 * reports describe (Dukhovni's "Real World DANE", USENIX Security '22 "DANE mismanagement"):
 * missing DS, stale 3 1 1 after a key change, 2 1 1 pinned to a replaced intermediate, TLSA
 * SERVFAIL on one MX, NSEC3 and Ed25519 zones, expired signatures, wrong DS.
 */
import { chainPem, makeCa, makeIntermediate, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../../support/pki.js';
import type { ZoneSpec } from './dnsworld.js';
import type { Listener } from './postfix.js';

export type Verdict = { kind: 'delivered'; via: string; tls: boolean } | { kind: 'deferred' } | { kind: 'bounced' };

export interface InteropCase {
  id: string;
  /** test name, starting with the requirement ID it proves */
  title: string;
  domain: string;
  expect: Verdict;
  /** the enhanced status code our relay must give (DANE-72: DNS error 4.4.3, DANE/STARTTLS 4.7.5, null MX 5.1.10) */
  code?: string;
  /**
   * Where Postfix 3.7 reaches a different verdict: Postfix's verdict, whether Postfix is wrong by
   * the RFC or the RFC leaves the choice to the client, and the RFC text that settles it.
   */
  postfixDiffers?: { verdict: Verdict; judgement: 'postfix-violates-rfc' | 'rfc-permits-both'; rfc: string };
}

export interface CaseWorld {
  zones: ZoneSpec[];
  listeners: Listener[];
  cases: InteropCase[];
  /** the sender domain: DSNs come back to its listener */
  senderDomain: string;
  senderListener: string;
  /**
   * Per-destination policy (issue 7), when built with `policy: true`: our relay's `policy.tls_policy`
   * and `policy.danefail` lines, and the Postfix smtp_tls_policy_maps lines that mean the same.
   */
  policy?: { tlsPolicy: string[]; danefail: string[]; postfix: string[] };
}

export const TLD = 'tst';
const hex = (b: Buffer) => b.toString('hex').toUpperCase();
const tlsa = (owner: string, u: number, s: 0 | 1, m: 0 | 1 | 2, cert: Issued) => `_25._tcp.${owner}. 300 IN TLSA ${u} ${s} ${m} ${hex(tlsaData(cert, s, m))}`;
const tlsaRaw = (owner: string, u: number, s: number, m: number, data: string) => `_25._tcp.${owner}. 300 IN TLSA ${u} ${s} ${m} ${data}`;
const mx = (domain: string, pref: number, host: string) => `${domain}. 300 IN MX ${pref} ${host}.`;
const a = (name: string, ip: string) => `${name}. 300 IN A ${ip}`;
const tlsOf = (key: Issued, ...chain: Issued[]) => ({ keyPem: key.keyPem, chainPem: chainPem(...chain) });

const delivered = (via: string, tls = true): Verdict => ({ kind: 'delivered', via, tls });
const deferred: Verdict = { kind: 'deferred' };

/** DANE-72 codes for the deferred cases: lookups that fail (bogus) → 4.4.3, TLS/DANE failures → 4.7.5. */
const DNS_FAILURES = new Set(['c01-bogus-mx', 'c02b-tlsa-servfail-both', 'b08-expired-rrsig', 'b09-wrong-ds']);

export async function buildCases(opts: { policy?: boolean } = {}): Promise<CaseWorld> {
  const zones: ZoneSpec[] = [];
  const listeners: Listener[] = [];
  const cases: InteropCase[] = [];
  let n = 0;
  /** a case: its own domain `<id>.tst` and listener addresses 127.0.<n>.<k> */
  const add = (
    c: Omit<InteropCase, 'domain'> & { zones?: (d: string) => ZoneSpec[] },
    build: (d: string, ip: (k: number) => string) => { records: string[]; listeners: Listener[]; zone?: Partial<ZoneSpec> },
  ) => {
    n++;
    if (n === 53) n++; // 127.0.53.x is the DNS world's (nsd, Unbound)
    if (n >= 90) throw new Error('interop cases: 127.0.90 and up are fixed addresses; renumber'); // see the fixed 127.0.9x/200 listeners
    const domain = `${c.id}.${TLD}`;
    const ip = (k: number) => `127.0.${n}.${k}`;
    const b = build(domain, ip);
    zones.push({ name: domain, records: b.records, ...b.zone });
    if (c.zones) zones.push(...c.zones(domain));
    listeners.push(...b.listeners);
    // code '' = no code asserted
    const code = c.code ?? (c.expect.kind === 'bounced' ? '5.1.10' : c.expect.kind === 'deferred' ? (DNS_FAILURES.has(c.id) ? '4.4.3' : '4.7.5') : undefined);
    cases.push({ id: c.id, title: c.title, domain, expect: c.expect, code, postfixDiffers: c.postfixDiffers });
  };
  /** a DANE-EE destination: MX → mx1, self-signed leaf, 3 1 1 (the common, working setup) */
  const eeDomain = async (id: string, title: string, zone: Partial<ZoneSpec> = {}) => {
    const ee = await makeSelfSigned({ dnsNames: [`mx1.${id}.${TLD}`] });
    add({ id, title, expect: delivered(`mx1.${id}.${TLD}`) }, (d, ip) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, ee)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(ee, ee) }],
      zone,
    }));
  };

  // The sender's own domain, so DSNs (null MX bounce) arrive somewhere we can read.
  const senderDomain = `sender.${TLD}`;
  const senderEe = await makeSelfSigned({ dnsNames: [`mx.${senderDomain}`] });
  zones.push({
    name: senderDomain,
    records: [mx(senderDomain, 10, `mx.${senderDomain}`), a(`mx.${senderDomain}`, '127.0.0.10'), tlsa(`mx.${senderDomain}`, 3, 1, 1, senderEe)],
  });
  listeners.push({ name: `mx.${senderDomain}`, address: '127.0.0.10', tls: tlsOf(senderEe, senderEe) });

  // ---- the DANE digest's ten cases -------------------------------------------------------------
  {
    const ee = await makeSelfSigned({ dnsNames: ['mx1.c01-bogus-mx.tst'] });
    add({ id: 'c01-bogus-mx', title: 'DANE-11 case 1: bogus MX RRset → deferred, the MX host gets nothing', expect: deferred }, (d, ip) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, ee)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(ee, ee) }],
      zone: { breakSignatures: [{ owner: d, type: 'MX' }] },
    }));
  }
  for (const both of [false, true]) {
    const ee1 = await makeSelfSigned({ dnsNames: ['mx1'] });
    const ee2 = await makeSelfSigned({ dnsNames: ['mx2'] });
    const id = both ? 'c02b-tlsa-servfail-both' : 'c02a-tlsa-servfail-mx1';
    add(
      {
        id,
        title: both
          ? 'DANE-34 case 2: TLSA lookups bogus on both MX hosts → deferred, neither contacted'
          : 'DANE-33 case 2: TLSA bogus (broken RRSIG) on MX1 → MX1 skipped, MX2 delivers over DANE TLS',
        expect: both ? deferred : delivered(`mx2.${id}.${TLD}`),
      },
      (d, ip) => ({
        records: [
          mx(d, 10, `mx1.${d}`),
          mx(d, 20, `mx2.${d}`),
          a(`mx1.${d}`, ip(1)),
          a(`mx2.${d}`, ip(2)),
          tlsa(`mx1.${d}`, 3, 1, 1, ee1),
          tlsa(`mx2.${d}`, 3, 1, 1, ee2),
        ],
        listeners: [
          { name: `mx1.${d}`, address: ip(1), tls: tlsOf(ee1, ee1) },
          { name: `mx2.${d}`, address: ip(2), tls: tlsOf(ee2, ee2) },
        ],
        zone: { breakSignatures: [{ owner: `_25._tcp.mx1.${d}`, type: 'TLSA' }, ...(both ? [{ owner: `_25._tcp.mx2.${d}`, type: 'TLSA' }] : [])] },
      }),
    );
  }
  {
    const ee = await makeSelfSigned({ dnsNames: ['mx1'] });
    add(
      { id: 'c03-no-starttls', title: 'DANE-43 case 3: usable TLSA, peer offers no STARTTLS → deferred, nothing sent in clear', expect: deferred },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, ee)],
        listeners: [{ name: `mx1.${d}`, address: ip(1) }],
      }),
    );
  }
  for (const tls of [true, false]) {
    const ee = await makeSelfSigned({ dnsNames: ['unrelated.example'] });
    const id = tls ? 'c04a-unusable-tls' : 'c04b-unusable-notls';
    add(
      {
        id,
        title: tls
          ? 'DANE-42 case 4: only unusable TLSA (1 1 1, 3 9 1) → unauthenticated TLS accepted'
          : 'DANE-42 case 4: only unusable TLSA, peer without STARTTLS → deferred',
        expect: tls ? delivered(`mx1.${id}.${TLD}`) : deferred,
      },
      (d, ip) => ({
        records: [
          mx(d, 10, `mx1.${d}`),
          a(`mx1.${d}`, ip(1)),
          tlsaRaw(`mx1.${d}`, 1, 1, 1, hex(tlsaData(ee, 1, 1))),
          tlsaRaw(`mx1.${d}`, 3, 9, 1, hex(tlsaData(ee, 1, 1))),
        ],
        listeners: [{ name: `mx1.${d}`, address: ip(1), ...(tls ? { tls: tlsOf(ee, ee) } : {}) }],
      }),
    );
  }
  {
    const old = new Date(Date.now() - 400 * 86400_000);
    const expired = await makeSelfSigned({ dnsNames: ['wrong-name.example'], notBefore: old, notAfter: new Date(Date.now() - 30 * 86400_000) });
    add(
      {
        id: 'c05a-ee-expired-wrongname',
        title: 'DANE-52 case 5: 3 1 1 matches an expired self-signed leaf with a wrong name → delivered',
        expect: delivered('mx1.c05a-ee-expired-wrongname.tst'),
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, expired)],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(expired, expired) }],
      }),
    );
    const served = await makeSelfSigned({ dnsNames: ['mx1.c05b-ee-other-key.tst'] });
    const other = await makeSelfSigned({ dnsNames: ['mx1.c05b-ee-other-key.tst'] });
    add({ id: 'c05b-ee-other-key', title: 'DANE-52 case 5: 3 1 1 of a different key → deferred', expect: deferred }, (d, ip) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, other)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(served, served) }],
    }));
  }
  {
    const ca = await makeCa();
    const leafNexthop = await makeLeaf(ca, { dnsNames: ['c06a-ta-nexthop.tst'] });
    add(
      {
        id: 'c06a-ta-nexthop',
        title: 'DANE-53 case 6: 2 0 1, anchor in the chain, SAN = next-hop domain → delivered',
        expect: delivered('mx1.c06a-ta-nexthop.tst'),
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 2, 0, 1, ca)],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(leafNexthop, leafNexthop, ca) }],
      }),
    );
    const leafOther = await makeLeaf(ca, { dnsNames: ['unrelated.example'] });
    add({ id: 'c06b-ta-wrongname', title: 'DANE-55 case 6: 2 0 1, anchor in the chain, SAN = unrelated name → deferred', expect: deferred }, (d, ip) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 2, 0, 1, ca)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(leafOther, leafOther, ca) }],
    }));
    const inter = await makeIntermediate(ca);
    const leafViaInter = await makeLeaf(inter, { dnsNames: ['mx1.c06c-ta-missing.tst'] });
    add({ id: 'c06c-ta-missing', title: 'DANE-54 case 6: 2 0 1 for a root the server does not send → deferred', expect: deferred }, (d, ip) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 2, 0, 1, ca)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(leafViaInter, leafViaInter, inter) }],
    }));
  }
  {
    // The MX target is an alias (RFC 2181 §10.3 says it must not be, RFC 7672 §2.2.2 copes).
    const served = await makeSelfSigned({ dnsNames: ['real'] });
    const other = await makeSelfSigned({ dnsNames: ['real'] });
    add(
      {
        id: 'c07a-cname-expanded-first',
        title: 'DANE-22 case 7: secure CNAME → TLSA at the expanded name wins over the original (mismatch there → deferred)',
        expect: deferred,
      },
      (d, ip) => ({
        records: [
          mx(d, 10, `mx.${d}`),
          `mx.${d}. 300 IN CNAME real.${d}.`,
          a(`real.${d}`, ip(1)),
          tlsa(`real.${d}`, 3, 1, 1, other),
          tlsa(`mx.${d}`, 3, 1, 1, served),
        ],
        listeners: [{ name: `real.${d}`, address: ip(1), tls: tlsOf(served, served) }],
      }),
    );
    // Without SNI, or with any SNI but the TLSA base domain, the listener shows the wrong key.
    add(
      {
        id: 'c07b-cname-original',
        title: 'DANE-22 case 7: secure CNAME, no TLSA at the expanded name → TLSA at the original name is used (SNI = that base domain, DANE-60)',
        expect: delivered('real.c07b-cname-original.tst'),
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx.${d}`), `mx.${d}. 300 IN CNAME real.${d}.`, a(`real.${d}`, ip(1)), tlsa(`mx.${d}`, 3, 1, 1, served)],
        listeners: [{ name: `real.${d}`, address: ip(1), tls: tlsOf(other, other), sni: { [`mx.${d}`]: tlsOf(served, served) } }],
      }),
    );
    add(
      {
        id: 'c07d-cname-at-tlsa',
        title: 'DANE-31 case 7: a CNAME at _25._tcp is followed but keeps the base domain (SNI = the MX host)',
        expect: delivered('mx1.c07d-cname-at-tlsa.tst'),
      },
      (d, ip) => ({
        records: [
          mx(d, 10, `mx1.${d}`),
          a(`mx1.${d}`, ip(1)),
          `_25._tcp.mx1.${d}. 300 IN CNAME tlsa-store.${d}.`,
          `tlsa-store.${d}. 300 IN TLSA 3 1 1 ${hex(tlsaData(served, 1, 1))}`,
        ],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(other, other), sni: { [`mx1.${d}`]: tlsOf(served, served) } }],
      }),
    );
    const insecure = `c07c-insecure-alias.${TLD}`;
    add(
      {
        id: 'c07c-cname-insecure-first',
        title: 'DANE-21 case 7: the first CNAME is insecure → no DANE (a mismatching TLSA at the target is not used), delivered',
        expect: delivered('real.c07c-cname-insecure-first.tst'),
        zones: (d) => [{ name: insecure, ds: 'missing', records: [`mx.${insecure}. 300 IN CNAME real.${d}.`] }],
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx.${insecure}`), a(`real.${d}`, ip(1)), tlsa(`real.${d}`, 3, 1, 1, other)],
        listeners: [{ name: `real.${d}`, address: ip(1), tls: tlsOf(served, served) }],
      }),
    );
  }
  {
    const other = await makeSelfSigned({ dnsNames: ['mx1'] });
    const insecure = `c08-insecure-host.${TLD}`;
    add(
      {
        id: 'c08-insecure-address',
        title: 'DANE-21 case 8: MX host in a signed zone without DS (insecure A) → TLSA ignored, cleartext allowed without STARTTLS',
        expect: delivered(`mx1.${insecure}`, false),
        zones: () => [{ name: insecure, ds: 'missing', records: [a(`mx1.${insecure}`, '127.0.99.1'), tlsa(`mx1.${insecure}`, 3, 1, 1, other)] }],
      },
      (d) => ({
        records: [mx(d, 10, `mx1.${insecure}`)],
        listeners: [{ name: `mx1.${insecure}`, address: '127.0.99.1' }],
      }),
    );
  }
  add({ id: 'c09a-null-mx', title: 'DANE-13 case 9: null MX → bounced at once with 5.1.10', expect: { kind: 'bounced' } }, (d) => ({
    records: [`${d}. 300 IN MX 0 .`, a(d, '127.0.98.1')],
    listeners: [],
  }));
  for (const match of [true, false]) {
    const served = await makeSelfSigned({ dnsNames: ['x'] });
    const other = await makeSelfSigned({ dnsNames: ['x'] });
    const id = match ? 'c09b-implicit-mx' : 'c09c-implicit-mx-mismatch';
    add(
      {
        id,
        title: match
          ? 'DANE-12 case 9: MX NODATA → implicit MX, TLSA at the domain itself matches → delivered'
          : 'DANE-12 case 9: MX NODATA, TLSA at the domain itself does not match → deferred',
        expect: match ? delivered(`${id}.${TLD}`) : deferred,
      },
      (d, ip) => ({
        records: [a(d, ip(1)), tlsa(d, 3, 1, 1, match ? served : other)],
        listeners: [{ name: d, address: ip(1), tls: tlsOf(served, served) }],
      }),
    );
  }
  {
    const ee = await makeSelfSigned({ dnsNames: ['mx1'] });
    const other = await makeSelfSigned({ dnsNames: ['mx1'] });
    add(
      { id: 'c10a-digest-agility', title: 'DANE-51 case 10: 3 1 2 mismatch next to a 3 1 1 match → the stronger digest decides → deferred', expect: deferred },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, ee), tlsa(`mx1.${d}`, 3, 1, 2, other)],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(ee, ee) }],
      }),
    );
    const ee2 = await makeSelfSigned({ dnsNames: ['mx2'] });
    const insecure = `c10b-insecure-mx1.${TLD}`;
    add(
      {
        id: 'c10b-mx-order',
        title: 'DANE-14 case 10: MX order is not changed by security: MX10 without DANE is used before MX20 with DANE',
        expect: delivered(`mx1.${insecure}`),
        zones: () => [{ name: insecure, ds: 'missing', records: [a(`mx1.${insecure}`, '127.0.97.1')] }],
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${insecure}`), mx(d, 20, `mx2.${d}`), a(`mx2.${d}`, ip(2)), tlsa(`mx2.${d}`, 3, 1, 1, ee2)],
        listeners: [
          { name: `mx1.${insecure}`, address: '127.0.97.1', tls: tlsOf(ee, ee) },
          { name: `mx2.${d}`, address: ip(2), tls: tlsOf(ee2, ee2) },
        ],
      }),
    );
  }

  {
    const ee = await makeSelfSigned({ dnsNames: ['mx1'] });
    const other = await makeSelfSigned({ dnsNames: ['mx1'] });
    const host = `c11-secure-host.${TLD}`;
    add(
      {
        id: 'c11-insecure-mx-secure-host',
        title: 'DANE-15 insecure MX RRset, MX host with a (mismatching) secure TLSA → opportunistic TLS by default, delivered',
        expect: delivered(`mx1.${host}`),
        postfixDiffers: {
          verdict: deferred,
          judgement: 'rfc-permits-both',
          // RFC 7672 §2.2.1 (paraphrased): when the MX RRset is insecure, DANE need not apply and the
          // client uses pre-DANE opportunistic TLS; it MAY still use secure TLSA records of the MX
          // host, with the MX host name as the only reference identifier. Postfix 3.7 does the
          // latter by default (smtp_tls_dane_insecure_mx_policy = dane); we do the former by default
          // and the latter only on opt-in (digest DANE-15). Neither is wrong.
          rfc: "RFC 7672 §2.2.1: insecure MX RRset → DANE need not apply (opportunistic TLS); a client MAY still use the MX host's secure TLSA records",
        },
        zones: () => [{ name: host, records: [a(`mx1.${host}`, '127.0.96.1'), tlsa(`mx1.${host}`, 3, 1, 1, other)] }],
      },
      (d) => ({
        records: [mx(d, 10, `mx1.${host}`)],
        listeners: [{ name: `mx1.${host}`, address: '127.0.96.1', tls: tlsOf(ee, ee) }],
        zone: { ds: 'missing' },
      }),
    );
  }

  // ---- field breakages (background) and zone varieties -----------------------------------------
  await eeDomain('b01-ed25519', 'DANE-1 Ed25519-signed zone (alg 15) → secure, DANE-EE delivers', { sign: { algorithms: ['ED25519'] } });
  await eeDomain('b02-rsa', 'DANE-1 RSA/SHA-256-signed zone (alg 8) → secure, DANE-EE delivers', { sign: { algorithms: ['RSASHA256'] } });
  await eeDomain('b03-mixed-alg', 'DANE-1 zone signed with ECDSA and Ed25519 at once → secure, DANE-EE delivers', {
    sign: { algorithms: ['ECDSAP256SHA256', 'ED25519'] },
  });
  await eeDomain('b04-ksk-rollover', 'DANE-1 KSK rollover in progress (two DS, one in the DNSKEY set) → secure, DANE-EE delivers', { ds: 'rollover' });
  await eeDomain('b05-nsec3', 'DANE-1 NSEC3 zone → secure, DANE-EE delivers', { sign: { nsec3: true } });
  {
    const ee = await makeSelfSigned({ dnsNames: ['mx1'] });
    add(
      {
        id: 'b06-nsec3-no-tlsa',
        title: 'DANE-32 NSEC3 opt-out zone, TLSA NODATA proven by NSEC3 → no DANE, opportunistic TLS',
        expect: delivered('mx1.b06-nsec3-no-tlsa.tst'),
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), `unsigned-child.${d}. 300 IN NS ns.`],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(ee, ee) }],
        zone: { sign: { nsec3: { optOut: true } } },
      }),
    );
    const other = await makeSelfSigned({ dnsNames: ['mx1'] });
    add(
      { id: 'b07-nsec3-mismatch', title: 'DANE-41 NSEC3 zone with a mismatching 3 1 1 → deferred (DANE applies in NSEC3 zones)', expect: deferred },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, other)],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(ee, ee) }],
        zone: { sign: { nsec3: true } },
      }),
    );
  }
  {
    const ee = await makeSelfSigned({ dnsNames: ['mx1'] });
    for (const [id, zone, title] of [
      ['b08-expired-rrsig', { sign: { expired: true } }, 'DANE-11 expired RRSIGs (bogus zone) → deferred, never downgraded'],
      ['b09-wrong-ds', { ds: 'wrong' }, 'DANE-11 DS matching no DNSKEY (bogus zone) → deferred, never downgraded'],
    ] as const) {
      add({ id, title, expect: deferred }, (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, ee)],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(ee, ee) }],
        zone: zone as Partial<ZoneSpec>,
      }));
    }
  }
  {
    const oldKey = await makeSelfSigned({ dnsNames: ['mx1'] });
    const newKey = await makeSelfSigned({ dnsNames: ['mx1'] });
    add({ id: 'b10-stale-311', title: 'DANE-52 stale 3 1 1 after the server changed its key → deferred 4.7.5, no cleartext', expect: deferred }, (d, ip) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, oldKey)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(newKey, newKey) }],
    }));
    add(
      {
        id: 'b11-311-both-keys',
        title: 'DANE-56 3 1 1 for the old and the new key during a key change → delivered (any one match suffices)',
        expect: delivered('mx1.b11-311-both-keys.tst'),
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, oldKey), tlsa(`mx1.${d}`, 3, 1, 1, newKey)],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(newKey, newKey) }],
      }),
    );
  }
  {
    const root = await makeCa();
    const oldInter = await makeIntermediate(root);
    const newInter = await makeIntermediate(root);
    const leaf = await makeLeaf(newInter, { dnsNames: ['mx1.b12-211-replaced-intermediate.tst'] });
    add({ id: 'b12-211-replaced-intermediate', title: 'DANE-53 2 1 1 pinned to an intermediate the CA replaced → deferred', expect: deferred }, (d, ip) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 2, 1, 1, oldInter)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(leaf, leaf, newInter) }],
    }));
    const leaf2 = await makeLeaf(newInter, { dnsNames: ['mx1.b13-211-current-intermediate.tst'] });
    add(
      {
        id: 'b13-211-current-intermediate',
        title: 'DANE-53 2 1 1 for the intermediate the server sends (MX name in SAN) → delivered',
        expect: delivered('mx1.b13-211-current-intermediate.tst'),
      },
      (d, ip) => ({
        records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 2, 1, 1, oldInter), tlsa(`mx1.${d}`, 2, 1, 1, newInter)],
        listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(leaf2, leaf2, newInter) }],
      }),
    );
  }
  // ---- per-destination policy (issue 7): declared only when the relay's config has `policy` ----
  let policy: CaseWorld['policy'];
  if (opts.policy) {
    policy = { tlsPolicy: [], danefail: [], postfix: [] };
    const served = await makeSelfSigned({ dnsNames: ['mx1'] });
    const other = await makeSelfSigned({ dnsNames: ['mx1'] });
    const mismatching = (d: string, ip: (k: number) => string) => ({
      records: [mx(d, 10, `mx1.${d}`), a(`mx1.${d}`, ip(1)), tlsa(`mx1.${d}`, 3, 1, 1, other)],
      listeners: [{ name: `mx1.${d}`, address: ip(1), tls: tlsOf(served, served) }],
    });
    add(
      {
        id: 'p01-danefail',
        title: 'DANE-70 case 10: an exception-listed (danefail) domain gets no DANE: its mismatching TLSA is not used, delivered over opportunistic TLS',
        expect: delivered('mx1.p01-danefail.tst'),
      },
      mismatching,
    );
    policy.danefail.push('p01-danefail.tst');
    policy.postfix.push('p01-danefail.tst may');
    add(
      { id: 'p02-danefail-bogus-mx', title: 'DANE-70 the exception list cannot cure a bogus MX → deferred 4.4.3', expect: deferred, code: '4.4.3' },
      (d, ip) => ({
        ...mismatching(d, ip),
        zone: { breakSignatures: [{ owner: d, type: 'MX' }] },
      }),
    );
    policy.danefail.push('p02-danefail-bogus-mx.tst');
    policy.postfix.push('p02-danefail-bogus-mx.tst may');
    const host = `p03-secure-host.${TLD}`;
    add(
      {
        id: 'p03-trust-insecure-mx',
        title: "DANE-15 opt-in (tls_policy dane trust-insecure-mx): the MX host's TLSA is used under an insecure MX → mismatch → deferred",
        expect: deferred,
        zones: () => [{ name: host, records: [a(`mx1.${host}`, '127.0.95.1'), tlsa(`mx1.${host}`, 3, 1, 1, other)] }],
      },
      (d) => ({
        records: [mx(d, 10, `mx1.${host}`)],
        listeners: [{ name: `mx1.${host}`, address: '127.0.95.1', tls: tlsOf(served, served) }],
        zone: { ds: 'missing' },
      }),
    );
    policy.tlsPolicy.push('p03-trust-insecure-mx.tst dane trust-insecure-mx');
    // Postfix 3.7 does this by default (smtp_tls_dane_insecure_mx_policy = dane): no entry needed
    add(
      {
        id: 'p04-audit',
        title: 'DANE-46 audit-only (tls_policy dane audit): a failed DANE check is logged and the message goes over TLS anyway',
        expect: delivered('mx1.p04-audit.tst'),
      },
      mismatching,
    );
    policy.tlsPolicy.push('p04-audit.tst dane audit');
    policy.postfix.push('p04-audit.tst may'); // Postfix has no audit mode; "may" is its nearest outcome
    add(
      {
        id: 'p05-dane-only-insecure',
        title: 'DANE-45 mandatory DANE (tls_policy dane-only) for a destination without DNSSEC → deferred, never sent',
        expect: deferred,
        code: '',
      },
      (d, ip) => ({
        ...mismatching(d, ip),
        zone: { ds: 'missing' },
      }),
    );
    policy.tlsPolicy.push('p05-dane-only-insecure.tst dane-only');
    policy.postfix.push('p05-dane-only-insecure.tst dane-only');
  }

  return { zones, listeners, cases, senderDomain, senderListener: `mx.${senderDomain}`, policy };
}
