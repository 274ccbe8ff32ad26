/**
 * The 7-bit conversion as a property over generated MIME trees (src/mime/downgrade.ts): nesting
 * (multipart, message/rfc822, multipart/signed, depth beyond the limit), charsets, transfer
 * encodings (none, 7bit, 8bit, binary, quoted-printable, base64, some of them malformed), 8-bit
 * octets in bodies and in header fields, long lines in bodies and headers, NUL, preambles.
 *
 * For every tree and both targets (a next hop without 8BITMIME, one with it):
 * - what cannot be converted is refused — exactly the trees an independent oracle (built from the
 *   tree, not from the bytes) says cannot be — and a refused message yields no output at all;
 * - what is sent is 7-bit for the 7-bit target, has no NUL, and no line over 998 octets;
 * - it decodes (mailparser, not our code) to the same leaf contents, octet for octet, the same
 *   media types, recursively through message/rfc822;
 * - a multipart/signed part is sent byte for byte as it was.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { downgrade, downgradeBuffer, planDowngrade, type Target } from '../../src/mime/downgrade.js';
import { MAX_DEPTH, message, sameContent, topArb } from '../support/mimeTrees.js';

function lineFacts(b: Buffer): { eight: boolean; nul: boolean; longest: number } {
  let longest = 0;
  for (const l of b.toString('latin1').split('\n')) longest = Math.max(longest, l.replace(/\r$/, '').length);
  return { eight: b.some((x) => x >= 0x80), nul: b.includes(0), longest };
}

describe('7-bit conversion over generated MIME trees', () => {
  for (const target of ['7bit', '8bit'] as const) {
    it(`target ${target}: refused exactly when the oracle says so; otherwise ${target === '7bit' ? '7-bit, ' : ''}lines ≤ 998, no NUL, same leaves, signed parts untouched`, async () => {
      await fc.assert(
        fc.asyncProperty(topArb, async (top) => {
          const m = message(top, target);
          const r = await downgradeBuffer(m.raw, { target, utf8Headers: false, maxDepth: MAX_DEPTH });
          if ('refusal' in r) {
            expect(m.refuse, `refused: ${r.refusal.reason}`).toBe(true);
            expect(r.refusal.code).toBe('5.6.3');
            return;
          }
          expect(m.refuse, 'the oracle expected a refusal').toBe(false);
          const f = lineFacts(r.output);
          expect(f.longest).toBeLessThanOrEqual(998);
          expect(f.nul).toBe(false);
          if (target === '7bit') expect(f.eight).toBe(false);
          await sameContent(m.raw, r.output);
          for (const s of m.signedBlocks) expect(r.output.includes(s)).toBe(true);
          if (!r.plan.changed) expect(r.output.equals(m.raw)).toBe(true);
        }),
        { numRuns: Number(process.env.MIME_RUNS ?? 400) },
      );
    }, 120_000);
  }
});

describe('streaming', () => {
  it('the same plan and the same output whatever chunks the message arrives in', async () => {
    await fc.assert(
      fc.asyncProperty(topArb, fc.array(fc.nat(), { maxLength: 30 }), fc.constantFrom<Target>('7bit', '8bit'), async (top, cuts, target) => {
        const m = message(top, target);
        const opts = { target, utf8Headers: true, maxDepth: MAX_DEPTH };
        const whole = await downgradeBuffer(m.raw, opts);
        const points = [...new Set(cuts.map((c) => c % (m.raw.length + 1)))].sort((a, b) => a - b);
        const chunks = [0, ...points].map((p, i, a) => m.raw.subarray(p, a[i + 1] ?? m.raw.length));
        const plan = await planDowngrade(chunks, opts);
        if ('refusal' in whole) return void expect(plan.refusal).toEqual(whole.refusal);
        expect(plan).toEqual(whole.plan);
        const out: Buffer[] = [];
        for await (const c of downgrade(chunks, plan, opts)) out.push(c);
        expect(Buffer.concat(out).equals(whole.output)).toBe(true);
      }),
      { numRuns: 300 },
    );
  }, 120_000);
});
