/**
 * Issue 23 §1 end to end, with the real relay process: a destination MX answers RCPT with
 * `450 4.2.0 <ESC>]0;owned<BEL><ESC>[2J…mailbox busy` (set the terminal title, clear the screen,
 * reverse the text). `dane-relay queue list` and `queue show` (online over the control socket and
 * offline from the files), the delivery log line and the DSN sent when the lifetime ends all show
 * the reply escaped — visible to the operator, inert in a terminal.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { simpleParser } from 'mailparser';
import { ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { startReceiver, type Receiver } from '../support/receiver.js';
import { startRawMx, type RawMx } from '../support/rawMx.js';
import { submit } from '../support/mail.js';
import { RelayProcess, freePort, runCli, sleep } from '../support/relayProcess.js';
import { makeSelfSigned } from '../support/pki.js';
import { expectJsonLinesSafe, expectTerminalSafe, expectValuesPrintable, unescapeToString } from '../support/printable.js';

/** The reply of the issue, as bytes on the wire (… is U+2026; U+202E reverses what follows). */
const REPLY = '450 4.2.0 \x1b]0;owned\x07\x1b[2J\u2026\u202emailbox busy';
const SHOWN = '450 4.2.0 \\x1b]0;owned\\x07\\x1b[2J\u2026\\u{202e}mailbox busy';

let dns: TestDns;
let inbox: Receiver;
let mx: RawMx;
let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dns = await startDnsServer();
  inbox = await startReceiver({ host: '127.0.0.40' });
  mx = await startRawMx('127.0.0.41', inbox.port, `${REPLY}\r\n`);
  dns.add(
    { name: 'dest.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest.test' } },
    { name: 'mx.dest.test', type: 'A', data: mx.host },
    { name: 'sender.test', type: 'MX', data: { preference: 10, exchange: 'mx.sender.test' } },
    { name: 'mx.sender.test', type: 'A', data: inbox.host },
  );
  dir = mkdtempSync(join(tmpdir(), 'dr-remote-text-'));
}, 120_000);
afterAll(async () => {
  await mx?.close();
  await inbox?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('a remote reply with terminal escape sequences (issue 23 §1)', () => {
  it('queue list, queue show (online and offline), the log line and the DSN after expiry show it escaped', async () => {
    const port = await freePort();
    const cfg = join(dir, 'relay.yml');
    writeFileSync(
      cfg,
      `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${join(dir, 'queue')}\n` +
        `dns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
        `delivery:\n  port: ${inbox.port}\n  tls_level: may\n` +
        `queue:\n  min_backoff: 1h\n  max_backoff: 2h\n  lifetime: 1h\n  delay_warning: 0\n  run_interval: 200ms\n` +
        `tlsrpt:\n  enabled: false\n`,
    );
    const relay = new RelayProcess(cfg);
    await relay.start();
    let id: string;
    try {
      id = (await submit({ port, from: 'app@sender.test', to: ['user@dest.test'] })).queueId;
      const deadline = Date.now() + 20_000;
      while (mx.rcpts === 0 && Date.now() < deadline) await sleep(50);
      expect(mx.rcpts).toBe(1);

      // online: through the control socket
      let list = await runCli(['queue', 'list', '--config', cfg]);
      for (let i = 0; i < 50 && !list.stdout.includes('deferred'); i++) {
        await sleep(100);
        list = await runCli(['queue', 'list', '--config', cfg]);
      }
      expectTerminalSafe(list.stdout, { newline: true });
      expect(list.stdout).toContain(SHOWN);
      const show = await runCli(['queue', 'show', id, '--config', cfg]);
      expectTerminalSafe(show.stdout, { newline: true });
      expect(show.stdout).toContain(SHOWN);
      const showJson = await runCli(['queue', 'show', id, '--json', '--config', cfg]);
      expectTerminalSafe(showJson.stdout, { newline: true });
      const m = JSON.parse(showJson.stdout) as { recipients: { lastReason: string }[] };
      expectValuesPrintable(m);
      expect(m.recipients[0]!.lastReason).toContain(SHOWN);
      // what was sent can be read back from what is shown
      expect(unescapeToString(SHOWN)).toBe(REPLY);
    } finally {
      expect(await relay.stop()).toBe(0);
    }

    // the log line of the attempt (the relay's stdout)
    const lines = expectJsonLinesSafe(
      relay.output
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .join('\n') + '\n',
    ) as Record<string, unknown>[];
    const delivery = lines.find((l) => l.msg === 'delivery' && l.queue_id === id)!;
    expect(delivery.reply).toBe(SHOWN);
    expect(delivery.reason).toContain(SHOWN);
    expect(relay.output).not.toContain('\x1b');

    // offline: the stopped relay's files
    const list = await runCli(['queue', 'list', '--config', cfg]);
    expect(list.stdout).toContain(SHOWN);
    expectTerminalSafe(list.stdout, { newline: true });
    const listJson = await runCli(['queue', 'list', '--json', '--config', cfg]);
    expectTerminalSafe(listJson.stdout, { newline: true });
    expectValuesPrintable(JSON.parse(listJson.stdout));

    // the lifetime ends: the bounce carries the reply, escaped, in both parts
    writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('lifetime: 1h', 'lifetime: 1s'));
    await relay.start();
    try {
      expect((await runCli(['queue', 'flush', '--config', cfg])).code).toBe(0); // attempt now: the lifetime is over
      await inbox.waitFor(1, 20_000);
    } finally {
      expect(await relay.stop()).toBe(0);
    }
    const dsn = inbox.messages[0]!;
    expect(dsn.from).toBe('');
    for (const b of dsn.body) if ((b < 0x20 && b !== 0x0d && b !== 0x0a && b !== 0x09) || b === 0x7f) throw new Error(`byte 0x${b.toString(16)} in the DSN`);
    const raw = dsn.body.toString('utf8');
    expect(raw).toContain('Diagnostic-Code: smtp; 450 4.2.0 \\x1b]0;owned\\x07\\x1b[2J\\u{2026}\\u{202e}mailbox busy');
    const parsed = await simpleParser(dsn.body);
    expect(parsed.text).toContain(SHOWN);
    expectTerminalSafe((parsed.text ?? '').replace(/\r\n/g, '\n'), { newline: true });
  }, 90_000);

  it('check (text and --json): a certificate subject/issuer with escape sequences and a bidi override is shown escaped', async () => {
    const cert = await makeSelfSigned({ cn: 'mx.dest2.test \x1b]0;owned\x07\u202e', dnsNames: ['mx.dest2.test'] });
    const rx = await startReceiver({ host: '127.0.0.42', port: inbox.port, tls: { key: cert.keyPem, cert: cert.certPem }, name: 'mx.dest2.test\x1b[2J' });
    try {
      dns.add({ name: 'dest2.test', type: 'MX', data: { preference: 10, exchange: 'mx.dest2.test' } }, { name: 'mx.dest2.test', type: 'A', data: rx.host });
      const cfg = join(dir, 'check.yml');
      writeFileSync(
        cfg,
        `hostname: relay.test\nqueue_dir: ${join(dir, 'q2')}\ndns:\n  mode: trust-ad\n  resolvers: ["${dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
          `delivery:\n  port: ${inbox.port}\n  tls_level: may\n`,
      );
      const text = await runCli(['check', 'dest2.test', '--config', cfg]);
      expect(text.code, text.stderr).toBe(3); // deliverable without DANE
      expectTerminalSafe(text.stdout, { newline: true });
      // node's X509 formatter already writes C0 in RFC 4514 hex form (\1B); the bidi override only the printable rule catches
      expect(text.stdout).toContain('subject CN=mx.dest2.test \\1B]0\\;owned\\07\\u{202e}');
      const json = await runCli(['check', 'dest2.test', '--json', '--config', cfg]);
      expectTerminalSafe(json.stdout, { newline: true });
      const v = JSON.parse(json.stdout) as { hosts: { connections: { chain: { subject: string }[] }[] }[] };
      expectValuesPrintable(v);
      expect(v.hosts[0]!.connections[0]!.chain[0]!.subject).toBe('CN=mx.dest2.test \\1B]0\\;owned\\07\\u{202e}');
    } finally {
      await rx.close();
    }
  }, 60_000);
});
