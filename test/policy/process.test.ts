/**
 * The real process: SIGHUP reloads the policy files of `dane-relay serve` (a bad file is
 * rejected with its line), and `dane-relay check` / `tlsa` exit with their documented codes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { makeSelfSigned, tlsaData } from '../support/pki.js';
import { cpuMsOf } from '../support/relayProcess.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let dns: TestDns;
let rx: Receiver;
let dir: string;
let config: string;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  const ee = await makeSelfSigned({ dnsNames: ['mx.dest.test'] });
  rx = await startReceiver({ host: '127.0.0.21', tls: { key: ee.keyPem, cert: ee.certPem } });
  dns.addZone({ name: 'dest.test', secure: true });
  dns.add({ name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } }, { name: 'mx.dest.test', type: 'A', data: rx.host });
  dns.add({ name: `_${rx.port}._tcp.mx.dest.test`, type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(ee, 1, 1) } });
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-policy-proc-'));
  writeFileSync(join(dir, 'tls_policy'), 'dest.test dane-only\n');
  writeFileSync(join(dir, 'danefail'), '# none\n');
  config = join(dir, 'relay.yml');
  writeFileSync(
    config,
    `listen: ["127.0.0.1:0"]\nhostname: relay.test\nqueue_dir: queue\ndns: { mode: trust-ad, resolvers: ["${dns.server}"], timeout: 1s, attempts: 1 }\ndelivery: { port: ${rx.port} }\npolicy: { tls_policy: tls_policy, danefail: danefail, probe_interval: 0 }\n`,
  );
});
afterAll(async () => {
  await rx?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('policy on the real process', () => {
  it('issue7: SIGHUP reloads the policy; a bad file is rejected with its line and the process keeps running', async () => {
    const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (d) => {
      output += d;
    });
    child.stderr!.on('data', (d) => {
      output += d;
    });
    const wait = async (s: string) => {
      while (!output.includes(s)) {
        if ((cpuMsOf(child.pid) ?? 0) > 15_000 || child.exitCode !== null) throw new Error(`no "${s}" in: ${output}`);
        await sleep(20);
      }
    };
    try {
      await wait('"msg":"policy loaded"');
      expect(output).toContain('"tls_policy_entries":1');
      writeFileSync(join(dir, 'danefail'), 'dest.test\nbad line here\n');
      child.kill('SIGHUP');
      await wait('line 2: one bare domain per line');
      await wait('"signal":"SIGHUP"'); // the handler ran and the process survived (SIGHUP's default is to terminate)
      writeFileSync(join(dir, 'danefail'), 'dest.test\n');
      child.kill('SIGHUP');
      await wait('"danefail_entries":1');
      // DANE-70: the explicit dane-only entry wins over the list; the conflict is said, naming both files and lines
      await wait('policy conflict: dest.test is on the exception list (danefail:1) but tls_policy:1 dest.test dane-only requires DANE');
      expect(child.exitCode).toBeNull();
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('issue7: a SIGHUP during start-up neither kills the process nor is lost: it is acted on once the relay runs', async () => {
    const child: ChildProcess = spawn(process.execPath, [CLI, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (d) => {
      output += d;
    });
    child.stderr!.on('data', (d) => {
      output += d;
    });
    try {
      // Wait until the process catches SIGHUP (SigCgt bit 0 in /proc), then send it before start-up ends.
      const caught = () => {
        try {
          return (BigInt(`0x${/SigCgt:\s*([0-9a-f]+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]}`) & 1n) === 1n;
        } catch {
          return false;
        }
      };
      while (!caught()) {
        if ((cpuMsOf(child.pid) ?? 0) > 15_000 || child.exitCode !== null) throw new Error(`SIGHUP never caught: ${output}`);
        await sleep(1);
      }
      expect(output).not.toContain('"msg":"policy loaded"');
      child.kill('SIGHUP');
      const until = async (s: string) => {
        while (!output.includes(s)) {
          if ((cpuMsOf(child.pid) ?? 0) > 15_000 || child.exitCode !== null) throw new Error(`no "${s}" in: ${output}`);
          await sleep(20);
        }
      };
      await until('"during":"start-up"');
      await until('"msg":"policy loaded"');
      expect(child.exitCode).toBeNull();
      expect(child.signalCode).toBeNull();
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('issue7: check exit codes on the real binary: 0 with DANE, 2 for usage; tlsa: 2 without --cert', async () => {
    // dest.test is listed, but its explicit dane-only entry wins: check still verifies DANE (exit 0)
    writeFileSync(join(dir, 'danefail'), 'dest.test\n');
    // Not spawnSync: the test DNS server and receiver live in this process's event loop.
    const run = (args: string[]) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        c.stdout.on('data', (d) => {
          stdout += d;
        });
        c.stderr.on('data', (d) => {
          stderr += d;
        });
        c.on('close', (status) => resolve({ status, stdout, stderr }));
      });
    // The three processes run side by side: one after the other, their start-ups took the test past its 30 s limit
    // on the busy 2-core machine (30.3 s; 19.5 s in another run).
    const [ok, usage, tlsa] = await Promise.all([run(['check', 'dest.test', '--config', config]), run(['check', '--config', config]), run(['tlsa'])]);
    expect(ok.stdout + ok.stderr).toContain('verdict: deliverable with DANE');
    expect(ok.status).toBe(0);
    expect(ok.stdout).toContain('policy: dane-only (rule: tls_policy:1 dest.test dane-only)');
    // issue21: check says which configuration it judges by (the file, not the running relay)
    expect(ok.stdout.split('\n')[0]).toBe(
      `config: ${config} (this file as it is now; a running relay uses its changes after a SIGHUP reload, some only after a restart)`,
    );
    expect(usage.status).toBe(2);
    expect(tlsa.status).toBe(2);
  });
});
