import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTree, key, mailZone, type Tree } from './fixture.js';
import { formatTrace } from '../../src/dnssec/trace.js';

let t: Tree;
beforeAll(async () => {
  t = await buildTree([mailZone('ecdsa.test', { keys: [key('e', 13)] })]);
});
afterAll(async () => t?.close());

describe('validator: positive answers', () => {
  it('DANE-1 MX, A, TLSA of a signed zone are secure; the resolver was asked with CD=1 DO=1 RD=1', async () => {
    const r = t.resolver();
    const { answer, trace } = await r.lookupTrace('ecdsa.test', 'MX');
    expect(formatTrace(trace)).toMatch(/anchor\s+\.\s+ok\s+trust anchor DS \d+/);
    expect(answer.error).toBeUndefined();
    expect(answer.status).toBe('secure');
    expect(answer.records).toEqual([{ preference: 10, exchange: 'mx.ecdsa.test' }]);
    const tlsa = await r.lookup('_25._tcp.mx.ecdsa.test', 'TLSA');
    expect(tlsa.status).toBe('secure');
    expect(tlsa.records[0]!.data).toEqual(Buffer.alloc(32, 0xab));
    expect(t.dns.queries.every((q) => q.cd && q.do && q.rd)).toBe(true);
  });
});
