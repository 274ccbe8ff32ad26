/**
 * DANE authentication of a presented certificate chain against a secure TLSA
 * RRset (digest DANE-50…56; RFC 6698 §2.1, RFC 7671 §5 and §9, RFC 7672 §3).
 *
 * Pure and synchronous: no DNS, no network, no system CA store (RFC 7671 §5.2,
 * RFC 7672 §3.1.2: DANE-TA trust comes only from the TLSA RRset). Signatures
 * are checked with node:crypto (OpenSSL); @peculiar/x509 parses extensions
 * (basicConstraints path length, criticality, SAN) that node does not expose.
 *
 * Everything presented by the peer is hostile input: oversized, truncated or
 * garbage certificates, issuer cycles and absurdly long chains all end in a
 * failing outcome, never an exception or an unbounded search.
 */
import 'reflect-metadata';
import { X509Certificate as NodeCert, createHash, createPublicKey, type KeyObject } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { TlsaRecord } from '../dns/types.js';
import type { DaneFacts, VerifyOutcome } from './types.js';
import { DEFAULT_DIGEST_PREFERENCE, MATCHING_TYPE_DIGEST, formatTlsa, shortTlsa, spkiFromCertDer, usableRecords, type DigestName } from './tlsa.js';
import { lowerName } from '../dns/name.js';
import { TtlCache } from '../dns/cache.js';

export interface DaneVerifyInput {
  records: TlsaRecord[]; // the whole secure TLSA RRset (verify applies usability + agility itself)
  chain: Buffer[]; // presented chain, DER, leaf first (as received; may be unordered/contain junk)
  referenceNames: string[]; // DANE-55: TLSA base domain first, plus allowed extras; lowercase A-labels
  now: Date;
  digestPreference?: DigestName[];
}

/** Presented chains longer than this are refused outright (hostile or broken peer). */
export const MAX_CHAIN = 10;
/** A single certificate larger than this is treated as hostile. Real server certs are a few KB. */
export const MAX_CERT_BYTES = 64 * 1024;
/** Upper bound on path-search steps: issuer cycles and same-name swarms cannot make us spin. */
const MAX_PATH_STEPS = 2000;
/** asn1js resource limits for @peculiar/x509 parsing of untrusted DER. */
const PARSE_OPTIONS = { berOptions: { maxDepth: 32, maxNodes: 4000, maxContentLength: MAX_CERT_BYTES } };

/**
 * Extensions whose semantics we honour or that cannot weaken the check. RFC 5280 §4.2:
 * a certificate with an unrecognised *critical* extension must be rejected. Name
 * constraints (2.5.29.30) and policy constraints are deliberately not listed: we do
 * not process them, so a path that depends on them fails closed.
 */
const KNOWN_CRITICAL = new Set([
  '2.5.29.19', // basicConstraints
  '2.5.29.15', // keyUsage (OpenSSL's checkIssued honours keyCertSign)
  '2.5.29.37', // extKeyUsage
  '2.5.29.17', // subjectAltName
  '2.5.29.14', // subjectKeyIdentifier
  '2.5.29.35', // authorityKeyIdentifier
  '2.5.29.32', // certificatePolicies (no policy processing requested: any policy is acceptable)
]);

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

interface Parsed {
  /** index in the presented chain (-1 for a certificate taken from DNS) */
  index: number;
  der: Buffer;
  /** SubjectPublicKeyInfo bytes as encoded in the certificate (null if not extractable) */
  spki: Buffer | null;
  node: NodeCert;
  /** extension-level parse; null (with `pxError`) when @peculiar/x509 refused the DER */
  px: x509.X509Certificate | null;
  pxError?: string;
}

/** A certificate's parse apart from its place in a chain: a pure function of the DER bytes (or why it failed). */
type CertParse = Omit<Parsed, 'index'> | string;

/** Parses kept (issue 17): one per certificate of the last destinations' chains. */
export const CERT_PARSE_CACHE_ENTRIES = 64;
/** Larger certificates are parsed every time (real server certificates are 1–3 KiB): the cache stays small. */
export const CERT_PARSE_CACHE_MAX_BYTES = 16 * 1024;

/**
 * The last parses by certificate content, least recently used dropped first. Parsing (node:crypto and
 * @peculiar/x509 over asn1js) was ~10 ms of CPU per connection, and a destination's connections present
 * the same chain again and again. It cannot change a verdict: a parse depends on the bytes alone (a hit
 * is compared byte for byte with its own copy of them), nothing reads a parse but to judge it (node's
 * X509Certificate is immutable; the @peculiar/x509 object and the buffers are only read), and everything
 * that depends on the verification — dates against `now`, names, records, the chain's order — is judged
 * on every call. Entries never expire (ttl Infinity): only the bound evicts them.
 */
const certParses = new TtlCache<{ der: Buffer; parse: CertParse }>(CERT_PARSE_CACHE_ENTRIES);
const certParseCounts = { hits: 0, misses: 0 };

/** Empties the certificate parse cache (tests: compare a verdict with one from cold parses). */
export function clearCertParseCache(): void {
  certParses.clear();
}

/** How the certificate parse cache fared since start (tests, profiles). */
export function certParseCacheStats(): { entries: number; hits: number; misses: number } {
  return { entries: certParses.size, ...certParseCounts };
}

function parseCert(der: Buffer, index: number): Parsed | string {
  if (der.length === 0) return 'empty certificate';
  if (der.length > MAX_CERT_BYTES) return `certificate of ${der.length} bytes exceeds the ${MAX_CERT_BYTES}-byte limit`;
  let parse: CertParse;
  if (der.length > CERT_PARSE_CACHE_MAX_BYTES) parse = parseDer(der);
  else {
    const key = createHash('sha256').update(der).digest('base64');
    const hit = certParses.get(key, 0)?.value;
    if (hit?.der.equals(der)) {
      certParseCounts.hits++;
      parse = hit.parse;
    } else {
      certParseCounts.misses++;
      // A copy: the caller's buffer may be reused or changed after this call; the cache's bytes never are.
      const own = Buffer.from(der);
      parse = parseDer(own);
      certParses.set(key, { der: own, parse }, Number.POSITIVE_INFINITY, 0);
    }
  }
  // A new object per call: identity-keyed memos of one verification (IssuerGraph) see what they saw before.
  return typeof parse === 'string' ? parse : { index, ...parse };
}

function parseDer(der: Buffer): CertParse {
  let node: NodeCert;
  try {
    node = new NodeCert(der);
  } catch (e) {
    return `unparseable certificate (${(e as Error).message})`;
  }
  const spki = spkiFromCertDer(der);
  let px: x509.X509Certificate | null = null;
  let pxError: string | undefined;
  try {
    px = new x509.X509Certificate(der, PARSE_OPTIONS);
    // Touch what the TA path needs so a malformed extension fails here, not later.
    void px.notBefore.getTime();
    void px.notAfter.getTime();
    void px.extensions.length;
  } catch (e) {
    px = null;
    pxError = (e as Error).message || 'malformed certificate';
  }
  return pxError === undefined ? { der, spki, node, px } : { der, spki, node, px, pxError };
}

function basicConstraints(c: Parsed): { ca: boolean; pathLen: number | undefined } | null {
  const ext = c.px?.getExtension(x509.BasicConstraintsExtension);
  return ext ? { ca: ext.ca, pathLen: ext.pathLength } : null;
}

/** RFC 5280 §6.1.4(l): self-issued certificates do not count towards pathLenConstraint. */
function selfIssued(c: Parsed): boolean {
  return c.node.subject === c.node.issuer;
}

function label(c: Parsed): string {
  const cn = c.node.subject.split('\n').find((l) => l.startsWith('CN='));
  return cn ? `"${cn.slice(3)}"` : 'certificate';
}

// ---------------------------------------------------------------------------
// Record matching (DANE-50)
// ---------------------------------------------------------------------------

/**
 * RFC 6698 §2.1.2–2.1.3: selector 0 = the full certificate DER, 1 = its
 * SubjectPublicKeyInfo DER; matching type 0 = those exact bytes, 1 = SHA-256,
 * 2 = SHA-512 of them.
 */
function certMatches(r: TlsaRecord, c: Parsed): boolean {
  const bytes = r.selector === 0 ? c.der : c.spki;
  if (!bytes) return false;
  if (r.matchingType === 0) return bytes.equals(r.data);
  const digest = MATCHING_TYPE_DIGEST[r.matchingType];
  return digest !== undefined && createHash(digest).update(bytes).digest().equals(r.data);
}

// ---------------------------------------------------------------------------
// Reference identifiers (DANE-55/56, RFC 7672 §3.2.2–3.2.3)
// ---------------------------------------------------------------------------

const HOSTNAME_CHARS = /^[a-z0-9_.*-]+$/;

const normalizeName = lowerName;

/**
 * One presented identifier against one reference identifier, RFC 7672 §3.2.3:
 * case-insensitive; a wildcard must be the entire leftmost label ("*.example.com";
 * never "smtp*.example.com" or "*smtp.example.com") and matches exactly one label
 * (multi-label matching is optional in the RFC; we do not offer it).
 * Unlike OpenSSL's X509_check_host we accept a wildcard directly above a
 * single-label suffix ("*.example"): RFC 7672 §3.2.3 does not forbid it.
 */
export function matchesReferenceName(presented: string, reference: string): boolean {
  const p = normalizeName(presented);
  const r = normalizeName(reference);
  if (!p || !r || r.includes('*') || !HOSTNAME_CHARS.test(p) || !HOSTNAME_CHARS.test(r)) return false;
  if (p.split('.').some((l) => l === '') || r.split('.').some((l) => l === '')) return false;
  if (!p.includes('*')) return p === r;
  if (!p.startsWith('*.') || p.indexOf('*', 1) !== -1) return false;
  const rest = p.slice(2);
  const dot = r.indexOf('.');
  return dot > 0 && r.slice(dot + 1) === rest;
}

/** Presented DNS identifiers: SAN dNSNames; the subject CN only when there is no dNSName. */
function presentedNames(leaf: Parsed): { names: string[]; from: 'san' | 'cn' } | string {
  if (!leaf.px) return `leaf names unreadable (${leaf.pxError ?? 'malformed'})`;
  try {
    const san = leaf.px.getExtension(x509.SubjectAlternativeNameExtension);
    const dns = san ? san.names.items.filter((n) => n.type === 'dns').map((n) => n.value) : [];
    if (dns.length > 0) return { names: dns, from: 'san' };
    return { names: leaf.px.subjectName.getField('CN'), from: 'cn' };
  } catch (e) {
    return `leaf names unreadable (${(e as Error).message})`;
  }
}

// ---------------------------------------------------------------------------
// DANE-TA path validation (DANE-53/54)
// ---------------------------------------------------------------------------

type Anchor =
  /** a presented certificate matched the 2-record (RFC 6698 §2.1.1) */
  | { kind: 'chain'; record: TlsaRecord; cert: Parsed }
  /** `2 0 0`: the full anchor certificate from DNS (RFC 7671 §5.2.2) */
  | { kind: 'dns-cert'; record: TlsaRecord; cert: Parsed }
  /** `2 1 0`: a bare public key from DNS (RFC 7671 §5.2.3) */
  | { kind: 'dns-key'; record: TlsaRecord; key: KeyObject };

type Reason = 'dane-no-match' | 'certificate-host-mismatch' | 'certificate-expired' | 'tlsa-invalid' | 'validation-failure';

/** `partial`: no complete signature-linked path reached the anchor (less informative than a path that failed a check). */
interface Failure {
  reason: Reason;
  detail: string;
  matched?: string;
  depth?: number;
  partial?: boolean;
}

/** Failures worth reporting first: the closer the peer came to authenticating, the more useful. */
const FAILURE_RANK: Record<Reason, number> = {
  'certificate-host-mismatch': 4,
  'certificate-expired': 3,
  'validation-failure': 2,
  'dane-no-match': 1,
  'tlsa-invalid': 0,
};

class IssuerGraph {
  /**
   * Memo keyed by the two certificates' identities (the `Parsed` objects), never by
   * their chain index: every certificate taken from DNS has index -1, and two `2 0 0`
   * anchors (current and next CA, RFC 7671 §8) must not share one another's answers.
   */
  private readonly memo = new Map<Parsed, Map<Parsed, boolean>>();
  steps = 0;

  /** `child` names `issuer` as its issuer (name/AKI/keyUsage, per OpenSSL) and is signed by its key. */
  issued(child: Parsed, issuer: Parsed): boolean {
    let row = this.memo.get(child);
    if (!row) this.memo.set(child, (row = new Map()));
    let v = row.get(issuer);
    if (v === undefined) {
      try {
        v = child.node.checkIssued(issuer.node) && child.node.verify(issuer.node.publicKey);
      } catch {
        v = false; // unsupported or broken key/signature algorithm: not an issuer
      }
      row.set(issuer, v);
    }
    return v;
  }

  signedByKey(child: Parsed, key: KeyObject): boolean {
    try {
      return child.node.verify(key);
    } catch {
      return false;
    }
  }
}

function anchorSigned(g: IssuerGraph, top: Parsed, a: Anchor): boolean {
  return a.kind === 'dns-key' ? g.signedByKey(top, a.key) : g.issued(top, a.cert);
}

function describeAnchor(a: Anchor, depth: number): string {
  const rec = `DANE-TA ${shortTlsa(a.record)}`;
  if (a.kind === 'chain') return `${rec} matched ${label(a.cert)} at depth ${depth}`;
  if (a.kind === 'dns-cert') return `${rec} (anchor certificate from DNS, not in the presented chain)`;
  return `${rec} (anchor public key from DNS, not in the presented chain)`;
}

/**
 * PKIX checks on a signature-linked path (RFC 5280 §6.1, as DANE-53 requires):
 * every certificate below the anchor, leaf included, within its validity
 * period; every issuer below the anchor a CA (basicConstraints cA) honouring
 * pathLenConstraint; no unknown critical extension. The anchor's own dates
 * are not checked (RFC 5280 §6.1.1(d): a trust anchor is not part of the path),
 * but with selector Cert(0) its constraints are applied (digest DANE-53,
 * RFC 7671 §5.2.2: the TA certificate as published is the anchor). A bare key
 * (selector SPKI(1)) carries no constraints.
 */
function checkPath(path: Parsed[], a: Anchor, now: Date): Failure | null {
  const where = describeAnchor(a, a.kind === 'chain' ? a.cert.index : path.length);
  const fail = (reason: Reason, why: string): Failure => ({ reason, detail: `${where}, but ${why}` });
  for (let i = 0; i < path.length; i++) {
    const c = path[i]!;
    if (!c.px) return fail('validation-failure', `the certificate at depth ${c.index} is malformed (${c.pxError})`);
    const unknown = c.px.extensions.filter((e) => e.critical && !KNOWN_CRITICAL.has(e.type)).map((e) => e.type);
    if (unknown.length > 0) return fail('validation-failure', `${label(c)} has unrecognised critical extension ${unknown.join(', ')} (RFC 5280 §4.2)`);
    if (i === 0) continue;
    const bc = basicConstraints(c);
    if (!bc?.ca) return fail('validation-failure', `issuer ${label(c)} at depth ${c.index} is not a CA (basicConstraints)`);
    const below = path.slice(1, i).filter((x) => !selfIssued(x)).length;
    if (bc.pathLen !== undefined && below > bc.pathLen) {
      return fail('validation-failure', `${label(c)} allows path length ${bc.pathLen}, ${below} intermediates below it`);
    }
  }
  const leafIsAnchor = a.kind === 'chain' && path.length === 1 && path[0] === a.cert;
  if (a.record.selector === 0 && a.kind !== 'dns-key' && !leafIsAnchor) {
    const bc = basicConstraints(a.cert);
    if (bc && !bc.ca) return fail('validation-failure', `the anchor ${label(a.cert)} is not a CA (basicConstraints)`);
    const below = path.slice(1).filter((x) => !selfIssued(x)).length;
    if (bc?.pathLen !== undefined && below > bc.pathLen) {
      return fail('validation-failure', `the anchor ${label(a.cert)} allows path length ${bc.pathLen}, ${below} intermediates below it`);
    }
  }
  for (const c of path) {
    const nb = c.px!.notBefore;
    const na = c.px!.notAfter;
    if (now.getTime() > na.getTime()) {
      return fail('certificate-expired', `${label(c)} at depth ${c.index} expired ${na.toISOString()}`);
    }
    if (now.getTime() < nb.getTime()) {
      return fail('validation-failure', `${label(c)} at depth ${c.index} is not valid before ${nb.toISOString()}`);
    }
  }
  return null;
}

/**
 * Depth-first search for signature-linked paths leaf → … → anchor through the
 * presented certificates (any order, each used once), calling `accept` on each
 * complete path until it returns true. Bounded by MAX_CHAIN and MAX_PATH_STEPS.
 */
function searchPaths(g: IssuerGraph, leaf: Parsed, pool: Parsed[], a: Anchor, accept: (path: Parsed[]) => boolean): boolean {
  const path: Parsed[] = [leaf];
  const dfs = (): boolean => {
    if (++g.steps > MAX_PATH_STEPS) return false;
    const top = path[path.length - 1]!;
    if (anchorSigned(g, top, a) && accept(path.slice())) return true;
    if (path.length >= MAX_CHAIN) return false;
    for (const c of pool) {
      if (path.includes(c) || (a.kind !== 'dns-key' && c === a.cert)) continue;
      if (!g.issued(top, c)) continue;
      path.push(c);
      if (dfs()) return true;
      path.pop();
    }
    return false;
  };
  return dfs();
}

// ---------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------

function hexPrefix(b: Buffer): string {
  return b.toString('hex').toUpperCase();
}

/**
 * Authenticates `chain` with the usable TLSA records (RFC 6698 §4.1: any one
 * usable record that matches is enough). Synchronous.
 */
export function verifyDane(input: DaneVerifyInput): VerifyOutcome {
  const seen: Seen = { certs: [] };
  const out = verifyCore(input, seen);
  if (seen.record) {
    const i = input.records.indexOf(seen.record);
    if (i >= 0) out.matchedIndex = i;
    out.matchedUsage = seen.record.usage;
  }
  if (out.ok && seen.certs.length === 1 && Array.isArray(input.chain) && input.chain.length > 1 && input.chain.length <= MAX_CHAIN) {
    // DANE-EE returned before reading the rest of the chain; facts still describe it (chain length already bounded).
    for (let i = 1; i < input.chain.length; i++) {
      const der = input.chain[i];
      const p = Buffer.isBuffer(der) ? parseCert(der, i) : 'not a buffer';
      if (typeof p !== 'string') seen.certs.push(p);
    }
  }
  if (seen.certs.length > 0) {
    // Facts are diagnostics (rollover warnings, `check`): a certificate that the verifier could skip
    // but whose dates or names cannot be rendered (e.g. a junk extra certificate) must never turn
    // the authentication result into an exception, i.e. a DANE success into a deferral.
    try {
      out.facts = factsOf(input, seen.certs);
    } catch {
      // the outcome stands without facts
    }
  }
  return out;
}

/** What verifyCore parsed and which record authenticated, for the outcome's facts. */
interface Seen {
  certs: Parsed[];
  record?: TlsaRecord;
}

/** Additive facts for rollover warnings and `check` (RFC 7671 §8: publish current and next). */
function factsOf(input: DaneVerifyInput, certs: Parsed[]): DaneFacts {
  const usable = new Set(usableRecords(input.records, input.digestPreference ?? [...DEFAULT_DIGEST_PREFERENCE]));
  return {
    records: input.records.map((r, index) => {
      const u = usable.has(r);
      const hit = u ? certs.find((c) => certMatches(r, c)) : undefined;
      const id = `${r.usage} ${r.selector} ${r.matchingType} ${createHash('sha256').update(r.data).digest('hex').slice(0, 32)}`;
      return { index, usage: r.usage, selector: r.selector, matchingType: r.matchingType, usable: u, matchDepth: hit ? hit.index : null, id };
    }),
    chain: certs.map((c) => ({
      depth: c.index,
      subject: c.node.subject.replace(/\n/g, ', '),
      issuer: c.node.issuer.replace(/\n/g, ', '),
      notBefore: new Date(c.node.validFrom).toISOString(),
      notAfter: new Date(c.node.validTo).toISOString(),
      spkiSha256: c.spki ? createHash('sha256').update(c.spki).digest('hex').toUpperCase() : '',
      ca: basicConstraints(c)?.ca ?? false,
    })),
  };
}

function verifyCore(input: DaneVerifyInput, seenOut: Seen): VerifyOutcome {
  const pref = input.digestPreference ?? [...DEFAULT_DIGEST_PREFERENCE];
  const usable = usableRecords(input.records, pref);
  if (usable.length === 0) {
    return {
      ok: false,
      reason: 'tlsa-invalid',
      detail: `no usable TLSA record among ${input.records.length} (${input.records.map((r) => shortTlsa(r, 8)).join(', ') || 'empty RRset'})`,
    };
  }
  // Accept any Uint8Array view; anything else in the array is junk.
  const chain = (Array.isArray(input.chain) ? input.chain : []).map((c: unknown) =>
    Buffer.isBuffer(c) ? c : c instanceof Uint8Array ? Buffer.from(c.buffer, c.byteOffset, c.byteLength) : null,
  );
  if (chain.length === 0) return { ok: false, reason: 'validation-failure', detail: 'the server presented no certificate' };
  if (chain.length > MAX_CHAIN) {
    // Local resource policy, applied even before DANE-EE (for which RFC 7672
    // §3.1.1 ignores the chain): no real server sends this many, so refuse
    // before parsing anything rather than trusting a hostile peer's input.
    return { ok: false, reason: 'validation-failure', detail: `the server presented ${chain.length} certificates, more than the limit of ${MAX_CHAIN}` };
  }

  const leafOrErr = chain[0] ? parseCert(chain[0], 0) : 'not a byte buffer';
  if (typeof leafOrErr === 'string') {
    return { ok: false, reason: 'validation-failure', detail: `leaf certificate rejected: ${leafOrErr}` };
  }
  const leaf = leafOrErr;
  seenOut.certs.push(leaf);

  // DANE-52 [RFC 7671 §5.1; RFC 7672 §3.1.1]: DANE-EE compares with the leaf
  // only; names, dates, chain and CA trust are ignored.
  for (const r of usable) {
    if (r.usage === 3 && certMatches(r, leaf)) {
      seenOut.record = r;
      return { ok: true, detail: `DANE-EE ${shortTlsa(r)} matched the leaf`, matched: formatTlsa(r), depth: 0 };
    }
  }

  // The rest of the presented chain: junk entries are skipped (a chain "as
  // received" may carry garbage), exact duplicates collapsed.
  const pool: Parsed[] = [];
  let junk = 0;
  const seen = new Set<string>([leaf.der.toString('base64')]);
  for (let i = 1; i < chain.length; i++) {
    const der = chain[i];
    if (!der) {
      junk++;
      continue;
    }
    const key = der.toString('base64');
    if (seen.has(key)) continue;
    seen.add(key);
    const p = parseCert(der, i);
    if (typeof p === 'string') junk++;
    else {
      pool.push(p);
      seenOut.certs.push(p);
    }
  }

  // DANE-53/54: collect the trust anchors the 2-records designate.
  const anchors: Anchor[] = [];
  for (const r of usable) {
    if (r.usage !== 2) continue;
    let found = false;
    for (const c of [leaf, ...pool]) {
      if (certMatches(r, c)) {
        anchors.push({ kind: 'chain', record: r, cert: c });
        found = true;
      }
    }
    if (found || r.matchingType !== 0) continue; // digest records need the anchor in the chain (RFC 7671 §5.2.2)
    if (r.selector === 0) {
      // `2 0 0`: validating against the certificate from DNS is a MUST (RFC 7671 §5.2.2).
      const p = parseCert(Buffer.from(r.data), -1);
      if (typeof p !== 'string') anchors.push({ kind: 'dns-cert', record: r, cert: p });
    } else {
      // `2 1 0`: checking that the top certificate is signed by that key (RFC 7671 §5.2.3).
      try {
        anchors.push({ kind: 'dns-key', record: r, key: createPublicKey({ key: r.data, format: 'der', type: 'spki' }) });
      } catch {
        /* a key type node cannot use: this record cannot authenticate anything */
      }
    }
  }

  const g = new IssuerGraph();
  // Holders, not `let`s: they are written from callbacks.
  const state: { best: Failure | null; success: VerifyOutcome | null } = { best: null, success: null };
  const note = (f: Failure): void => {
    // Rank by reason, then a complete path over "does not chain": the reported failure is the
    // same whatever the order of the RRset (only equally ranked failures keep the first).
    const rank = (x: Failure): number => FAILURE_RANK[x.reason] * 2 + (x.partial ? 0 : 1);
    if (!state.best || rank(f) > rank(state.best)) state.best = f;
  };
  const names = presentedNames(leaf);
  const refs = input.referenceNames;

  for (const a of anchors) {
    const depthOf = (path: Parsed[]): number => (a.kind === 'chain' ? a.cert.index : path.length);
    let complete = 0; // signature-linked paths found for this anchor
    const onPath = (path: Parsed[]): boolean => {
      complete++;
      const matched = formatTlsa(a.record);
      const depth = depthOf(path);
      const bad = checkPath(path, a, input.now);
      if (bad) {
        note({ ...bad, matched, depth });
        return false;
      }
      // DANE-55/56: name checks apply to DANE-TA only (RFC 7672 §3.2.2).
      const where = describeAnchor(a, depth);
      if (typeof names === 'string') {
        note({ reason: 'validation-failure', detail: `${where}, but ${names}`, matched, depth });
        return false;
      }
      const kind = names.from === 'san' ? 'dNSName' : 'CN';
      for (const ref of refs) {
        const hit = names.names.find((n) => matchesReferenceName(n, ref));
        if (hit !== undefined) {
          state.success = { ok: true, detail: `${where}; chain of ${path.length} validated; leaf ${kind} ${hit} matches ${ref}`, matched, depth };
          seenOut.record = a.record;
          return true;
        }
      }
      note({
        reason: 'certificate-host-mismatch',
        detail: `${where}; chain validated, but leaf ${kind} [${names.names.join(', ')}] matches none of [${refs.join(', ')}]`,
        matched,
        depth,
      });
      return false;
    };

    if (a.kind === 'chain' && a.cert === leaf) {
      // A 2-record matching the leaf itself: the leaf is its own anchor; its
      // dates and names are still checked (digest DANE-53 names the leaf).
      onPath([leaf]);
    } else if (g.steps > MAX_PATH_STEPS) {
      note({ reason: 'validation-failure', detail: `path search abandoned after ${MAX_PATH_STEPS} steps`, matched: formatTlsa(a.record), partial: true });
    } else {
      searchPaths(g, leaf, pool, a, onPath);
      if (complete === 0) {
        note({
          reason: 'validation-failure',
          detail:
            `${describeAnchor(a, a.kind === 'chain' ? a.cert.index : 0)}, but the leaf does not chain to it` +
            (g.steps > MAX_PATH_STEPS ? ` (search abandoned after ${MAX_PATH_STEPS} steps)` : ''),
          matched: formatTlsa(a.record),
          partial: true,
        });
      }
    }
    if (state.success) return state.success;
  }

  if (state.best) {
    const f = state.best;
    const out: VerifyOutcome = { ok: false, reason: f.reason, detail: f.detail };
    if (f.matched !== undefined) out.matched = f.matched;
    if (f.depth !== undefined) out.depth = f.depth;
    return out;
  }

  const leafSpki = leaf.spki ? `leaf SPKI sha256 ${hexPrefix(createHash('sha256').update(leaf.spki).digest())}` : 'leaf SPKI unreadable';
  const leafCert = `cert sha256 ${hexPrefix(createHash('sha256').update(leaf.der).digest())}`;
  return {
    ok: false,
    reason: 'dane-no-match',
    detail:
      `no TLSA record matched: ${leafSpki}, ${leafCert}, ${usable.length} usable record${usable.length === 1 ? '' : 's'} tried` +
      (junk > 0 ? ` (${junk} unparseable chain entr${junk === 1 ? 'y' : 'ies'} ignored)` : ''),
  };
}
