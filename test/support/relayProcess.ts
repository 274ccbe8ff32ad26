/**
 * The relay as a real child process (`bin/dane-relay.js serve`), and the CLI run as a real
 * process, for tests of operator surfaces (queue control, metrics). Needs ensureBuilt().
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { CLI } from './build.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

export class RelayProcess {
  child?: ChildProcess;
  output = '';
  constructor(readonly configFile: string) {}

  /** `as`: run as another user (the tests run as root, for whom no file is read-only) */
  async start(env: Record<string, string> = {}, as?: { uid: number; gid: number }): Promise<void> {
    this.output = '';
    this.child = spawn(process.execPath, [CLI, 'serve', '--config', this.configFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env }, ...as });
    this.child.stdout!.on('data', (d) => { this.output += d; });
    this.child.stderr!.on('data', (d) => { this.output += d; });
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (this.output.includes('dane-relay started')) return;
      if (this.child.exitCode !== null) throw new Error(`relay exited: ${this.output}`);
      await sleep(20);
    }
    throw new Error(`relay did not start: ${this.output}`);
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  stop(sig: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const c = this.child;
    return new Promise((resolve) => {
      if (!c || c.exitCode !== null || c.signalCode !== null) return resolve(c?.exitCode ?? null);
      c.once('exit', (code) => resolve(code));
      c.kill(sig);
    });
  }
}

export interface CliResult { code: number; stdout: string; stderr: string }

/** Runs `dane-relay ARGS…` as its own process. */
export function runCli(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
