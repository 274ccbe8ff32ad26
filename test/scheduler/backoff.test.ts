import { describe, expect, it } from 'vitest';
import { backoffDelay, delayWarningDue, expired, permanentCode } from '../../src/scheduler/backoff.js';
import { MinHeap } from '../../src/scheduler/heap.js';

const cfg = { min_backoff: 30 * 60_000, max_backoff: 4 * 3_600_000, lifetime: 5 * 86_400_000, delay_warning: 4 * 3_600_000 };

describe('backoff and expiry (RFC 5321 §4.5.4.1)', () => {
  it('DANE-34 retry interval at least 30 minutes, doubling, capped', () => {
    const mid = () => 0.5; // no jitter
    expect(backoffDelay(1, cfg, mid)).toBe(30 * 60_000);
    expect(backoffDelay(2, cfg, mid)).toBe(60 * 60_000);
    expect(backoffDelay(3, cfg, mid)).toBe(120 * 60_000);
    expect(backoffDelay(10, cfg, mid)).toBe(4 * 3_600_000);
    for (let i = 1; i < 40; i++) {
      const d = backoffDelay(i, cfg);
      expect(d).toBeGreaterThanOrEqual(30 * 60_000);
      expect(d).toBeLessThanOrEqual(4 * 3_600_000 * 1.1);
    }
  });
  it('DANE-34 give up only after the lifetime (default 5 days)', () => {
    expect(expired(0, 5 * 86_400_000 - 1, cfg)).toBe(false);
    expect(expired(0, 5 * 86_400_000, cfg)).toBe(true);
    expect(permanentCode('4.7.5')).toBe('5.7.5');
    expect(permanentCode('5.1.1')).toBe('5.1.1');
    expect(permanentCode(undefined)).toBe('5.4.7');
  });
  it('delay warning once, after delay_warning, and never when disabled', () => {
    expect(delayWarningDue(0, 4 * 3_600_000, undefined, cfg)).toBe(true);
    expect(delayWarningDue(0, 4 * 3_600_000 - 1, undefined, cfg)).toBe(false);
    expect(delayWarningDue(0, 5 * 3_600_000, 123, cfg)).toBe(false);
    expect(delayWarningDue(0, 5 * 3_600_000, undefined, { ...cfg, delay_warning: 0 })).toBe(false);
  });
  it('the timetable pops in time order', () => {
    const h = new MinHeap<number>();
    const keys = Array.from({ length: 500 }, (_, i) => (i * 7919) % 1000);
    for (const k of keys) h.push(k, k);
    const out: number[] = [];
    for (let v = h.pop(); v !== undefined; v = h.pop()) out.push(v);
    expect(out).toEqual([...keys].sort((a, b) => a - b));
  });
});
