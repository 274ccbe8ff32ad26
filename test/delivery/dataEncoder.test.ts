/**
 * RFC 5321 §2.3.8 (lines end in CRLF) and §4.5.2 (transparency: a line starting with "." gets one more),
 * as the SMTP client streams a body: the encoder copies runs between line breaks whole, so its output is
 * checked against the rule applied one byte at a time, over generated bodies cut into generated chunks
 * (a CR at the end of one chunk and its LF at the start of the next is the case a run-based encoder gets wrong).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DataEncoder } from '../../src/delivery/smtpClient.js';

/** The rule, byte by byte, on the whole body at once; `dots` false: a BDAT chunk (RFC 3030 §2: no transparency, no terminator). */
function byteByByte(body: Buffer, dots = true): Buffer {
  const out: number[] = [];
  let lineStart = true;
  for (let i = 0; i < body.length; i++) {
    const b = body[i]!;
    if (b === 0x0d || b === 0x0a) {
      out.push(0x0d, 0x0a);
      if (b === 0x0d && body[i + 1] === 0x0a) i++;
      lineStart = true;
      continue;
    }
    if (dots && lineStart && b === 0x2e) out.push(0x2e);
    out.push(b);
    lineStart = false;
  }
  if (dots) out.push(...Buffer.from(lineStart ? '.\r\n' : '\r\n.\r\n', 'latin1'));
  else if (!lineStart) out.push(0x0d, 0x0a);
  return Buffer.from(out);
}

function encode(chunks: Buffer[], dots = true): Buffer {
  const enc = new DataEncoder({ dots });
  return Buffer.concat([...chunks.map((c) => enc.push(c)), enc.end()]);
}

/** bytes that matter (CR, LF, dot) often, any other byte sometimes */
const byte = fc.oneof(fc.constantFrom(0x0d, 0x0a, 0x2e, 0x41), fc.integer({ min: 0, max: 255 }));
const bodyAndCuts = fc
  .array(byte, { maxLength: 400 })
  .chain((bytes) => fc.tuple(fc.constant(Buffer.from(bytes)), fc.array(fc.integer({ min: 0, max: bytes.length }), { maxLength: 12 })));

function cut(body: Buffer, at: number[]): Buffer[] {
  const points = [...new Set(at)].sort((a, b) => a - b);
  const parts: Buffer[] = [];
  let from = 0;
  for (const p of [...points, body.length]) {
    parts.push(body.subarray(from, p));
    from = p;
  }
  return parts;
}

/** mostly what the spool holds (CRLF lines), sometimes a line starting with a dot, a bare CR or LF, a CRLF cut in two */
const line = fc.tuple(
  fc.constantFrom('', '', '', '.', '..'),
  fc.string({ maxLength: 30 }).map((t) => t.replace(/[\r\n]/g, '')),
);
const sep = fc.constantFrom('\r\n', '\r\n', '\r\n', '\r\n', '\n', '\r', '');
const linesAndCuts = fc
  .array(fc.tuple(line, sep), { maxLength: 60 })
  .map((ls) => Buffer.from(ls.map(([[dot, text], end]) => dot + text + end).join(''), 'latin1'))
  .chain((body) => fc.tuple(fc.constant(body), fc.array(fc.integer({ min: 0, max: body.length }), { maxLength: 8 })));

describe('DataEncoder (RFC 5321 §2.3.8, §4.5.2)', () => {
  it('RFC 5321 §2.3.8, §4.5.2 bodies of lines (CRLF mostly, dots, bare CR/LF), cut anywhere: as the byte-by-byte rule; a chunk needing no change comes back itself', () => {
    let same = 0;
    fc.assert(
      fc.property(linesAndCuts, ([body, at]) => {
        const enc = new DataEncoder();
        const parts = cut(body, at);
        const out = parts.map((c) => {
          const o = enc.push(c);
          if (o === c && c.length > 0) same++;
          return o;
        });
        expect(Buffer.concat([...out, enc.end()]).equals(byteByByte(body))).toBe(true);
      }),
      { numRuns: 3000, seed: 0x2920 },
    );
    // the zero-copy path is taken, and taken for a whole spooled body
    expect(same).toBeGreaterThan(500);
    const spooled = Buffer.from('Subject: x\r\n\r\nline one\r\n. not at start? yes it is\r\n'.replace('\r\n. ', '\r\n'), 'latin1');
    const enc = new DataEncoder();
    expect(enc.push(spooled)).toBe(spooled);
    expect(enc.end().toString('latin1')).toBe('.\r\n');
  });

  it('RFC 5321 §4.5.2 any body, cut anywhere (empty chunks too), encodes as the byte-by-byte rule does', () => {
    fc.assert(
      fc.property(bodyAndCuts, ([body, at]) => {
        expect(encode(cut(body, at)).equals(byteByByte(body))).toBe(true);
      }),
      { numRuns: 3000, seed: 0x5321 },
    );
  });

  it('RFC 5321 §2.3.8 a CRLF split across two chunks is one line break; bare CR and bare LF become CRLF', () => {
    expect(encode([Buffer.from('a\r'), Buffer.from('\nb')]).toString('latin1')).toBe('a\r\nb\r\n.\r\n');
    expect(encode([Buffer.from('a\r'), Buffer.from('\rb')]).toString('latin1')).toBe('a\r\n\r\nb\r\n.\r\n');
    expect(encode([Buffer.from('a\nb\rc')]).toString('latin1')).toBe('a\r\nb\r\nc\r\n.\r\n');
  });

  it('RFC 5321 §4.5.2 a dot at the start of a line, also of a chunk that starts a line, is doubled', () => {
    expect(encode([Buffer.from('.\r\n'), Buffer.from('.x\r\n'), Buffer.from('y.\r\n')]).toString('latin1')).toBe('..\r\n..x\r\ny.\r\n.\r\n');
    expect(encode([]).toString('latin1')).toBe('.\r\n');
  });

  it('RFC 3030 §2 a BDAT chunk ({ dots: false }): any body, cut anywhere, gets CRLF line breaks and a final CRLF, never a transparency dot or an end-of-data line', () => {
    let same = 0;
    fc.assert(
      fc.property(fc.oneof(bodyAndCuts, linesAndCuts), ([body, at]) => {
        const enc = new DataEncoder({ dots: false });
        const out = cut(body, at).map((c) => {
          const o = enc.push(c);
          if (o === c && c.length > 0) same++;
          return o;
        });
        expect(Buffer.concat([...out, enc.end()]).equals(byteByByte(body, false))).toBe(true);
      }),
      { numRuns: 3000, seed: 0x3030 },
    );
    // a line starting with a dot no longer forces the copy
    expect(same).toBeGreaterThan(300);
    const dotted = Buffer.from('.\r\n..x\r\n', 'latin1');
    const enc = new DataEncoder({ dots: false });
    expect(enc.push(dotted)).toBe(dotted);
    expect(enc.end().length).toBe(0);
    expect(encode([Buffer.from('a\nb')], false).toString('latin1')).toBe('a\r\nb\r\n');
    expect(encode([], false).length).toBe(0);
  });
});
