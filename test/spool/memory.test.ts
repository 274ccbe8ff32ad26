/**
 * The scheduler keeps every QueuedMessage in memory: 100,000 of them must stay
 * well under 200 MB. Measured in a child process with --expose-gc so the number
 * is retained heap, not garbage; the objects are built by the same parsers
 * recovery uses (header line and state file), from distinct buffers.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { join, dirname } from 'node:path';
import { ensureBuiltSpool } from './support.js';

let formatUrl = '';
beforeAll(() => {
  formatUrl = pathToFileURL(join(dirname(ensureBuiltSpool()), 'format.js')).href;
}, 120_000);

const script = (url: string) => `
const { encodeHeader, parseHeader, parseState, encodeState, initialRecipients, sizeField, SIZE_OFFSET, Interner } = await import(${JSON.stringify(url)});
const intern = new Interner(); // one per recovery, as Spool.recover() does
const N = 100_000;
const keep = new Array(N);
gc();
const before = process.memoryUsage();
for (let i = 0; i < N; i++) {
  const envelope = {
    from: 'newsletter-bounces+' + i + '@lists.example.org',
    recipients: ['user' + i + '@example.com', 'other' + i + '@example.net'],
    smtputf8: false, eightBit: true,
    client: { address: '2001:db8::' + (i % 65536).toString(16), name: 'client' + (i % 100) + '.example.org' },
    received: 1_700_000_000_000 + i, kind: 'normal', messageId: '<' + i + '.abcdef@lists.example.org>',
  };
  const h = encodeHeader(envelope);
  sizeField(4096, { eightBit: true, longLines: false, nul: false }).copy(h, SIZE_OFFSET);
  const parsed = parseHeader(h, h.length + 4096, intern);
  let recipients = initialRecipients(parsed.envelope);
  if (i % 2) {
    const st = encodeState(false, recipients.map((r) => ({ ...r, state: 'deferred', attempts: 3, nextAttempt: 1_700_000_600_000,
      lastReason: '4.7.5 TLSA lookup for _25._tcp.mx1.example.com: SERVFAIL', dsnCode: '4.7.5', remoteMta: 'mx1.example.com' })));
    recipients = parseState(st, parsed.envelope, intern).recipients;
  }
  keep[i] = { id: (1e15 + i).toString(32).padStart(16, '0'), envelope: parsed.envelope, size: parsed.size, body: parsed.body, recipients };
}
gc();
const after = process.memoryUsage();
process.stdout.write(JSON.stringify({ heap: after.heapUsed - before.heapUsed, n: keep.length }));
`;

describe('memory', () => {
  it('100,000 queued messages, half with deferred states, retain under 100 MB of heap', () => {
    const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script(formatUrl)], { encoding: 'utf8' });
    const r = JSON.parse(out) as { heap: number; n: number };
    expect(r.n).toBe(100_000);
    // Under 1000 bytes retained per message (measured ~800, over half of it the message's own
    // unique strings), i.e. < 100 MB of heap for 100,000. RSS is not asserted here: this child's
    // RSS mostly reflects the garbage of building the test data, not what the spool keeps.
    expect(r.heap / r.n).toBeLessThan(1000);
  }, 60_000);
});
