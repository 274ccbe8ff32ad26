/**
 * A real Unbound (Debian package `unbound`) on a random loopback port, with a
 * private trust anchor and the test's signed zones as a stub zone for ".":
 * an independent validator for differential tests and the benchmark.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { findTool } from './tools.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Unbound {
  server: string;
  port: number;
  close(): Promise<void>;
}

export function unboundAvailable(): boolean {
  const bin = findTool('unbound');
  return bin !== undefined && spawnSync(bin, ['-V'], { encoding: 'utf8' }).status === 0;
}

async function freeUdpPort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function startUnbound(o: { anchors: string; upstreamPort: number; cacheMb?: number }): Promise<Unbound> {
  const dir = mkdtempSync(join(tmpdir(), 'dane-relay-unbound-'));
  writeFileSync(join(dir, 'anchors.key'), o.anchors);
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freeUdpPort();
    writeFileSync(
      join(dir, 'unbound.conf'),
      `server:
  interface: 127.0.0.1
  port: ${port}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "${dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 0
  num-threads: 1
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  trust-anchor-file: "${join(dir, 'anchors.key')}"
  trust-anchor-signaling: no
  root-key-sentinel: no
  qname-minimisation: no
  module-config: "validator iterator"
  local-zone: "test." nodefault
  msg-cache-size: ${o.cacheMb ?? 32}m
  rrset-cache-size: ${o.cacheMb ?? 32}m
stub-zone:
  name: "."
  stub-addr: 127.0.0.1@${o.upstreamPort}
`,
    );
    const child: ChildProcess = spawn(findTool('unbound') ?? 'unbound', ['-d', '-c', join(dir, 'unbound.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const ready = await waitReady(port, child);
    if (!ready) {
      child.kill();
      if (/address already in use/i.test(stderr)) continue;
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`unbound did not start: ${stderr.trim()}`);
    }
    return {
      server: `127.0.0.1:${port}`,
      port,
      close: async () => {
        if (child.exitCode === null) {
          const done = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          await done;
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  throw new Error('unbound: no free port');
}

/** Unbound answers once it is listening: poll with a query for "." SOA. */
async function waitReady(port: number, child: ChildProcess): Promise<boolean> {
  const q = Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1]);
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) return false;
    const ok = await new Promise<boolean>((resolve) => {
      const s = dgram.createSocket('udp4');
      const timer = setTimeout(() => {
        s.close();
        resolve(false);
      }, 200);
      s.on('message', () => {
        clearTimeout(timer);
        s.close();
        resolve(true);
      });
      s.on('error', () => {
        clearTimeout(timer);
        s.close();
        resolve(false);
      });
      s.send(q, port, '127.0.0.1');
    });
    if (ok) return true;
  }
  return false;
}
