/**
 * Server replies for the reply-script fuzz of the delivery client (test/faults/smtpReplies.test.ts):
 * for each step a peer answers, either the normal reply or one drawn from every class a buggy or
 * hostile peer can send — a code the step allows (RFC 5321 §4.3.2), any code 200–599 with or
 * without an RFC 3463 enhanced code (matching its class or not), multi-line replies with one code
 * or with changing codes, out-of-range codes, garbage, an over-long line, the connection closed,
 * or no answer at all (stall). Helpers and the seeded generator are the ingress fuzz's.
 * Also the messages the fuzz sends (issue 19: 8-bit bodies, long lines, DSN parameters; RFC 3030:
 * bodies around the 4 KB BDAT batch, bare line breaks) with the oracle for what a next hop without
 * 8BITMIME may get, and the exact octets a body must arrive as (`wireBody`: DATA or BDAT).
 */
import { isAscii } from 'node:buffer';
import type { PeerAction } from '../../support/scriptedPeer.js';
import { MAX_LINE_OCTETS } from '../../../src/mime/scan.js';
import type { MailDsn, Notify, RcptDsn } from '../../../src/dsn/params.js';
import { bytes, int, pick, type Rand } from './smtpFuzz.js';

export type Step = 'greeting' | 'ehlo' | 'helo' | 'starttls' | 'mail' | 'rcpt' | 'data' | 'dot' | 'bdat' | 'rset' | 'quit' | 'other';

/**
 * RFC 5321 §4.3.2 (STARTTLS: RFC 3207 §4): the replies each step may get; 421 is allowed
 * anywhere (§3.8), and 500/501/502/504 for syntax (§4.3.1).
 */
export const LEGAL: Record<Step, readonly number[]> = {
  greeting: [220, 554, 421],
  ehlo: [250, 504, 550, 502, 500, 501, 421],
  helo: [250, 504, 550, 502, 500, 501, 421],
  starttls: [220, 454, 501, 421],
  mail: [250, 552, 451, 452, 550, 553, 503, 455, 555, 500, 501, 421],
  rcpt: [250, 251, 550, 551, 552, 553, 450, 451, 452, 503, 455, 555, 500, 501, 421],
  data: [354, 503, 554, 451, 500, 421],
  dot: [250, 552, 554, 451, 452, 450, 550, 421],
  // RFC 3030 §2 / §4.2: as the end of data, and 503 for a BDAT outside a transaction (MAIL refused, no recipient)
  bdat: [250, 552, 554, 451, 452, 450, 550, 421, 503, 500, 501],
  rset: [250, 500, 421],
  quit: [221, 500],
  other: [250, 500, 502],
};

export type Fault = 'normal' | 'legal' | 'any-code' | 'twice' | 'multiline' | 'multiline-mixed' | 'out-of-range' | 'garbage' | 'overlong' | 'close' | 'stall';
export const FAULTS: readonly Fault[] = [
  'normal',
  'legal',
  'twice',
  'any-code',
  'multiline',
  'multiline-mixed',
  'out-of-range',
  'garbage',
  'overlong',
  'close',
  'stall',
];

/** Fault weights (stall costs a stage timeout of wall time; keep it rare). */
const WEIGHTS: [Fault, number][] = [
  ['legal', 30],
  ['any-code', 30],
  ['twice', 6],
  ['multiline', 10],
  ['multiline-mixed', 8],
  ['out-of-range', 5],
  ['garbage', 8],
  ['overlong', 1],
  ['close', 6],
  ['stall', 2],
];
const TOTAL = WEIGHTS.reduce((n, [, w]) => n + w, 0);

function weighted(r: Rand): Fault {
  let x = r() * TOTAL;
  for (const [f, w] of WEIGHTS) if ((x -= w) < 0) return f;
  return 'legal';
}

/** "250 2.0.0 text" with an enhanced code of the reply's class, another class, or none. */
function text(r: Rand, code: number): string {
  const c = Math.floor(code / 100);
  const x = r();
  const enh = x < 0.4 ? `${c === 3 ? 2 : c}.${int(r, 8)}.${int(r, 10)} ` : x < 0.5 ? `${pick(r, [2, 4, 5])}.0.0 ` : '';
  return `${enh}fuzz ${int(r, 1000)}`;
}

const line = (code: number, sep: ' ' | '-', t: string) => `${code}${sep}${t}\r\n`;

export interface Drawn {
  action: PeerAction;
  fault: Fault;
}

/**
 * The reply to one step: `normal` with probability `pNormal`, else a fault. `normal` is the
 * step's well-behaved reply (CRLF included).
 */
export function draw(r: Rand, step: Step, normal: string, pNormal: number): Drawn {
  if (r() < pNormal) return { action: { reply: normal }, fault: 'normal' };
  const fault = weighted(r);
  switch (fault) {
    case 'legal': {
      const code = pick(r, LEGAL[step]);
      return { action: { reply: line(code, ' ', text(r, code)) }, fault };
    }
    case 'any-code': {
      const code = 200 + int(r, 400);
      return { action: { reply: line(code, ' ', text(r, code)) }, fault };
    }
    case 'twice': {
      // a peer out of step: the command answered, then answered again (a legal code or the normal reply again)
      const code = pick(r, LEGAL[step]);
      return { action: { reply: normal + (r() < 0.5 ? normal : line(code, ' ', text(r, code))) }, fault };
    }
    case 'multiline': {
      const code = r() < 0.5 ? pick(r, LEGAL[step]) : 200 + int(r, 400);
      const n = 2 + int(r, 5);
      return { action: { reply: Array.from({ length: n }, (_, i) => line(code, i === n - 1 ? ' ' : '-', text(r, code))).join('') }, fault };
    }
    case 'multiline-mixed': {
      // RFC 5321 §4.2: every line of a reply carries the same code; here they differ
      const a = pick(r, LEGAL[step]);
      let b = 200 + int(r, 400);
      if (b === a) b = a === 599 ? 200 : a + 1;
      return { action: { reply: line(a, '-', text(r, a)) + line(b, ' ', text(r, b)) }, fault };
    }
    case 'out-of-range': {
      const code = pick(r, [100 + int(r, 100), 600 + int(r, 400), int(r, 100)]);
      return {
        action: {
          reply: pick(r, [
            `${code} out of range\r\n`,
            `${pick(r, ['25', '2500', '2x0', ' 250'])} odd\r\n`,
            `${pick(r, ['250', '354', '220'])}\r\n`.replace(/\r\n$/, 'x\r\n'),
          ]),
        },
        fault,
      };
    }
    case 'garbage':
      return { action: { reply: Buffer.concat([bytes(r, 1 + int(r, 80), [0x0a, 0x0d]), Buffer.from('\r\n')]).toString('latin1') }, fault };
    case 'overlong': {
      // RFC 5321 §4.5.3.1.5: 512 octets per reply line; the client bounds it (8 KB)
      const code = pick(r, LEGAL[step]);
      return { action: { reply: line(code, ' ', 'x'.repeat(9000 + int(r, 4000))) }, fault };
    }
    case 'close':
      return { action: { close: true }, fault };
    case 'stall':
      return { action: { stall: true }, fault };
    default:
      return { action: { reply: normal }, fault: 'normal' };
  }
}

/**
 * Messages for the reply fuzz (issue 19): what the body holds decides whether a next hop without
 * 8BITMIME may get it as it is, converted, or not at all — so each kind carries its own oracle.
 *
 * - `plain`: 7-bit, short lines (may be empty, may have lines starting with a dot);
 * - `eight`: text/plain, 8bit, UTF-8: converted (quoted-printable) for a hop without 8BITMIME;
 * - `long`: a line over 998 octets (7-bit or 8-bit): converted for every hop (RFC 5321 §4.5.3.1.6);
 * - `eightHeader`: 8-bit octets in a header field: no conversion can make it 7-bit (5.6.3);
 * - `signed`: an 8-bit part under multipart/signed: converting would break the signature (5.6.3);
 * - `big` (RFC 3030): 7-bit, short lines, many starting with a dot, 3.3–4.1 KB (either side of the
 *   4 KB BDAT batch with the commands) or 4.4–16 KB (DATA).
 *
 * `plain` and `big` bodies sometimes end their lines with bare LF (or a mix of LF, CR and CRLF) and
 * sometimes lack the final line break: the client sends CRLF lines either way (RFC 5321 §2.3.8), and
 * a BDAT chunk counts the octets as sent (a bare-LF body near 4 KB grows past the batch: DATA).
 */
export type BodyKind = 'plain' | 'eight' | 'long' | 'eightHeader' | 'signed' | 'big';
const BODY_WEIGHTS: [BodyKind, number][] = [
  ['plain', 56],
  ['eight', 15],
  ['long', 9],
  ['eightHeader', 6],
  ['signed', 7],
  ['big', 12],
];
const BODY_TOTAL = BODY_WEIGHTS.reduce((n, [, w]) => n + w, 0);

export interface FuzzMessage {
  kind: BodyKind;
  body: Buffer;
  /** what the body needs of the next hop: 8-bit octets anywhere, a line over 998 octets */
  eightBit: boolean;
  longLines: boolean;
}

const UTF8 = ['Grüße', 'ĉu vi', 'наша почта', 'olá', '日本語', 'ß€'];

export function message(r: Rand, k: number): FuzzMessage {
  let x = r() * BODY_TOTAL;
  let kind: BodyKind = 'plain';
  for (const [b, w] of BODY_WEIGHTS)
    if ((x -= w) < 0) {
      kind = b;
      break;
    }
  const dot = r() < 0.3 ? '.dot line\r\n' : '';
  // line breaks of `plain` and `big`: bare LF below `bare`, a mix of LF, CR and CRLF up to 0.05 above, else CRLF
  const eol = r();
  const bare = kind === 'big' ? 0.3 : 0.12;
  const mime = 'MIME-Version: 1.0\r\n';
  let text: string;
  switch (kind) {
    case 'plain':
      text = r() < 0.15 ? '' : `Subject: s${k}\r\n\r\n${dot}body ${k}\r\n`;
      break;
    case 'eight':
      text = `Subject: s${k}\r\n${mime}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${dot}${pick(r, UTF8)} ${k}\r\n.${pick(r, UTF8)}\r\n`;
      break;
    case 'long': {
      const eight = r() < 0.5;
      const line = (eight ? `${pick(r, UTF8)} ` : '') + 'x'.repeat(999 + int(r, 1500));
      text = `Subject: s${k}\r\n${mime}Content-Type: text/plain; charset=${eight ? 'utf-8' : 'us-ascii'}\r\n${eight ? 'Content-Transfer-Encoding: 8bit\r\n' : ''}\r\n${dot}${line}\r\nend\r\n`;
      break;
    }
    case 'eightHeader':
      text = `Subject: ${pick(r, UTF8)} ${k}\r\n\r\n${dot}body ${k}\r\n`;
      break;
    case 'signed': {
      const b = `sig${k}`;
      text =
        `Subject: s${k}\r\n${mime}Content-Type: multipart/signed; protocol="application/pgp-signature"; micalg=pgp-sha256; boundary="${b}"\r\n\r\n` +
        `--${b}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${pick(r, UTF8)} ${k}\r\n` +
        `--${b}\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\n--${b}--\r\n`;
      break;
    }
    case 'big': {
      // most within a few hundred octets of the bound (the commands take 60–400), the rest well over it; bare-LF
      // bodies (below) of short lines, 3.7–4.4 KB as CRLF lines and ~8 % less as they are: around the bound, many
      // that fit by their size grow past it as CRLF lines
      const z = r();
      const size = eol < bare ? 3700 + int(r, 700) : z < 0.4 ? 3600 + int(r, 500) : z < 0.65 ? 3300 + int(r, 300) : 4400 + int(r, 11_600);
      const lines = [`Subject: s${k}`, ''];
      // short lines with bare LF: CRLF adds an octet to each, so many bodies whose size fits grow past the batch
      const width = eol < bare ? 20 : 77;
      for (let n = 20; n < size; ) {
        const l = pick(r, ['.', '..', '', '', '', '', '']) + 'y'.repeat(int(r, width));
        lines.push(l);
        n += l.length + 2;
      }
      text = lines.join('\r\n') + '\r\n';
      break;
    }
  }
  if (kind === 'plain' || kind === 'big') {
    // bare line breaks (a spool from elsewhere; ingress normalises its own) and a missing final CRLF
    if (eol < bare) text = text.replace(/\r\n/g, '\n');
    else if (eol < bare + 0.05) text = text.replace(/\r\n/g, () => pick(r, ['\n', '\r', '\r\n']));
    if (r() < 0.1) text = text.replace(/(\r\n|\r|\n)$/, '');
  }
  const body = Buffer.from(text, 'utf8');
  return { kind, body, eightBit: !isAscii(body), longLines: longestLine(body) > MAX_LINE_OCTETS };
}

/**
 * The oracle: refused (5.6.3, before MAIL) for a next hop with or without 8BITMIME, under
 * `delivery.mime_conversion` convert or refuse. A message that needs nothing is never refused.
 */
export function refusedFor(m: Pick<FuzzMessage, 'kind' | 'eightBit' | 'longLines'>, peer8: boolean, conversion: 'convert' | 'refuse'): boolean {
  const needs = (m.eightBit && !peer8) || m.longLines;
  if (!needs) return false;
  if (conversion === 'refuse') return true;
  return !peer8 && (m.kind === 'eightHeader' || m.kind === 'signed');
}

/**
 * The longest line of a body as it reached a peer: DATA's dot-stuffed wire form (the transparency dot does not
 * count, RFC 5321 §4.5.3.1.6), or with `dots: false` a BDAT chunk (RFC 3030 §2: no transparency, every octet counts).
 */
export function longestLine(wire: Buffer, dots = true): number {
  let max = 0;
  for (let start = 0; start < wire.length; ) {
    let end = wire.indexOf(0x0a, start);
    if (end < 0) end = wire.length;
    let len = end - start;
    if (len > 0 && wire[end - 1] === 0x0d) len--;
    if (dots && len > 0 && wire[start] === 0x2e) len--;
    max = Math.max(max, len);
    start = end + 1;
  }
  return max;
}

/**
 * The octets a body reaches the peer as, computed here independently of the client's DataEncoder:
 * every line break (CRLF, bare CR, bare LF) a CRLF and a final one added when missing (RFC 5321
 * §2.3.8); for `data` each line starting with a dot gets another (§4.5.2) and the "." line ends it,
 * for `bdat` (RFC 3030 §2) nothing else: no transparency, no end-of-data line. An empty body is
 * ".\r\n" in DATA and no octet at all in BDAT.
 */
export function wireBody(body: Buffer, mode: 'data' | 'bdat'): Buffer {
  const lines = body.toString('latin1').split(/\r\n|\r|\n/);
  if (lines.at(-1) === '') lines.pop();
  const text = lines.map((l) => (mode === 'data' && l.startsWith('.') ? `.${l}` : l) + '\r\n').join('');
  return Buffer.from(mode === 'data' ? `${text}.\r\n` : text, 'latin1');
}

/** RFC 3461 parameters for a message of the fuzz: RET/ENVID sometimes, NOTIFY/ORCPT per recipient sometimes. */
export function dsnParams(r: Rand, recipients: string[]): { dsn?: MailDsn; rcptDsn?: Record<string, RcptDsn> } {
  // printable US-ASCII with the characters xtext must encode (+, =, space)
  const printable = (n: number) => Array.from({ length: n }, () => pick(r, ['a', 'Z', '0', '+', '=', ' ', '<', '>', ';', '~', '!'])).join('');
  const out: { dsn?: MailDsn; rcptDsn?: Record<string, RcptDsn> } = {};
  if (r() < 0.4) {
    const ret = r() < 0.5 ? { ret: pick(r, ['FULL', 'HDRS'] as const) } : {};
    const envid = r() < 0.6 ? { envid: `e${printable(int(r, 24))}` } : {};
    if (ret.ret || envid.envid) out.dsn = { ...ret, ...envid };
  }
  for (const a of recipients) {
    if (r() < 0.5) continue;
    const n = r();
    const notify: Notify[] | undefined = n < 0.2 ? ['NEVER'] : n < 0.8 ? (['SUCCESS', 'FAILURE', 'DELAY'] as const).filter(() => r() < 0.5) : undefined;
    const d: RcptDsn = {
      ...(notify?.length ? { notify } : {}),
      ...(r() < 0.5 ? { orcpt: { type: 'rfc822', address: `o${printable(int(r, 20))}@x.test` } } : {}),
    };
    if (d.notify || d.orcpt) (out.rcptDsn ??= {})[a] = d;
  }
  return out;
}
