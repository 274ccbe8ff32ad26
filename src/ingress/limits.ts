/**
 * Sliding-window counters per client key, driven by an injected clock so tests can
 * move time. Used for the per-client message rate (`ingress.rate_per_minute`) and for
 * failed AUTH attempts.
 *
 * Message rate works by reservation: MAIL takes a slot, a queued message keeps it,
 * a transaction that ends any other way gives it back. Counting only at commit would
 * let N parallel connections from one client each pass the check before any commits.
 */

export interface Reservation {
  readonly key: string;
  readonly at: number;
}

export class SlidingWindow {
  private readonly hits = new Map<string, number[]>();
  private ops = 0;

  constructor(
    readonly limit: number,
    readonly windowMs: number,
  ) {}

  private live(key: string, now: number): number[] {
    const arr = this.hits.get(key);
    if (!arr) return [];
    const cutoff = now - this.windowMs;
    let i = 0;
    while (i < arr.length && arr[i]! <= cutoff) i++;
    if (i > 0) arr.splice(0, i);
    if (arr.length === 0) this.hits.delete(key);
    return arr;
  }

  private sweep(now: number): void {
    // Bound memory under address-spraying: every so often drop keys whose hits all expired.
    if (++this.ops % 1024 !== 0) return;
    for (const key of [...this.hits.keys()]) this.live(key, now);
  }

  count(key: string, now: number): number {
    return this.live(key, now).length;
  }

  /** Takes a slot if fewer than `limit` are in the window. */
  tryAcquire(key: string, now: number): Reservation | undefined {
    this.sweep(now);
    const arr = this.live(key, now);
    if (arr.length >= this.limit) return undefined;
    this.record(key, now);
    return { key, at: now };
  }

  /** Counts an event unconditionally (a failed AUTH). */
  record(key: string, now: number): void {
    const arr = this.hits.get(key);
    if (arr) {
      // keep the array sorted even if the clock stepped back
      let i = arr.length;
      while (i > 0 && arr[i - 1]! > now) i--;
      arr.splice(i, 0, now);
    } else this.hits.set(key, [now]);
  }

  /** Gives a reserved slot back. */
  release(r: Reservation): void {
    const arr = this.hits.get(r.key);
    if (!arr) return;
    const i = arr.lastIndexOf(r.at);
    if (i >= 0) arr.splice(i, 1);
    if (arr.length === 0) this.hits.delete(r.key);
  }
}
