/**
 * The relay hands one RelayEvents to every stage; with metrics on and a caller's own hooks,
 * both must see each event (the metrics registry implements its hooks as class methods).
 */
import { describe, expect, it } from 'vitest';
import { fanOutEvents, type RelayEvents } from '../../src/metrics/events.js';
import { RelayMetrics } from '../../src/metrics/registry.js';
import { parsePrometheus, value } from '../support/prom.js';

describe('fanOutEvents', () => {
  it("DANE-70 an exception downgrade reaches both the metrics registry and the caller's hooks", async () => {
    const metrics = new RelayMetrics({ defaultMetrics: false });
    const seen: string[] = [];
    const mine: RelayEvents = { exceptionDowngrade: (e) => seen.push(`${e.domain}/${e.level}`) };
    const events = fanOutEvents(mine, metrics)!;
    events.exceptionDowngrade!({ domain: 'broken.example', level: 'may' });
    events.rolloverWarning!({ domain: 'x.example', host: 'mx.x.example', kind: 'single-3-1-1', detail: 'no next key' });
    expect(seen).toEqual(['broken.example/may']);
    const s = parsePrometheus(await metrics.registry.metrics());
    expect(value(s, 'dane_relay_exception_downgrades_total')).toBe(1);
    expect(value(s, 'dane_relay_rollover_warnings_total')).toBe(1);
  });

  it('with one side absent it returns the other unchanged', () => {
    const mine: RelayEvents = {};
    expect(fanOutEvents(mine, undefined)).toBe(mine);
    expect(fanOutEvents(undefined, undefined)).toBeUndefined();
  });
});
