/**
 * Loop detection at ingress by hop count (RFC 5321 §6.3: "simple counting of the number of
 * 'Received' header fields in a message has proven to be an effective, although rarely
 * optimal, method of detecting loops"; Postfix `hopcount_limit`, default 50).
 *
 * Counts the `Received:` header fields of the header section (RFC 5322 §2.2: up to the first
 * empty line) while the message streams past, chunk by chunk, in O(1) memory: only the first
 * bytes of each line are looked at, never a whole line or the message. Continuation lines of a
 * folded field (leading WSP) are no new field. The name may be followed by WSP before the colon
 * (RFC 5322 §4.5.3 obsolete syntax, which receivers must accept). Lines end in CRLF or a bare LF.
 */

const NAME = 'received';
/** "received" + up to this many WSP before ":" is still looked at; longer prefixes are no match. */
const MAX_PREFIX = NAME.length + 16;

export class HopCounter {
  /** Received: fields seen so far */
  count = 0;
  /** the empty line ending the header section has been seen */
  done = false;
  /** the first bytes of the current line (lower-cased), while they can still match */
  private prefix = '';
  private atLineStart = true;
  /** the current line can no longer be a Received: field (or is a continuation line) */
  private settled = false;
  /** the current line so far is only a CR (a CRLF empty line in the making) */
  private onlyCR = false;

  push(chunk: Buffer): void {
    for (let i = 0; i < chunk.length && !this.done; i++) this.byte(chunk[i]!);
  }

  private byte(b: number): void {
    if (b === 0x0a) {
      // End of line: an empty line (LF or CRLF alone) ends the header section.
      if (this.atLineStart || this.onlyCR) {
        this.done = true;
        return;
      }
      this.atLineStart = true;
      this.prefix = '';
      this.settled = false;
      this.onlyCR = false;
      return;
    }
    const first = this.atLineStart;
    this.atLineStart = false;
    if (first && b === 0x0d) {
      this.onlyCR = true;
      return;
    }
    this.onlyCR = false;
    if (this.settled) return;
    if (first && (b === 0x20 || b === 0x09)) {
      this.settled = true;
      return;
    } // folded continuation
    const c = String.fromCharCode(b).toLowerCase();
    if (this.prefix.length < NAME.length) {
      if (c !== NAME[this.prefix.length]) {
        this.settled = true;
        return;
      }
      this.prefix += c;
      return;
    }
    if (c === ':') {
      this.count++;
      this.settled = true;
      return;
    }
    if ((c === ' ' || c === '\t') && this.prefix.length < MAX_PREFIX) {
      this.prefix += c;
      return;
    }
    this.settled = true; // "Received-SPF:", "ReceivedX:" ...
  }
}
