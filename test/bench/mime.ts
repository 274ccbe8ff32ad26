/**
 * What 8BITMIME and line-length handling (issue 19) costs: nothing measurable for 7-bit mail, which
 * is scanned once while it is written to the spool (the facts go into the header) and then sent as
 * it is; the MIME conversion runs only for 8-bit mail to a server without 8BITMIME (or over-long
 * lines). Used by run.ts (section 7); also runnable alone: `node dist/test/bench/mime.js` prints the
 * section without touching BENCHMARKS.md.
 */
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { SmtpTestClient } from '../support/submit.js';
import { World } from '../support/world.js';
import { sideBySideRates } from './load.js';
import { BodyScanner } from '../../src/mime/scan.js';
import { outboundBody } from '../../src/delivery/body.js';
import { downgrade, planDowngrade } from '../../src/mime/downgrade.js';
import type { Envelope } from '../../src/spool/types.js';

const LINE = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl\r\n';
const UMLAUT = 'Grüße, Ärger, Öl und Übermut — eine Zeile mit Umlauten, die oft wiederkehrt.\r\n';

function message(size: number, eight: boolean): Buffer {
  let s = `From: app@sender.test\r\nTo: user@dest.test\r\nSubject: bench\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: ${eight ? '8bit' : '7bit'}\r\n\r\n`;
  const line = eight ? UMLAUT : LINE;
  while (Buffer.byteLength(s) + Buffer.byteLength(line) <= size) s += line;
  return Buffer.from(s, 'utf8');
}

/**
 * One relay, two destinations delivered side by side: eight.test (a receiver with 8BITMIME) and
 * seven.test (one without), messages alternating between them. Both share the machine's load, the
 * spool and the scheduler, so the ratio of their throughputs is what the destination's missing
 * 8BITMIME costs, with the noise of a shared machine cancelled as far as it can be.
 */
async function sideBySide(eight: boolean, total: number, clients: number, size: number): Promise<{ rate8: number; rate7: number; converted: number }> {
  const w = await World.create();
  try {
    const with8 = await w.mx('eight.test', { keepBody: false });
    const without = await w.mx('seven.test', { keepBody: false, eightBitMime: false });
    await w.start({ log: { level: 'info' } });
    const { rateA: rate8, rateB: rate7 } = await sideBySideRates(w.ingressPort, with8, without, {
      clients,
      total,
      payload: SmtpTestClient.dataPayload(message(size, eight)),
      rcpt: (i, side) => `user${i}@${side === 'b' ? 'seven' : 'eight'}.test`,
      timeoutMs: 180_000,
    });
    const converted = w.logs.filter((l) => String(l.msg).startsWith('message body converted')).length;
    return { rate8, rate7, converted };
  } finally {
    await w.close();
  }
}

function nsPer(n: number, f: () => void): number {
  for (let i = 0; i < Math.min(n, 1000); i++) f();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f();
  return Number(process.hrtime.bigint() - t0) / n;
}

/** `fsyncRate`: section (1)'s messages per second, to put the per-message cost in proportion. */
export async function mimeSection(say: (s?: string) => void, fsyncRate?: number): Promise<void> {
  const TOTAL = 2000,
    CLIENTS = 20,
    SIZE = 2048,
    RUNS = 3;
  say('## 7. 8BITMIME conversion and line limits: what 7-bit mail pays');
  say();
  say(
    "Every body is scanned once while it streams into the spool (8-bit octets, lines over 998 octets, NUL; `src/mime/scan.ts`) and the answer is kept in the message file's header, so delivery decides per next hop without reading the body; only 8-bit mail to a server without 8BITMIME (or a long line, or NUL) is read again and converted (`src/mime/downgrade.ts`).",
  );
  say();
  const small = message(SIZE, false);
  const scanSmall = nsPer(200_000, () => {
    const s = new BodyScanner();
    s.push(small);
    void s.facts;
  });
  const big = Buffer.concat(Array.from({ length: 800 }, () => message(64 * 1024, false).subarray(200)));
  const t0 = performance.now();
  const s = new BodyScanner();
  for (let i = 0; i < big.length; i += 64 * 1024) s.push(big.subarray(i, i + 64 * 1024));
  const scanMBs = big.length / 1e6 / ((performance.now() - t0) / 1000);
  const env: Envelope = {
    from: 'a@sender.test',
    recipients: ['u@dest.test'],
    smtputf8: false,
    eightBit: false,
    client: { address: '127.0.0.1' },
    received: 0,
    kind: 'normal',
  };
  const ext = new Map([
    ['PIPELINING', ''],
    ['SIZE', ''],
  ]);
  const src = { envelope: env, size: small.length, facts: s.facts, body: () => Readable.from([small]) };
  let decide = 0;
  {
    const n = 200_000;
    for (let i = 0; i < 1000; i++) await outboundBody(src, ext, 'convert');
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await outboundBody(src, ext, 'convert');
    decide = Number(process.hrtime.bigint() - t) / n;
  }
  const eight = Buffer.concat(Array.from({ length: 160 }, () => message(64 * 1024, true)));
  const c0 = performance.now();
  const opts = { target: '7bit' as const, utf8Headers: false };
  const chunks = Array.from({ length: Math.ceil(eight.length / 65536) }, (_, i) => eight.subarray(i * 65536, (i + 1) * 65536));
  const plan = await planDowngrade(chunks, opts);
  const planMs = performance.now() - c0;
  let out = 0;
  for await (const c of downgrade(chunks, plan, opts)) out += c.length;
  const convMs = performance.now() - c0 - planMs;
  say('| step | cost |');
  say('|---|---:|');
  say(`| ingest: scan of a ${SIZE}-byte 7-bit message (once, while it is written to the spool) | ${(scanSmall / 1000).toFixed(2)} µs |`);
  say(`| ingest: scan of a ${(big.length / 1e6).toFixed(0)} MB 7-bit body in 64 KiB chunks | ${scanMBs.toFixed(0)} MB/s |`);
  say(`| delivery: the body decision for 7-bit mail (no read, no copy: the spool stream as it is) | ${(decide / 1000).toFixed(2)} µs |`);
  say(
    `| for contrast, 8-bit mail to a server without 8BITMIME: plan + convert of ${(eight.length / 1e6).toFixed(0)} MB of UTF-8 text to quoted-printable | ${(eight.length / 1e6 / (planMs / 1000)).toFixed(0)} MB/s + ${(eight.length / 1e6 / (convMs / 1000)).toFixed(0)} MB/s (${(out / eight.length).toFixed(2)}× the size) |`,
  );
  say();
  say(
    `End to end, one relay delivering to two destinations side by side (no TLS: insecure zone, receivers without STARTTLS, bodies hashed not kept): ${TOTAL} messages of 2 KB by ${CLIENTS} clients, alternating between a receiver with 8BITMIME and one without. Both halves share the machine, the spool and the scheduler, so the ratio of their throughputs is the cost of the missing 8BITMIME for that mail. ${RUNS} runs of 7-bit mail (median reported), then one of 8-bit mail, where the half without 8BITMIME is converted, for contrast.`,
  );
  say();
  say('| run | mail | with 8BITMIME msgs/s | without 8BITMIME msgs/s | ratio without/with | messages converted |');
  say('|---:|---|---:|---:|---:|---:|');
  const ratios: number[] = [];
  for (let i = 1; i <= RUNS; i++) {
    const r = await sideBySide(false, TOTAL, CLIENTS, SIZE);
    ratios.push(r.rate7 / r.rate8);
    say(`| ${i} | 7-bit | ${r.rate8.toFixed(0)} | ${r.rate7.toFixed(0)} | ${(r.rate7 / r.rate8).toFixed(3)} | ${r.converted} |`);
  }
  const conv = await sideBySide(true, TOTAL, CLIENTS, SIZE);
  say(`| – | 8-bit | ${conv.rate8.toFixed(0)} | ${conv.rate7.toFixed(0)} | ${(conv.rate7 / conv.rate8).toFixed(3)} | ${conv.converted}/${TOTAL / 2} |`);
  ratios.sort((a, b) => a - b);
  const median = ratios[Math.floor(ratios.length / 2)]!;
  say();
  say(`- Median ratio without/with 8BITMIME for 7-bit mail: **${median.toFixed(3)}** → target ≥ 0.97 (no cost) → **${median >= 0.97 ? 'PASS' : 'MISS'}**`);
  say(
    `- Per 7-bit message the relay spends ${((scanSmall + decide) / 1000).toFixed(2)} µs on it in all${fsyncRate ? `, against ~${(1e6 / fsyncRate).toFixed(0)} µs of fsync per message at (1)'s rate` : ''}.`,
  );
  say();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  mimeSection((s = '') => console.log(s)).then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
