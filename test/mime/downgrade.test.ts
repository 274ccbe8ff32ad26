/** The 7-bit conversion, case by case (src/mime/downgrade.ts); the property test covers generated trees. */
import { describe, expect, it } from 'vitest';
import { simpleParser } from 'mailparser';
import { downgrade, downgradeBuffer, planDowngrade, type DowngradeOptions } from '../../src/mime/downgrade.js';
import { foldLine } from '../../src/mime/header.js';

const SEVEN: DowngradeOptions = { target: '7bit', utf8Headers: false };
const EIGHT: DowngradeOptions = { target: '8bit', utf8Headers: false };

async function convert(msg: string | Buffer, opts = SEVEN): Promise<string> {
  const r = await downgradeBuffer(typeof msg === 'string' ? Buffer.from(msg, 'utf8') : msg, opts);
  if ('refusal' in r) throw new Error(`refused: ${r.refusal.reason}`);
  return r.output.toString('utf8');
}
async function refusal(msg: string | Buffer, opts = SEVEN): Promise<string> {
  const r = await downgradeBuffer(typeof msg === 'string' ? Buffer.from(msg, 'utf8') : msg, opts);
  if (!('refusal' in r)) throw new Error(`converted:\n${r.output.toString('latin1')}`);
  expect(r.refusal.code).toBe('5.6.3');
  return r.refusal.reason;
}

describe('leaf parts (RFC 2045 §6.7, §6.8)', () => {
  it('8-bit text becomes quoted-printable, Content-Transfer-Encoding replaced where it was; trailing white space kept as =20', async () => {
    const out = await convert(
      'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nSubject: x\r\n\r\nGrüße \r\nzweite Zeile\r\n',
    );
    expect(out).toBe(
      'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\nSubject: x\r\n\r\nGr=C3=BC=C3=9Fe=20\r\nzweite Zeile\r\n',
    );
  });

  it('a message without MIME-Version gets it, and an 8-bit text without Content-Type gets charset=unknown-8bit (RFC 1428 §3)', async () => {
    const out = await convert('From: a@b\r\nSubject: x\r\n\r\ncaf\u00e9\r\n');
    expect(out).toBe(
      'From: a@b\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n',
    );
  });

  it('a 7-bit message with a 3000-octet line: soft line breaks, no charset claimed, same text after decoding', async () => {
    const line = Array.from({ length: 600 }, (_, i) => `w${i}`)
      .join(' ')
      .slice(0, 3000);
    const out = await convert(`Subject: long\r\n\r\n${line}\r\nend\r\n`, EIGHT);
    expect(out).not.toContain('unknown-8bit');
    expect(Math.max(...out.split('\r\n').map((l) => l.length))).toBeLessThanOrEqual(76);
    expect((await simpleParser(Buffer.from(out, 'latin1'))).text).toBe(`${line}\nend\n`);
  });

  it('other 8-bit content becomes base64; a 7-bit part next to it is left alone', async () => {
    const msg =
      'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n\u00ff\u00fe\r\n--b--\r\n';
    const out = await convert(Buffer.from(msg, 'latin1'));
    expect(out).toBe(
      'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n//4=\r\n--b--\r\n',
    );
  });

  it('a base64 part written as one 2000-character line is re-wrapped at 76 (RFC 2045 §6.8), same octets', async () => {
    const data = Buffer.from(Array.from({ length: 1500 }, (_, i) => i % 256));
    const msg = `MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${data.toString('base64')}\r\n`;
    const out = await convert(msg, EIGHT);
    expect(
      out
        .split('\r\n')
        .slice(4)
        .filter(Boolean)
        .every((l) => l.length <= 76),
    ).toBe(true);
    expect((await simpleParser(Buffer.from(out))).attachments[0]!.content.equals(data)).toBe(true);
  });

  it('a quoted-printable part with raw 8-bit octets and a long line is re-quoted, never re-encoded twice', async () => {
    const msg = Buffer.concat([
      Buffer.from(
        'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Disposition: attachment\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf',
      ),
      Buffer.from([0xe9]),
      Buffer.from(` =3D ${'x'.repeat(1200)}=\r\nend\r\n`),
    ]);
    const out = await convert(msg);
    expect(out).toContain('caf=E9 =3D ');
    expect(Math.max(...out.split('\r\n').map((l) => l.length))).toBeLessThanOrEqual(76);
    expect((await simpleParser(Buffer.from(out, 'latin1'))).attachments[0]!.content.toString('latin1')).toBe(`caf\u00e9 = ${'x'.repeat(1200)}end\r\n`);
  });

  it('a Content-Transfer-Encoding with an RFC 822 comment is still the token it names', async () => {
    const out = await convert('MIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit (raw UTF-8)\r\n\r\nü\r\n');
    expect(out).toContain('Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n');
  });

  it('bare LF line ends are line breaks of the content, as on the wire', async () => {
    expect(await convert('Subject: x\r\nContent-Type: text/plain\r\n\r\n\u00e4\na\n')).toContain('\r\n\r\n=C3=A4\r\na\r\n');
  });

  it('a line longer than 64 KiB (handed on in pieces) is encoded like any other', async () => {
    const big = 'ä'.repeat(100_000);
    const msg = Buffer.from(`MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment\r\n\r\n${big}\r\n`, 'utf8');
    const chunks: Buffer[] = [];
    for (let i = 0; i < msg.length; i += 10_000) chunks.push(msg.subarray(i, i + 10_000));
    const plan = await planDowngrade(chunks, SEVEN);
    const out: Buffer[] = [];
    for await (const c of downgrade(chunks, plan, SEVEN)) out.push(c);
    const parsed = await simpleParser(Buffer.concat(out));
    expect(parsed.attachments[0]!.content.toString('utf8')).toBe(`${big}\r\n`);
  });
});

describe('streaming', () => {
  it('50 MB of 8-bit text in 64 KiB chunks: each chunk is converted and handed on before the next is read', async () => {
    const para = Buffer.from('Grüße, Ärger und Öl — eine Zeile mit Umlauten.\r\n'.repeat(1200), 'utf8').subarray(0, 64 * 1024);
    const head = Buffer.from('MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n');
    const N = Math.ceil(50e6 / para.length);
    let pulled = 0;
    async function* source(): AsyncGenerator<Buffer> {
      yield head;
      for (let i = 0; i < N; i++) {
        pulled++;
        yield para;
      }
    }
    const plan = await planDowngrade(source(), SEVEN);
    expect(plan.refusal).toBeUndefined();
    pulled = 0;
    let outputs = 0;
    let bytes = 0;
    let maxLag = 0;
    for await (const c of downgrade(source(), plan, SEVEN)) {
      outputs++;
      bytes += c.length;
      maxLag = Math.max(maxLag, pulled - outputs);
    }
    expect(pulled).toBe(N);
    expect(maxLag).toBeLessThanOrEqual(1); // never more than the chunk being worked on
    expect(bytes).toBeGreaterThan(N * para.length);
  }, 120_000);
});

describe('structure (RFC 2046)', () => {
  it('multipart and message/rfc822 labelled 8bit are relabelled 7bit; the enclosed message is converted inside', async () => {
    const msg =
      'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="o"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n--o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nüber\r\n--o--\r\n';
    const out = await convert(msg);
    expect(out).toBe(
      'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="o"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n--o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BCber\r\n--o--\r\n',
    );
  });

  it('nesting beyond the limit that needs no work passes; that needs work is refused, naming the limit', async () => {
    const nest = (depth: number, leaf: string): string =>
      depth === 0
        ? `Content-Type: text/plain\r\n\r\n${leaf}`
        : `Content-Type: multipart/mixed; boundary="n${depth}"\r\n\r\n--n${depth}\r\n${nest(depth - 1, leaf)}\r\n--n${depth}--`;
    const opts = { ...SEVEN, maxDepth: 3 };
    const ascii = `MIME-Version: 1.0\r\n${nest(5, 'fine')}\r\n`;
    expect(await convert(ascii, opts)).toBe(ascii);
    expect(await refusal(`MIME-Version: 1.0\r\n${nest(5, 'schön')}\r\n`, opts)).toMatch(
      /multipart\/mixed nested deeper than 3 levels, which may not be re-encoded/,
    );
    expect(await convert(`MIME-Version: 1.0\r\n${nest(3, 'schön')}\r\n`, opts)).toContain('sch=C3=B6n');
  });

  it('multipart/signed: a 7-bit signed part goes byte for byte; anything to change inside is refused (RFC 1847 §2.1)', async () => {
    const signed = (content: string) =>
      `MIME-Version: 1.0\r\nContent-Type: multipart/signed; boundary="s"; protocol="application/pgp-signature"; micalg=pgp-sha256\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\n${content}\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n--s--\r\n`;
    expect(await convert(signed('ascii only'))).toBe(signed('ascii only'));
    expect(await refusal(signed('schön'))).toBe('8-bit octets in a part of a multipart/signed (RFC 1847 §2.1): re-encoding it would invalidate the signature');
    expect(await refusal(signed('x'.repeat(1000)), EIGHT)).toMatch(/a line over 998 octets in a part of a multipart\/signed/);
    expect(await convert(signed('schön'), EIGHT)).toBe(signed('schön')); // an 8BITMIME hop takes it as it is
  });

  it('8-bit in a preamble is refused: it has no encoding to change', async () => {
    expect(await refusal('MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\nPräambel\r\n--b\r\n\r\nx\r\n--b--\r\n')).toMatch(
      /^8-bit octets in the preamble of a multipart\/mixed/,
    );
  });

  it('message/partial and an unknown transfer encoding cannot be converted', async () => {
    expect(await refusal('MIME-Version: 1.0\r\nContent-Type: message/partial; id="x"; number=1\r\n\r\nSubject: ü\r\n')).toMatch(
      /message\/partial, which may not be re-encoded/,
    );
    expect(await refusal('MIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nü\r\n')).toMatch(
      /Content-Transfer-Encoding x-uuencode, which cannot be converted/,
    );
  });

  it('message/global may be encoded (RFC 6532 §3.5): base64', async () => {
    const out = await convert('MIME-Version: 1.0\r\nContent-Type: message/global\r\n\r\nSubject: ü\r\n\r\nx\r\n');
    expect(out).toContain('Content-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDog');
  });
});

describe('header fields are never converted', () => {
  it('8-bit in a header: refused for a 7-bit hop; passed as it is with SMTPUTF8 or to an 8BITMIME hop', async () => {
    const msg = 'Subject: Grüße\r\n\r\nbody\r\n';
    expect(await refusal(msg)).toMatch(/^8-bit octets in a header field/);
    expect(await convert(msg, { target: '7bit', utf8Headers: true })).toBe(msg);
    expect(await convert(msg, EIGHT)).toBe(msg);
  });

  it('a header line over 998 octets is folded at white space (unfolding gives the same value); none to fold at: refused', async () => {
    const words = Array.from({ length: 300 }, (_, i) => `r${i}@example.org`).join(', ');
    const out = await convert(`To: ${words}\r\n\r\nx\r\n`);
    expect(Math.max(...out.split('\r\n').map((l) => l.length))).toBeLessThanOrEqual(998);
    expect((await simpleParser(Buffer.from(out))).headers.get('to')).toBeTruthy();
    expect(out.split('\r\n\r\n')[0]!.replace(/\r\n(?=[ \t])/g, '')).toBe(`To: ${words}`);
    expect(await refusal(`X-Blob: ${'a'.repeat(1200)}\r\n\r\nx\r\n`)).toMatch(/a header line of 1208 octets .* no white space to fold it at/);
  });

  it('foldLine never leaves a line of white space only, nor one over 998', () => {
    expect(foldLine(Buffer.from(`X:${'a'.repeat(1200)}`))).toBeUndefined();
    expect(foldLine(Buffer.from(`X:${'a'.repeat(1000)} b`))).toBeUndefined(); // the only space is past the limit
    expect(foldLine(Buffer.from(`X: ${' '.repeat(1200)}y`))!.every((p) => p.length <= 998 && /\S/.test(p.toString()))).toBe(true);
    const parts = foldLine(Buffer.from(`X:${' a'.repeat(1000)}`))!;
    expect(parts.every((p) => p.length <= 998 && /\S/.test(p.toString()))).toBe(true);
    expect(Buffer.concat(parts).toString()).toBe(`X:${' a'.repeat(1000)}`);
  });
});
