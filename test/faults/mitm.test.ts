/**
 * Active attacker, per DANE case of the digest (ten cases): for every destination whose TLSA
 * records demand DANE, an attacker between the relay and the MX — TLS-terminating impostor,
 * STARTTLS stripper, 454-to-STARTTLS proxy, reply injector (CVE-2011-0411 class) — gets nothing
 * of the envelope or body, in clear or under its own certificate, and the message stays queued.
 * Destinations that only demand TLS (case 4) lose nothing to the downgrade attacks; the
 * unprotected destination (case 8) is the control that proves the attackers do record leaks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { chainPem, makeCa, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { Receiver } from '../support/receiver.js';
import { MITM_MODES, startMitm, type Mitm, type MitmMode } from './support/mitm.js';
import { record } from './support/report.js';

/** what the digest says the destination demands */
type Protection = 'dane' | 'tls' | 'none' | 'no-connection';

interface Scenario {
  id: string;
  title: string;
  protect: Protection;
  /** the genuine server's chain/key, and the attacker's (its own key, a chain chosen to look plausible) */
  certs: () => Promise<{ genuine?: { key: Issued; chain: Issued[] }; attacker: { key: Issued; chain: Issued[] } }>;
  /** DNS for `domain`, its MX host(s) pointing at `attacker` */
  dns: (w: World, domain: string, attacker: string, genuine: { key: Issued; chain: Issued[] } | undefined) => void;
  /** the genuine server has STARTTLS (default true) */
  starttls?: boolean;
}

const tlsa = (_w: World, usage: number, selector: 0 | 1, mt: 0 | 1 | 2, cert: Issued) => ({
  usage,
  selector,
  matchingType: mt,
  certificate: tlsaData(cert, selector, mt),
});
const raw = (usage: number, selector: number, mt: number, certificate: Buffer) => ({ usage, selector, matchingType: mt, certificate });

function mxDomain(w: World, domain: string, host: string, address: string, tlsaRrs: object[], secure = true): void {
  w.dns.addZone({ name: domain, secure });
  w.dns.add({ name: domain, type: 'MX', data: { preference: 10, exchange: host } }, { name: host, type: 'A', data: address });
  for (const t of tlsaRrs) w.dns.add({ name: `_${w.port}._tcp.${host}`, type: 'TLSA', data: t });
}

/** 3 1 1 scenario: genuine self-signed EE; the attacker's self-signed leaf has the right name and carries the genuine certificate as a second chain element. */
async function eePair(name: (d: string) => string = () => 'mx.placeholder') {
  const genuine = await makeSelfSigned({ dnsNames: [name('x')] });
  const fake = await makeSelfSigned({ dnsNames: [name('x')] });
  return { genuine: { key: genuine, chain: [genuine] }, attacker: { key: fake, chain: [fake, genuine] } };
}

const SCENARIOS: Scenario[] = [
  {
    id: 'case1',
    title: 'bogus MX',
    protect: 'no-connection',
    certs: eePair,
    dns: (w, d, a, g) => {
      mxDomain(w, d, `mx.${d}`, a, [tlsa(w, 3, 1, 1, g!.key)]);
      w.dns.behave(d, 'MX', 'servfail');
    },
  },
  {
    id: 'case2',
    title: 'TLSA SERVFAIL on MX1, DANE on MX2',
    protect: 'dane',
    certs: eePair,
    dns: (w, d, a, g) => {
      mxDomain(w, d, `mx2.${d}`, a, [tlsa(w, 3, 1, 1, g!.key)]);
      w.dns.add({ name: d, type: 'MX', data: { preference: 5, exchange: `mx1.${d}` } }, { name: `mx1.${d}`, type: 'A', data: a });
      w.dns.add({ name: `_${w.port}._tcp.mx1.${d}`, type: 'TLSA', data: tlsa(w, 3, 1, 1, g!.key) });
      w.dns.behave(`_${w.port}._tcp.mx1.${d}`, 'TLSA', 'servfail');
    },
  },
  {
    id: 'case3',
    title: 'usable TLSA, genuine MX without STARTTLS',
    protect: 'dane',
    certs: eePair,
    starttls: false,
    dns: (w, d, a, g) => mxDomain(w, d, `mx.${d}`, a, [tlsa(w, 3, 1, 1, g!.key)]),
  },
  {
    id: 'case4',
    title: 'only unusable TLSA records (TLS required, no authentication)',
    protect: 'tls',
    certs: eePair,
    dns: (w, d, a, g) => mxDomain(w, d, `mx.${d}`, a, [raw(1, 1, 1, tlsaData(g!.key, 1, 1)), raw(3, 9, 1, tlsaData(g!.key, 1, 1))]),
  },
  {
    id: 'case5',
    title: '3 1 1, expired genuine leaf with a wrong name',
    protect: 'dane',
    certs: async () => {
      const genuine = await makeSelfSigned({
        dnsNames: ['wrong.example'],
        notBefore: new Date(Date.now() - 400 * 86_400_000),
        notAfter: new Date(Date.now() - 30 * 86_400_000),
      });
      const fake = await makeSelfSigned({ dnsNames: ['wrong.example'] });
      return { genuine: { key: genuine, chain: [genuine] }, attacker: { key: fake, chain: [fake, genuine] } };
    },
    dns: (w, d, a, g) => mxDomain(w, d, `mx.${d}`, a, [tlsa(w, 3, 1, 1, g!.key)]),
  },
  {
    id: 'case6',
    title: '2 0 1 trust anchor',
    protect: 'dane',
    certs: async () => {
      // The attacker's leaf names the destination and is issued by its own CA; its chain also
      // carries the genuine anchor (public), so the 2 0 1 record matches a chain element.
      const ca = await makeCa({ cn: 'Genuine Root' });
      const evil = await makeCa({ cn: 'Genuine Root' });
      const genuine = await makeLeaf(ca, { dnsNames: ['case6-terminate.test', 'case6-strip.test', 'case6-reject-starttls.test', 'case6-inject.test'] });
      const fake = await makeLeaf(evil, { dnsNames: ['case6-terminate.test', 'case6-strip.test', 'case6-reject-starttls.test', 'case6-inject.test'] });
      return { genuine: { key: genuine, chain: [genuine, ca] }, attacker: { key: fake, chain: [fake, ca] } };
    },
    dns: (w, d, a, g) => mxDomain(w, d, `mx.${d}`, a, [tlsa(w, 2, 0, 1, g!.chain[1]!)]),
  },
  {
    id: 'case7',
    title: 'secure CNAME to the MX host, TLSA at the expanded name',
    protect: 'dane',
    certs: eePair,
    dns: (w, d, a, g) => {
      w.dns.addZone({ name: d, secure: true });
      w.dns.add(
        { name: d, type: 'MX', data: { preference: 10, exchange: `mx.${d}` } },
        { name: `mx.${d}`, type: 'CNAME', data: `host.provider-${d}` },
        { name: `host.provider-${d}`, type: 'A', data: a },
        { name: `_${w.port}._tcp.host.provider-${d}`, type: 'TLSA', data: tlsa(w, 3, 1, 1, g!.key) },
      );
      w.dns.addZone({ name: `provider-${d}`, secure: true });
    },
  },
  {
    id: 'case8',
    title: 'insecure address records (opportunistic; control)',
    protect: 'none',
    certs: eePair,
    dns: (w, d, a) => {
      w.dns.addZone({ name: d, secure: true });
      w.dns.addZone({ name: `unsigned-${d}`, secure: false });
      w.dns.add({ name: d, type: 'MX', data: { preference: 10, exchange: `mx.unsigned-${d}` } }, { name: `mx.unsigned-${d}`, type: 'A', data: a });
    },
  },
  {
    id: 'case9',
    title: 'implicit MX, TLSA at the domain',
    protect: 'dane',
    certs: eePair,
    dns: (w, d, a, g) => {
      w.dns.addZone({ name: d, secure: true });
      w.dns.add({ name: d, type: 'A', data: a }, { name: `_${w.port}._tcp.${d}`, type: 'TLSA', data: tlsa(w, 3, 1, 1, g!.key) });
    },
  },
  {
    id: 'case10',
    title: '3 1 1 match next to 3 1 2 mismatch',
    protect: 'dane',
    certs: eePair,
    dns: (w, d, a, g) => mxDomain(w, d, `mx.${d}`, a, [tlsa(w, 3, 1, 1, g!.key), { usage: 3, selector: 1, matchingType: 2, certificate: Buffer.alloc(64, 7) }]),
  },
];

interface Cell {
  s: Scenario;
  mode: MitmMode;
  domain: string;
  mitm: Mitm;
  marker: string;
  genuine: Receiver;
}

let w: World;
const cells: Cell[] = [];

beforeAll(async () => {
  w = await World.create();
  for (const s of SCENARIOS) {
    const certs = await s.certs();
    const g = certs.genuine;
    const genuine = await w.receiver(g ? { tls: { key: g.key.keyPem, cert: chainPem(...g.chain) }, starttls: s.starttls ?? true } : {});
    for (const mode of MITM_MODES) {
      const domain = `${s.id}-${mode}.test`;
      const mitm = await startMitm({
        host: w.deadHost(),
        port: w.port,
        mode,
        upstream: { host: genuine.host, port: genuine.port },
        tls: { key: certs.attacker.key.keyPem, cert: chainPem(...certs.attacker.chain) },
        name: `mx.${domain}`,
      });
      s.dns(w, domain, mitm.host, g);
      cells.push({ s, mode, domain, mitm, genuine, marker: `secret-${domain}-${Math.random().toString(36).slice(2)}` });
    }
  }
  await w.start({ log: { level: 'info' } });
  await Promise.all(
    cells.map((c) =>
      submit({
        port: w.ingressPort,
        from: 'app@sender.test',
        to: [`user@${c.domain}`],
        raw: `Subject: ${c.marker}\r\nX-Test-Id: ${c.marker}\r\n\r\nbody ${c.marker}\r\n`,
      }),
    ),
  );
  await w.settle();
  // A first attempt whose DNS lookups timed out (the relay's resolver waits 1 s here; one stall of this busy process
  // times out every lookup in flight) deferred without reaching the attacker, and "the attack was really tried" failed
  // for cases 3-10 at once. Such cells are retried after the backoff, as the relay itself would: rounds are counted,
  // nothing waits on the wall clock. Cells already attacked are attempted again too, which only adds attacks.
  const untried = (c: Cell) => c.s.protect !== 'no-connection' && c.mitm.connections === 0;
  for (let round = 0; round < 5 && cells.some(untried); round++) await w.advance(5 * 3_600_000);
}, 120_000);

afterAll(async () => {
  await Promise.all(cells.map((c) => c.mitm.close()));
  await w?.close();
});

const markers = (c: Cell) => [c.marker, `user@${c.domain}`, 'app@sender.test', 'MAIL FROM', 'RCPT TO'];
const queuedFor = (c: Cell) =>
  w
    .relay!.scheduler.list()
    .flatMap((m) => m.recipients)
    .find((r) => r.address === `user@${c.domain}`);

describe('active attacker between relay and MX, per DANE case', () => {
  for (const s of SCENARIOS) {
    const protectedModes =
      s.protect === 'dane' || s.protect === 'no-connection' ? MITM_MODES : s.protect === 'tls' ? MITM_MODES.filter((m) => m !== 'terminate') : [];
    if (protectedModes.length === 0) continue;
    it(`DANE-41, DANE-43, DANE-63 ${s.id} (${s.title}): ${protectedModes.join(', ')} see nothing of the envelope; the message stays queued`, () => {
      for (const c of cells.filter((x) => x.s === s && protectedModes.includes(x.mode))) {
        expect({ mode: c.mode, leaked: c.mitm.leaked(markers(c)) }).toEqual({ mode: c.mode, leaked: false });
        expect(c.genuine.messages.filter((m) => m.body.toString().includes(c.marker))).toEqual([]);
        expect(queuedFor(c)).toMatchObject({ state: 'deferred' });
        if (s.protect === 'no-connection') expect(c.mitm.connections).toBe(0);
        else expect(c.mitm.connections, JSON.stringify(queuedFor(c))).toBeGreaterThan(0); // the attack was really tried
        // the impostor got as far as a TLS handshake: the relay refused its certificate, not the connection
        if (s.protect === 'dane' && c.mode === 'terminate') expect(c.mitm.handshakes).toBeGreaterThan(0);
      }
    });
  }

  it('DANE-43 the injected reply after 220 to STARTTLS is never read as a reply inside TLS: no handshake follows it', () => {
    for (const c of cells.filter((x) => x.mode === 'inject' && x.s.protect !== 'no-connection')) {
      expect({ id: c.s.id, handshakes: c.mitm.handshakes }).toEqual({ id: c.s.id, handshakes: 0 });
    }
  });

  it('DANE-44 control: the unprotected destination (case 8) is readable by the stripper, so the recorders do see leaks', () => {
    const strip = cells.find((c) => c.s.protect === 'none' && c.mode === 'strip')!;
    expect(strip.mitm.leaked(markers(strip))).toBe(true);
    // case 4 (TLS without authentication, RFC 7672 §2.2) accepts the impostor's TLS by design
    const term = cells.find((c) => c.s.protect === 'tls' && c.mode === 'terminate')!;
    expect(term.mitm.handshakes).toBeGreaterThan(0);
  });

  it('reports the figures', () => {
    const prot = cells.filter((c) => c.s.protect === 'dane' || c.s.protect === 'no-connection' || (c.s.protect === 'tls' && c.mode !== 'terminate'));
    const leaked = prot.filter((c) => c.mitm.leaked(markers(c))).length;
    const delivered = prot.filter((c) => !queuedFor(c)).length;
    const lost = prot.filter((c) => !queuedFor(c) && !c.genuine.messages.some((m) => m.body.toString().includes(c.marker))).length;
    record({
      case: 'active attacker (MITM: terminate, strip, 454, inject × 10 DANE cases)',
      sent: prot.length,
      acknowledged: prot.length,
      delivered,
      lost,
      leaked,
      notes: `${prot.length} protected attacks (attacker connections ${prot.reduce((n, c) => n + c.mitm.connections, 0)}); unprotected control cells: ${cells.length - prot.length}`,
    });
    expect(leaked).toBe(0);
    expect(lost).toBe(0);
  });
});
