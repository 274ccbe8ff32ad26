/**
 * The spool: durable storage of accepted messages and of each recipient's state.
 *
 * Layout under the spool directory:
 *   lock              pid of the relay (or CLI) using it, see lock.ts
 *   tmp/              drafts being received and state files being written
 *   msg/<id>          immutable: JSON header line + message bytes as received (format.ts)
 *   state/<id>.json   recipient states; absent = all pending, not held
 *   corrupt/          files recovery could not trust, kept for a human
 *
 * Durability rules (the reason this file exists):
 * - A message is queued (250) only once `msg/<id>` is durable: temp file written,
 *   fsynced, renamed into msg/, and msg/ fsynced. Directory fsyncs are group-
 *   committed (groupsync.ts), so the per-message cost is one file fsync plus a
 *   share of one directory fsync.
 * - State files are replaced the same way (tmp → fsync → rename → group dir fsync),
 *   so a reader after a crash sees the old state or the new one, never a mix.
 * - A finished message loses `msg/<id>` first and `state/<id>.json` second: a
 *   crash between leaves an orphan state file (deleted by recovery), whereas the
 *   other order could bring back a message whose recipients all look pending.
 * - Any failure leaves nothing half-queued: the temp file or the renamed file is
 *   removed before the SpoolError (with the errno as `.code`) reaches the caller.
 *
 * Reads: the body of a message this process just committed is served from a bounded
 * in-memory copy of the bytes written (bodycache.ts), not read back; the file is the
 * same either way. A message committed here that never had a state write has no
 * state file, so finishing it skips that unlink.
 */
import { join, resolve, dirname } from 'node:path';
import { Readable } from 'node:stream';
import { SpoolError, errno } from './errors.js';
import { nodeSpoolFs, type SpoolFs, type SpoolHandle } from './fs.js';
import { BodyCache, BodyCapture } from './bodycache.js';
import { GroupSync } from './groupsync.js';
import { IdGenerator, isQueueId } from './id.js';
import { acquireSpoolLock, isOwnerAlive, type SpoolLock } from './lock.js';
import {
  CorruptError,
  MAX_HEADER,
  SIZE_OFFSET,
  encodeHeader,
  encodeState,
  envelopeProblem,
  initialRecipients,
  isDone,
  parseHeader,
  parseState,
  recipientsProblem,
  sizeField,
  Interner,
  type ParsedHeader,
} from './format.js';
import type { Draft, Envelope, QueuedMessage, RecipientStatus, SpoolWriter } from './types.js';
import { printableJson } from '../text/printable.js';
import { BodyScanner, type BodyFacts } from '../mime/scan.js';

export { SpoolError } from './errors.js';
export { nodeSpoolFs, type SpoolFs, type SpoolHandle } from './fs.js';
export { acquireSpoolLock, type SpoolLock } from './lock.js';
export { isQueueId, idTime } from './id.js';

export interface SpoolLog {
  warn(obj: object, msg: string): void;
}

export interface SpoolOptions {
  fs?: SpoolFs;
  now?: () => number;
  log?: SpoolLog;
}

/** Drafts coalesce small writes up to this size; also the read chunk size of openBody. */
const CHUNK = 64 * 1024;
/**
 * Coalescing buffers of ended drafts kept for the next ones: at the relay's rate a fresh 64 KB buffer per
 * message is megabytes a second of external memory for the garbage collector to find (issue 17).
 */
const SPARE_BUFFERS = 16;
/** header reads in parallel during recovery */
const RECOVERY_PARALLEL = 16;

const stderrLog: SpoolLog = {
  warn(obj, msg) {
    process.stderr.write(`${printableJson({ level: 'warn', component: 'spool', msg, ...obj })}\n`);
  },
};

async function writeAll(fs: SpoolFs, h: SpoolHandle, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  while (length > 0) {
    const n = await fs.write(h, buf, offset, length, position);
    // A regular file never legitimately accepts 0 bytes; looping on it would spin forever.
    if (n <= 0) throw Object.assign(new Error('write accepted no bytes'), { code: 'EIO' });
    offset += n;
    length -= n;
    position += n;
  }
  return position;
}

/** Runs `fn` over `items` with RECOVERY_PARALLEL in flight: recovery is bound by fs latency, not CPU. */
async function parallel<T>(items: T[], fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(RECOVERY_PARALLEL, items.length) }, worker));
}

async function ignoreENOENT(p: Promise<void>): Promise<void> {
  try {
    await p;
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
  }
}

type DraftState = 'open' | 'committing' | 'committed' | 'failed' | 'aborted';

class FileDraft implements Draft {
  /** coalescing buffer: a 4 KB message becomes one write(2); given back to the spool when the draft ends */
  private buf: Buffer | undefined;
  private bufLen = 0;
  /** file offset of the next write(2) */
  private filePos = 0;
  private bodySize = 0;
  /** what the body holds (8-bit, long lines, NUL): kept in the header, so delivery need not scan */
  private readonly scanner = new BodyScanner();
  /** the body bytes as written, for the spool's read cache (bodycache.ts) */
  private capture: BodyCapture | undefined;
  private handle: SpoolHandle | undefined;
  private state: DraftState = 'open';
  private failure: SpoolError | undefined;
  /** writes are applied in call order even if a caller does not await them */
  private chain: Promise<void> = Promise.resolve();

  constructor(
    readonly id: string,
    private readonly spool: Spool,
    private readonly fs: SpoolFs,
    handle: SpoolHandle,
    private readonly tmpName: string,
    private readonly envelopeJson: string,
  ) {
    this.handle = handle;
    this.buf = spool.takeBuffer();
  }

  private get tmpPath(): string {
    return this.spool.tmpPath(this.tmpName);
  }

  get facts(): BodyFacts {
    return this.scanner.facts;
  }

  /** writes the header line (into the buffer, usually) */
  async start(header: Buffer): Promise<void> {
    this.capture = new BodyCapture(header.length);
    try {
      await this.append(header);
    } catch (e) {
      throw await this.fail('write', e);
    }
  }

  write(chunk: Buffer): Promise<void> {
    const next = this.chain.then(async () => {
      if (this.failure) throw this.failure;
      if (this.state !== 'open') throw new SpoolError(`draft ${this.id} is ${this.state}`, 'EINVAL');
      try {
        this.bodySize += chunk.length;
        this.scanner.push(chunk);
        await this.append(chunk);
      } catch (e) {
        throw await this.fail('write', e);
      }
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async append(chunk: Buffer): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      if (this.bufLen === 0 && chunk.length - off >= CHUNK) {
        // Big chunks go straight to the file: copying 50 MB through the buffer buys nothing.
        this.capture?.add(chunk.subarray(off), this.filePos);
        this.filePos = await writeAll(this.fs, this.handle!, chunk, off, chunk.length - off, this.filePos);
        return;
      }
      const n = chunk.copy(this.buf!, this.bufLen, off);
      this.bufLen += n;
      off += n;
      if (this.bufLen === CHUNK) await this.flush();
    }
  }

  private async flush(): Promise<void> {
    if (this.bufLen === 0) return;
    this.capture?.add(this.buf!.subarray(0, this.bufLen), this.filePos);
    await this.writeBuffer();
  }

  /**
   * The last flush, at commit. A file that fits in the buffer and fills at least half of it is not copied
   * for the cache: the cache keeps the buffer itself (charged all of it), which is then not given back.
   */
  private async flushLast(): Promise<void> {
    if (this.bufLen === 0) return;
    if (this.filePos === 0 && this.bufLen >= CHUNK / 2 && this.capture?.adopt(this.buf!.subarray(0, this.bufLen))) {
      await this.writeBuffer();
      // the cache owns it now: never given back for another draft (on a failed write it is, with the capture dropped)
      this.buf = undefined;
      return;
    }
    await this.flush();
  }

  private async writeBuffer(): Promise<void> {
    this.filePos = await writeAll(this.fs, this.handle!, this.buf!, 0, this.bufLen, this.filePos);
    this.bufLen = 0;
  }

  /** Records the failure, removes the temp file (frees the space ENOSPC asked for) and returns the error. */
  private async fail(step: string, e: unknown): Promise<SpoolError> {
    const err = SpoolError.from(step, e);
    this.failure ??= err;
    this.state = 'failed';
    await this.discard();
    return err;
  }

  private async discard(): Promise<void> {
    this.releaseBuffer();
    this.capture = undefined;
    const h = this.handle;
    this.handle = undefined;
    if (h) await this.fs.close(h).catch(() => undefined);
    await this.fs.unlink(this.tmpPath).catch(() => undefined);
    this.spool.draftEnded(this, this.tmpName);
  }

  commit(): Promise<QueuedMessage> {
    return this.spool.track(this.chain.then(() => this.commitNow()));
  }

  private async commitNow(): Promise<QueuedMessage> {
    if (this.failure) throw this.failure;
    if (this.state !== 'open') throw new SpoolError(`draft ${this.id} is ${this.state}`, 'EINVAL');
    this.state = 'committing';
    let step = 'write';
    try {
      // The size and the body facts are known only now; the header has fixed-width slots for them.
      const size = sizeField(this.bodySize, this.scanner.facts);
      if (this.filePos === 0) size.copy(this.buf!, SIZE_OFFSET);
      else await writeAll(this.fs, this.handle!, size, 0, size.length, SIZE_OFFSET);
      await this.flushLast();
      step = 'fsync';
      await this.fs.fsync(this.handle!);
      step = 'close';
      const h = this.handle!;
      this.handle = undefined;
      await this.fs.close(h);
      step = 'rename';
      await this.fs.rename(this.tmpPath, this.spool.msgPath(this.id));
    } catch (e) {
      throw await this.fail(step, e);
    }
    // Known from here on, before the directory fsync: a remove() racing the rest drops it again.
    this.spool.published(this.id, this.capture?.take());
    this.capture = undefined;
    this.releaseBuffer();
    this.spool.draftEnded(this, this.tmpName);
    try {
      await this.spool.msgSync.sync();
    } catch (e) {
      // Not known to be durable, so not queued: take it back out (the client gets a 4xx and retries).
      this.failure = SpoolError.from('directory fsync', e);
      this.state = 'failed';
      this.spool.forget(this.id);
      await this.fs.unlink(this.spool.msgPath(this.id)).catch(() => undefined);
      throw this.failure;
    }
    this.state = 'committed';
    // Parsed back from the JSON that is on disk, so it equals what recover() would return.
    const envelope = JSON.parse(this.envelopeJson) as Envelope;
    return { id: this.id, envelope, size: this.bodySize, body: this.scanner.facts, recipients: initialRecipients(envelope) };
  }

  /** No write of the buffer is under way when this runs: every write is awaited in the draft's chain. */
  private releaseBuffer(): void {
    const b = this.buf;
    this.buf = undefined;
    if (b) this.spool.giveBuffer(b);
  }

  async abort(): Promise<void> {
    await this.chain;
    // Once commit has started it decides; abort must never remove a committed message.
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.discard();
  }
}

export class Spool implements SpoolWriter {
  readonly dir: string;
  /** @internal group commit of msg/ */
  readonly msgSync: GroupSync;
  private readonly stateSync: GroupSync;
  private readonly ids = new IdGenerator();
  /** names in tmp/ being written now: recovery must not delete them */
  private readonly liveTmp = new Set<string>();
  private readonly drafts = new Set<FileDraft>();
  private readonly ops = new Set<Promise<unknown>>();
  /** per-message serialisation of state changes, so an older state never lands after a newer one */
  private readonly chains = new Map<string, Promise<void>>();
  private readonly heldIds = new Set<string>();
  /** bodies of messages committed by this process, served instead of reading msg/<id> back */
  private readonly bodies = new BodyCache();
  /** coalescing buffers of ended drafts (SPARE_BUFFERS) */
  private readonly spare: Buffer[] = [];
  /**
   * Messages committed by this process that never had a state write, so state/<id>.json cannot
   * exist: removing them skips that unlink (it would fail ENOENT). The id leaves the set before
   * writeState creates anything, so a state file is never written for an id in it; after a crash
   * the set is empty and every recovered message gets the unlink, as before.
   */
  private readonly stateless = new Set<string>();
  private recovered = false;
  private closed = false;
  private tmpSeq = 0;

  private constructor(
    dir: string,
    private readonly fs: SpoolFs,
    private readonly now: () => number,
    private readonly log: SpoolLog,
    private readonly lock: SpoolLock,
  ) {
    this.dir = dir;
    this.msgSync = new GroupSync(() => fs.fsyncDir(join(dir, 'msg')));
    this.stateSync = new GroupSync(() => fs.fsyncDir(join(dir, 'state')));
  }

  /** Creates the directories and takes the lock (rejects with code ELOCKED if a live process has it). */
  static async open(dir: string, opts: SpoolOptions = {}): Promise<Spool> {
    const fs = opts.fs ?? nodeSpoolFs;
    const log = opts.log ?? stderrLog;
    const root = resolve(dir);
    try {
      await fs.mkdir(root);
    } catch (e) {
      throw SpoolError.from('open', e);
    }
    const lock = await acquireSpoolLock(root, { fs, log });
    try {
      for (const sub of ['tmp', 'msg', 'state', 'corrupt']) await fs.mkdir(join(root, sub), root);
      // The directories must survive a crash too: a durable file in a vanished msg/ is no use.
      await fs.fsyncDir(root);
      // The parent may be one the relay cannot read after dropping to `user:` (privileges.ts created
      // queue_dir as root and synced its parent then); anything else is a real failure.
      await fs.fsyncDir(dirname(root)).catch((e: unknown) => {
        if (errno(e) !== 'EACCES') throw e;
      });
      // Temp files of lock attempts by processes that died mid-way.
      for (const name of await fs.readdir(root)) {
        const m = /^lock\.(?:stale\.)?(\d+)\./.exec(name);
        if (m && !isOwnerAlive({ pid: Number(m[1]) })) await fs.unlink(join(root, name)).catch(() => undefined);
      }
    } catch (e) {
      await lock.release().catch(() => undefined);
      throw SpoolError.from('open', e);
    }
    return new Spool(root, fs, opts.now ?? Date.now, log, lock);
  }

  /** @internal */
  tmpPath(name: string): string {
    return join(this.dir, 'tmp', name);
  }
  /** @internal */
  msgPath(id: string): string {
    return join(this.dir, 'msg', id);
  }
  private statePath(id: string): string {
    return join(this.dir, 'state', `${id}.json`);
  }

  /** @internal */
  assertOpen(): void {
    if (this.closed) throw new SpoolError('spool is closed', 'ECLOSED');
  }

  /** @internal keeps close() waiting for operations in flight */
  track<T>(p: Promise<T>): Promise<T> {
    this.ops.add(p);
    const done = () => {
      this.ops.delete(p);
    };
    p.then(done, done);
    return p;
  }

  /** @internal msg/<id> was just renamed into place with this body (undefined: too big to keep) */
  published(id: string, body: Buffer | undefined): void {
    this.stateless.add(id);
    if (body) this.bodies.put(id, body);
  }

  /** @internal msg/<id> is gone or going: nothing about it may be served from memory */
  forget(id: string): void {
    this.stateless.delete(id);
    this.bodies.delete(id);
  }

  /** @internal a coalescing buffer for a new draft: a spare one, else a fresh one */
  takeBuffer(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
  }

  /** @internal an ended draft's buffer, for the next draft (its bytes are never read again) */
  giveBuffer(b: Buffer): void {
    if (this.spare.length < SPARE_BUFFERS && b.length === CHUNK) this.spare.push(b);
  }

  /** @internal */
  draftEnded(d: FileDraft, tmpName: string): void {
    this.drafts.delete(d);
    this.liveTmp.delete(tmpName);
  }

  private serial(id: string, fn: () => Promise<void>): Promise<void> {
    const prev = this.chains.get(id) ?? Promise.resolve();
    const p = prev.then(fn);
    const tail = p.catch(() => undefined);
    this.chains.set(id, tail);
    void tail.then(() => {
      if (this.chains.get(id) === tail) this.chains.delete(id);
    });
    return this.track(p);
  }

  private checkId(id: string): void {
    // Ids become file names: anything else could escape the spool directory.
    if (!isQueueId(id)) throw new SpoolError(`invalid queue id ${JSON.stringify(id)}`, 'EINVAL');
  }

  async begin(envelope: Envelope): Promise<Draft> {
    this.assertOpen();
    const problem = envelopeProblem(envelope);
    // Refuse here what recovery would quarantine later.
    if (problem) throw new SpoolError(problem, 'EINVAL');
    const id = this.ids.next(this.now());
    const tmpName = `${id}.msg`;
    const envelopeJson = JSON.stringify(envelope);
    this.liveTmp.add(tmpName);
    let h: SpoolHandle;
    try {
      h = await this.fs.open(this.tmpPath(tmpName), 'wx');
    } catch (e) {
      this.liveTmp.delete(tmpName);
      throw SpoolError.from('create', e);
    }
    const d = new FileDraft(id, this, this.fs, h, tmpName, envelopeJson);
    this.drafts.add(d);
    await d.start(encodeHeader(envelope, envelopeJson));
    return d;
  }

  enqueue(envelope: Envelope, body: Buffer): Promise<QueuedMessage> {
    // Tracked as a whole, so a close() that arrives mid-way lets it finish instead of failing it.
    return this.track(this.enqueueNow(envelope, body));
  }

  private async enqueueNow(envelope: Envelope, body: Buffer): Promise<QueuedMessage> {
    const d = await this.begin(envelope);
    try {
      await d.write(body);
      return await d.commit();
    } catch (e) {
      await d.abort();
      throw e;
    }
  }

  /** The message bytes (without the header line), from memory when just committed, else streamed from disk. */
  openBody(id: string): Readable {
    const fs = this.fs;
    const path = this.msgPath(id);
    const checkId = () => this.checkId(id);
    const cached = () => this.bodies.get(id);
    async function* chunks(): AsyncGenerator<Buffer> {
      checkId();
      // Looked up when reading starts, as the file would be opened then.
      const body = cached();
      if (body) {
        // Copies, in the file path's chunk size: the consumer may keep or change what it was given.
        for (let off = 0; off < body.length; off += CHUNK) yield Buffer.from(body.subarray(off, off + CHUNK));
        return;
      }
      let h: SpoolHandle;
      try {
        h = await fs.open(path, 'r');
      } catch (e) {
        throw SpoolError.from(`open body ${id}`, e);
      }
      try {
        let pos = 0;
        let inHeader = true;
        for (;;) {
          // A fresh buffer per chunk: the consumer may keep the chunks it was given.
          const buf = Buffer.allocUnsafe(CHUNK);
          const n = await fs.read(h, buf, 0, CHUNK, pos);
          if (n === 0) break;
          pos += n;
          let chunk = buf.subarray(0, n);
          if (inHeader) {
            const nl = chunk.indexOf(0x0a);
            if (nl < 0) {
              if (pos > MAX_HEADER) break;
              continue;
            }
            inHeader = false;
            chunk = chunk.subarray(nl + 1);
            if (chunk.length === 0) continue;
          }
          yield chunk;
        }
        if (inHeader) throw new SpoolError(`message ${id} has no header line`, 'ECORRUPT');
      } catch (e) {
        throw SpoolError.from(`read body ${id}`, e);
      } finally {
        await fs.close(h).catch(() => undefined);
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  /** At most `max` octets from the start of the body (DSN composition: the header, or a small message whole). */
  async readBodyPrefix(id: string, max: number): Promise<Buffer> {
    const body = isQueueId(id) ? this.bodies.get(id) : undefined;
    if (body) return Buffer.from(body.subarray(0, Math.max(0, max)));
    const parts: Buffer[] = [];
    let n = 0;
    const stream = this.openBody(id);
    try {
      for await (const c of stream as AsyncIterable<Buffer>) {
        parts.push(c.length > max - n ? c.subarray(0, max - n) : c);
        n += Math.min(c.length, max - n);
        if (n >= max) break;
      }
    } finally {
      stream.destroy();
    }
    return Buffer.concat(parts, n);
  }

  /** The whole body in memory: for small messages only (DSN composition). */
  async readBody(id: string): Promise<Buffer> {
    this.checkId(id);
    const body = this.bodies.get(id);
    if (body) return Buffer.from(body);
    let buf: Buffer;
    try {
      buf = await this.fs.readFile(this.msgPath(id));
    } catch (e) {
      throw SpoolError.from(`read body ${id}`, e);
    }
    const nl = buf.indexOf(0x0a);
    if (nl < 0) throw new SpoolError(`message ${id} has no header line`, 'ECORRUPT');
    return buf.subarray(nl + 1);
  }

  /** Durably replaces the recipient states of a message; removes the message when all are delivered/failed. */
  updateRecipients(id: string, recipients: RecipientStatus[]): Promise<void> {
    try {
      this.assertOpen();
      this.checkId(id);
      const problem = recipientsProblem(id, recipients);
      if (problem) throw new SpoolError(problem, 'EINVAL');
    } catch (e) {
      return Promise.reject(e);
    }
    // Copied now: the caller may change its objects while this waits its turn.
    const copy = JSON.parse(JSON.stringify(recipients)) as RecipientStatus[];
    return this.serial(id, async () => {
      if (copy.every(isDone)) {
        await this.removeNow(id, true);
        return;
      }
      const held = this.recovered ? this.heldIds.has(id) : await this.heldOnDisk(id);
      await this.writeState(id, held, copy);
    });
  }

  /** Holds (or releases) a message; recovery reports it with `held: true`. */
  setHeld(id: string, held: boolean): Promise<void> {
    try {
      this.assertOpen();
      this.checkId(id);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(id, async () => {
      const header = await this.readHeader(id);
      const current = await this.readState(id, header.envelope);
      await this.writeState(id, held, current?.recipients ?? initialRecipients(header.envelope));
      if (held) this.heldIds.add(id);
      else this.heldIds.delete(id);
    });
  }

  /** Removes a message whatever its recipients' states (operator delete). Rejects with ENOENT if there is none. */
  remove(id: string): Promise<void> {
    try {
      this.assertOpen();
      this.checkId(id);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(id, () => this.removeNow(id, false));
  }

  private async removeNow(id: string, missingOk: boolean): Promise<void> {
    // Runs in the message's serial chain, so no writeState of it runs meanwhile.
    const hasState = !this.stateless.has(id);
    this.bodies.delete(id);
    try {
      await this.fs.unlink(this.msgPath(id));
    } catch (e) {
      if (!(missingOk && errno(e) === 'ENOENT')) throw SpoolError.from(`remove ${id}`, e);
    }
    try {
      await this.msgSync.sync();
      // msg/<id> is gone for good; a state file that survives a crash now is an orphan, not a message.
      if (hasState) await ignoreENOENT(this.fs.unlink(this.statePath(id)));
    } catch (e) {
      throw SpoolError.from(`remove ${id}`, e);
    }
    this.stateless.delete(id);
    this.heldIds.delete(id);
  }

  private async heldOnDisk(id: string): Promise<boolean> {
    try {
      const header = await this.readHeader(id);
      return (await this.readState(id, header.envelope))?.held ?? false;
    } catch {
      return false;
    }
  }

  private async writeState(id: string, held: boolean, recipients: RecipientStatus[]): Promise<void> {
    // Before anything is created: from here on state/<id>.json may exist (removeNow unlinks it).
    this.stateless.delete(id);
    const tmpName = `${id}.${++this.tmpSeq}.state`;
    const tmp = this.tmpPath(tmpName);
    const data = encodeState(held, recipients);
    this.liveTmp.add(tmpName);
    let h: SpoolHandle | undefined;
    let step = 'create state';
    try {
      h = await this.fs.open(tmp, 'wx');
      step = 'write state';
      await writeAll(this.fs, h, data, 0, data.length, 0);
      step = 'fsync state';
      await this.fs.fsync(h);
      step = 'close state';
      const hh = h;
      h = undefined;
      await this.fs.close(hh);
      step = 'rename state';
      await this.fs.rename(tmp, this.statePath(id));
    } catch (e) {
      if (h) await this.fs.close(h).catch(() => undefined);
      await this.fs.unlink(tmp).catch(() => undefined);
      throw SpoolError.from(step, e);
    } finally {
      this.liveTmp.delete(tmpName);
    }
    try {
      await this.stateSync.sync();
    } catch (e) {
      // The new state is in place but maybe not durable; the caller keeps it in memory and retries.
      throw SpoolError.from('state directory fsync', e);
    }
  }

  private async readHeader(id: string): Promise<ParsedHeader> {
    try {
      return await this.readHeaderAt(this.msgPath(id));
    } catch (e) {
      if (e instanceof CorruptError) throw new SpoolError(`message ${id}: ${e.message}`, 'ECORRUPT', { cause: e });
      throw SpoolError.from(`read ${id}`, e);
    }
  }

  /** Throws CorruptError for a file that is not a valid message, fs errors otherwise. */
  private async readHeaderAt(path: string, intern?: Interner): Promise<ParsedHeader> {
    const h = await this.fs.open(path, 'r');
    try {
      const size = await this.fs.size(h);
      let buf = Buffer.allocUnsafe(Math.min(size, 1024));
      let len = 0;
      for (;;) {
        if (len === buf.length) {
          if (len >= size || len >= MAX_HEADER) break;
          const bigger = Buffer.allocUnsafe(Math.min(size, buf.length * 4, MAX_HEADER));
          buf.copy(bigger, 0, 0, len);
          buf = bigger;
        }
        const n = await this.fs.read(h, buf, len, buf.length - len, len);
        if (n === 0) break;
        const nl = buf.indexOf(0x0a, len);
        len += n;
        if (nl >= 0) break;
      }
      return parseHeader(buf.subarray(0, len), size, intern);
    } finally {
      await this.fs.close(h).catch(() => undefined);
    }
  }

  /** undefined when there is no state file; throws CorruptError for a bad one. */
  private async readState(id: string, envelope: Envelope): Promise<ReturnType<typeof parseState> | undefined> {
    let buf: Buffer;
    try {
      buf = await this.fs.readFile(this.statePath(id));
    } catch (e) {
      if (errno(e) === 'ENOENT') return undefined;
      throw SpoolError.from(`read state ${id}`, e);
    }
    try {
      return parseState(buf, envelope);
    } catch (e) {
      throw new SpoolError(`state of ${id}: ${(e as Error).message}`, 'ECORRUPT', { cause: e });
    }
  }

  /** Moves `<sub>/<name>` to corrupt/ without ever overwriting an earlier quarantined file. */
  private async quarantine(sub: string, name: string, reason: string): Promise<void> {
    if (sub === 'msg') this.forget(name);
    const from = join(this.dir, sub, name);
    for (let i = 0; ; i++) {
      const target = join(this.dir, 'corrupt', i === 0 ? name : `${name}.${this.now()}.${i}`);
      try {
        // link + unlink rather than rename: rename would silently replace an existing file.
        await this.fs.link(from, target);
        break;
      } catch (e) {
        if (errno(e) === 'EEXIST' && i < 100) continue;
        if (errno(e) === 'ENOENT') return;
        throw e;
      }
    }
    await this.fs.unlink(from);
    this.log.warn({ file: `${sub}/${name}`, moved_to: 'corrupt/', reason }, 'spool: quarantined a file recovery cannot trust');
  }

  /**
   * Call once after open: cleans tmp/, deletes orphan state files, quarantines
   * corrupt files and returns every queued message with its recipient states,
   * in id (= arrival) order. The caller schedules the pending/deferred ones.
   */
  async recover(): Promise<QueuedMessage[]> {
    this.assertOpen();
    try {
      return await this.track(this.recoverNow());
    } catch (e) {
      throw SpoolError.from('recovery', e);
    }
  }

  private async recoverNow(): Promise<QueuedMessage[]> {
    const fs = this.fs;
    let quarantined = false;
    let finished = false;
    const intern = new Interner();

    for (const name of await fs.readdir(join(this.dir, 'tmp'))) {
      if (this.liveTmp.has(name)) continue;
      await ignoreENOENT(fs.unlink(this.tmpPath(name)));
    }

    const headers = new Map<string, ParsedHeader>();
    const msgNames = (await fs.readdir(join(this.dir, 'msg'))).sort();
    await parallel(msgNames, async (name) => {
      if (!isQueueId(name)) {
        await this.quarantine('msg', name, 'not a queue id');
        quarantined = true;
        return;
      }
      this.ids.floor(name);
      try {
        headers.set(name, await this.readHeaderAt(this.msgPath(name), intern));
      } catch (e) {
        if (errno(e) === 'ENOENT') return;
        if (!(e instanceof CorruptError)) throw e;
        await this.quarantine('msg', name, e.message);
        // Its state goes along: without the message it means nothing, but deleting it as an orphan would lose evidence.
        await this.quarantine('state', `${name}.json`, `state of quarantined message ${name}`);
        quarantined = true;
      }
    });

    const states = new Map<string, ReturnType<typeof parseState>>();
    await parallel(await fs.readdir(join(this.dir, 'state')), async (name) => {
      const id = name.endsWith('.json') ? name.slice(0, -5) : '';
      if (!isQueueId(id)) {
        await this.quarantine('state', name, 'not a state file name');
        quarantined = true;
        return;
      }
      const header = headers.get(id);
      if (!header) {
        // The message was finished (msg/ is removed first) or never existed: nothing to keep.
        await ignoreENOENT(fs.unlink(this.statePath(id)));
        return;
      }
      let buf: Buffer;
      try {
        buf = await fs.readFile(this.statePath(id));
      } catch (e) {
        if (errno(e) === 'ENOENT') return;
        throw e;
      }
      try {
        states.set(id, parseState(buf, header.envelope, intern));
      } catch (e) {
        if (!(e instanceof CorruptError)) throw e;
        // The message is intact: deliver it to everyone again rather than lose anyone.
        await this.quarantine('state', name, `${e.message}; all recipients of ${id} are pending again`);
        quarantined = true;
      }
    });

    const out: QueuedMessage[] = [];
    for (const id of msgNames) {
      const header = headers.get(id);
      if (!header) continue;
      const state = states.get(id);
      const recipients = state?.recipients ?? initialRecipients(header.envelope);
      if (recipients.every(isDone)) {
        // Not written by this spool (completion removes the message), but the meaning is clear.
        this.forget(id);
        await ignoreENOENT(fs.unlink(this.msgPath(id)));
        await ignoreENOENT(fs.unlink(this.statePath(id)));
        finished = true;
        continue;
      }
      const m: QueuedMessage = { id, envelope: header.envelope, size: header.size, ...(header.body ? { body: header.body } : {}), recipients };
      if (state?.held) {
        m.held = true;
        this.heldIds.add(id);
      }
      out.push(m);
    }

    if (quarantined) {
      await fs.fsyncDir(join(this.dir, 'corrupt'));
      await fs.fsyncDir(join(this.dir, 'state'));
    }
    if (quarantined || finished) await fs.fsyncDir(join(this.dir, 'msg'));
    this.recovered = true;
    return out;
  }

  /**
   * Refuses new work, waits for operations in flight (commits, updates), drops
   * drafts nobody is committing (no 250 was given for them), releases the lock.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.ops.size > 0) await Promise.allSettled([...this.ops]);
    for (const d of [...this.drafts]) await d.abort();
    this.bodies.clear();
    this.stateless.clear();
    await this.lock.release().catch((e) => this.log.warn({ err: String(e) }, 'spool: could not release lock'));
  }
}
