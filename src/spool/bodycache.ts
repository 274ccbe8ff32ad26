/**
 * Recently committed message bodies, kept in memory so the first delivery attempt of a fresh
 * message (and a DSN quoting it) does not read back from disk what the spool wrote a moment ago:
 * an open, two preads and a close per message, each a thread-pool round trip (issue 17).
 *
 * Only a read cache of immutable bytes: `msg/<id>` is written, fsynced and renamed exactly as
 * before, and nothing ever rewrites a message body (operator commands hold, release or delete;
 * recovery quarantines or deletes), so an entry can only go stale by the message going away,
 * which drops it (remove, completion, quarantine, close). Anything not here is read from disk.
 *
 * Bounded by bytes, oldest committed dropped first. Each entry is charged the whole backing
 * store it keeps alive (a slice of a pooled buffer would keep the pool slab) plus a fixed
 * overhead for the Map entry and the Buffer object, so the budget is an honest upper bound.
 */

/**
 * Total the cache may hold: at 2 KB a message about 15,000 messages, minutes of backlog at the
 * relay's rate, so every message not stuck behind a slow destination is first delivered from here.
 */
export const BODY_CACHE_BUDGET = 32 * 1024 * 1024;
/** Bodies larger than this are not kept: one would evict hundreds of small ones, and a read of it costs little per byte. */
export const BODY_CACHE_MAX_ENTRY = 1024 * 1024;
/** Charged per entry besides the bytes: Map entry, Buffer object, ArrayBuffer header (generous). */
export const BODY_CACHE_ENTRY_OVERHEAD = 256;

export class BodyCache {
  private readonly entries = new Map<string, { body: Buffer; cost: number }>();
  private used = 0;

  constructor(
    readonly budget = BODY_CACHE_BUDGET,
    readonly maxEntry = BODY_CACHE_MAX_ENTRY,
  ) {}

  /** Bytes charged now (never above `budget`). */
  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.entries.size;
  }

  /** What a body costs the budget: its backing store (the most it can keep alive) and the overhead. */
  static cost(body: Buffer): number {
    return Math.max(body.byteLength, body.buffer.byteLength) + BODY_CACHE_ENTRY_OVERHEAD;
  }

  /** Keeps `body` (the caller no longer changes it), dropping the oldest entries to make room; too big: not kept. */
  put(id: string, body: Buffer): void {
    this.delete(id);
    const cost = BodyCache.cost(body);
    if (body.length > this.maxEntry || cost > this.budget) return;
    for (const [old, e] of this.entries) {
      if (this.used + cost <= this.budget) break;
      this.entries.delete(old);
      this.used -= e.cost;
    }
    this.entries.set(id, { body, cost });
    this.used += cost;
  }

  /** The kept bytes; callers must not change them (hand out copies). */
  get(id: string): Buffer | undefined {
    return this.entries.get(id)?.body;
  }

  delete(id: string): void {
    const e = this.entries.get(id);
    if (!e) return;
    this.entries.delete(id);
    this.used -= e.cost;
  }

  clear(): void {
    this.entries.clear();
    this.used = 0;
  }
}

/**
 * Collects a draft's body bytes as they go to the file, for the cache: exactly the octets handed
 * to write(2) past the header line, copied once into memory the collector owns. Gives up (and
 * lets go of what it had) once the body passes `max`.
 */
export class BodyCapture {
  private parts: Buffer[] | undefined = [];
  private length = 0;

  constructor(
    /** file offset where the body starts (the header line's length) */
    private readonly bodyStart: number,
    private readonly max = BODY_CACHE_MAX_ENTRY,
  ) {}

  /** `bytes` are about to be written at file offset `position`. */
  add(bytes: Buffer, position: number): void {
    if (!this.parts) return;
    const skip = Math.max(0, this.bodyStart - position);
    if (skip >= bytes.length) return;
    const n = bytes.length - skip;
    if (this.length + n > this.max) {
      this.parts = undefined;
      return;
    }
    // Unpooled and exactly sized: the cache charges the whole backing store.
    const copy = Buffer.allocUnsafeSlow(n);
    bytes.copy(copy, 0, skip);
    this.parts.push(copy);
    this.length += n;
  }

  /**
   * The whole file is `bytes` (header line and body, position 0), handed over instead of copied: the caller
   * never writes to them again. False (nothing kept) when something was captured already or the body is too big.
   */
  adopt(bytes: Buffer): boolean {
    if (!this.parts || this.parts.length > 0) return false;
    const n = bytes.length - this.bodyStart;
    if (n < 0 || n > this.max) return false;
    this.parts.push(bytes.subarray(this.bodyStart));
    this.length = n;
    return true;
  }

  /** The whole body, or undefined when it was too big. */
  take(): Buffer | undefined {
    const parts = this.parts;
    this.parts = undefined;
    if (!parts) return undefined;
    if (parts.length === 1) return parts[0];
    const all = Buffer.allocUnsafeSlow(this.length);
    let off = 0;
    for (const p of parts) off += p.copy(all, off);
    return all;
  }
}
