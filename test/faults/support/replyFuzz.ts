/**
 * Server replies for the reply-script fuzz of the delivery client (test/faults/smtpReplies.test.ts):
 * for each step a peer answers, either the normal reply or one drawn from every class a buggy or
 * hostile peer can send — a code the step allows (RFC 5321 §4.3.2), any code 200–599 with or
 * without an RFC 3463 enhanced code (matching its class or not), multi-line replies with one code
 * or with changing codes, out-of-range codes, garbage, an over-long line, the connection closed,
 * or no answer at all (stall). Helpers and the seeded generator are the ingress fuzz's.
 */
import type { PeerAction } from '../../support/scriptedPeer.js';
import { bytes, int, pick, type Rand } from './smtpFuzz.js';

export type Step = 'greeting' | 'ehlo' | 'helo' | 'starttls' | 'mail' | 'rcpt' | 'data' | 'dot' | 'rset' | 'quit' | 'other';

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
  rset: [250, 500, 421],
  quit: [221, 500],
  other: [250, 500, 502],
};

export type Fault = 'normal' | 'legal' | 'any-code' | 'multiline' | 'multiline-mixed' | 'out-of-range' | 'garbage' | 'overlong' | 'close' | 'stall';
export const FAULTS: readonly Fault[] = ['normal', 'legal', 'any-code', 'multiline', 'multiline-mixed', 'out-of-range', 'garbage', 'overlong', 'close', 'stall'];

/** Fault weights (stall costs a stage timeout of wall time; keep it rare). */
const WEIGHTS: [Fault, number][] = [['legal', 30], ['any-code', 30], ['multiline', 10], ['multiline-mixed', 8], ['out-of-range', 5], ['garbage', 8], ['overlong', 1], ['close', 6], ['stall', 2]];
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
      return { action: { reply: pick(r, [`${code} out of range\r\n`, `${pick(r, ['25', '2500', '2x0', ' 250'])} odd\r\n`, `${pick(r, ['250', '354', '220'])}\r\n`.replace(/\r\n$/, 'x\r\n')]) }, fault };
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
