/**
 * Trust anchors: DS or DNSKEY records in presentation format (RFC 4034 §2.2,
 * §5.3), the format of Unbound's `root.key` / `trust-anchor-file`: one record
 * per line or spread over lines with parentheses, `;` comments, optional TTL
 * and class. Any zone may be an anchor point (private roots, tests).
 */
import { isAtOrBelow, normalizeName } from '../dns/name.js';
import { labelCount } from './names.js';
import { DIGEST_NAMES, SUPPORTED_ALGORITHMS, algorithmName, publicKeyFor } from './algorithms.js';
import { keyTag, parseDnskey, type Dnskey, type Ds } from './records.js';

/** Digest length per DS digest type: SHA-1, SHA-256, GOST R 34.11-94, SHA-384. */
const DS_DIGEST_OCTETS: Record<number, number> = { 1: 20, 2: 32, 3: 32, 4: 48 };

export interface ZoneAnchor {
  zone: string;
  ds: Ds[];
  dnskeys: Dnskey[];
}
export type TrustAnchors = Map<string, ZoneAnchor>;

/**
 * IANA root KSKs (https://data.iana.org/root-anchors/root-anchors.xml):
 * KSK-2017 (key tag 20326) and KSK-2024 (key tag 38696), both RSASHA256 with
 * SHA-256 digests.
 */
export const ROOT_TRUST_ANCHORS = `. IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D
. IN DS 38696 8 2 683D2D0ACB8C9B712A1948B27F741219298D0A450D612C483AF444A4C0FB2B16
`;

export class TrustAnchorError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`line ${line}: ${message}`);
    this.name = 'TrustAnchorError';
  }
}

/** Strip a `;` comment outside quotes. */
function stripComment(line: string): string {
  let q = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '"') q = !q;
    else if (c === ';' && !q) return line.slice(0, i);
  }
  return line;
}

/** Join parenthesised multi-line records (RFC 1035 §5.1) into logical records with their first line. */
function logicalRecords(text: string): Array<{ line: number; tokens: string[] }> {
  const out: Array<{ line: number; tokens: string[] }> = [];
  let cur: { line: number; tokens: string[] } | undefined;
  let depth = 0;
  text.split(/\r?\n/).forEach((raw, i) => {
    const ln = i + 1;
    const body = stripComment(raw);
    const tokens: string[] = [];
    for (const t of body
      .replace(/[()]/g, (p) => ` ${p} `)
      .split(/\s+/)
      .filter(Boolean)) {
      if (t === '(') depth++;
      else if (t === ')') {
        depth--;
        if (depth < 0) throw new TrustAnchorError(ln, 'unbalanced ")"');
      } else tokens.push(t);
    }
    if (!cur) {
      if (tokens.length === 0) return;
      cur = { line: ln, tokens: [] };
    }
    cur.tokens.push(...tokens);
    if (depth === 0) {
      out.push(cur);
      cur = undefined;
    }
  });
  if (depth !== 0 && cur) throw new TrustAnchorError(cur.line, 'unbalanced "(": record not closed');
  return out;
}

/**
 * Parse anchors. Throws TrustAnchorError (with the line number) on anything
 * that is not a DS or DNSKEY record, or whose data does not parse. Records of
 * other types (Unbound files never contain any) are an error, not ignored, so
 * a wrong file is noticed at `config check`.
 */
export function parseTrustAnchors(text: string): TrustAnchors {
  const anchors: TrustAnchors = new Map();
  for (const { line, tokens } of logicalRecords(text)) {
    if (tokens[0]!.startsWith('$')) throw new TrustAnchorError(line, `directive ${tokens[0]} is not supported in a trust anchor file`);
    let owner: string;
    try {
      owner = tokens[0] === '.' ? '.' : normalizeName(tokens[0]!);
    } catch (e) {
      throw new TrustAnchorError(line, `bad owner name "${tokens[0]}": ${(e as Error).message}`);
    }
    let i = 1;
    if (/^\d+$/.test(tokens[i] ?? '')) i++; // TTL
    if (/^(IN|CH|HS)$/i.test(tokens[i] ?? '')) {
      if (tokens[i]!.toUpperCase() !== 'IN') throw new TrustAnchorError(line, `class ${tokens[i]} is not IN`);
      i++;
    }
    if (/^\d+$/.test(tokens[i] ?? '')) i++; // TTL after class
    const type = (tokens[i++] ?? '').toUpperCase();
    const rdata = tokens.slice(i);
    let za = anchors.get(owner);
    if (!za) {
      za = { zone: owner, ds: [], dnskeys: [] };
      anchors.set(owner, za);
    }
    if (type === 'DS') {
      const [tag, alg, dt, ...hex] = rdata;
      const digest = hex.join('');
      if (!/^\d+$/.test(tag ?? '') || !/^\d+$/.test(alg ?? '') || !/^\d+$/.test(dt ?? '') || Number(tag) > 65535 || Number(alg) > 255 || Number(dt) > 255) {
        throw new TrustAnchorError(line, 'DS needs "key-tag algorithm digest-type digest"');
      }
      if (!/^[0-9a-fA-F]+$/.test(digest) || digest.length % 2) throw new TrustAnchorError(line, 'DS digest is not hexadecimal');
      // RFC 4034 §5.1.4, RFC 4509 §2.2, RFC 6605 §2: a digest of the wrong length can never match a key.
      const want = DS_DIGEST_OCTETS[Number(dt)];
      if (want !== undefined && digest.length / 2 !== want) {
        throw new TrustAnchorError(line, `DS digest type ${dt} (${DIGEST_NAMES[Number(dt)] ?? dt}) needs ${want} octets, found ${digest.length / 2}`);
      }
      za.ds.push({ keyTag: Number(tag), algorithm: Number(alg), digestType: Number(dt), digest: Buffer.from(digest, 'hex') });
    } else if (type === 'DNSKEY') {
      const [flags, proto, alg, ...b64] = rdata;
      if (
        !/^\d+$/.test(flags ?? '') ||
        !/^\d+$/.test(proto ?? '') ||
        !/^\d+$/.test(alg ?? '') ||
        Number(flags) > 65535 ||
        Number(proto) > 255 ||
        Number(alg) > 255
      ) {
        throw new TrustAnchorError(line, 'DNSKEY needs "flags protocol algorithm public-key"');
      }
      const key = b64.join('');
      if (!key || !/^[A-Za-z0-9+/]+=*$/.test(key)) throw new TrustAnchorError(line, 'DNSKEY public key is not base64');
      const head = Buffer.alloc(4);
      head.writeUInt16BE(Number(flags), 0);
      head[2] = Number(proto);
      head[3] = Number(alg);
      const rd = Buffer.concat([head, Buffer.from(key, 'base64')]);
      const k = parseDnskey(rd);
      if (!k) throw new TrustAnchorError(line, 'DNSKEY record too short');
      // Key material of a supported algorithm must make a usable key now, not fail silently at the first lookup.
      if (SUPPORTED_ALGORITHMS.has(k.algorithm) && !publicKeyFor(k.algorithm, k.publicKey)) {
        throw new TrustAnchorError(line, `DNSKEY public key is not a valid ${algorithmName(k.algorithm)} key (or outside the supported sizes)`);
      }
      za.dnskeys.push({ ...k, keyTag: keyTag(rd) });
    } else {
      throw new TrustAnchorError(line, `expected a DS or DNSKEY record, found "${type || tokens.join(' ')}"`);
    }
  }
  if (anchors.size === 0) throw new TrustAnchorError(1, 'no DS or DNSKEY record in the file');
  return anchors;
}

/** The built-in IANA root anchors. */
export function rootTrustAnchors(): TrustAnchors {
  return parseTrustAnchors(ROOT_TRUST_ANCHORS);
}

/** The deepest anchor at or above `name`. */
export function closestAnchor(anchors: TrustAnchors, name: string): ZoneAnchor | undefined {
  let best: ZoneAnchor | undefined;
  // Label-wise (isAtOrBelow, labelCount): an escaped dot inside a label is not a boundary.
  for (const a of anchors.values()) {
    if (isAtOrBelow(name, a.zone) && (!best || labelCount(a.zone) > labelCount(best.zone))) best = a;
  }
  return best;
}
