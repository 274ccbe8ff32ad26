/** The body a next hop agreed to (src/delivery/body.ts): the decision per server, and the guard on converted output. */
import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { guardedBody, outboundBody, type BodySource } from '../../src/delivery/body.js';
import { factsOf, SEVEN_BIT_FACTS } from '../../src/mime/scan.js';
import type { Envelope } from '../../src/spool/types.js';

const env: Envelope = {
  from: 'a@src.test',
  recipients: ['b@dst.test'],
  smtputf8: false,
  eightBit: true,
  client: { address: '127.0.0.1' },
  received: 0,
  kind: 'normal',
};
const EIGHT = new Map([['8BITMIME', '']]);
const SEVEN = new Map<string, string>();
let reads = 0;
function source(body: string, facts = factsOf(1)): BodySource {
  return {
    envelope: env,
    size: Buffer.byteLength(body),
    facts,
    body: () => {
      reads++;
      return Readable.from([Buffer.from(body, 'utf8')]);
    },
  };
}
async function text(r: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

describe('outboundBody', () => {
  it('7-bit mail: the spool stream itself, with its size, not read to decide (either server)', async () => {
    const src = source('Subject: x\r\n\r\nplain\r\n', SEVEN_BIT_FACTS);
    reads = 0;
    for (const ext of [EIGHT, SEVEN]) {
      const out = await outboundBody(src, ext, 'convert');
      expect(out).toMatchObject({ ok: true, eightBit: false, size: src.size });
      expect(out.ok && out.body).toBe(src.body);
    }
    expect(reads).toBe(0);
  });

  it('8-bit mail: as it is with BODY=8BITMIME to a server that has it; converted (no SIZE) to one that has not', async () => {
    const src = source('Subject: x\r\n\r\nGrüße\r\n');
    expect(await outboundBody(src, EIGHT, 'convert')).toMatchObject({ ok: true, eightBit: true, size: src.size });
    const out = await outboundBody(src, SEVEN, 'convert');
    expect(out).toMatchObject({ ok: true, eightBit: false, converted: '7bit' });
    expect(out.ok && out.size).toBeUndefined();
    expect(await text(out.ok ? out.body() : Readable.from([]))).toContain('Gr=C3=BC=C3=9Fe');
  });

  it('mime_conversion refuse: 5.6.3 naming what the body has and what the server lacks', async () => {
    expect(await outboundBody(source('Subject: x\r\n\r\nGrüße\r\n'), SEVEN, 'refuse')).toEqual({
      ok: false,
      code: '5.6.3',
      reason: 'the message has 8-bit octets (the next hop does not advertise 8BITMIME) and delivery.mime_conversion is refuse',
    });
  });

  it('an SMTPUTF8 message to a server without SMTPUTF8 is left for the 5.6.7 refusal, not converted', async () => {
    const out = await outboundBody({ ...source('Subject: ü\r\n\r\nü\r\n'), envelope: { ...env, smtputf8: true } }, SEVEN, 'convert');
    expect(out).toMatchObject({ ok: true, eightBit: true });
  });

  it('a v1 spool message (no facts) is scanned first', async () => {
    reads = 0;
    const { facts: _, ...noFacts } = source('Subject: x\r\n\r\nGrüße\r\n');
    const out = await outboundBody(noFacts, SEVEN, 'convert');
    expect(out).toMatchObject({ ok: true, converted: '7bit' });
    expect(reads).toBe(2); // the scan, then the plan
  });
});

describe('guardedBody: the converted output is checked on its way out', () => {
  const gen = async function* (...c: string[]) {
    for (const x of c) yield Buffer.from(x, 'utf8');
  };
  it('passes 7-bit short lines, stops before an 8-bit chunk, a long line or a NUL', async () => {
    expect(await text(Readable.from(guardedBody(gen('a\r\n', 'b\r\n'), '7bit')))).toBe('a\r\nb\r\n');
    const sent: string[] = [];
    await expect(
      (async () => {
        for await (const c of guardedBody(gen('ok\r\n', 'ü\r\n'), '7bit')) sent.push(c.toString());
      })(),
    ).rejects.toThrow(/8-bit octets/);
    expect(sent).toEqual(['ok\r\n']);
    await expect(text(Readable.from(guardedBody(gen('x'.repeat(999)), '8bit')))).rejects.toThrow(/longer than 998/);
    await expect(text(Readable.from(guardedBody(gen('\0'), '8bit')))).rejects.toThrow(/NUL/);
    expect(await text(Readable.from(guardedBody(gen('ü\r\n'), '8bit')))).toBe('ü\r\n');
  });
});
