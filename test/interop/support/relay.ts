/**
 * Our relay as a real process from dist/ (`bin/dane-relay.js serve`), configured with the
 * contract's keys only, pointed at the private Unbound; plus `swaks` submission and the
 * `dane-relay queue list --json` view the cases read their deferrals from.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { own } from './reaper.js';
import { launcherNodeFlags } from '../../support/build.js';

/** The repository root, from test/interop/support or from its compiled copy under dist/. */
function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json')) || d.endsWith('/dist')) {
    const up = dirname(d);
    if (up === d) throw new Error('repository root not found');
    d = up;
  }
  return d;
}

/** bin/dane-relay.js runs dist/src/cli.js: callers build first (npm run build, or ensureBuilt in tests). */
export const CLI = join(repoRoot(), 'bin', 'dane-relay.js');

const run = promisify(execFile);

export type DnsMode = 'trust-ad' | 'validate';

export interface RelayOptions {
  /** the Unbound "ip:port" (trust-ad) */
  resolver: string;
  /** trust-ad now; validate when the in-process validator lands (then trustAnchorFile is used) */
  mode?: DnsMode;
  trustAnchorFile?: string;
  listen: string;
  hostname?: string;
  /** extra YAML appended verbatim (top-level sections not otherwise written here) */
  extraYaml?: string;
  logLevel?: string;
  /** production defaults instead of the interop's long backoff (benchmarks) */
  queueYaml?: string;
  /** delivery.per_destination (default: the relay's own default) */
  perDestination?: number;
}

export interface RelayProcessHandle {
  host: string;
  port: number;
  configFile: string;
  dir: string;
  child: ChildProcess;
  output(): string;
  /** run `dane-relay <args> --config <this relay's config>` */
  cli(...args: string[]): Promise<{ stdout: string; stderr: string; code: number }>;
  /** the CLI with its clock shifted by libfaketime (`faketime -f SPEC`, e.g. "+1d"): a closed day without waiting for midnight */
  cliAt(spec: string, ...args: string[]): Promise<{ stdout: string; stderr: string; code: number }>;
  queueList(): Promise<QueueListing>;
  /** SIGTERM and start again on the same config and queue */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface QueueListing {
  messages: {
    id: string;
    envelope: { from: string; to: string[] };
    recipients: { address: string; state: string; attempts: number; lastReason?: string; dsnCode?: string }[];
  }[];
  unreadable: { id: string; reason: string }[];
}

async function runCli(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  const r = await run(cmd, args).catch((e: { stdout?: string; stderr?: string; code?: number }) => ({
    stdout: e.stdout ?? '',
    stderr: e.stderr ?? '',
    code: e.code,
  }));
  return { stdout: r.stdout, stderr: r.stderr, code: (r as { code?: number }).code ?? 0 };
}

export async function startRelay(o: RelayOptions): Promise<RelayProcessHandle> {
  const dir = mkdtempSync(join(tmpdir(), 'dane-relay-interop-'));
  const [host, portStr] = [o.listen.slice(0, o.listen.lastIndexOf(':')), o.listen.slice(o.listen.lastIndexOf(':') + 1)];
  const mode = o.mode ?? 'trust-ad';
  const configFile = join(dir, 'relay.yml');
  writeFileSync(
    configFile,
    [
      `listen: ["${o.listen}"]`,
      `hostname: ${o.hostname ?? 'relay.tst'}`,
      `queue_dir: ${join(dir, 'queue')}`,
      'dns:',
      `  mode: ${mode}`,
      `  resolvers: ["${o.resolver}"]`,
      ...(mode === 'validate' && o.trustAnchorFile ? [`  trust_anchors: ${o.trustAnchorFile}`] : []),
      '  timeout: 3s',
      '  attempts: 2',
      'delivery:',
      '  port: 25',
      '  tls_level: dane',
      ...(o.perDestination ? [`  per_destination: ${o.perDestination}`] : []),
      '  timeouts: { connect: 10s, greeting: 30s, ehlo: 30s, starttls: 30s, mail: 30s, rcpt: 30s, data: 30s, data_block: 60s, data_done: 60s }',
      ...(o.queueYaml !== undefined
        ? [o.queueYaml]
        : [
            'queue:',
            // a verdict stays put during the run: the first attempt's outcome is what the cases read
            '  min_backoff: 1h',
            '  max_backoff: 2h',
            '  run_interval: 200ms',
          ]),
      'log:',
      `  level: ${o.logLevel ?? 'info'}`,
      o.extraYaml ?? '',
    ].join('\n') + '\n',
  );
  let child!: ChildProcess;
  let out = '';
  const kill = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      child.kill('SIGTERM');
    });
  const stop = async () => {
    await kill();
    rmSync(dir, { recursive: true, force: true });
  };
  const launch = async () => {
    child = spawn(process.execPath, [...launcherNodeFlags(CLI), ...nodeFlags(), CLI, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    own(child);
    const mark = out.length;
    child.stdout!.on('data', (d) => {
      out += d;
    });
    child.stderr!.on('data', (d) => {
      out += d;
    });
    const deadline = Date.now() + 20_000;
    while (!out.slice(mark).includes('dane-relay started')) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await stop();
        throw new Error(`relay did not start: ${out.slice(mark)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await launch();
  const handle: RelayProcessHandle = {
    host,
    port: Number(portStr),
    configFile,
    dir,
    child,
    output: () => out,
    cli: (...args: string[]) => runCli(process.execPath, [CLI, ...args, '--config', configFile]),
    cliAt: (spec: string, ...args: string[]) => runCli('faketime', ['-f', spec, process.execPath, CLI, ...args, '--config', configFile]),
    queueList: async () => {
      // exit 1 = some file unreadable (mid-update): the listing is still printed
      const r = await run(process.execPath, [CLI, 'queue', 'list', '--config', configFile, '--json']).catch((e: { stdout?: string }) => ({
        stdout: e.stdout ?? '',
      }));
      return JSON.parse(r.stdout) as QueueListing;
    },
    restart: async () => {
      await kill();
      await launch();
      handle.child = child;
    },
    stop,
  };
  return handle;
}

/** Extra node flags for the relay process (`--cpu-prof` is refused in NODE_OPTIONS): DANE_RELAY_NODE_FLAGS, space-separated. */
function nodeFlags(): string[] {
  return (process.env.DANE_RELAY_NODE_FLAGS ?? '').split(' ').filter(Boolean);
}

/** Submit one message with swaks (a real SMTP client, as an application would). */
export async function swaks(o: { server: string; from: string; to: string; headers?: Record<string, string>; body?: string }): Promise<string> {
  const args = ['--server', o.server, '--from', o.from, '--to', o.to, '--helo', 'app.interop.invalid', '--timeout', '30'];
  for (const [k, v] of Object.entries(o.headers ?? {})) args.push('--add-header', `${k}: ${v}`);
  if (o.body !== undefined) args.push('--body', o.body);
  try {
    const r = await run('swaks', args, { maxBuffer: 16 * 1024 * 1024 });
    return r.stdout;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`swaks to ${o.server} for ${o.to} failed: ${err.stdout ?? ''}${err.stderr ?? err.message}`);
  }
}
