/**
 * Mutated SMTP sessions for the ingress fuzzer: each `Sequence` is the bytes a hostile client
 * sends plus what the relay must answer — the classes of reply an RFC 5321 server owes that input
 * (§4.2.4 500 unrecognised, §4.1.4/§3.3 503 bad sequence, §4.5.3.1.4 500 line too long, 501 syntax,
 * 552 too big) — checked by the fuzzer after a sync point.
 */
import { splitAt } from '../../support/split.js';

export type Rand = () => number;

export type Kind =
  | 'garbage-line'
  | 'nul-command'
  | 'long-line'
  | 'out-of-order'
  | 'bad-syntax'
  | 'transaction'
  | 'smuggle'
  | 'pipeline-flood'
  | 'huge-header'
  | 'mutated';

export interface Sequence {
  kind: Kind;
  /** the bytes, possibly split into several writes */
  chunks: Buffer[];
  /**
   * A check of the replies that came back for this sequence (before the sync); returns a
   * description of the violation or undefined. `closed` = the server hung up (421).
   */
  check: (codes: number[], closed: boolean) => string | undefined;
  /** may leave the session inside DATA: the sync must end it first */
  mayBeInData: boolean;
}

// Shared with the reply-script fuzz of the delivery client (./replyFuzz.ts).
export const int = (r: Rand, n: number) => Math.floor(r() * n);
export const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)]!;
export const bytes = (r: Rand, n: number, avoid: number[] = []) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) {
    let c = int(r, 256);
    while (avoid.includes(c)) c = int(r, 256);
    b[i] = c;
  }
  return b;
};
const CRLF = Buffer.from('\r\n');
const line = (s: string | Buffer) => Buffer.concat([Buffer.isBuffer(s) ? s : Buffer.from(s, 'latin1'), CRLF]);

const VERBS = /^(HELO|EHLO|LHLO|MAIL|RCPT|DATA|RSET|NOOP|QUIT|VRFY|EXPN|HELP|STARTTLS|AUTH|BDAT|ETRN|TURN)\b/i;
const all = (pred: (c: number) => boolean, what: string) => (codes: number[], closed: boolean) => {
  const bad = codes.filter((c) => !pred(c) && !(closed && c === 421));
  return bad.length ? `expected ${what}, got ${codes.join(',')}` : undefined;
};
const is5xx = (c: number) => c >= 500 && c < 600;

/** Split into 1..4 writes at random points (segmentation must not matter). */
function split(r: Rand, b: Buffer): Buffer[] {
  if (r() < 0.5 || b.length < 2) return [b];
  return splitAt(
    b,
    Array.from({ length: 1 + int(r, 3) }, () => 1 + int(r, b.length - 1)),
  );
}

/** A message body with hostile content: NULs, bare LF/CR, long lines, 8-bit, dots. */
function hostileBody(r: Rand): Buffer {
  const parts: Buffer[] = [Buffer.from(`Subject: fuzz\r\nX-Fuzz: ${int(r, 1e9)}\r\n\r\n`)];
  for (let i = 0, n = 1 + int(r, 8); i < n; i++) {
    switch (int(r, 7)) {
      case 0:
        parts.push(Buffer.from('a\0b\0\r\n'));
        break;
      case 1:
        parts.push(Buffer.from('bare LF\nbare CR\rmixed\n\r'));
        break;
      case 2:
        parts.push(Buffer.from('x'.repeat(1000 + int(r, 9000)) + '\r\n'));
        break;
      case 3:
        parts.push(Buffer.concat([bytes(r, 1 + int(r, 300), [0x0a, 0x0d, 0x2e]), CRLF]));
        break;
      case 4:
        parts.push(Buffer.from('..leading dots\r\n.\t\r\n'));
        break;
      case 5:
        parts.push(Buffer.from('caf\xc3\xa9 \xff\xfe\r\n', 'latin1'));
        break;
      default:
        parts.push(Buffer.from('plain line\r\n'));
    }
  }
  return Buffer.concat(parts);
}

/** Dot-stuffing + terminator as a correct client would send it; line endings left as they are. */
function dataPayload(body: Buffer): Buffer {
  const s = body.toString('latin1').replace(/(^|\r\n)\./g, '$1..');
  return Buffer.from(s.endsWith('\r\n') ? `${s}.\r\n` : `${s}\r\n.\r\n`, 'latin1');
}

export function generate(r: Rand, rcpt: string, maxSize: number): Sequence {
  const kind = pick(r, [
    'garbage-line',
    'nul-command',
    'long-line',
    'out-of-order',
    'bad-syntax',
    'transaction',
    'transaction',
    'smuggle',
    'pipeline-flood',
    'huge-header',
    'mutated',
    'mutated',
  ] as const);
  const MAIL = `MAIL FROM:<fuzz${int(r, 1000)}@sender.test>`;
  const RCPT = `RCPT TO:<${rcpt}>`;
  switch (kind) {
    case 'garbage-line': {
      let b = bytes(r, 1 + int(r, 200), [0x0a, 0x0d]);
      if (VERBS.test(b.toString('latin1'))) b = Buffer.concat([Buffer.from('X'), b]);
      // RFC 5321 §4.2.4: 500 for an unrecognised command
      return { kind, chunks: [line(b)], check: all((c) => c === 500 || c === 501 || c === 502, '500/501/502'), mayBeInData: false };
    }
    case 'nul-command': {
      const cmds = ['NO\0OP', 'MAIL FROM:<a\0b@sender.test>', `RCPT TO:<x\0@${rcpt.split('@')[1]}>`, 'EHLO \0host', 'HELO a\0b'];
      return { kind, chunks: [line(pick(r, cmds))], check: all(is5xx, '5xx'), mayBeInData: false };
    }
    case 'long-line': {
      // RFC 5321 §4.5.3.1.4: 512 octets; the server may accept more but must answer, not choke.
      const n = 600 + int(r, 40_000);
      const b = pick(r, [`NOOP ${'n'.repeat(n)}`, `MAIL FROM:<${'a'.repeat(n)}@sender.test>`, `EHLO ${'h'.repeat(n)}`, 'X'.repeat(n)]);
      return {
        kind,
        chunks: split(r, line(b)),
        check: (codes, closed) =>
          codes.length === 0 && !closed ? 'no reply' : all((c) => c >= 500 || c === 250 || c === 421, '5xx, 250 (NOOP) or 421')(codes, closed),
        mayBeInData: false,
      };
    }
    case 'out-of-order': {
      // RFC 5321 §3.3, §4.1.4: commands out of sequence get 503
      const seqs = [[RCPT], ['DATA'], [MAIL, MAIL], [MAIL, 'DATA'], ['BDAT 10 LAST']];
      const s = pick(r, seqs);
      const check = (codes: number[], closed: boolean) => {
        const last = codes[codes.length - 1];
        if (closed) return undefined;
        if (s[0] === 'BDAT 10 LAST') return last !== undefined && last >= 500 ? undefined : `BDAT (not offered): got ${codes.join(',')}`;
        return last === 503 ? undefined : `expected a final 503, got ${codes.join(',')}`;
      };
      return { kind, chunks: [Buffer.concat(s.map(line))], check, mayBeInData: false };
    }
    case 'bad-syntax': {
      const cmds = [
        'MAIL FROM:garbage',
        'MAIL FROM:<@>',
        'MAIL FROM:<a@b> SIZE=abc',
        'MAIL FROM:<a@b> BODY=9BIT',
        'MAIL FROM:<a@b> FOO=bar',
        'MAIL TO:<a@b>',
        'MAIL FROM:<<a@b>>',
        'MAIL FROM:<a@b',
        'EHLO',
        'HELO',
        `MAIL FROM:<a@${'x'.repeat(300)}.test>`,
      ];
      return {
        kind,
        chunks: [Buffer.concat([line('RSET'), line(pick(r, cmds))])],
        check: (codes, closed) =>
          closed || (codes[0] === 250 && codes.length === 2 && is5xx(codes[1]!)) ? undefined : `expected 250 then 5xx, got ${codes.join(',')}`,
        mayBeInData: false,
      };
    }
    case 'transaction':
    case 'smuggle': {
      let body = hostileBody(r);
      if (kind === 'smuggle') {
        // SMTP smuggling: end-of-data look-alikes with bare LF / bare CR, then a second transaction
        const fake = pick(r, ['\n.\n', '\n.\r\n', '\r.\r', '\r\n.\n', '\n.\r']);
        body = Buffer.concat([
          body,
          Buffer.from(`${fake}MAIL FROM:<smuggled@sender.test>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n`),
        ]);
      }
      const payload = Buffer.concat([line(MAIL), line(RCPT), line('DATA'), dataPayload(body)]);
      const pipelined = r() < 0.5;
      // pipelined: everything in one go (RFC 2920 allows up to DATA; the body too is abuse but must work)
      const chunks = pipelined ? split(r, payload) : [payload];
      const check = (codes: number[], closed: boolean) => {
        if (closed) return undefined;
        const ok =
          codes.length === 4 &&
          codes[0] === 250 &&
          codes[1] === 250 &&
          codes[2] === 354 &&
          (codes[3] === 250 || (body.length > maxSize - 4096 && codes[3] === 552));
        return ok ? undefined : `expected 250,250,354,250 (one message), got ${codes.join(',')}`;
      };
      return { kind, chunks, check, mayBeInData: false };
    }
    case 'huge-header': {
      // one header line of ~maxSize·1.5 → 552 (RFC 1870 §6.3, RFC 3463 5.3.4), session continues
      const big = Buffer.concat([Buffer.from(`X-Huge: ${'h'.repeat(Math.floor(maxSize * 1.5))}\r\n\r\nbody\r\n`)]);
      const payload = Buffer.concat([line(MAIL), line(RCPT), line('DATA'), dataPayload(big)]);
      return {
        kind,
        chunks: split(r, payload),
        check: (codes, closed) => (closed || codes.join(',') === '250,250,354,552' ? undefined : `expected 250,250,354,552, got ${codes.join(',')}`),
        mayBeInData: false,
      };
    }
    case 'pipeline-flood': {
      const n = 20 + int(r, 100);
      const cmds = Array.from({ length: n }, () => pick(r, ['NOOP', 'RSET', 'NOOP', 'VRFY a', 'HELP'.replace('HELP', 'NOOP')]));
      return {
        kind,
        chunks: split(r, Buffer.concat(cmds.map(line))),
        check: (codes, closed) => (closed || codes.length === n ? undefined : `${n} commands, ${codes.length} replies`),
        mayBeInData: false,
      };
    }
    case 'mutated': {
      const base = Buffer.concat([line(MAIL), line(RCPT), line('DATA'), dataPayload(hostileBody(r))]);
      const b = Buffer.from(base);
      for (let i = 0, n = 1 + int(r, 8); i < n; i++) {
        const p = int(r, b.length);
        b[p] = r() < 0.3 ? pick(r, [0x00, 0x0a, 0x0d, 0x2e, 0x3c, 0x3e, 0x40]) : int(r, 256);
      }
      // anything goes, as long as every reply is a well-formed SMTP reply and the session recovers
      const text = b.toString('latin1');
      const safe = /HELP|QUIT|STARTTLS|AUTH/i.test(text) ? base : b;
      return { kind, chunks: split(r, safe), check: () => undefined, mayBeInData: true };
    }
  }
}
