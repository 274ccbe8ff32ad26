/**
 * Daemons started by the interop harness are stopped by their own stop(); this is the backstop for
 * a test process that exits without running it (a timeout, an uncaught error): on exit, SIGTERM
 * every daemon still registered. Only processes this harness started are ever signalled.
 */
import type { ChildProcess } from 'node:child_process';

const live = new Set<ChildProcess>();
let installed = false;

export function own(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (installed) return;
  installed = true;
  process.once('exit', () => {
    for (const c of live) {
      try {
        if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGTERM');
      } catch {
        /* already gone */
      }
    }
  });
}
