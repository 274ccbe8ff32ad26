/**
 * RFC 5321 §6.3 hop counting while streaming (issue 13 defect 4a) and RFC 8689 §3 TLS-Required fields (RT-30):
 * neither depends on how the bytes are cut.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { HeaderWatch, MAX_TLS_REQUIRED_VALUE, tlsRequiredOf } from '../../src/ingress/hops.js';

function count(chunks: Buffer[]): { count: number; done: boolean } {
  const h = new HeaderWatch();
  for (const c of chunks) h.push(c);
  return { count: h.received, done: h.done };
}

/** Reference: whole lines up to the first empty one, matched by a regular expression. */
function reference(msg: string): number {
  const lines = msg.split(/\r?\n/);
  const end = lines.indexOf('');
  return lines.slice(0, end < 0 ? lines.length : end).filter((l) => /^received[ \t]*:/i.test(l)).length;
}

/** `buf` cut into pieces of the given lengths (empty ones included), the rest as the last piece. */
function pieces(buf: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const c of cuts) {
    const end = Math.min(buf.length, at + c);
    out.push(buf.subarray(at, end));
    at = end;
  }
  out.push(buf.subarray(at));
  return out;
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

describe('HeaderWatch: Received fields (RFC 5321 §6.3)', () => {
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
          const got = count(pieces(buf, cuts));
          expect(got.count).toBe(reference(msg));
          expect(got.done).toBe(true);
          expect(count([buf])).toEqual(got);
        },
      ),
    );
  });

  it('issue13-4 names are compared octet by octet, case-insensitively for ASCII only: any bytes, any segmentation, the same count as the regular expression', () => {
    // letters of the names in both cases, Latin-1 look-alikes, WSP, colon, CR, LF
    const octet = fc.constantFrom(...'RrEeCcIiVvDdTtLlSsQqUu-: \t\r\n\xc9\xe9\xcc\xec\xff'.split(''));
    fc.assert(
      fc.property(fc.array(fc.string({ unit: octet, maxLength: 20 }), { maxLength: 20 }), fc.array(fc.nat(30), { maxLength: 20 }), (ls, cuts) => {
        const msg = ls.join('\r\n');
        const lines = msg.split('\n');
        const end = lines.findIndex((l) => l === '' || l === '\r');
        const want = lines.slice(0, end < 0 ? lines.length : end).filter((l) => /^received[ \t]{0,16}:/i.test(l)).length;
        expect(count(pieces(Buffer.from(msg, 'latin1'), cuts)).count).toBe(want);
      }),
    );
  });

  it('issue13-4 push says how many octets of each chunk belong to the header section (its empty line included), 0 once it has ended', () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 10 }), fc.boolean(), fc.array(fc.nat(20), { maxLength: 20 }), (head, lf, cuts) => {
        const eol = lf ? '\n' : '\r\n';
        const header = `${head.join(eol)}${head.length ? eol : ''}${eol}`;
        const buf = Buffer.from(`${header}Received: body${eol}`, 'latin1');
        const h = new HeaderWatch();
        const used = pieces(buf, cuts).map((p) => h.push(p));
        expect(used.reduce((a, b) => a + b, 0)).toBe(header.length);
        expect(h.push(Buffer.from('x'))).toBe(0);
      }),
    );
  });

  it('issue13-4 stops looking at the first empty line: a body full of Received: lines costs nothing', () => {
    const h = new HeaderWatch();
    h.push(Buffer.from('Received: a\r\n\r\n'));
    expect([h.received, h.done]).toEqual([1, true]);
    h.push(Buffer.from('Received: b\r\n'.repeat(1000)));
    expect(h.received).toBe(1);
  });
});

/** Feeds `msg`, cut into pieces of the given lengths, to a fresh watch. */
function watch(msg: string, cuts: number[] = []): HeaderWatch {
  const h = new HeaderWatch();
  for (const p of pieces(Buffer.from(msg, 'latin1'), cuts)) h.push(p);
  h.finish();
  return h;
}

describe('HeaderWatch: TLS-Required (RFC 8689 §3)', () => {
  const cases: [string, string, ReturnType<typeof tlsRequiredOf>['kind']][] = [
    ['plain', 'Subject: x\r\nTLS-Required: No\r\n\r\nbody\r\n', 'no'],
    ['lower case name and value (ABNF strings are case-insensitive)', 'tls-required: no\r\n\r\n', 'no'],
    ['no WSP, upper case', 'TLS-REQUIRED:NO\r\n\r\n', 'no'],
    ['folded (FWS)', 'TLS-Required:\r\n  No\r\nSubject: y\r\n\r\n', 'no'],
    ['WSP before the colon (obsolete syntax)', 'TLS-Required \t: No\n\n', 'no'],
    ['bare LF, last field without a body', 'TLS-Required: No\n', 'no'],
    ['another value', 'TLS-Required: Yes\r\n\r\n', 'invalid'],
    ['a comment after No', 'TLS-Required: No (please)\r\n\r\n', 'invalid'],
    ['two fields', 'TLS-Required: No\r\nTLS-Required: No\r\n\r\n', 'invalid'],
    ['only in the body', 'Subject: x\r\n\r\nTLS-Required: No\r\n', 'absent'],
    ['a longer name', 'TLS-Required-X: No\r\nX-TLS-Required: No\r\n\r\n', 'absent'],
    ['a continuation line that looks like the field', 'Subject: x\r\n TLS-Required: No\r\n\r\n', 'absent'],
    ['an over-long value', `TLS-Required: ${' '.repeat(MAX_TLS_REQUIRED_VALUE)}No\r\n\r\n`, 'invalid'],
  ];
  it.each(cases)('RT-30 %s', (_what, msg, kind) => {
    expect(tlsRequiredOf(watch(msg).tlsRequired).kind).toBe(kind);
  });

  it('RT-30 the verdict is the same for any segmentation of the bytes', () => {
    fc.assert(
      fc.property(fc.constantFrom(...cases), fc.array(fc.nat(12), { maxLength: 30 }), ([, msg, kind], cuts) => {
        expect(tlsRequiredOf(watch(msg, cuts).tlsRequired).kind).toBe(kind);
        expect(watch(msg, cuts).tlsRequired).toEqual(watch(msg).tlsRequired);
      }),
    );
  });
});
