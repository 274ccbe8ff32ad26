/**
 * Queue ids: 16 characters of Crockford base32 (lower case), 10 for the
 * millisecond timestamp (50 bits) and 6 for a per-millisecond sequence (30 bits).
 * The alphabet is in ASCII order and the width is fixed, so string order is time
 * order; ids are filename-safe and easy to read aloud in logs.
 *
 * Uniqueness matters more than it looks: a commit renames onto `msg/<id>`, and a
 * rename silently replaces an existing file. So ids are strictly monotonic within
 * a process (even if the clock steps back), and recovery raises the floor above
 * every id already on disk.
 */
import { randomInt } from 'node:crypto';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const TS_CHARS = 10;
const SEQ_CHARS = 6;
const SEQ_LIMIT = 2 ** 30;
export const ID_RE = /^[0-9a-hjkmnp-tv-z]{16}$/;

function encode(n: number, width: number): string {
  let s = '';
  for (let i = 0; i < width; i++) {
    s = ALPHABET[n % 32]! + s;
    n = Math.floor(n / 32);
  }
  return s;
}

function decode(s: string): number {
  let n = 0;
  for (const c of s) n = n * 32 + ALPHABET.indexOf(c);
  return n;
}

export function isQueueId(s: string): boolean {
  return ID_RE.test(s);
}

/** The epoch ms an id was minted at (for logs and `queue list`). */
export function idTime(id: string): number {
  return decode(id.slice(0, TS_CHARS));
}

export class IdGenerator {
  private lastTs = 0;
  private seq = 0;

  next(now: number): string {
    let ts = Math.max(Math.floor(now), this.lastTs);
    if (ts === this.lastTs) {
      this.seq++;
      if (this.seq >= SEQ_LIMIT) {
        ts++;
        this.seq = randomInt(SEQ_LIMIT / 2);
      }
    } else {
      // A random start (lower half, leaving room to count up) keeps ids from
      // two processes in the same millisecond apart, e.g. a CLI and a relay.
      this.seq = randomInt(SEQ_LIMIT / 2);
    }
    this.lastTs = ts;
    return encode(ts, TS_CHARS) + encode(this.seq, SEQ_CHARS);
  }

  /** Never mint an id at or below `id` (called for every id found on disk). */
  floor(id: string): void {
    if (!isQueueId(id)) return;
    const ts = idTime(id);
    const seq = decode(id.slice(TS_CHARS));
    if (ts > this.lastTs || (ts === this.lastTs && seq > this.seq)) {
      this.lastTs = ts;
      this.seq = seq;
    }
  }
}
