/**
 * Generated MIME messages for the 7-bit conversion's property test and fault case: trees of
 * multipart (mixed, alternative, related, signed), message/rfc822 and leaves with every transfer
 * encoding (none, 7bit, 8bit, binary, quoted-printable, base64, malformed variants of the last two,
 * x-uuencode), contents with 8-bit octets, long lines and NUL, 8-bit header fields, preambles, and
 * nesting beyond the limit — each with an oracle, built from the tree rather than the bytes, that
 * says whether the message must be refused for a next hop without (or with) 8BITMIME.
 */
import { expect } from 'vitest';
import fc from 'fast-check';
import { simpleParser, type Attachment } from 'mailparser';
import type { Target } from '../../src/mime/downgrade.js';

/** the nesting limit the oracle assumes: pass it as DowngradeOptions.maxDepth */
export const MAX_DEPTH = 3;

type Cte = 'none' | '7bit' | '8bit' | 'binary' | 'quoted-printable' | 'qp-long' | 'qp-raw8' | 'base64' | 'base64-long' | 'x-uuencode';
interface Leaf {
  kind: 'leaf';
  type: string;
  charset?: string;
  cte: Cte;
  content: Buffer;
  name8: boolean;
}
interface Multi {
  kind: 'multipart';
  subtype: 'mixed' | 'alternative' | 'signed' | 'related';
  parts: Node[];
  preamble: 'none' | 'ascii' | '8bit';
  label8: boolean;
}
interface Msg {
  kind: 'message';
  subject8: boolean;
  inner: Node;
  label8: boolean;
}
type Node = Leaf | Multi | Msg;

/** Content lines: ASCII, 8-bit (UTF-8 or Latin-1), long, NUL; never a line that starts with "--". */
const lineArb = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: fc.constantFrom(...'abc xyz.=?\t!~'.split('')), maxLength: 90 }).map((s) => Buffer.from(s)) },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom('ä', 'ö', 'ß', '€', 'é', ' ', 'x'), maxLength: 60 }).map((s) => Buffer.from(s, 'utf8')) },
  { weight: 1, arbitrary: fc.uint8Array({ min: 0x80, max: 0xff, maxLength: 20 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.integer({ min: 999, max: 2500 }).map((n) => Buffer.from('y '.repeat(n).slice(0, n))) },
  { weight: 1, arbitrary: fc.constant(Buffer.from('nul\0here')) },
);
const linesArb = fc.array(lineArb, { minLength: 1, maxLength: 6 }).map((ls) => Buffer.concat(ls.flatMap((l, i) => (i ? [Buffer.from('\r\n'), l] : [l]))));

const leafArb: fc.Arbitrary<Leaf> = fc
  .record({
    kind: fc.constant('leaf' as const),
    type: fc.constantFrom('text/plain', 'text/html', 'application/octet-stream', 'image/png'),
    charset: fc.option(fc.constantFrom('utf-8', 'iso-8859-1', 'us-ascii'), { nil: undefined }),
    cte: fc.constantFrom<Cte>('none', '7bit', '8bit', 'binary', 'quoted-printable', 'qp-long', 'qp-raw8', 'base64', 'base64-long', 'x-uuencode'),
    content: fc.oneof(
      linesArb,
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    ),
    name8: fc.integer({ min: 0, max: 9 }).map((i) => i === 0),
  })
  .map((l) => (l.cte.startsWith('base64') || l.cte.startsWith('q') ? l : { ...l, content: noCrLf(l.content) }));

/** identity-encoded content is lines: CR and LF only as CRLF */
function noCrLf(b: Buffer): Buffer {
  return Buffer.from(
    b
      .toString('latin1')
      .replace(/\r\n/g, '\u0001')
      .replace(/[\r\n]/g, 'r')
      .replace(/\u0001/g, '\r\n')
      .replace(/(^|\r\n)--/g, '$1-x'),
    'latin1',
  );
}

const treeArb: fc.Arbitrary<Node> = fc.letrec<{ node: Node }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'medium', withCrossShrink: true },
    { weight: 4, arbitrary: leafArb },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('multipart' as const),
        subtype: fc.constantFrom('mixed', 'alternative', 'signed', 'related'),
        parts: fc.array(tie('node'), { minLength: 1, maxLength: 3 }),
        preamble: fc.constantFrom('none', 'ascii', 'ascii', 'ascii', 'ascii', '8bit'),
        label8: fc.boolean(),
      }) as fc.Arbitrary<Multi>,
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('message' as const),
        subject8: fc.integer({ min: 0, max: 5 }).map((i) => i === 0),
        inner: tie('node'),
        label8: fc.boolean(),
      }) as fc.Arbitrary<Msg>,
    },
  ),
})).node;

export const topArb = fc.record({
  tree: treeArb,
  subject: fc.constantFrom('plain', 'plain', 'plain', 'plain', 'plain', 'grüße', 'long-foldable', 'long-unfoldable'),
});

function qpTest(content: Buffer, wrap: boolean, raw8: boolean): string {
  let out = '';
  let col = 0;
  for (const b of content) {
    const t =
      b >= 0x21 && b <= 0x7e && b !== 0x3d
        ? String.fromCharCode(b)
        : raw8 && b >= 0x80
          ? String.fromCharCode(b)
          : `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
    if (wrap && col + t.length > 75) {
      out += '=\r\n';
      col = 0;
    }
    out += t;
    col += t.length;
  }
  return out;
}

let seq = 0;
interface Ctx {
  refuse: boolean;
  target: Target;
  signedBlocks: Buffer[];
  maxDepth: number;
}

/** A leaf's content needs work for this target; the oracle, from the tree. */
function leafNeeds(l: Leaf, target: Target): boolean {
  const c = l.content;
  const eight = c.some((b) => b >= 0x80);
  const nul = c.includes(0);
  switch (l.cte) {
    case 'base64':
      return false;
    case 'base64-long':
      return c.length > 0 && Math.ceil(c.length / 3) * 4 > 998;
    case 'quoted-printable':
      return false;
    case 'qp-long':
      return qpTest(c, false, false).length > 998;
    case 'qp-raw8':
      return (
        (target === '7bit' && eight) ||
        qpTest(c, true, true)
          .split('\r\n')
          .some((x) => x.length > 998)
      );
    default:
      return (
        (target === '7bit' && eight) ||
        nul ||
        c
          .toString('latin1')
          .split('\r\n')
          .some((x) => x.length > 998)
      );
  }
}

/** A Content-Transfer-Encoding we cannot convert (x-uuencode): refused when it needs work. */
const unconvertible = (l: Leaf, target: Target) => l.cte === 'x-uuencode' && leafNeeds(l, target);

function serialize(n: Node, depth: number, signed: boolean, ctx: Ctx): Buffer {
  const deep = depth >= ctx.maxDepth;
  const b8 = (label: boolean) => (label ? 'Content-Transfer-Encoding: 8bit\r\n' : '');
  if (n.kind === 'leaf') {
    const needs = leafNeeds(n, ctx.target);
    if ((needs && signed) || unconvertible(n, ctx.target)) ctx.refuse = true;
    if (n.name8 && ctx.target === '7bit') ctx.refuse = true;
    const ct = `Content-Type: ${n.type}${n.charset ? `; charset=${n.charset}` : ''}\r\n`;
    const disp = `Content-Disposition: attachment; filename="p${seq++}${n.name8 ? 'ü' : ''}.bin"\r\n`;
    let cteLine = '';
    let body: Buffer;
    switch (n.cte) {
      case 'none':
        body = n.content;
        break;
      case 'quoted-printable':
      case 'qp-long':
      case 'qp-raw8':
        cteLine = 'Content-Transfer-Encoding: quoted-printable\r\n';
        body = Buffer.from(qpTest(n.content, n.cte !== 'qp-long', n.cte === 'qp-raw8'), 'latin1');
        break;
      case 'base64':
        cteLine = 'Content-Transfer-Encoding: base64\r\n';
        body = Buffer.from(n.content.toString('base64').replace(/.{76}/g, '$&\r\n').replace(/\r\n$/, ''));
        break;
      case 'base64-long':
        cteLine = 'Content-Transfer-Encoding: base64\r\n';
        body = Buffer.from(n.content.toString('base64'));
        break;
      default:
        cteLine = `Content-Transfer-Encoding: ${n.cte}\r\n`;
        body = n.content;
    }
    return Buffer.concat([Buffer.from(ct + disp + cteLine + '\r\n', 'utf8'), body]);
  }
  if (n.kind === 'message') {
    if (deep) {
      // beyond the limit: an opaque part; anything inside that needs work makes it unconvertible
      const inner = serialize(n.inner, depth + 1, signed, { ...ctx, refuse: false });
      const probe = { ...ctx, refuse: false };
      serialize(n.inner, depth + 1, true, probe); // "signed": any need at all refuses
      if (probe.refuse || (n.subject8 && ctx.target === '7bit')) ctx.refuse = true;
      return Buffer.concat([Buffer.from(`Content-Type: message/rfc822\r\n${b8(n.label8)}\r\nSubject: ${n.subject8 ? 'ünter' : 'inner'}\r\n`, 'utf8'), inner]);
    }
    if (n.subject8 && ctx.target === '7bit') ctx.refuse = true;
    const inner = serialize(n.inner, depth + 1, signed, ctx);
    return Buffer.concat([
      Buffer.from(
        `Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n${b8(n.label8)}\r\nSubject: ${n.subject8 ? 'ünter' : 'inner'}\r\nMIME-Version: 1.0\r\n`,
        'utf8',
      ),
      inner,
    ]);
  }
  const boundary = `=_b${seq++}_${depth}`;
  const isSigned = n.subtype === 'signed';
  const proto = isSigned ? '; protocol="application/pgp-signature"' : '';
  if (n.preamble === '8bit' && ctx.target === '7bit') ctx.refuse = true;
  const partCtx = deep ? { ...ctx, refuse: false } : ctx;
  const parts = n.parts.map((p) => serialize(p, depth + 1, signed || isSigned || deep, partCtx));
  if (deep && partCtx.refuse) ctx.refuse = true;
  const pre =
    n.preamble === 'none'
      ? ''
      : n.preamble === 'ascii'
        ? 'This is a multi-part message in MIME format.\r\n'
        : 'Dies ist eine mehrteilige Nachricht: Grüße.\r\n';
  const body = Buffer.concat([
    Buffer.from(pre, 'utf8'),
    ...parts.flatMap((p) => [Buffer.from(`--${boundary}\r\n`), p, Buffer.from('\r\n')]),
    Buffer.from(`--${boundary}--\r\n`),
  ]);
  if (isSigned && !signed) ctx.signedBlocks.push(body);
  return Buffer.concat([Buffer.from(`Content-Type: multipart/${n.subtype}; boundary="${boundary}"${proto}\r\n${b8(n.label8)}\r\n`), body]);
}

/** The message for a generated tree, with the oracle's verdict and the multipart/signed bodies that must pass untouched. */
export function message(top: { tree: Node; subject: string }, target: Target, maxDepth = MAX_DEPTH): { raw: Buffer; refuse: boolean; signedBlocks: Buffer[] } {
  const ctx: Ctx = { refuse: false, target, signedBlocks: [], maxDepth };
  let subject = top.subject === 'grüße' ? 'Grüße' : 'plain';
  if (top.subject === 'grüße' && target === '7bit') ctx.refuse = true;
  if (top.subject === 'long-foldable') subject = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
  if (top.subject === 'long-unfoldable') {
    subject = 'x'.repeat(1200);
    ctx.refuse = true;
  }
  const body = serialize(top.tree, 0, false, ctx);
  const raw = Buffer.concat([Buffer.from(`From: a@example.org\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\n`, 'utf8'), body, Buffer.from('\r\n')]);
  return { raw, refuse: ctx.refuse, signedBlocks: ctx.signedBlocks };
}

async function leaves(raw: Buffer): Promise<Attachment[]> {
  return (await simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true, skipTextLinks: true, skipImageLinks: true })).attachments;
}

/** The same leaves (media types, content octets), as mailparser decodes them, recursively through message/rfc822. */
export async function sameContent(a: Buffer, b: Buffer, depth = 0): Promise<void> {
  const [x, y] = [await leaves(a), await leaves(b)];
  expect(y.map((l) => l.contentType)).toEqual(x.map((l) => l.contentType));
  for (let i = 0; i < x.length; i++) {
    if (x[i]!.contentType === 'message/rfc822' && depth < 10) await sameContent(x[i]!.content, y[i]!.content, depth + 1);
    else expect(y[i]!.content.equals(x[i]!.content), `leaf ${i} (${x[i]!.contentType})`).toBe(true);
  }
}
