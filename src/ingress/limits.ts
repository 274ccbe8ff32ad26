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

/**
 * Things in progress per client key (open connections, AUTH exchanges). The check and the
 * increment are one synchronous step, so parallel sessions cannot all pass the check before
 * any of them counts (the check-then-act race of issue 23).
 */
export class Concurrency {
  private readonly running = new Map<string, number>();

  /** Counts one more for `key` unless `max` are running; `max` 0 means no limit. */
  tryEnter(key: string, max: number): boolean {
    const n = this.running.get(key) ?? 0;
    if (max > 0 && n >= max) return false;
    this.running.set(key, n + 1);
    return true;
  }

  leave(key: string): void {
    const n = (this.running.get(key) ?? 0) - 1;
    if (n > 0) this.running.set(key, n);
    else this.running.delete(key);
  }

  count(key: string): number {
    return this.running.get(key) ?? 0;
  }
}

/** One AUTH exchange in progress; `end` it exactly once (AuthLimiter.end is idempotent). */
export interface AuthAttempt {
  readonly key: string;
  readonly reservation: Reservation;
  ended: boolean;
}

export type AuthAdmission = { ok: true; attempt: AuthAttempt } | { ok: false; why: 'failures' | 'concurrency' };

/**
 * Failed-AUTH limiting, counted when an attempt arrives (as Postfix's anvil counts AUTH commands),
 * not after the slow password check: each attempt takes a failure slot at once and gives it back
 * only when it succeeds. So N parallel sessions from one client get at most `failureLimit` password
 * checks per window, and at most `maxConcurrent` at the same time (scrypt costs CPU and 16 MB each).
 */
export class AuthLimiter {
  private readonly failures: SlidingWindow;
  private readonly running = new Concurrency();

  constructor(
    readonly failureLimit: number,
    readonly windowMs: number,
    readonly maxConcurrent: number,
  ) {
    this.failures = new SlidingWindow(failureLimit, windowMs);
  }

  begin(key: string, now: number): AuthAdmission {
    if (this.maxConcurrent > 0 && this.running.count(key) >= this.maxConcurrent) return { ok: false, why: 'concurrency' };
    const reservation = this.failures.tryAcquire(key, now);
    if (!reservation) return { ok: false, why: 'failures' };
    this.running.tryEnter(key, 0);
    return { ok: true, attempt: { key, reservation, ended: false } };
  }

  /** The credentials were right (or the failure was ours): the attempt is not a failure. */
  forgive(a: AuthAttempt): void {
    this.failures.release(a.reservation);
  }

  /** The exchange is over (any outcome, or the connection is gone). */
  end(a: AuthAttempt): void {
    if (a.ended) return;
    a.ended = true;
    this.running.leave(a.key);
  }

  /** Failures (and attempts in progress) counted for `key` in the window. */
  count(key: string, now: number): number {
    return this.failures.count(key, now);
  }
}
