/** Shared builders for the validator tests: a private signed root with zones below it. */
import { ValidatingResolver } from '../../src/dnssec/resolver.js';
import { Zone, dsText, makeKey, rd, type Key, type ZoneOptions } from '../support/signer.js';
import { startSignedDns, type SignedDns } from '../support/signedDnsServer.js';

export interface Tree {
  root: Zone;
  tld: Zone;
  zones: Map<string, Zone>;
  dns: SignedDns;
  anchors: string;
  resolvers: ValidatingResolver[];
  resolver(o?: { now?: () => number; maxCacheEntries?: number; anchors?: string }): ValidatingResolver;
  /** re-sign every zone (after changing records) */
  resign(): void;
  close(): Promise<void>;
}

export const KEYS = new Map<string, Key>();
/** Keys are slow to make (RSA): reuse one per (label, algorithm, flags). */
export function key(label: string, alg: number, flags = 257): Key {
  const id = `${label}|${alg}|${flags}`;
  let k = KEYS.get(id);
  if (!k) {
    k = makeKey(alg, flags);
    KEYS.set(id, k);
  }
  return k;
}

/**
 * Root "." and TLD "test" signed with ECDSA P-256; `children` are delegated
 * from "test" (secure when the zone has keys, with DS for its KSKs).
 */
export async function buildTree(children: Zone[], rootOpts: Partial<ZoneOptions> = {}): Promise<Tree> {
  const root = new Zone({ name: '.', keys: [key('root', 13)], ...rootOpts });
  const tld = new Zone({ name: 'test', keys: [key('tld', 13)] });
  root.delegate('test', tld.ksks);
  const zones = new Map<string, Zone>([
    ['.', root],
    ['test', tld],
  ]);
  for (const c of children) {
    zones.set(c.name, c);
    const parent = [...zones.values()]
      .filter((z) => z !== c && (z.name === '.' || c.name.endsWith('.' + z.name)))
      .sort((a, b) => b.name.length - a.name.length)[0]!;
    if (!parent.records.some((r) => r.type === 'NS' && r.name === c.name)) parent.delegate(c.name, c.isSigned ? c.ksks : []);
  }
  for (const z of zones.values()) z.sign();
  const dns = await startSignedDns([...zones.values()]);
  const anchors = root.ksks.map((k) => dsText('.', k)).join('\n') + '\n';
  const t: Tree = {
    root,
    tld,
    zones,
    dns,
    anchors,
    resolvers: [],
    resolver(o = {}) {
      const r = new ValidatingResolver({
        servers: [dns.server],
        timeoutMs: 2000,
        attempts: 1,
        trustAnchors: o.anchors ?? anchors,
        now: o.now,
        maxCacheEntries: o.maxCacheEntries,
      });
      t.resolvers.push(r);
      return r;
    },
    resign() {
      for (const z of zones.values()) z.sign();
    },
    async close() {
      await Promise.all(t.resolvers.map((r) => r.close()));
      await dns.close();
    },
  };
  return t;
}

/** A typical mail domain: MX, A, AAAA, TLSA. */
export function mailZone(name: string, o: Partial<ZoneOptions> = {}): Zone {
  const z = new Zone({ name, ...o });
  z.add(name, 'MX', rd.MX(10, `mx.${name}`));
  z.add(`mx.${name}`, 'A', rd.A('192.0.2.25'));
  z.add(`mx.${name}`, 'AAAA', rd.AAAA('2001:db8::25'));
  z.add(`_25._tcp.mx.${name}`, 'TLSA', rd.TLSA(3, 1, 1, Buffer.alloc(32, 0xab)));
  return z;
}
