/**
 * The DATA phase's search for line-leading dots (RFC 5321 §4.5.2 transparency, §4.1.1.4 the
 * "<CRLF>.<CRLF>" end of data), made with Buffer#indexOf instead of a JavaScript loop over every octet.
 *
 * smtp-server's SMTPStream._feedDataStream looks at each octet of the body for a dot after a LF. At
 * 50 KB that loop was the largest single JavaScript cost of the relay's main thread under the
 * Postfix benchmark (262 ms of a 2,000-message run, ~130 µs a message; BENCHMARKS.md, issue 17), and
 * the main thread is the relay's bottleneck there. `Buffer#indexOf('\n.')` finds the same positions in
 * native code; nearly every body has none, so a chunk costs one call.
 *
 * Only the loop is replaced. The method below is smtp-server 3.21.6's own, statement for statement,
 * with its comments: the same terminator checks (the one straddling chunks, the smuggling fix for a
 * first line of "." sent as ".." in a chunk of its own), the same escape-dot handling and the same
 * flow control. It replaces the library's only while the library's method is the exact text it was
 * checked against (its SHA-256 below): a different version keeps its own scan, and
 * test/ingress/dotScan.test.ts, which runs both on generated bodies split at every kind of boundary
 * and requires the same output, fails until the copy here is brought up to date.
 */
import { createHash } from 'node:crypto';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';

/** SHA-256 of smtp-server 3.21.6's `SMTPStream.prototype._feedDataStream.toString()` */
export const LIBRARY_SCAN_SHA256 = '9d8b903f9a3a63542d72e19a9e2f67009a3b1107a28d57e8e7369355454ff230';

const END_SEQUENCE = Buffer.from('\r\n.\r\n');
const DOT_START = Buffer.from('.\r\n');
const LF_DOT = Buffer.from('\n.');

/** The library's own method, as loaded: what installDotScan checks, and the equivalence test's reference. */
export const libraryFeedDataStream = SMTPStream.prototype._feedDataStream as FeedDataStream;

type FeedDataStream = (this: SMTPStream, chunk: Buffer, done: () => void) => void;

/** The fields and methods of SMTPStream the data phase uses (private in its typings). */
interface StreamInternals {
  _dataStream: NodeJS.WritableStream & { writable: boolean; destroyed: boolean };
  _lastBytes: Buffer | false;
  _atDataStart: boolean;
  _countDataBytes(len: number): void;
  _endDataMode(chunk: Buffer | false, remainder: Buffer, done: () => void): void;
  _feedDataStream: FeedDataStream;
}

/** smtp-server 3.21.6's `_feedDataStream`, its octet loop replaced by a search for "\n.". */
export function feedDataStream(this: SMTPStream, input: Buffer, done: () => void): void {
  const self = this as unknown as StreamInternals;
  // only called in data mode, which always has a stream
  const dataStream = self._dataStream;
  let chunk = input;
  let len: number;
  let handled: boolean;
  let buf: Buffer;
  // biome-ignore lint/complexity/useOptionalChain: smtp-server 3.21.6's own statement, kept as the library wrote it (see above)
  if (self._lastBytes && self._lastBytes.length) {
    chunk = Buffer.concat([self._lastBytes, chunk], self._lastBytes.length + chunk.length);
    self._lastBytes = false;
  }
  len = chunk.length;
  // Check if the data does not start with the end terminator (the library's note: this must test
  // _atDataStart, not dataBytes, or a first line of "." sent as ".." in a chunk of its own would let a
  // client end DATA early by its TCP segmentation and smuggle commands)
  if (self._atDataStart && len >= 3 && Buffer.compare(chunk.subarray(0, 3), DOT_START) === 0) {
    self._endDataMode(false, chunk.subarray(3), done);
    return;
  }
  // check if the first symbol is a escape dot
  if (self._atDataStart && len >= 2 && chunk[0] === 0x2e && chunk[1] === 0x2e) {
    chunk = chunk.subarray(1);
    len--;
    // the escape dot is consumed payload, so the leading dot from now on is content and never a terminator
    self._atDataStart = false;
  }
  // seek for the stream ending: each dot first in a line at i = 2 … len - 3, as the library's loop
  // `for (i = 2; i < len - 2; i++) if (chunk[i] === 0x2e && chunk[i - 1] === 0x0a)` visits them
  for (let lf = chunk.indexOf(LF_DOT, 1); lf !== -1; lf = chunk.indexOf(LF_DOT, lf + 1)) {
    const i = lf + 1;
    if (i >= len - 2) break;
    // if the dot matches end terminator
    if (Buffer.compare(chunk.subarray(i - 2, i + 3), END_SEQUENCE) === 0) {
      // everything before the terminator is message content, including the CRLF that ends the last line
      buf = chunk.subarray(0, i);
      self._countDataBytes(buf.length);
      self._endDataMode(buf, chunk.subarray(i + 3), done);
      return;
    }
    // check if the dot is an escape char and remove it
    if (chunk[i + 1] === 0x2e) {
      buf = chunk.subarray(0, i);
      self._lastBytes = false; // clear remainder bytes
      self._countDataBytes(buf.length); // increment byte counter
      // emit what we already have and continue without the dot
      if (dataStream.writable) {
        dataStream.write(buf);
      }
      const rest = chunk.subarray(i + 1);
      setImmediate(() => self._feedDataStream.call(this, rest, done));
      return;
    }
  }
  // keep the last bytes
  if (chunk.length < 4) {
    self._lastBytes = chunk;
  } else {
    self._lastBytes = chunk.subarray(chunk.length - 4);
  }
  // if current chunk is longer than the remainder bytes we keep for later emit the available bytes
  if (self._lastBytes.length < chunk.length) {
    buf = chunk.subarray(0, chunk.length - self._lastBytes.length);
    self._countDataBytes(buf.length);
    // write to stream but stop if need to wait for drain
    if (dataStream.writable) {
      handled = dataStream.write(buf);
      if (!handled && !dataStream.destroyed) {
        // a stream that the application destroys never drains, it only closes
        const onDrain = () => {
          dataStream.removeListener('drain', onDrain);
          dataStream.removeListener('close', onDrain);
          done();
        };
        dataStream.once('drain', onDrain);
        dataStream.once('close', onDrain);
      } else {
        done();
      }
    } else {
      done();
    }
  } else {
    // nothing to emit, continue with the input stream
    done();
  }
}

/** The SHA-256 of a function's source text. */
export function sourceSha256(fn: (...args: never[]) => unknown): string {
  return createHash('sha256').update(fn.toString()).digest('hex');
}

/**
 * Puts `feedDataStream` in place of the library's method when that is the text it was checked against;
 * returns whether it did. Idempotent. Ingress.start calls it.
 */
export function installDotScan(): boolean {
  const proto = SMTPStream.prototype as unknown as StreamInternals;
  if (proto._feedDataStream === feedDataStream) return true;
  if (sourceSha256(libraryFeedDataStream) !== LIBRARY_SCAN_SHA256) return false;
  proto._feedDataStream = feedDataStream;
  return true;
}
