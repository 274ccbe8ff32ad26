/** The body facts kept with every message: 8-bit octets, over-long lines, NUL (src/mime/scan.ts). */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BodyScanner, MAX_LINE_OCTETS, factsFlags, factsOf, type BodyFacts } from '../../src/mime/scan.js';

/** The obvious definition, octet by octet, for the whole body at once. */
function naive(body: Buffer): BodyFacts {
  let longLines = false;
  let start = 0;
  for (let i = 0; i <= body.length; i++) {
    if (i === body.length || body[i] === 0x0a) {
      let len = i - start;
      if (len > 0 && body[i - 1] === 0x0d) len--;
      if (len > MAX_LINE_OCTETS) longLines = true;
      start = i + 1;
    }
  }
  return { eightBit: body.some((b) => b >= 0x80), longLines, nul: body.includes(0) };
}

function scan(body: Buffer, cuts: number[]): BodyFacts {
  const s = new BodyScanner();
  let prev = 0;
  for (const c of [...new Set(cuts.map((x) => x % (body.length + 1)))].sort((a, b) => a - b)) {
    s.push(body.subarray(prev, c));
    prev = c;
  }
  s.push(body.subarray(prev));
  return s.facts;
}

/** Bodies made of lines around the limit, with CRLF, bare LF, bare CR, 8-bit and NUL octets. */
const line = fc.record({
  len: fc.oneof(fc.integer({ min: 0, max: 80 }), fc.integer({ min: MAX_LINE_OCTETS - 3, max: MAX_LINE_OCTETS + 3 }), fc.integer({ min: 1000, max: 5000 })),
  fill: fc.constantFrom(0x61, 0x0d, 0xc3, 0x00),
  every: fc.integer({ min: 0, max: 2000 }),
  end: fc.constantFrom('\r\n', '\n', '', '\r'),
});
const bodies = fc.array(line, { maxLength: 12 }).map((ls) =>
  Buffer.concat(
    ls.map((l) => {
      const b = Buffer.alloc(l.len, 0x61);
      if (l.every > 0) for (let i = l.every - 1; i < l.len; i += l.every) b[i] = l.fill;
      return Buffer.concat([b, Buffer.from(l.end, 'latin1')]);
    }),
  ),
);

describe('BodyScanner', () => {
  it('agrees with the octet-by-octet definition for any body cut into any chunks', () => {
    fc.assert(
      fc.property(bodies, fc.array(fc.nat(), { maxLength: 20 }), (body, cuts) => {
        expect(scan(body, cuts)).toEqual(naive(body));
      }),
      { numRuns: 3000 },
    );
  });

  it('998 octets + CRLF is fine, 999 is not; a CR before the LF is not counted, also across chunks', () => {
    const ok = Buffer.from(`${'x'.repeat(998)}\r\n`);
    expect(scan(ok, []).longLines).toBe(false);
    expect(scan(ok, [998]).longLines).toBe(false);
    expect(scan(ok, [999]).longLines).toBe(false);
    expect(scan(Buffer.from(`${'x'.repeat(998)}\n`), []).longLines).toBe(false);
    expect(scan(Buffer.from(`${'x'.repeat(999)}\n`), []).longLines).toBe(true);
    expect(scan(Buffer.from(`${'x'.repeat(999)}\r\n`), [500]).longLines).toBe(true);
    expect(scan(Buffer.from('x'.repeat(999)), []).longLines).toBe(true); // last line without LF
    expect(scan(Buffer.from(`${'x'.repeat(998)}\r`), []).longLines).toBe(false);
  });

  it('the spool digit round-trips and names one shared object per combination', () => {
    for (let f = 0; f < 8; f++) expect(factsFlags(factsOf(f)!)).toBe(f);
    expect(factsOf(3)).toBe(factsOf(3));
    expect(factsOf(8)).toBeUndefined();
    expect(factsOf(1.5)).toBeUndefined();
  });
});
