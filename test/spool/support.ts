/** Shared helpers for the spool tests: temp dirs, envelopes, and a fault-injecting SpoolFs. */
import { mkdtempSync, rmSync, readdirSync, statSync, existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { afterEach } from 'vitest';
import { nodeSpoolFs, type SpoolFs, type SpoolHandle } from '../../src/spool/fs.js';
import { Spool } from '../../src/spool/spool.js';
import type { Envelope } from '../../src/spool/types.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function makeTmpDir(prefix = 'spool-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function envelope(over: Partial<Envelope> = {}): Envelope {
  return {
    from: 'sender@example.org',
    recipients: ['a@example.com', 'b@example.net'],
    smtputf8: false,
    eightBit: true,
    client: { address: '192.0.2.10', name: 'client.example.org' },
    received: 1_700_000_000_000,
    kind: 'normal',
    ...over,
  };
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export function ls(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

export type Op = keyof SpoolFs;

export interface FsEvent {
  op: Op | 'resolved';
  path: string;
  phase: 'start' | 'end' | 'error';
  seq: number;
}

/**
 * The real fs with a log of every call, optional delays, hooks run before an
 * operation (to snapshot the disk "just before" a step) and one-shot failures.
 * Handle-based calls are logged with the path the handle was opened with.
 */
export class FaultFs implements SpoolFs {
  readonly events: FsEvent[] = [];
  private seq = 0;
  private readonly paths = new WeakMap<SpoolHandle, string>();
  private faults: { op: Op; code: string; match: (path: string) => boolean }[] = [];
  private hooks: { op: Op; match: (path: string) => boolean; fn: () => void | Promise<void> }[] = [];
  delays: Partial<Record<Op, number>> = {};

  constructor(private readonly inner: SpoolFs = nodeSpoolFs) {}

  /** the next `op` on a path matching `match` fails with `code` (like the kernel would) */
  failNext(op: Op, code: string, match: (path: string) => boolean = () => true): void {
    this.faults.push({ op, code, match });
  }

  /** runs `fn` right before the next `op` on a matching path */
  before(op: Op, match: (path: string) => boolean, fn: () => void | Promise<void>): void {
    this.hooks.push({ op, match, fn });
  }

  mark(op: FsEvent['op'], path: string): void {
    this.events.push({ op, path, phase: 'end', seq: this.seq++ });
  }

  count(op: Op, match: (path: string) => boolean = () => true): number {
    return this.events.filter((e) => e.op === op && e.phase === 'end' && match(e.path)).length;
  }

  private async run<T>(op: Op, path: string, fn: () => Promise<T>): Promise<T> {
    const hook = this.hooks.findIndex((h) => h.op === op && h.match(path));
    if (hook >= 0) await this.hooks.splice(hook, 1)[0]!.fn();
    this.events.push({ op, path, phase: 'start', seq: this.seq++ });
    const fault = this.faults.findIndex((f) => f.op === op && f.match(path));
    if (fault >= 0) {
      const { code } = this.faults.splice(fault, 1)[0]!;
      this.events.push({ op, path, phase: 'error', seq: this.seq++ });
      throw Object.assign(new Error(`${code}: injected ${op} failure, '${path}'`), { code });
    }
    const delay = this.delays[op];
    if (delay) await new Promise((r) => setTimeout(r, delay));
    try {
      const r = await fn();
      this.events.push({ op, path, phase: 'end', seq: this.seq++ });
      return r;
    } catch (e) {
      this.events.push({ op, path, phase: 'error', seq: this.seq++ });
      throw e;
    }
  }

  private p(h: SpoolHandle): string {
    return this.paths.get(h) ?? '?';
  }

  mkdir(path: string, root?: string) {
    return this.run('mkdir', path, () => this.inner.mkdir(path, root));
  }
  async open(path: string, flags: 'wx' | 'r') {
    const h = await this.run('open', path, () => this.inner.open(path, flags));
    this.paths.set(h, path);
    return h;
  }
  write(h: SpoolHandle, buf: Buffer, offset: number, length: number, position: number) {
    return this.run('write', this.p(h), () => this.inner.write(h, buf, offset, length, position));
  }
  read(h: SpoolHandle, buf: Buffer, offset: number, length: number, position: number) {
    return this.run('read', this.p(h), () => this.inner.read(h, buf, offset, length, position));
  }
  size(h: SpoolHandle) {
    return this.run('size', this.p(h), () => this.inner.size(h));
  }
  fsync(h: SpoolHandle) {
    return this.run('fsync', this.p(h), () => this.inner.fsync(h));
  }
  close(h: SpoolHandle) {
    return this.run('close', this.p(h), () => this.inner.close(h));
  }
  rename(from: string, to: string) {
    return this.run('rename', to, () => this.inner.rename(from, to));
  }
  link(from: string, to: string) {
    return this.run('link', to, () => this.inner.link(from, to));
  }
  unlink(path: string) {
    return this.run('unlink', path, () => this.inner.unlink(path));
  }
  readdir(path: string) {
    return this.run('readdir', path, () => this.inner.readdir(path));
  }
  readFile(path: string) {
    return this.run('readFile', path, () => this.inner.readFile(path));
  }
  fsyncDir(path: string) {
    return this.run('fsyncDir', path, () => this.inner.fsyncDir(path));
  }
}

export const inDir = (sub: string) => (p: string) => p.includes(`/${sub}/`) || p.endsWith(`/${sub}`);

/**
 * Builds dist/src/spool/*.js for the child-process tests, only when missing or
 * older than the sources. Only the spool is compiled (explicit file list), so
 * work in progress elsewhere in the tree cannot break these tests.
 */
export function ensureBuiltSpool(): string {
  const out = join(ROOT, 'dist', 'src', 'spool', 'spool.js');
  const srcDir = join(ROOT, 'src', 'spool');
  // the spool and what it imports (body facts, DSN parameter checks)
  const sources = [srcDir, join(ROOT, 'src', 'mime')].flatMap((d) =>
    readdirSync(d)
      .filter((f) => f.endsWith('.ts'))
      .map((f) => join(d, f)),
  );
  sources.push(join(ROOT, 'src', 'dsn', 'params.ts'));
  const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
  if (!existsSync(out) || statSync(out).mtimeMs < newest) {
    execFileSync(
      join(ROOT, 'node_modules', '.bin', 'tsc'),
      [
        '--ignoreConfig',
        '--outDir',
        join(ROOT, 'dist'),
        '--rootDir',
        ROOT,
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--target',
        'es2022',
        '--strict',
        '--types',
        'node',
        '--skipLibCheck',
        '--sourceMap',
        join(srcDir, 'spool.ts'),
      ],
      { cwd: ROOT, stdio: 'pipe' },
    );
  }
  return out;
}

export const quiet = { warn(): void {} };

/** Temp dirs and spools that a test file opens, closed and removed after each test. */
export function spoolFixtures(): {
  tmp(): string;
  open(dir: string, opts?: { fs?: SpoolFs; now?: () => number; log?: { warn(obj: object, msg: string): void } }): Promise<Spool>;
} {
  const cleanups: (() => void)[] = [];
  const spools: Spool[] = [];
  afterEach(async () => {
    for (const s of spools.splice(0)) await s.close().catch(() => undefined);
    for (const c of cleanups.splice(0)) c();
  });
  return {
    tmp() {
      const t = makeTmpDir();
      cleanups.push(t.cleanup);
      return t.dir;
    },
    async open(dir, opts = {}) {
      const s = await Spool.open(dir, { fs: opts.fs, now: opts.now, log: opts.log ?? quiet });
      spools.push(s);
      return s;
    },
  };
}
