/**
 * A bounded LRU map whose entries expire: validated answers, zone keys and
 * zone-cut results. Bounded so that a flood of distinct names cannot grow
 * memory without limit.
 */
export class TtlCache<V> {
  private readonly map = new Map<string, { value: V; expires: number }>();
  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.map.size;
  }

  /** The value and its remaining lifetime in seconds, or undefined. */
  get(key: string, nowMs: number): { value: V; ttl: number } | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    if (e.expires <= nowMs) {
      this.map.delete(key);
      return undefined;
    }
    this.map.delete(key);
    this.map.set(key, e);
    return { value: e.value, ttl: Math.max(0, Math.ceil((e.expires - nowMs) / 1000)) };
  }

  set(key: string, value: V, ttlSeconds: number, nowMs: number): void {
    if (!(ttlSeconds > 0)) return;
    this.map.delete(key);
    this.map.set(key, { value, expires: nowMs + ttlSeconds * 1000 });
    while (this.map.size > this.maxEntries) this.map.delete(this.map.keys().next().value as string);
  }

  clear(): void {
    this.map.clear();
  }
}
