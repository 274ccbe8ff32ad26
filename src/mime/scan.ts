/**
 * What a message body holds that a next hop must have agreed to, learned once while the
 * body streams into the spool (so delivery needs no scan for ordinary mail):
 * - 8-bit octets (≥ 0x80): only to a server that advertises 8BITMIME (RFC 6152 §3);
 * - a line longer than 998 octets before its CRLF: never (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1);
 * - NUL octets: neither 7bit nor 8bit data may contain them (RFC 2045 §2.7, §2.8).
 *
 * Lines are counted between LFs, a CR right before the LF excluded. A bare CR (which the DATA
 * encoder turns into a line break on the wire) is counted as part of the line, so the count is
 * never lower than what goes on the wire. Cost: `buffer.isAscii` and `indexOf(0)` (native,
 * vectorised) plus one `lastIndexOf` per ~1000 octets; a flag once set is not looked for again.
 */
import { isAscii } from 'node:buffer';

/** RFC 5322 §2.1.1 / RFC 5321 §4.5.3.1.6: octets on a line, CRLF excluded. */
export const MAX_LINE_OCTETS = 998;

export interface BodyFacts {
  /** an octet ≥ 0x80 somewhere (headers included) */
  readonly eightBit: boolean;
  /** a line longer than 998 octets */
  readonly longLines: boolean;
  /** a NUL octet */
  readonly nul: boolean;
}

const EIGHT_BIT = 1;
const LONG_LINES = 2;
const NUL = 4;

/** One shared, frozen object per combination: the scheduler keeps one reference per queued message. */
const ALL: readonly BodyFacts[] = Array.from({ length: 8 }, (_, f) =>
  Object.freeze({ eightBit: (f & EIGHT_BIT) !== 0, longLines: (f & LONG_LINES) !== 0, nul: (f & NUL) !== 0 }),
);

/** Facts → the single digit kept in the spool header (format.ts). */
export function factsFlags(f: BodyFacts): number {
  return (f.eightBit ? EIGHT_BIT : 0) | (f.longLines ? LONG_LINES : 0) | (f.nul ? NUL : 0);
}

/** The spool digit → facts; undefined for anything but 0…7. */
export function factsOf(flags: number): BodyFacts | undefined {
  return Number.isInteger(flags) && flags >= 0 && flags < 8 ? ALL[flags] : undefined;
}

export const SEVEN_BIT_FACTS: BodyFacts = ALL[0]!;

/** True when the body is plain 7-bit text with short lines: it goes out byte for byte to any server. */
export function isPlain(f: BodyFacts): boolean {
  return !f.eightBit && !f.longLines && !f.nul;
}

export class BodyScanner {
  private flags = 0;
  /** octets of the current (unterminated) line seen in earlier chunks, a trailing CR included */
  private run = 0;
  /** the last octet seen (a CR here may belong to a CRLF split across chunks) */
  private last = -1;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (!(this.flags & EIGHT_BIT) && !isAscii(chunk)) this.flags |= EIGHT_BIT;
    if (!(this.flags & NUL) && chunk.includes(0)) this.flags |= NUL;
    if (!(this.flags & LONG_LINES)) this.lines(chunk);
    this.last = chunk[chunk.length - 1]!;
  }

  /**
   * From the start of the current line, an LF must come within MAX_LINE_OCTETS + 1 octets (the
   * +1 is a CR before it). The last LF in that window ends every line that starts inside it, and
   * all of those are short enough; only a line exactly one octet over needs a look at its CR.
   */
  private lines(chunk: Buffer): void {
    const n = chunk.length;
    let pos = 0;
    while (pos < n) {
      const reach = pos + MAX_LINE_OCTETS + 1 - this.run; // furthest index an LF may have
      const lf = chunk.lastIndexOf(0x0a, Math.min(reach, n - 1));
      if (lf < pos) {
        if (reach < n) return void (this.flags |= LONG_LINES);
        this.run += n - pos;
        return;
      }
      if (lf === reach && chunk.indexOf(0x0a, pos) === lf) {
        // One line of exactly MAX + 1 octets before its LF: fine only if the last is a CR.
        const before = lf > 0 ? chunk[lf - 1] : this.last;
        if (before !== 0x0d) return void (this.flags |= LONG_LINES);
      }
      this.run = 0;
      pos = lf + 1;
    }
  }

  get facts(): BodyFacts {
    let f = this.flags;
    // The last line has no LF (yet): the DATA encoder ends it with CRLF, a trailing CR becoming that CR.
    if (!(f & LONG_LINES) && this.run - (this.last === 0x0d ? 1 : 0) > MAX_LINE_OCTETS) f |= LONG_LINES;
    return ALL[f]!;
  }
}

/** The facts of a whole stream (a spool file written before the facts were kept). */
export async function scanStream(stream: AsyncIterable<Buffer | string>): Promise<BodyFacts> {
  const s = new BodyScanner();
  for await (const c of stream) s.push(typeof c === 'string' ? Buffer.from(c) : c);
  return s.facts;
}
