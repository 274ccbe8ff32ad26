/**
 * /readyz: the relay can take mail only if it can make mail durable and protect it.
 * - spool: a real write + fsync + unlink under `<queue_dir>/tmp/` (where drafts are written;
 *   recovery clears it at start, so a crash mid-probe leaves nothing), and write access to
 *   msg/ and state/ where commits rename to (access(2): EACCES, EROFS; no file is created
 *   there, since a stray file in msg/ would be quarantined as corrupt). Cached for `spoolTtlMs`
 *   so a scraper hammering /readyz does not hammer the disk.
 *   With a shared queue (spool.backend: postgres) the probe is a committed write to the database
 *   instead (`spoolProbe`): /readyz fails while the database is unreachable (issue 16).
 * - selftest: the DNSSEC self-test (DANE-4) passed, when the TLS level relies on DNSSEC. A
 *   failed test is repeated every `selfTestIntervalMs` in the background, a passed one too.
 */
import { access, constants, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { SelfTestResult } from '../dns/selftest.js';
import { createPrivateFile } from '../files/private.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}
export interface ReadyReport {
  ready: boolean;
  checks: Check[];
}

export interface ReadinessOptions {
  queueDir: string;
  spoolTtlMs: number;
  /** undefined: DNSSEC does not matter at this TLS level */
  selfTest?: () => Promise<SelfTestResult>;
  /** the relay's start-up run, so the test is not run twice at start */
  initialSelfTest?: Promise<SelfTestResult>;
  selfTestIntervalMs: number;
  /** shared queue: a committed write to the database, resolving with what it proved; replaces the file probe */
  spoolProbe?: () => Promise<string>;
  /** a stuck disk must not hang /readyz */
  probeTimeoutMs?: number;
}

let probeSeq = 0;

/** Writes, fsyncs and removes a small file in `dir`; rejects with the failing step. */
export async function probeWritable(dir: string): Promise<void> {
  const path = join(dir, `readyz.${process.pid}.${++probeSeq}.probe`);
  let step = 'create';
  // A new file, never through a link: the name is predictable, and a link planted there must not make a root relay truncate its target.
  const h = await createPrivateFile(path).catch((e) => {
    throw Object.assign(new Error(`create ${path}: ${(e as Error).message}`), { code: (e as { code?: string }).code });
  });
  try {
    step = 'write';
    await h.write(Buffer.from('dane-relay readiness probe\n'));
    step = 'fsync';
    await h.sync();
  } catch (e) {
    throw new Error(`${step} ${path}: ${(e as Error).message}`);
  } finally {
    await h.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
  }
}

export class Readiness {
  stopping = false;
  private spool?: { at: number; check: Check };
  private spoolRun?: Promise<Check>;
  private self?: { at: number; check: Check };
  private selfRun?: Promise<void>;

  constructor(private readonly opts: ReadinessOptions) {
    if (opts.selfTest !== undefined || opts.initialSelfTest !== undefined) this.selfRun = this.runSelfTest(opts.initialSelfTest);
  }

  private async runSelfTest(p?: Promise<SelfTestResult>): Promise<void> {
    let check: Check;
    try {
      const r = await (p ?? this.opts.selfTest!());
      check = { name: 'selftest', ok: r.ok, detail: r.ok ? `DNSSEC self-test passed (${r.detail})` : `DNSSEC self-test failed: ${r.detail}` };
    } catch (e) {
      check = { name: 'selftest', ok: false, detail: `DNSSEC self-test failed: ${(e as Error).message}` };
    }
    this.self = { at: Date.now(), check };
    this.selfRun = undefined;
  }

  private selfCheck(): Check {
    if (!this.opts.selfTest && !this.opts.initialSelfTest) return { name: 'selftest', ok: true, detail: 'not required at this TLS level' };
    if (this.self && Date.now() - this.self.at >= this.opts.selfTestIntervalMs && !this.selfRun && this.opts.selfTest) {
      this.selfRun = this.runSelfTest();
    }
    return this.self?.check ?? { name: 'selftest', ok: false, detail: 'DNSSEC self-test still running' };
  }

  private async spoolCheck(): Promise<Check> {
    if (this.spool && Date.now() - this.spool.at < this.opts.spoolTtlMs) return this.spool.check;
    this.spoolRun ??= (async () => {
      const dir = join(this.opts.queueDir, 'tmp');
      let check: Check;
      let timer: NodeJS.Timeout | undefined;
      const probe = this.opts.spoolProbe;
      try {
        const proved = await Promise.race([
          probe
            ? probe()
            : (async () => {
                for (const sub of ['msg', 'state']) {
                  const d = join(this.opts.queueDir, sub);
                  await access(d, constants.W_OK | constants.X_OK).catch((e) => {
                    throw new Error(`${d}: ${(e as Error).message}`);
                  });
                }
                await probeWritable(dir);
                return `${dir} writable (write+fsync+unlink), msg/ and state/ writable`;
              })(),
          new Promise<never>((_, rej) => {
            timer = setTimeout(
              () => rej(new Error(`no answer from the ${probe ? 'queue database' : 'disk'} within ${this.opts.probeTimeoutMs ?? 5000} ms`)),
              this.opts.probeTimeoutMs ?? 5000,
            );
          }),
        ]);
        check = { name: 'spool', ok: true, detail: proved };
      } catch (e) {
        check = { name: 'spool', ok: false, detail: `${probe ? 'queue database not writable' : 'spool not writable'}: ${(e as Error).message}` };
      } finally {
        clearTimeout(timer);
      }
      this.spool = { at: Date.now(), check };
      this.spoolRun = undefined;
      return check;
    })();
    return this.spoolRun;
  }

  async check(): Promise<ReadyReport> {
    const checks = [await this.spoolCheck(), this.selfCheck()];
    if (this.stopping) checks.push({ name: 'relay', ok: false, detail: 'stopping' });
    return { ready: checks.every((c) => c.ok), checks };
  }

  /** For tests and shutdown: wait for a self-test in flight. */
  async settled(): Promise<void> {
    await this.selfRun;
  }
}
