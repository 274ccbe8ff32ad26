/**
 * Issue 22: the event-loop lag is on /metrics (prom-client's default process metrics, which the relay's
 * registry collects under the dane_relay_ prefix): a stall of ingress and delivery — long DNSSEC
 * validation, say — shows there. Asserts the series exist and parse, not their values (no timing).
 */
import { describe, expect, it } from 'vitest';
import { RelayMetrics } from '../../src/metrics/registry.js';
import { parsePrometheus } from '../support/prom.js';

describe('event-loop lag metric (issue 22)', () => {
  it('the relay registry exposes dane_relay_nodejs_eventloop_lag_seconds and its max/p99 series', async () => {
    const m = new RelayMetrics();
    const text = await m.registry.metrics();
    const names = new Set(parsePrometheus(text).types.keys());
    for (const n of ['dane_relay_nodejs_eventloop_lag_seconds', 'dane_relay_nodejs_eventloop_lag_max_seconds', 'dane_relay_nodejs_eventloop_lag_p99_seconds']) {
      expect(names.has(n), n).toBe(true);
    }
  });
});
