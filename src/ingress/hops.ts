/**
 * The header fields ingress looks at while a message streams past, chunk by chunk, in O(1) memory:
 * - `Received:` fields, counted for loop detection (RFC 5321 §6.3: "simple counting of the number of
 *   'Received' header fields in a message has proven to be an effective, although rarely optimal,
 *   method of detecting loops"; Postfix `hopcount_limit`, default 50);
 * - `TLS-Required:` fields (RFC 8689 §3), their unfolded values kept (each bounded) for `tlsRequiredOf`.
 *
 * Only the header section counts (RFC 5322 §2.2: up to the first empty line); only the first bytes of
 * each line are looked at, never a whole line or the message, except a bounded TLS-Required value.
 * Continuation lines of a folded field (leading WSP) are no new field. A name may be followed by WSP
 * before the colon (RFC 5322 §4.5.3 obsolete syntax, which receivers must accept). Lines end in CRLF
 * or a bare LF.
 */

/** Names looked at (lower case): the longest is `tls-required`. */
const RECEIVED = 'received';
const TLS_REQUIRED = 'tls-required';
const MAX_NAME = TLS_REQUIRED.length;
/** WSP between a name and its colon still looked at; more is no match. */
const MAX_WSP = 16;
/** octets of a TLS-Required value kept; a longer one is kept as over-long (never a valid `No`) */
export const MAX_TLS_REQUIRED_VALUE = 200;

export class HeaderWatch {
  /** Received: fields seen so far */
  received = 0;
  /** the unfolded value of each TLS-Required: field seen so far; `null` for one over MAX_TLS_REQUIRED_VALUE */
  readonly tlsRequired: (string | null)[] = [];
  /** the empty line ending the header section has been seen */
  done = false;
  /** octets of the current line's name so far */
  private nameLen = 0;
  /** the name so far is a prefix of `received` / `tls-required` (compared octet by octet, lower-cased: no string per octet) */
  private mayBeReceived = true;
  private mayBeTlsRequired = true;
  /** WSP seen after the name (obsolete syntax) */
  private wsp = 0;
  private atLineStart = true;
  /** the current line can no longer start a field we look at (or is a continuation line) */
  private settled = false;
  /** the current line so far is only a CR (a CRLF empty line in the making) */
  private onlyCR = false;
  /** a TLS-Required value is being read (its line, then its continuation lines) */
  private value: string | null | undefined;

  /** Looks at `chunk` up to the end of the header section; returns how many of its octets belong to it (the empty line included). */
  push(chunk: Buffer): number {
    let i = 0;
    while (i < chunk.length && !this.done) this.byte(chunk[i++]!);
    if (this.done) this.endValue();
    return i;
  }

  /** The message ended (with or without an empty line): a value still being read is complete. */
  finish(): void {
    this.endValue();
  }

  private endValue(): void {
    if (this.value === undefined) return;
    this.tlsRequired.push(this.value);
    this.value = undefined;
  }

  private take(b: number): void {
    if (this.value === null || b === 0x0d) return; // CRs of CRLF (and bare ones) are no part of the unfolded value
    this.value += String.fromCharCode(b);
    if (this.value!.length > MAX_TLS_REQUIRED_VALUE) this.value = null;
  }

  private byte(b: number): void {
    if (b === 0x0a) {
      // End of line: an empty line (LF or CRLF alone) ends the header section.
      if (this.atLineStart || this.onlyCR) {
        this.done = true;
        return;
      }
      this.atLineStart = true;
      this.nameLen = 0;
      this.mayBeReceived = true;
      this.mayBeTlsRequired = true;
      this.wsp = 0;
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
    if (first) {
      if (b === 0x20 || b === 0x09) {
        // A folded continuation: part of the value being read, if any (RFC 5322 §2.2.3 unfolding keeps the WSP).
        this.settled = true;
        if (this.value !== undefined) this.take(b);
        return;
      }
      this.endValue();
    }
    if (this.settled) {
      if (this.value !== undefined) this.take(b);
      return;
    }
    if (b === 0x3a) {
      // ':'
      this.settled = true;
      if (this.mayBeReceived && this.nameLen === RECEIVED.length) this.received++;
      else if (this.mayBeTlsRequired && this.nameLen === TLS_REQUIRED.length) this.value = '';
      return;
    }
    if (b === 0x20 || b === 0x09) {
      if (this.nameLen === 0 || ++this.wsp > MAX_WSP) this.settled = true;
      return;
    }
    // "Received-SPF:", "ReceivedX:", "Received x:", names longer than any we look at: no match.
    if (this.wsp > 0 || this.nameLen >= MAX_NAME) {
      this.settled = true;
      return;
    }
    // ASCII letters lower-cased; no other octet lower-cases to one of the names' characters
    const c = b >= 0x41 && b <= 0x5a ? b | 0x20 : b;
    const n = this.nameLen++;
    this.mayBeReceived &&= RECEIVED.charCodeAt(n) === c;
    this.mayBeTlsRequired &&= TLS_REQUIRED.charCodeAt(n) === c;
  }
}

/** What a message's `TLS-Required` header fields ask for (RFC 8689 §3). */
export type TlsRequiredField = { kind: 'absent' } | { kind: 'no' } | { kind: 'invalid'; why: string };

/**
 * RFC 8689 §3 (RT-30): `"TLS-Required:" [FWS] "No" CRLF`, at most one instance. ABNF strings are
 * case-insensitive (RFC 5234 §2.3), so `no` and `NO` count; WSP around the value (folding included) is
 * allowed. Any other value, or more than one field, is no request: the field is ignored (and logged).
 */
export function tlsRequiredOf(values: readonly (string | null)[]): TlsRequiredField {
  if (values.length === 0) return { kind: 'absent' };
  if (values.length > 1) return { kind: 'invalid', why: `${values.length} TLS-Required fields (RFC 8689 section 3 allows one)` };
  const v = values[0];
  if (v === null || v === undefined) return { kind: 'invalid', why: 'TLS-Required value is too long' };
  if (v.trim().toLowerCase() !== 'no') return { kind: 'invalid', why: 'TLS-Required value is not "No" (RFC 8689 section 3)' };
  return { kind: 'no' };
}
