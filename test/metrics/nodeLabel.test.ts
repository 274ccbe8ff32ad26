/**
 * Issue 16: in a cluster (spool.backend postgres) every series carries the node's name, so the nodes'
 * series can be told apart and summed; with the file backend the label sets stay as they were.
 */
import { describe, expect, it } from 'vitest';
import { RelayMetrics } from '../../src/metrics/registry.js';
import { parsePrometheus } from '../support/prom.js';

async function samples(m: RelayMetrics) {
  m.messageReceived({ recipients: 2, bytes: 10 });
  m.exceptionDowngrade({ domain: 'x.example', level: 'may' });
  return parsePrometheus(await m.registry.metrics()).samples;
}

describe('metrics node label', () => {
  it('a cluster node: every sample, default process metrics included, has node="<name>"', async () => {
    const s = await samples(new RelayMetrics({ node: 'n1' }));
    expect(s.length).toBeGreaterThan(10);
    expect(s.filter((x) => x.labels.node !== 'n1')).toEqual([]);
    expect(s.find((x) => x.name === 'dane_relay_exception_downgrades_total')?.labels).toEqual({ domain: 'x.example', level: 'may', node: 'n1' });
  });

  it('the file backend (no node): no sample has a node label', async () => {
    const s = await samples(new RelayMetrics());
    expect(s.filter((x) => 'node' in x.labels)).toEqual([]);
    expect(s.find((x) => x.name === 'dane_relay_exception_downgrades_total')?.labels).toEqual({ domain: 'x.example', level: 'may' });
  });
});
