/**
 * Real crashes: a child process works on the spool and is SIGKILLed at random
 * moments, several times over the same spool. Everything it reported as done
 * (after the promise resolved) must be found by recovery, bodies intact.
 */
import { beforeAll, afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Spool } from '../../src/spool/spool.js';
import { ensureBuiltSpool, ls, makeTmpDir, sha256 } from './support.js';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'crash-child.mjs');
let modulePath = '';
const t = makeTmpDir('spool-crash-');
beforeAll(() => {
  modulePath = ensureBuiltSpool();
}, 120_000);
afterAll(() => t.cleanup());

/** Runs the child until it has worked for `ms` after recovering, then kills it hard. */
function runAndKill(dir: string, ms: number): Promise<{ lines: string[]; ready: boolean; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [FIXTURE, dir, modulePath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stderr = '';
    let ready = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      if (!ready && out.includes('ready ')) {
        ready = true;
        setTimeout(() => child.kill('SIGKILL'), ms);
      }
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
    });
    // safety net: a child that never gets ready is killed too (and the test fails on `ready`)
    const guard = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('error', reject);
    child.on('exit', () => {
      clearTimeout(guard);
      // the last line may be cut off by the kill: only complete lines were reported
      resolve({ lines: out.split('\n').slice(0, -1), ready, stderr });
    });
  });
}

describe('crash safety', () => {
  it('after each SIGKILL, recovery has every reported message intact and every reported state or newer', async () => {
    const dir = join(t.dir, 'spool');
    const queued = new Map<string, string>(); // id → body hash
    const minAttempts = new Map<string, number>();
    const completing = new Set<string>();
    const done = new Set<string>();
    const verified = new Set<string>();
    let reports = 0;

    for (let round = 0; round < 5; round++) {
      const run = await runAndKill(dir, 150 + Math.floor(Math.random() * 500));
      expect(run.ready, `child did not start: ${run.stderr}`).toBe(true);
      for (const line of run.lines) {
        const [kind, id, arg] = line.split(' ');
        if (kind === 'q') queued.set(id!, arg!);
        else if (kind === 'u') minAttempts.set(id!, Math.max(Number(arg), minAttempts.get(id!) ?? 0));
        else if (kind === 'c') completing.add(id!);
        else if (kind === 'd') done.add(id!);
        if (kind !== 'ready') reports++;
      }

      // The dead child's lock is stale: opening must take it over.
      const spool = await Spool.open(dir, { log: { warn() {} } });
      try {
        const byId = new Map((await spool.recover()).map((m) => [m.id, m]));
        for (const [id, hash] of queued) {
          if (done.has(id)) {
            expect(byId.has(id), `finished message ${id} came back`).toBe(false);
            continue;
          }
          const m = byId.get(id);
          if (!m && completing.has(id)) continue; // completion was under way at the kill
          expect(m, `reported message ${id} lost in round ${round}`).toBeDefined();
          // msg files are immutable, so each body is hashed once, in the round after it was reported
          if (!verified.has(id)) {
            const body = await spool.readBody(id);
            expect(sha256(body), `body of ${id}`).toBe(hash);
            expect(m!.size).toBe(body.length);
            verified.add(id);
          }
          const a = m!.recipients.find((r) => r.address === 'a@example.com')!;
          expect(a.attempts, `state of ${id} went back in time`).toBeGreaterThanOrEqual(minAttempts.get(id) ?? 0);
          // never a mix: a recorded update always has b delivered alongside a's attempts
          if (a.attempts > 0) expect(m!.recipients.find((r) => r.address === 'b@example.net')!.state).toBe('delivered');
        }
        expect(ls(join(dir, 'tmp'))).toEqual([]);
        expect(ls(join(dir, 'corrupt'))).toEqual([]);
      } finally {
        await spool.close();
      }
    }
    // the runs did real work, including updates and completions
    expect(queued.size).toBeGreaterThan(20);
    expect(minAttempts.size).toBeGreaterThan(0);
    expect(done.size).toBeGreaterThan(0);
    expect(reports).toBeGreaterThan(queued.size);
  }, 120_000);
});
