/**
 * Conversion of a message for a next hop that did not agree to its body (RFC 6152 §3, RFC 1652 §3:
 * 8-bit to a server without 8BITMIME; RFC 5321 §4.5.3.1.6: lines over 998 octets, to anyone),
 * MIME-structure-aware (RFC 2045–2049), streaming.
 *
 * Every leaf part whose content needs it is re-encoded — quoted-printable for text/*, base64 for
 * anything else — and its Content-Transfer-Encoding rewritten; multipart and message/rfc822 are
 * walked into (to MIME_NESTING_LIMIT levels) and relabelled 7bit when they were labelled 8bit or
 * binary. Header fields are never converted: 8-bit octets in one (without SMTPUTF8, RFC 6532) make
 * the message unconvertible; a line over 998 octets is folded at white space already there.
 *
 * Refused (never sent, 5.6.3) when converting is impossible or would do harm:
 * - anything to change inside a multipart/signed (RFC 1847 §2.1: the signature covers the bytes);
 * - 8-bit octets in a header field for a 7-bit hop without SMTPUTF8;
 * - a composite type that may not be encoded (RFC 2045 §6.4, RFC 2046 §5.2: message/partial,
 *   message/external-body, multipart without a usable boundary, nesting beyond the limit, ...);
 * - a Content-Transfer-Encoding we cannot convert (x-uuencode, ...);
 * - 8-bit or long lines in a multipart's preamble or epilogue (they have no encoding to change);
 * - a header line over 998 octets with no white space to fold at; a header block over 1 MiB.
 *
 * Two passes over the spool file, both with the same walker: `planDowngrade` reads the message and
 * decides each entity's action (the header of a part is written before its content is seen, so the
 * decision must already be known), or refuses; `downgrade` then writes the converted message. No
 * byte reaches the next hop before the plan says the whole message can be converted.
 *
 * Memory (both passes): one header block (≤ 1 MiB), one line piece (≤ 64 KiB), one encoder line,
 * ~100 bytes per open nesting level (≤ 100), and one byte per MIME entity for the plan (so at most
 * message size / 7 bytes for a message made of nothing but empty parts). The body is never held.
 *
 * DKIM: a signature made upstream covers the body (bh=) and usually Content-Transfer-Encoding;
 * converting a message breaks it (RFC 6376 §5.3 asks signers to sign 7-bit forms for this reason).
 * `delivery.mime_conversion: refuse` bounces instead; nothing here looks at DKIM-Signature.
 */
import { isAscii } from 'node:buffer';
import { MAX_LINE_OCTETS } from './scan.js';
import { Base64Encoder, Base64Rewrap, QpEncoder, QpRequote, type ContentEncoder } from './encode.js';
import { fieldName, fieldValue, foldLine, parseContentType, validBoundary, type HeaderField } from './header.js';

export const MIME_NESTING_LIMIT = 100;
export const HEADER_BLOCK_LIMIT = 1024 * 1024;
/** longer lines are handed on in pieces of this size (only content can be that long) */
const PIECE = 64 * 1024;

export type Target = '7bit' | '8bit';

export interface DowngradeOptions {
  /** '7bit': the next hop has no 8BITMIME; '8bit': it has, only long lines and NUL need work */
  target: Target;
  /** 8-bit octets in header fields are allowed: an SMTPUTF8 transaction (RFC 6531, RFC 6532) */
  utf8Headers: boolean;
  /** nesting limit (tests use small ones) */
  maxDepth?: number;
}

export interface Refusal {
  /** RFC 3463 §3.7: conversion required but not supported */
  code: '5.6.3';
  reason: string;
}

/** Per-entity actions, in document order. */
export const Action = { Pass: 0, Relabel7bit: 1, QuotedPrintable: 2, Base64: 3, RewrapBase64: 4, RequoteQp: 5 } as const;
type ActionCode = (typeof Action)[keyof typeof Action];

export interface Plan {
  refusal?: Refusal;
  /** false: the message can go as it is */
  changed: boolean;
  /** entities seen */
  entities: number;
  /** action per entity index, | EIGHT_BIT_CONTENT when the content had 8-bit octets */
  actions: Uint8Array;
}

/** Flag in Plan.actions: the entity's content had 8-bit octets (an unlabelled text gets charset=unknown-8bit). */
const EIGHT_BIT_CONTENT = 0x80;

class Refused extends Error {
  constructor(readonly refusal: Refusal) {
    super(refusal.reason);
  }
}

type Kind = 'pending' | 'leaf' | 'multipart' | 'message';
type Region = 'content' | 'preamble' | 'epilogue';
type CteClass = 'identity' | 'base64' | 'qp' | 'other';

interface Entity {
  index: number;
  depth: number;
  /** a part of a multipart/signed, or inside one: must not change */
  signed: boolean;
  /** the top of a message (the whole message, or a message/rfc822 body) */
  root: boolean;
  /** the parent is multipart/digest: default type message/rfc822 (RFC 2046 §5.1.5) */
  inDigest: boolean;
  kind: Kind;
  fields: HeaderField[];
  headerBytes: number;
  /** the header block ended with an empty line */
  blank: boolean;
  header8: boolean;
  mediaType: string;
  cte: string;
  cteClass: CteClass;
  /** cannot be encoded (RFC 2045 §6.4, RFC 2046 §5.2) */
  composite: boolean;
  boundary?: Buffer;
  /** a multipart whose close delimiter was seen */
  closed: boolean;
  isMime: boolean;
  region: Region;
  /** what the content (or a multipart's preamble/epilogue) holds */
  eight: boolean;
  nul: boolean;
  long: boolean;
  lineLen: number;
  action: ActionCode;
  /** emit mode: the plan says the content had 8-bit octets */
  planned8: boolean;
  enc?: ContentEncoder;
  /** the last content line had a line break, which belongs to the content only if another line follows */
  pendingBreak: boolean;
}

const TEXT_CTES = new Set(['', '7bit', '8bit', 'binary']);

function cteClass(cte: string): CteClass {
  if (TEXT_CTES.has(cte)) return 'identity';
  if (cte === 'base64') return 'base64';
  if (cte === 'quoted-printable') return 'qp';
  return 'other';
}

/**
 * The walker: splits the stream into lines (pieces for very long ones), follows the MIME tree,
 * and either records each entity's action (plan mode) or writes the converted message (emit mode).
 */
class Walker {
  private readonly maxDepth: number;
  private readonly stack: Entity[] = [];
  private count = 0;
  private actions = new Uint8Array(64);
  changed = false;
  /** the start of the current line, held until it ends or grows past PIECE */
  private hold: Buffer[] = [];
  private holdLen = 0;
  /** the current line is being handed on in pieces */
  private streaming = false;
  private readonly out: Buffer[] = [];
  /** emit mode: some entity's Content-Transfer-Encoding changes (not only header folding) */
  private readonly encodes: boolean;

  constructor(
    private readonly opts: DowngradeOptions,
    private readonly plan?: Plan,
  ) {
    this.maxDepth = opts.maxDepth ?? MIME_NESTING_LIMIT;
    this.encodes = !!plan?.actions.some((a) => (a & ~EIGHT_BIT_CONTENT) !== Action.Pass);
    this.stack.push(this.entity(0, false, true, false));
  }

  private get emitting(): boolean {
    return this.plan !== undefined;
  }

  private entity(depth: number, signed: boolean, root: boolean, inDigest: boolean): Entity {
    const index = this.count++;
    if (index >= this.actions.length && !this.plan) {
      const bigger = new Uint8Array(this.actions.length * 2);
      bigger.set(this.actions);
      this.actions = bigger;
    }
    return {
      index,
      depth,
      signed,
      root,
      inDigest,
      kind: 'pending',
      fields: [],
      headerBytes: 0,
      blank: false,
      header8: false,
      mediaType: '',
      cte: '',
      cteClass: 'identity',
      composite: false,
      closed: false,
      isMime: !root,
      region: 'content',
      eight: false,
      nul: false,
      long: false,
      lineLen: 0,
      action: Action.Pass,
      planned8: false,
      pendingBreak: false,
    };
  }

  private get top(): Entity {
    return this.stack[this.stack.length - 1]!;
  }

  private emit(b: Buffer | string): void {
    if (this.emitting) this.out.push(typeof b === 'string' ? Buffer.from(b, 'latin1') : b);
  }

  /** Output produced since the last call. */
  take(): Buffer[] {
    return this.out.splice(0);
  }

  result(): Plan {
    return { changed: this.changed, entities: this.count, actions: this.actions.subarray(0, this.count) };
  }

  // ---- lines -------------------------------------------------------------------------------

  push(chunk: Buffer): void {
    let pos = 0;
    while (pos < chunk.length) {
      const lf = chunk.indexOf(0x0a, pos);
      if (lf < 0) {
        // a copy: the rest of this line waits for the next chunk, whose buffer the source may reuse
        this.holdBytes(Buffer.from(chunk.subarray(pos)));
        return;
      }
      this.holdBytes(chunk.subarray(pos, lf));
      this.endLine(true);
      pos = lf + 1;
    }
  }

  private holdBytes(b: Buffer): void {
    if (b.length === 0) return;
    this.hold.push(b);
    this.holdLen += b.length;
    if (this.holdLen > PIECE) {
      // Too long to hold: hand on all but a trailing CR (it may be the CR of the CRLF).
      const all = Buffer.concat(this.hold, this.holdLen);
      const keep = all[all.length - 1] === 0x0d ? 1 : 0;
      this.piece(all.subarray(0, all.length - keep), !this.streaming, false, false);
      this.streaming = true;
      this.hold = keep ? [Buffer.from([0x0d])] : [];
      this.holdLen = keep;
    }
  }

  private endLine(terminated: boolean): void {
    let line = this.hold.length === 1 ? this.hold[0]! : Buffer.concat(this.hold, this.holdLen);
    if (terminated && line[line.length - 1] === 0x0d) line = line.subarray(0, line.length - 1);
    const first = !this.streaming;
    this.hold = [];
    this.holdLen = 0;
    this.streaming = false;
    this.piece(line, first, true, terminated);
  }

  end(): void {
    if (this.holdLen > 0 || this.streaming) this.endLine(false);
    this.finishAll();
  }

  // ---- the MIME tree -----------------------------------------------------------------------

  private piece(data: Buffer, first: boolean, last: boolean, terminated: boolean): void {
    const e = this.top;
    if (e.kind === 'pending') return this.headerPiece(e, data, first, last, terminated);
    if (first && last && data.length <= MAX_LINE_OCTETS && data[0] === 0x2d && data[1] === 0x2d && this.boundary(data, terminated)) return;
    this.content(e, data, first, last, terminated);
  }

  private headerPiece(e: Entity, data: Buffer, first: boolean, last: boolean, terminated: boolean): void {
    e.headerBytes += data.length + 2;
    if (e.headerBytes > HEADER_BLOCK_LIMIT) this.refuse(`a header block of more than ${HEADER_BLOCK_LIMIT} octets`);
    if (first && last) {
      if (data.length <= MAX_LINE_OCTETS && data[0] === 0x2d && data[1] === 0x2d && this.matchBoundary(data) >= 0) {
        this.headerDone(e, false);
        this.boundary(data, terminated);
        return;
      }
      if (data.length === 0) {
        if (terminated) return this.headerDone(e, true);
        return this.headerDone(e, false); // the message ends in the header
      }
    }
    if (first) {
      const wsp = data[0] === 0x20 || data[0] === 0x09;
      const name = wsp ? undefined : fieldName(data);
      if (wsp) {
        const f = e.fields[e.fields.length - 1];
        if (f) f.lines.push(Buffer.from(data));
        else e.fields.push({ name: '', lines: [Buffer.from(data)] });
      } else if (name !== undefined) {
        e.fields.push({ name, lines: [Buffer.from(data)] });
      } else {
        // Not a header line: the header ended without an empty line and this is the body (as Postfix reads it).
        this.headerDone(e, false);
        return this.piece(data, first, last, terminated);
      }
    } else {
      const f = e.fields[e.fields.length - 1]!;
      const lines = f.lines;
      lines[lines.length - 1] = Buffer.concat([lines[lines.length - 1]!, data]);
    }
    if (last && !terminated) this.headerDone(e, false);
  }

  /** The header block of `e` is complete: classify, check and (emit mode) write it. */
  private headerDone(e: Entity, blank: boolean): void {
    e.blank = blank;
    let ct: ReturnType<typeof parseContentType>;
    let hasCt = false;
    let hasVersion = false;
    for (const f of e.fields) {
      for (const l of f.lines) {
        if (!isAscii(l)) e.header8 = true;
        if (l.includes(0)) this.refuse('a NUL octet in a header field');
      }
      if (f.name === 'content-type' && !hasCt) {
        hasCt = true;
        ct = parseContentType(fieldValue(f));
      } else if (f.name === 'content-transfer-encoding' && e.cte === '') {
        // RFC 2045 §6.1: a token; RFC 822 comments around it carry nothing
        e.cte = fieldValue(f)
          .replace(/\([^()]*\)/g, '')
          .trim()
          .toLowerCase();
      } else if (f.name === 'mime-version') {
        hasVersion = true;
      }
    }
    if (e.root) e.isMime = hasVersion || hasCt;
    if (e.header8 && this.opts.target === '7bit' && !this.opts.utf8Headers) {
      this.refuse('8-bit octets in a header field, and the next hop has neither 8BITMIME nor SMTPUTF8 (header fields are never converted)');
    }
    const folded = this.foldHeader(e);
    e.cteClass = cteClass(e.cte);
    const type = ct ? `${ct.type}/${ct.subtype}` : e.inDigest ? 'message/rfc822' : 'text/plain';
    e.mediaType = type;
    const identity = e.cteClass === 'identity';
    const deep = e.depth >= this.maxDepth;
    if (ct?.type === 'multipart') {
      const b = ct.params.get('boundary');
      if (identity && !deep && b !== undefined && validBoundary(b)) {
        e.kind = 'multipart';
        e.boundary = Buffer.from(`--${b}`, 'latin1');
        e.region = 'preamble';
      } else {
        e.kind = 'leaf';
        e.composite = true;
      }
    } else if (type === 'message/rfc822' && identity && !deep) {
      e.kind = 'message';
    } else {
      e.kind = 'leaf';
      // message/global* may be encoded (RFC 6532 §3.5); the other message types may not (RFC 2046 §5.2).
      e.composite = ct?.type === 'multipart' || (type.startsWith('message/') && !type.startsWith('message/global'));
    }
    const relabel = this.opts.target === '7bit' && !e.signed && (e.cte === '8bit' || e.cte === 'binary');
    if (e.kind !== 'leaf') {
      e.action = relabel ? Action.Relabel7bit : Action.Pass;
      this.record(e);
    } else if (this.plan) {
      const a = this.plan.actions[e.index] ?? 0;
      e.action = (a & ~EIGHT_BIT_CONTENT) as ActionCode;
      e.planned8 = (a & EIGHT_BIT_CONTENT) !== 0;
    }
    if (folded) this.changed = true;
    if (this.emitting) this.writeHeader(e);
    if (e.kind === 'message') {
      this.stack.push(this.entity(e.depth + 1, e.signed, true, false));
    }
  }

  /** Over-long header lines are folded at existing white space; in a signed part that is a change too many. */
  private foldHeader(e: Entity): boolean {
    let folded = false;
    for (const f of e.fields) {
      if (!f.lines.some((l) => l.length > MAX_LINE_OCTETS)) continue;
      if (e.signed) this.refuse('a header line over 998 octets inside a multipart/signed (RFC 1847 §2.1): folding it would invalidate the signature');
      const out: Buffer[] = [];
      for (const l of f.lines) {
        const parts = l.length > MAX_LINE_OCTETS ? foldLine(l) : [l];
        if (!parts) this.refuse(`a header line of ${l.length} octets (the limit is ${MAX_LINE_OCTETS}) with no white space to fold it at`);
        out.push(...parts!);
      }
      f.lines = out;
      folded = true;
    }
    return folded;
  }

  private writeHeader(e: Entity): void {
    const enc = e.action === Action.QuotedPrintable || e.action === Action.Base64;
    const label =
      e.action === Action.Relabel7bit ? '7bit' : e.action === Action.QuotedPrintable ? 'quoted-printable' : e.action === Action.Base64 ? 'base64' : undefined;
    const lines: Buffer[] = [];
    let labelled = false;
    for (const f of e.fields) {
      if (label && f.name === 'content-transfer-encoding') {
        if (!labelled) lines.push(Buffer.from(`Content-Transfer-Encoding: ${label}`));
        labelled = true;
        continue;
      }
      lines.push(...f.lines);
    }
    // RFC 2045 §4: a Content-Transfer-Encoding means something only under MIME-Version (the top of
    // the message, and an enclosed message whose own encoding changes); RFC 1428 §3: an 8-bit text
    // that named no charset is of unknown charset.
    if (e.root && !e.fields.some((f) => f.name === 'mime-version') && (enc || (e.index === 0 && e.isMime && this.encodes))) {
      lines.push(Buffer.from('MIME-Version: 1.0'));
      if (enc && e.planned8 && !e.fields.some((f) => f.name === 'content-type')) lines.push(Buffer.from('Content-Type: text/plain; charset=unknown-8bit'));
    }
    if (label && !labelled) lines.push(Buffer.from(`Content-Transfer-Encoding: ${label}`));
    for (const l of lines) this.emit(Buffer.concat([l, Buffer.from('\r\n')]));
    if (e.blank || enc || e.action === Action.RewrapBase64 || e.action === Action.RequoteQp) this.emit('\r\n');
    if (e.action === Action.QuotedPrintable) e.enc = new QpEncoder((b) => this.emit(b));
    else if (e.action === Action.Base64) e.enc = new Base64Encoder((b) => this.emit(b));
    else if (e.action === Action.RewrapBase64) e.enc = new Base64Rewrap((b) => this.emit(b));
    else if (e.action === Action.RequoteQp) e.enc = new QpRequote((b) => this.emit(b));
  }

  /** Index in the stack of the multipart whose delimiter this line is, or -1. */
  private matchBoundary(line: Buffer): number {
    for (let k = this.stack.length - 1; k >= 0; k--) {
      const m = this.stack[k]!;
      if (m.kind !== 'multipart' || m.closed || !m.boundary) continue;
      const b = m.boundary;
      if (line.length < b.length || line.compare(b, 0, b.length, 0, b.length) !== 0) continue;
      let i = b.length;
      if (line[i] === 0x2d && line[i + 1] === 0x2d) i += 2;
      while (i < line.length && (line[i] === 0x20 || line[i] === 0x09)) i++; // transport padding
      if (i === line.length) return k;
    }
    return -1;
  }

  /** A delimiter line: closes what it ends, opens the next part. false if the line is none. */
  private boundary(line: Buffer, terminated: boolean): boolean {
    const k = this.matchBoundary(line);
    if (k < 0) return false;
    const m = this.stack[k]!;
    while (this.stack.length - 1 > k) this.finish(this.stack.pop()!, true);
    this.endRegion(m, true);
    const close = line[m.boundary!.length] === 0x2d && line[m.boundary!.length + 1] === 0x2d;
    this.emit(Buffer.from(line));
    if (terminated) this.emit('\r\n');
    if (close) {
      m.closed = true;
      m.region = 'epilogue';
    } else {
      const digest = m.mediaType === 'multipart/digest';
      const signed = m.signed || m.mediaType === 'multipart/signed';
      this.stack.push(this.entity(m.depth + 1, signed, false, digest));
    }
    return true;
  }

  private content(e: Entity, data: Buffer, first: boolean, last: boolean, terminated: boolean): void {
    if (first) e.lineLen = 0;
    e.lineLen += data.length;
    if (!e.eight && !isAscii(data)) e.eight = true;
    if (!e.nul && data.includes(0)) e.nul = true;
    if (last && e.lineLen > MAX_LINE_OCTETS) e.long = true;
    if (!this.emitting) return;
    if (e.enc) {
      if (first && e.pendingBreak) e.enc.lineBreak();
      e.enc.write(data);
      if (last) e.pendingBreak = terminated;
    } else {
      this.emit(data);
      if (last && terminated) this.emit('\r\n');
    }
  }

  private needs(e: Entity): boolean {
    return (this.opts.target === '7bit' && e.eight) || e.long || e.nul;
  }

  /**
   * The end of a region: a leaf's content (its action is decided here in plan mode, finished in
   * emit mode), a multipart's preamble or epilogue (which cannot be encoded).
   */
  private endRegion(e: Entity, byBoundary: boolean): void {
    if (e.kind === 'multipart') {
      if (this.needs(e)) this.refuse(`${this.what(e)} in the ${e.region} of a ${e.mediaType}, which has no Content-Transfer-Encoding to change`);
      e.eight = e.nul = e.long = false;
      return;
    }
    if (e.kind !== 'leaf') return;
    if (!this.emitting) {
      e.action = this.decide(e);
      this.record(e);
      return;
    }
    if (e.enc) {
      if (!byBoundary && e.pendingBreak) e.enc.lineBreak();
      e.pendingBreak = false;
      e.enc.end();
      if (byBoundary || !e.enc.atLineStart) this.emit('\r\n');
      e.enc = undefined;
    }
  }

  private what(e: Entity): string {
    return [e.eight && '8-bit octets', e.long && `a line over ${MAX_LINE_OCTETS} octets`, e.nul && 'a NUL octet'].filter(Boolean).join(' and ');
  }

  /** Plan mode: what a leaf needs. */
  private decide(e: Entity): ActionCode {
    if (!this.needs(e)) return this.opts.target === '7bit' && !e.signed && (e.cte === '8bit' || e.cte === 'binary') ? Action.Relabel7bit : Action.Pass;
    const what = this.what(e);
    if (e.signed) this.refuse(`${what} in a part of a multipart/signed (RFC 1847 §2.1): re-encoding it would invalidate the signature`);
    if (e.composite)
      this.refuse(
        `${what} in a ${e.mediaType}${e.depth >= this.maxDepth ? ` nested deeper than ${this.maxDepth} levels` : ''}, which may not be re-encoded (RFC 2045 §6.4, RFC 2046 §5.2)`,
      );
    switch (e.cteClass) {
      case 'identity':
        return e.mediaType.startsWith('text/') ? Action.QuotedPrintable : Action.Base64;
      case 'base64':
        return Action.RewrapBase64;
      case 'qp':
        return Action.RequoteQp;
      default:
        return this.refuse(`${what} in a part with Content-Transfer-Encoding ${e.cte}, which cannot be converted`);
    }
  }

  private record(e: Entity): void {
    if (this.emitting) return;
    this.actions[e.index] = e.action | (e.eight ? EIGHT_BIT_CONTENT : 0);
    if (e.action !== Action.Pass) this.changed = true;
  }

  private finish(e: Entity, byBoundary: boolean): void {
    if (e.kind === 'pending') this.headerDone(e, false);
    this.endRegion(e, byBoundary);
  }

  private finishAll(): void {
    while (this.stack.length) this.finish(this.stack.pop()!, false);
  }

  refuse(reason: string): never {
    throw new Refused({ code: '5.6.3', reason });
  }
}

/**
 * First pass: can the message be sent to this next hop, and what changes? Reads the whole stream
 * (stops at the first reason to refuse).
 */
export async function planDowngrade(source: AsyncIterable<Buffer> | Iterable<Buffer>, opts: DowngradeOptions): Promise<Plan> {
  const w = new Walker(opts);
  try {
    for await (const chunk of source) w.push(chunk);
    w.end();
  } catch (e) {
    if (e instanceof Refused) {
      // drain nothing more: the caller destroys the stream
      return { refusal: e.refusal, changed: false, entities: 0, actions: new Uint8Array(0) };
    }
    throw e;
  }
  return w.result();
}

/** Second pass: the converted message, chunk by chunk, as `plan` (made from the same bytes) says. */
export async function* downgrade(source: AsyncIterable<Buffer> | Iterable<Buffer>, plan: Plan, opts: DowngradeOptions): AsyncGenerator<Buffer> {
  if (plan.refusal) throw new Error(`downgrade: the plan refused the message (${plan.refusal.reason})`);
  const w = new Walker(opts, plan);
  for await (const chunk of source) {
    w.push(chunk);
    const out = w.take();
    if (out.length) yield Buffer.concat(out);
  }
  w.end();
  const out = w.take();
  if (out.length) yield Buffer.concat(out);
}

/** Both passes over in-memory bytes (tests, small messages). */
export async function downgradeBuffer(message: Buffer, opts: DowngradeOptions): Promise<{ refusal: Refusal } | { plan: Plan; output: Buffer }> {
  const plan = await planDowngrade([message], opts);
  if (plan.refusal) return { refusal: plan.refusal };
  const chunks: Buffer[] = [];
  for await (const c of downgrade([message], plan, opts)) chunks.push(c);
  return { plan, output: Buffer.concat(chunks) };
}
