/**
 * /readyz: the relay can take mail only if it can make mail durable and protect it.
 * - spool: a real write + fsync + unlink under `<queue_dir>/tmp/` (where drafts are written;
 *   recovery clears it at start, so a crash mid-probe leaves nothing), and write access to
 *   msg/ and state/ where commits rename to (access(2): EACCES, EROFS; no file is created
 *   there, since a stray file in msg/ would be quarantined as corrupt). Cached for `spoolTtlMs`
 *   so a scraper hammering /readyz does not hammer the disk.
 *   With a shared queue (spool.backend: postgres) the probe is a committed write to the database
 *   instead (`spoolProbe`): /readyz fails while the database is unreachable (issue 16).
 * - selftest: the DNSSEC self-test (DANE-4) passed, whenever DANE is in force *now* (by default or by a
 *   tls_policy entry; a reload can bring it in). The self-test monitor (dns/selftest.ts) repeats the
 *   test itself; /readyz shows its latest result and never waits for a run.
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
  /** the DNSSEC self-test as /readyz sees it; absent: never required */
  selfTest?: SelfTestView;
  /** shared queue: a committed write to the database, resolving with what it proved; replaces the file probe */
  spoolProbe?: () => Promise<string>;
  /** a stuck disk must not hang /readyz */
  probeTimeoutMs?: number;
}

/** What /readyz reads of the DNSSEC self-test (SelfTestMonitor and the relay's DANE-in-force flag). */
export interface SelfTestView {
  /** DNSSEC matters now: DANE by default or by a tls_policy entry (read at every /readyz, a reload changes it) */
  required(): boolean;
  /** the latest completed run, if any */
  latest(): SelfTestResult | undefined;
  /** the run in flight, or the latest, or a first run (none has been made when DANE came in by a reload just now); never rejects */
  current(): Promise<SelfTestResult>;
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

  constructor(private readonly opts: ReadinessOptions) {}

  private selfCheck(): Check {
    const t = this.opts.selfTest;
    if (!t?.required()) return { name: 'selftest', ok: true, detail: 'not required at this TLS level' };
    const r = t.latest();
    if (!r) {
      void t.current();
      return { name: 'selftest', ok: false, detail: 'DNSSEC self-test still running' };
    }
    return { name: 'selftest', ok: r.ok, detail: r.ok ? `DNSSEC self-test passed (${r.detail})` : `DNSSEC self-test failed: ${r.detail}` };
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

  /** For tests and shutdown: wait for the self-test run in flight (or the first one) when it is required. */
  async settled(): Promise<void> {
    if (this.opts.selfTest?.required()) await this.opts.selfTest.current();
  }

  async check(): Promise<ReadyReport> {
    const checks = [await this.spoolCheck(), this.selfCheck()];
    if (this.stopping) checks.push({ name: 'relay', ok: false, detail: 'stopping' });
    return { ready: checks.every((c) => c.ok), checks };
  }
}
