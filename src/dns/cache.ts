/**
 * A bounded LRU map whose entries expire: validated answers, zone keys and
 * zone-cut results. Bounded by entry count and, when given a size function,
 * by approximate bytes: a zone may publish a DNSKEY RRset of tens of
 * kilobytes and a TXT answer may be 64 KiB, so a count alone would let a
 * flood of large distinct answers grow memory by gigabytes.
 */
export class TtlCache<V> {
  private readonly map = new Map<string, { value: V; expires: number; bytes: number }>();
  private totalBytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxBytes = Infinity,
    private readonly sizeOf: (v: V) => number = () => 0,
  ) {}

  get size(): number {
    return this.map.size;
  }

  /** Approximate bytes held (0 without a size function). */
  get bytes(): number {
    return this.totalBytes;
  }

  /** The value and its remaining lifetime in seconds, or undefined. */
  get(key: string, nowMs: number): { value: V; ttl: number } | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.expires <= nowMs) {
      this.remove(key);
      return undefined;
    }
    this.map.delete(key);
    this.map.set(key, e);
    return { value: e.value, ttl: Math.max(0, Math.ceil((e.expires - nowMs) / 1000)) };
  }

  set(key: string, value: V, ttlSeconds: number, nowMs: number): void {
    if (!(ttlSeconds > 0)) return;
    const bytes = this.sizeOf(value);
    if (bytes > this.maxBytes) return; // larger than the whole cache: not kept
    this.remove(key);
    this.map.set(key, { value, expires: nowMs + ttlSeconds * 1000, bytes });
    this.totalBytes += bytes;
    while (this.map.size > this.maxEntries || this.totalBytes > this.maxBytes) this.remove(this.map.keys().next().value as string);
  }

  clear(): void {
    this.map.clear();
    this.totalBytes = 0;
  }

  private remove(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    this.totalBytes -= e.bytes;
    this.map.delete(key);
  }
}

/**
 * Rough memory footprint of a cached value: Buffer and string contents plus a
 * fixed overhead per object, array element and number. Only used to bound the
 * caches, so it needs to be proportional, not exact. Buffers are counted once
 * each (a key's `publicKey` is a view of its `rdata`; views share memory).
 */
export function approxBytes(v: unknown, depth = 0): number {
  if (v === null || v === undefined) return 8;
  if (typeof v === 'string') return 16 + v.length * 2;
  if (typeof v !== 'object') return 8;
  if (Buffer.isBuffer(v)) return 32 + v.byteLength;
  if (depth > 8) return 64;
  let n = 32;
  if (Array.isArray(v)) for (const x of v) n += 8 + approxBytes(x, depth + 1);
  else if (v instanceof Set || v instanceof Map) n += 16 * v.size;
  else for (const x of Object.values(v)) n += 8 + approxBytes(x, depth + 1);
  return n;
}
