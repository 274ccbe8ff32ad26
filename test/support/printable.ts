/**
 * Test side of "outside text reaches no operator raw" (src/text/printable.ts): generators of
 * hostile text, an independent statement of what must never reach a sink, and the inverse of
 * the escaping (to show the operator still sees what was sent).
 */
import fc from 'fast-check';
import { expect } from 'vitest';

/** What a terminal title/clear-screen attack looks like on the wire (the reply). */
export const OWNED = '\x1b]0;owned\x07\x1b[2J\x1b[1;1H';
export const OWNED_REPLY = `450 4.2.0 ${OWNED}\u202emailbox busy`;

/**
 * Code points that must never reach an operator, stated independently of the implementation:
 * C0 (LF only where `newline`), DEL, C1, bidi embeddings/overrides/isolates and marks, zero-width
 * and invisible formatting characters, BOM, soft hyphen, line/paragraph separators, tags,
 * interlinear annotations, lone surrogates.
 */
export function forbidden(cp: number, newline = false): boolean {
  if (cp === 0x0a) return !newline;
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) return true;
  if (cp === 0x00ad || cp === 0x061c || cp === 0x180e || cp === 0xfeff) return true;
  if ((cp >= 0x200b && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x2069)) return true;
  if (cp === 0x2028 || cp === 0x2029) return true;
  if (cp >= 0xfff9 && cp <= 0xfffb) return true;
  if (cp >= 0xe0000 && cp <= 0xe007f) return true;
  if (cp >= 0xd800 && cp <= 0xdfff) return true;
  // anything else rendered as nothing, except the variation selectors (they only pick a glyph for the character before)
  if ((cp >= 0xfe00 && cp <= 0xfe0f) || (cp >= 0xe0100 && cp <= 0xe01ef)) return false;
  return /[\p{Cf}\p{Default_Ignorable_Code_Point}]/u.test(String.fromCodePoint(cp));
}

/** The first forbidden character of `s` as "U+XXXX at i", or undefined. */
export function firstUnsafe(s: string, newline = false): string | undefined {
  for (let i = 0; i < s.length; ) {
    const cp = s.codePointAt(i)!;
    const lone = cp >= 0xd800 && cp <= 0xdfff;
    if (forbidden(cp, newline) || lone) return `U+${cp.toString(16).padStart(4, '0')} at ${i} in ${JSON.stringify(s.slice(Math.max(0, i - 20), i + 20))}`;
    i += cp > 0xffff ? 2 : 1;
  }
  return undefined;
}

/** Bytes that reached a terminal: valid UTF-8, nothing forbidden; LF only when the format has lines. */
export function expectTerminalSafe(out: string | Buffer, opts: { newline?: boolean } = {}): void {
  const buf = Buffer.isBuffer(out) ? out : Buffer.from(out, 'utf8');
  for (const b of buf) {
    if (b === 0x0a && opts.newline) continue;
    if (b < 0x20 || b === 0x7f) throw new Error(`byte 0x${b.toString(16)} in output ${JSON.stringify(buf.toString('utf8').slice(0, 300))}`);
  }
  const text = buf.toString('utf8');
  expect(Buffer.from(text, 'utf8').equals(buf), 'output is valid UTF-8').toBe(true);
  expect(firstUnsafe(text, opts.newline)).toBeUndefined();
}

/** Every string (and key) in a decoded JSON value is safe: what `jq -r` would print. */
export function expectValuesPrintable(v: unknown, path = '$'): void {
  if (typeof v === 'string') {
    const bad = firstUnsafe(v);
    if (bad) throw new Error(`${path}: ${bad}`);
    return;
  }
  if (Array.isArray(v)) {
    for (const [i, x] of v.entries()) expectValuesPrintable(x, `${path}[${i}]`);
    return;
  }
  if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      const bad = firstUnsafe(k);
      if (bad) throw new Error(`${path} key: ${bad}`);
      expectValuesPrintable(x, `${path}.${k}`);
    }
  }
}

/** Each line of a JSON-lines output: raw bytes safe (LF ends lines) and every decoded value safe. */
export function expectJsonLinesSafe(out: string | Buffer): unknown[] {
  expectTerminalSafe(out, { newline: true });
  const lines = (Buffer.isBuffer(out) ? out.toString('utf8') : out).split('\n').filter((l) => l.length > 0);
  return lines.map((l) => {
    const v = JSON.parse(l) as unknown;
    expectValuesPrintable(v);
    return v;
  });
}

const ESCAPE = /\\(?:([tnr])|x([0-9a-f]{2})|u\{([0-9a-f]+)\})/g;

/**
 * The inverse of printable() for string input: \t \n \r \xHH \u{H…} back to the characters.
 * For text without a backslash of its own this gives back the exact input (lone surrogates
 * included): the operator sees what the peer sent.
 */
export function unescapeToString(s: string): string {
  return s.replace(ESCAPE, (_m, c: string | undefined, x: string | undefined, u: string | undefined) =>
    c
      ? ({ t: '\t', n: '\n', r: '\r' } as Record<string, string>)[c]!
      : x
        ? String.fromCharCode(parseInt(x, 16))
        : String.fromCharCode(...utf16(parseInt(u!, 16))),
  );
}

function utf16(cp: number): number[] {
  if (cp < 0x10000) return [cp];
  const v = cp - 0x10000;
  return [0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff)];
}

/** The inverse for byte input: \x80–\xff were bytes that were not UTF-8. */
export function unescapeToBytes(s: string): Buffer {
  const parts: Buffer[] = [];
  let last = 0;
  for (const m of s.matchAll(ESCAPE)) {
    parts.push(Buffer.from(s.slice(last, m.index), 'utf8'));
    const [, c, x, u] = m;
    if (c) parts.push(Buffer.from(({ t: '\t', n: '\n', r: '\r' } as Record<string, string>)[c]!));
    else if (x) parts.push(Buffer.from([parseInt(x, 16)]));
    else parts.push(Buffer.from(String.fromCodePoint(parseInt(u!, 16)), 'utf8'));
    last = m.index! + m[0].length;
  }
  parts.push(Buffer.from(s.slice(last), 'utf8'));
  return Buffer.concat(parts);
}

const range = (lo: number, hi: number) => fc.integer({ min: lo, max: hi });
/** A code point biased toward the dangerous ranges (a uniform draw would almost never hit them). */
const codePoint = fc.oneof(
  { weight: 4, arbitrary: range(0x20, 0x7e) },
  { weight: 2, arbitrary: range(0x00, 0x1f) },
  { weight: 2, arbitrary: range(0x7f, 0x9f) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      0xad,
      0x34f,
      0x115f,
      0x3164,
      0x2065,
      0xfff0,
      0xfe0f,
      0x61c,
      0x180e,
      0x200b,
      0x200c,
      0x200d,
      0x200e,
      0x200f,
      0x202a,
      0x202b,
      0x202c,
      0x202d,
      0x202e,
      0x2060,
      0x2066,
      0x2067,
      0x2068,
      0x2069,
      0x2028,
      0x2029,
      0xfeff,
      0xfff9,
      0xfffb,
      0xe0001,
      0xe0041,
    ),
  },
  { weight: 1, arbitrary: range(0xa0, 0xffff).filter((c) => c < 0xd800 || c > 0xdfff) },
  { weight: 1, arbitrary: range(0x10000, 0x10ffff) },
);

/** Text as a JS string may carry it (JSON from an old spool can hold lone surrogates too). */
export const hostileString = fc.oneof(
  { weight: 6, arbitrary: fc.array(codePoint, { maxLength: 60 }).map((cps) => String.fromCodePoint(...cps)) },
  {
    weight: 1,
    arbitrary: fc
      .array(
        fc.oneof(
          codePoint,
          range(0xd800, 0xdfff).map((c) => -c),
        ),
        { maxLength: 20 },
      )
      .map((cps) => cps.map((c) => (c < 0 ? String.fromCharCode(-c) : String.fromCodePoint(c))).join('')),
  },
  { weight: 1, arbitrary: fc.constantFrom(OWNED, OWNED_REPLY, '\u202egnp.exe', '\x9b2J', 'a\u2028b', '\ud800') },
);

/** Text as it arrives on a socket: any bytes, invalid UTF-8 included, with escape sequences mixed in. */
export const hostileBytes = fc.oneof(
  { weight: 3, arbitrary: fc.uint8Array({ maxLength: 120 }).map((u) => Buffer.from(u)) },
  { weight: 3, arbitrary: hostileString.map((s) => Buffer.from(s, 'utf8')) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(hostileString, fc.uint8Array({ maxLength: 8 }), hostileString)
      .map(([a, b, c]) => Buffer.concat([Buffer.from(a), Buffer.from(b), Buffer.from(c)])),
  },
);

/** Bytes that can stand in one SMTP reply line (no CR, LF or NUL: the reply parser refuses those as malformed). */
export const hostileReplyText = hostileBytes.map((b) => Buffer.from(b.filter((x) => x !== 0x0d && x !== 0x0a && x !== 0x00)));
