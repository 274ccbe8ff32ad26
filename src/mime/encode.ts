/**
 * Streaming Content-Transfer-Encodings for the 7-bit conversion (RFC 2045 §6.7, §6.8). Each
 * encoder is fed a leaf part's content as line pieces and line breaks (the CRLFs that belong to
 * the content, RFC 2046 §5.1.1) and writes encoded lines separated by CRLF; the caller ends the
 * last line. Output lines never exceed 76 characters; memory is one partial line.
 */

const CRLF = Buffer.from('\r\n');
const HEX = '0123456789ABCDEF';
const HEX_CODES = Buffer.from(HEX, 'latin1');
/** RFC 2045 §6.7 (5): encoded lines are at most 76 characters, the soft break's "=" included. */
const QP_LINE = 76;
/** RFC 2045 §6.8: at most 76 characters per line: 57 octets. */
const B64_LINE_OCTETS = 57;

export interface ContentEncoder {
  /** content octets of the current line */
  write(data: Buffer): void;
  /** a line break that is part of the content */
  lineBreak(): void;
  /** flush; afterwards `atLineStart` tells whether the output ends with CRLF */
  end(): void;
  readonly atLineStart: boolean;
}

/**
 * Quoted-printable for text (RFC 2045 §6.7): content line breaks become hard line breaks, long
 * lines get soft breaks ("=" CRLF), "=" and every octet outside 33…126 are "=XX", and a space or
 * tab is literal except before a line break or at the end, where it would be lost (rule 3).
 */
export class QpEncoder implements ContentEncoder {
  private col = 0;
  /** a space or tab not yet written: literal if something follows on the line, else =20/=09 */
  private ws = -1;
  private started = false;

  constructor(private readonly out: (b: Buffer) => void) {}

  get atLineStart(): boolean {
    return this.col === 0 && this.ws < 0;
  }

  write(data: Buffer): void {
    if (data.length === 0) return;
    this.started = true;
    const buf = Buffer.allocUnsafe(data.length * 3 + Math.ceil((data.length * 3) / (QP_LINE - 1)) * 3 + 8);
    let o = 0;
    let col = this.col;
    let ws = this.ws;
    // A token of `len` characters goes on the current line if the soft break's "=" still fits after it.
    for (let i = 0; i < data.length; i++) {
      const x = data[i]!;
      if (ws >= 0) {
        // followed by something on the same line: literal
        if (col + 1 > QP_LINE - 1) {
          buf[o++] = 0x3d;
          buf[o++] = 0x0d;
          buf[o++] = 0x0a;
          col = 0;
        }
        buf[o++] = ws;
        col++;
        ws = -1;
      }
      if (x === 0x20 || x === 0x09) {
        ws = x;
      } else if (x >= 0x21 && x <= 0x7e && x !== 0x3d) {
        if (col + 1 > QP_LINE - 1) {
          buf[o++] = 0x3d;
          buf[o++] = 0x0d;
          buf[o++] = 0x0a;
          col = 0;
        }
        buf[o++] = x;
        col++;
      } else {
        if (col + 3 > QP_LINE - 1) {
          buf[o++] = 0x3d;
          buf[o++] = 0x0d;
          buf[o++] = 0x0a;
          col = 0;
        }
        buf[o++] = 0x3d;
        buf[o++] = HEX_CODES[x >> 4]!;
        buf[o++] = HEX_CODES[x & 15]!;
        col += 3;
      }
    }
    this.col = col;
    this.ws = ws;
    this.out(buf.subarray(0, o));
  }

  /** A space or tab before a line end is encoded (rule 3); the soft-break logic still applies. */
  private flushWs(): void {
    if (this.ws < 0) return;
    const x = this.ws;
    this.ws = -1;
    const enc = Buffer.from([0x3d, HEX.charCodeAt(x >> 4), HEX.charCodeAt(x & 15)]);
    if (this.col + 3 > QP_LINE - 1) {
      this.out(Buffer.from('=\r\n'));
      this.col = 0;
    }
    this.out(enc);
    this.col += 3;
  }

  lineBreak(): void {
    this.started = true;
    this.flushWs();
    this.out(CRLF);
    this.col = 0;
  }

  end(): void {
    if (this.started) this.flushWs();
  }
}

/** Base64 for everything else (RFC 2045 §6.8): the content octets, line breaks as CRLF octets. */
export class Base64Encoder implements ContentEncoder {
  private rest: Buffer = Buffer.alloc(0);
  private lines = 0;
  private open = false;

  constructor(private readonly out: (b: Buffer) => void) {}

  get atLineStart(): boolean {
    return !this.open;
  }

  write(data: Buffer): void {
    const all = this.rest.length ? Buffer.concat([this.rest, data]) : data;
    const whole = all.length - (all.length % B64_LINE_OCTETS);
    if (whole > 0) {
      const parts: Buffer[] = [];
      for (let i = 0; i < whole; i += B64_LINE_OCTETS) {
        if (this.lines++ > 0) parts.push(CRLF);
        parts.push(Buffer.from(all.subarray(i, i + B64_LINE_OCTETS).toString('base64'), 'latin1'));
      }
      this.out(Buffer.concat(parts));
      this.open = true;
    }
    // A copy: `data` may be a view of a buffer the caller reuses.
    this.rest = Buffer.from(all.subarray(whole));
  }

  lineBreak(): void {
    this.write(CRLF);
  }

  end(): void {
    if (this.rest.length === 0) return;
    this.out(Buffer.from(`${this.lines++ > 0 ? '\r\n' : ''}${this.rest.toString('base64')}`, 'latin1'));
    this.rest = Buffer.alloc(0);
    this.open = true;
  }
}

const B64_ALPHABET = new Uint8Array(256);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=') B64_ALPHABET[c.charCodeAt(0)] = 1;

/**
 * A part already labelled base64 whose lines are too long (some generators write one line) or
 * that carries stray 8-bit/NUL octets: RFC 2045 §6.8 has decoders ignore every character outside
 * the alphabet and all line breaks, so keeping only the alphabet and wrapping at 76 decodes to the
 * same octets.
 */
export class Base64Rewrap implements ContentEncoder {
  private col = 0;
  private open = false;

  constructor(private readonly out: (b: Buffer) => void) {}

  get atLineStart(): boolean {
    return !this.open;
  }

  write(data: Buffer): void {
    const buf = Buffer.allocUnsafe(data.length + Math.ceil(data.length / 76) * 2 + 2);
    let o = 0;
    for (const x of data) {
      if (!B64_ALPHABET[x]) continue;
      if (this.col === 76) {
        buf[o++] = 0x0d;
        buf[o++] = 0x0a;
        this.col = 0;
      }
      buf[o++] = x;
      this.col++;
      this.open = true;
    }
    if (o) this.out(buf.subarray(0, o));
  }

  lineBreak(): void {
    /* line breaks carry nothing in base64 */
  }

  end(): void {
    /* nothing held back */
  }
}

const isHex = (x: number | undefined): boolean => x !== undefined && ((x >= 0x30 && x <= 0x39) || (x >= 0x41 && x <= 0x46) || (x >= 0x61 && x <= 0x66));

/**
 * A part already labelled quoted-printable with over-long lines or raw 8-bit/NUL octets (invalid
 * QP that lenient decoders read literally, RFC 2045 §6.7 note): soft breaks are inserted between
 * tokens, never inside an "=XX", and raw octets outside 33…126 (tab and space aside) become "=XX",
 * so a decoder gets the same octets. The original line breaks (hard or soft) are kept.
 */
export class QpRequote implements ContentEncoder {
  private col = 0;
  /** the start of an escape ("=" or "=X") cut off at the end of a piece */
  private carry: Buffer = Buffer.alloc(0);

  constructor(private readonly out: (b: Buffer) => void) {}

  get atLineStart(): boolean {
    return this.col === 0 && this.carry.length === 0;
  }

  write(piece: Buffer): void {
    const data = this.carry.length ? Buffer.concat([this.carry, piece]) : piece;
    this.carry = Buffer.alloc(0);
    let end = data.length;
    // an escape that may continue in the next piece waits for it
    if (data[end - 1] === 0x3d) end -= 1;
    else if (data[end - 2] === 0x3d && isHex(data[end - 1])) end -= 2;
    this.emit(data.subarray(0, end));
    this.carry = Buffer.from(data.subarray(end));
  }

  private emit(data: Buffer): void {
    const buf = Buffer.allocUnsafe(data.length * 3 + Math.ceil((data.length * 3) / (QP_LINE - 1)) * 3 + 8);
    let o = 0;
    const put = (bytes: number[]): void => {
      if (this.col + bytes.length > QP_LINE - 1) {
        buf[o++] = 0x3d;
        buf[o++] = 0x0d;
        buf[o++] = 0x0a;
        this.col = 0;
      }
      for (const b of bytes) buf[o++] = b;
      this.col += bytes.length;
    };
    for (let i = 0; i < data.length; i++) {
      const x = data[i]!;
      if (x === 0x3d && isHex(data[i + 1]) && isHex(data[i + 2])) {
        put([x, data[i + 1]!, data[i + 2]!]);
        i += 2;
      } else if ((x >= 0x20 && x <= 0x7e) || x === 0x09) {
        put([x]); // "=" not followed by hex stays as it was (a decoder reads it literally, or as the soft break at a line end)
      } else {
        put([0x3d, HEX.charCodeAt(x >> 4), HEX.charCodeAt(x & 15)]);
      }
    }
    if (o) this.out(buf.subarray(0, o));
  }

  lineBreak(): void {
    this.flushCarry();
    this.out(CRLF);
    this.col = 0;
  }

  private flushCarry(): void {
    if (!this.carry.length) return;
    const c = this.carry;
    this.carry = Buffer.alloc(0);
    this.emit(c);
  }

  end(): void {
    this.flushCarry();
  }
}
