/**
 * The relay as a real child process (the compiled CLI), for tests that kill it (SIGKILL under
 * load, SIGTERM, restarts on the same spool) and tests of operator surfaces (queue control,
 * metrics); and the CLI run as a real process. `ensureBuilt()` (./build.ts) first.
 */
import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { Writable } from 'node:stream';
import { CLI, launcherNodeFlags } from './build.js';

/**
 * A port that was free a moment ago on `host` (the relay binds it next).
 *
 * Chosen at random *below* the kernel's ephemeral range (ip_local_port_range), never with
 * listen(0): the kernel hands ephemeral ports to every `listen(0)` and every outgoing connect()
 * of every test running at the same time, so a port taken that way and closed again could be
 * given to someone else before the relay binds it. Below the range only another freePort()
 * caller can pick the same number (about 1 in 10,000 per concurrent call), and the bind below
 * proves it is free at this moment.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [low] = ephemeralRange();
  const floor = 10_000;
  for (let tries = 0; tries < 200; tries++) {
    const port = low > floor + 1000 ? floor + Math.floor(Math.random() * (low - floor)) : 0;
    const s = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      s.once('error', () => resolve(false));
      s.listen({ port, host, exclusive: true }, () => resolve(true));
    });
    if (!bound) continue;
    const got = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    return got;
  }
  throw new Error(`freePort: no free port below ${low} on ${host} after 200 tries`);
}

/** The kernel's ephemeral port range; Linux's default when it cannot be read. */
function ephemeralRange(): [number, number] {
  try {
    const [a, b] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (a && b) return [a, b];
  } catch {
    // not Linux, or /proc not mounted: the default below
  }
  return [32768, 60999];
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let clockTicks: number | undefined;
/** CPU time (user + system) a process has used so far, in ms (Linux /proc/PID/stat), or undefined. */
export function cpuMsOf(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // fields after "(comm)": state is field 3, utime 14, stime 15
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / clockTicks;
  } catch {
    return undefined;
  }
}

/** How much CPU time a start may take before it counts as stuck (recovering a large spool included). */
const START_CPU_MS = 15_000;

export class RelayProcess {
  child?: ChildProcess;
  output = '';
  /** keep at most this much of stdout/stderr (a long soak at info level writes a lot) */
  maxOutput = 1 << 20;
  /** `port`: the SMTP listen port, when known: an open port also says "started" (quiet log levels) */
  constructor(
    readonly configFile: string,
    readonly port?: number,
  ) {}

  /** `prefix`: a command the relay is started under (e.g. ./modes.ts's setpriv, so file modes bind root too) */
  /**
   * Resolves once the relay has started; rejects if it exits (or is killed) first. No wall-clock bound: on
   * a machine loaded many times over, loading the relay's modules alone outlasted the 15 s this used to
   * allow (a relay that never starts is caught by the test's own timeout).
   */
  async start(env: Record<string, string> = {}, prefix: string[] = []): Promise<void> {
    const child = this.launch(env, prefix);
    // Bounded by the relay's CPU time, not the wall clock: on a busy machine a restart that recovers thousands of
    // spooled messages took over 15 s of wall time (crash.test.ts: "relay did not start"), using a fraction of that.
    // A relay that waits on nothing but never listens ends at the test's own timeout.
    for (;;) {
      // the start line is logged at info; at a quieter log level the open port says it
      if (this.output.includes('dane-relay started') || (this.port !== undefined && (await listening(this.port)))) return;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`relay exited (${child.exitCode ?? child.signalCode}): ${this.output}`);
      const cpu = cpuMsOf(child.pid) ?? 0;
      if (cpu > START_CPU_MS) {
        await this.kill('SIGKILL'); // a failed start leaves no relay behind
        throw new Error(`relay did not start after ${Math.round(cpu)} ms of CPU time: ${this.output}`);
      }
      await sleep(10);
    }
  }

  /** Spawns the relay without waiting for it to listen (to kill it during start-up and recovery). */
  launch(env: Record<string, string> = {}, prefix: string[] = []): ChildProcess {
    this.output = '';
    const argv = [...prefix, process.execPath, ...launcherNodeFlags(), CLI, 'serve', '--config', this.configFile];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    this.child = child;
    // A test that fails or times out between start and stop must not leave a relay running after its worker exits
    // (one left from a failed crash.test.ts ran on for minutes, competing for the CPU).
    const reap = () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    process.once('exit', reap);
    child.once('exit', () => process.off('exit', reap));
    const keep = (d: Buffer) => {
      this.output += d;
      if (this.output.length > this.maxOutput) this.output = this.output.slice(-this.maxOutput / 2);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    return child;
  }

  get running(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Resident set size of the running process in bytes (Linux /proc), undefined when not running. */
  rss(): number | undefined {
    const pid = this.child?.pid;
    if (!pid || this.child?.exitCode !== null) return undefined;
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : undefined;
    } catch {
      return undefined;
    }
  }

  /** Sends `sig` and resolves with the exit code once the process is gone. */
  kill(sig: NodeJS.Signals): Promise<number | null> {
    const c = this.child;
    return new Promise((resolve) => {
      if (!c || c.exitCode !== null || c.signalCode !== null) return resolve(c?.exitCode ?? null);
      c.once('exit', (code) => resolve(code));
      c.kill(sig);
    });
  }

  /** SIGTERM (or `sig`) and wait for the exit */
  stop(sig: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    return this.kill(sig);
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI's `main` (src/cli.ts: argv, stdout, stderr → exit code) or one of its command functions in this
 * process, with the same result shape as `runCli`: for tests that make many calls in a row, where a Node start-up
 * per call (2-5 s of wall time on a busy 2-core machine) would take them past their time limit.
 */
export async function runCliIn(
  main: (argv: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream) => Promise<number>,
  argv: string[],
): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const sink = (f: (s: string) => void) =>
    new Writable({
      write: (c, _e, cb) => {
        f(String(c));
        cb();
      },
    });
  const code = await main(
    argv,
    sink((s) => {
      stdout += s;
    }),
    sink((s) => {
      stderr += s;
    }),
  );
  return { code, stdout, stderr };
}

/** Runs `dane-relay ARGS…` as its own process. */
export function runCli(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
