/** RFC 5321 §6.3 hop counting while streaming (issue 13 defect 4a): the count never depends on how the bytes are cut. */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HopCounter } from '../../src/ingress/hops.js';

function count(chunks: Buffer[]): { count: number; done: boolean } {
  const h = new HopCounter();
  for (const c of chunks) h.push(c);
  return { count: h.count, done: h.done };
}

/** Reference: whole lines up to the first empty one, matched by a regular expression. */
function reference(msg: string): number {
  const lines = msg.split(/\r?\n/);
  const end = lines.indexOf('');
  return lines.slice(0, end < 0 ? lines.length : end).filter((l) => /^received[ \t]*:/i.test(l)).length;
}

const line = fc.constantFrom(
  'Received: from a by b',
  'received:x',
  'RECEIVED \t: y',
  'Received-SPF: pass',
  'X-Received: z',
  '\tReceived: folded',
  ' continuation',
  'Subject: hi',
  'Receive: no',
  'Received',
  'Received x: no',
);

describe('HopCounter (RFC 5321 §6.3)', () => {
  it('issue13-4 counts Received: fields of the header section only, the same for any segmentation and CRLF or bare LF', () => {
    fc.assert(
      fc.property(
        fc.array(line, { maxLength: 30 }),
        fc.array(line, { maxLength: 10 }),
        fc.boolean(),
        fc.array(fc.nat(40), { maxLength: 20 }),
        (head, body, lf, cuts) => {
          const eol = lf ? '\n' : '\r\n';
          const msg = `${head.join(eol)}${head.length ? eol : ''}${eol}${body.join(eol)}${eol}`;
          const buf = Buffer.from(msg, 'latin1');
          const chunks: Buffer[] = [];
          let at = 0;
          for (const c of cuts) {
            const end = Math.min(buf.length, at + c);
            chunks.push(buf.subarray(at, end));
            at = end;
          }
          chunks.push(buf.subarray(at));
          const got = count(chunks);
          expect(got.count).toBe(reference(msg));
          expect(got.done).toBe(true);
          expect(count([buf])).toEqual(got);
        },
      ),
    );
  });

  it('issue13-4 stops looking at the first empty line: a body full of Received: lines costs nothing', () => {
    const h = new HopCounter();
    h.push(Buffer.from('Received: a\r\n\r\n'));
    expect([h.count, h.done]).toEqual([1, true]);
    h.push(Buffer.from('Received: b\r\n'.repeat(1000)));
    expect(h.count).toBe(1);
  });
});
