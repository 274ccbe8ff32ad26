/**
 * The DATA phase's dot search (src/ingress/dotScan.ts) against smtp-server's own
 * `_feedDataStream`: two real SMTPStream parsers, one with each method, fed the same bytes in the
 * same chunks; they must emit the same body, end data at the same place, count the same bytes and
 * parse the same commands after it. Bodies are generated from the octets that matter (CR, LF, dot)
 * with the sequences an attacker uses for SMTP smuggling (bare LF before a dot, "\n.\n", "\r.\r",
 * a first line of "."), split at random points and at every single octet.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { splitAt } from '../support/split.js';
import { feedDataStream, installDotScan, LIBRARY_SCAN_SHA256, libraryFeedDataStream, sourceSha256 } from '../../src/ingress/dotScan.js';

interface Seen {
  body: Buffer;
  ended: boolean;
  bytes: number;
  commands: string[];
}

/** Runs one parser in data mode over `chunks` (each written as the socket would hand it over) with the given method. */
async function run(method: typeof feedDataStream, chunks: Buffer[]): Promise<Seen> {
  const stream = new SMTPStream();
  (stream as unknown as { _feedDataStream: typeof feedDataStream })._feedDataStream = method;
  const commands: string[] = [];
  stream.oncommand = (cmd: Buffer, cb?: () => void) => {
    commands.push(cmd.toString('latin1'));
    cb?.();
  };
  const data = stream.startDataMode();
  const parts: Buffer[] = [];
  let ended = false;
  data.on('data', (c: Buffer) => parts.push(c));
  data.on('end', () => {
    ended = true;
    stream.continue();
  });
  for (const c of chunks) await new Promise<void>((resolve, reject) => stream.write(c, (e) => (e ? reject(e) : resolve())));
  // let the escape-dot path's setImmediate continuations and the data stream's end run
  await new Promise<void>((resolve) => stream.end(resolve));
  for (let k = 0; k < 5; k++) await new Promise((r) => setImmediate(r));
  return { body: Buffer.concat(parts), ended, bytes: stream.dataBytes, commands };
}

const pieces = fc.constantFrom(
  '\r\n',
  '\n',
  '\r',
  '.',
  '..',
  'a',
  'Subject: x',
  '\r\n.\r\n',
  '\r\n..\r\n',
  '\n.\n',
  '\r.\r',
  '\n.\r\n',
  '\r\n.\n',
  '.\r\n',
  '\r\n..x',
  'QUIT\r\n',
  'MAIL FROM:<a@b>\r\n',
  '\u00e9',
);
const bodies = fc.array(pieces, { maxLength: 40 }).map((p) => Buffer.from(p.join(''), 'latin1'));

describe('ingress DATA: the dot search is smtp-server’s, with Buffer#indexOf (RFC 5321 §4.5.2, §4.1.1.4)', () => {
  it('is in force: the library method is the text it was checked against (update dotScan.ts when this fails)', () => {
    expect(sourceSha256(libraryFeedDataStream)).toBe(LIBRARY_SCAN_SHA256);
    expect(installDotScan()).toBe(true);
    expect((SMTPStream.prototype as unknown as { _feedDataStream: unknown })._feedDataStream).toBe(feedDataStream);
    expect(installDotScan()).toBe(true); // idempotent
  });

  it('known cases: unstuffing, the terminator, a first line of ".", a terminator split across chunks, what follows it', async () => {
    const cases: [string[], string, string[]][] = [
      [['Subject: a\r\n\r\nbody\r\n.\r\n'], 'Subject: a\r\n\r\nbody\r\n', []],
      [['a\r\n..b\r\n.\r\nQUIT\r\n'], 'a\r\n.b\r\n', ['QUIT']],
      [['..\r\n.\r\n'], '.\r\n', []],
      [['.\r\n'], '', []],
      [['a\r', '\n', '.', '\r', '\nNOOP\r\n'], 'a\r\n', ['NOOP']],
      [['a\n.\nb\r\n.\r\n'], 'a\n.\nb\r\n', []],
    ];
    for (const [chunks, body, commands] of cases) {
      const seen = await run(
        feedDataStream,
        chunks.map((c) => Buffer.from(c, 'latin1')),
      );
      expect(seen.body.toString('latin1'), JSON.stringify(chunks)).toBe(body);
      expect(seen.ended).toBe(true);
      expect(seen.commands).toEqual(commands);
    }
  });

  it('property: the same output as smtp-server’s own scan for generated bodies split at random points', async () => {
    await fc.assert(
      fc.asyncProperty(bodies, fc.array(fc.nat(400), { maxLength: 12 }), async (input, cuts) => {
        const chunks = splitAt(input, cuts);
        const [mine, theirs] = [await run(feedDataStream, chunks), await run(libraryFeedDataStream, chunks)];
        expect(mine).toEqual(theirs);
      }),
      { numRuns: 400 },
    );
  });

  it('property: the same output when every octet arrives on its own', async () => {
    await fc.assert(
      fc.asyncProperty(bodies, async (input) => {
        const chunks = splitAt(
          input,
          Array.from({ length: input.length }, (_, i) => i),
        );
        const [mine, theirs] = [await run(feedDataStream, chunks), await run(libraryFeedDataStream, chunks)];
        expect(mine).toEqual(theirs);
      }),
      { numRuns: 150 },
    );
  });

  it('a 50 KB body of CRLF lines in 16 KB chunks: the same bytes as the library, none lost or added', async () => {
    const line = `${'x'.repeat(70)}\r\n`;
    const body = Buffer.from(line.repeat(Math.ceil(51200 / line.length)), 'latin1');
    const input = Buffer.concat([body, Buffer.from('.\r\n')]);
    const chunks = splitAt(
      input,
      Array.from({ length: Math.ceil(input.length / 16384) }, (_, i) => i * 16384),
    );
    const [mine, theirs] = [await run(feedDataStream, chunks), await run(libraryFeedDataStream, chunks)];
    expect(mine.body.equals(body)).toBe(true);
    expect(mine).toEqual(theirs);
  });
});
