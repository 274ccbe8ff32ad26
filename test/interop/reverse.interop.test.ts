/**
 * The Received line's client name, end to end (RFC 5321 §4.4: the "from" clause's TCP-info carries the
 * client's address and, when known, its reverse DNS name).
 *
 * Ingress never asks PTR for a loopback client (it is "localhost" by definition), so no test on plain
 * loopback reaches the lookup. Here, inside isolate.sh's private network namespace, documentation
 * addresses (RFC 5737 192.0.2.0/24) are put on `lo`; a client connects from one of them to the relay,
 * a real process listening on 127.x, so the address the relay sees is not loopback. The relay is
 * configured with one resolver: a real DNS server this test runs (test/support/dnsServer.ts), which
 * records every query, so the test sees that the PTR went through the relay's configured resolver and
 * not the system's. The stored message is read back with `dane-relay queue show --body --json` (the operator's view, escapes undone).
 *
 * smtp-server sends the greeting only once the reverse lookup has ended (answer, failure, or its own
 * 1.5 s cap), so by the 220 every PTR query the relay made has reached the DNS server and is counted.
 * The garbage case ends by that cap: the relay's resolver ignores a reply it cannot parse, as it would
 * a forged one, and keeps waiting for a real one. The named case needs the relay's answer within that
 * cap (a query to a DNS server on loopback; smtp-server's bound, not one of this test's).
 *
 * The recipient domain's MX answers SERVFAIL: indeterminate never downgrades, the message waits in the
 * queue (1 h backoff), so what the relay stored is there to read and nothing is delivered or bounced.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBuilt } from '../support/build.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { unescapeToString } from '../support/printable.js';
import { SmtpTestClient } from '../support/submit.js';
import { startRelay, type RelayProcessHandle } from './support/relay.js';

const run = promisify(execFile);

/** isolate.sh sets this in the namespace it made; outside one, adding an address to `lo` would change the host. */
const isolated = process.env.DANE_RELAY_ISOLATED === '1' && process.getuid?.() === 0;
const SKIP_REASON = 'needs root inside the private network namespace of test/interop/isolate.sh (npm run test:interop)';

const LISTEN = { host: '127.0.0.41', port: 2525 };
const DEST = 'dest.tst';
/** client addresses, one per case, each added to `lo` in the namespace */
const CLIENT = {
  named: '192.0.2.10',
  nxdomain: '192.0.2.11',
  servfail: '192.0.2.12',
  garbage: '192.0.2.13',
  injection: '192.0.2.14',
} as const;

/** "10.2.0.192.in-addr.arpa" (RFC 1035 §3.5), written out here rather than with the code under test. */
const ptrOwner = (ip: string) => `${ip.split('.').reverse().join('.')}.in-addr.arpa`;

let dns: TestDns | undefined;
let relay: RelayProcessHandle | undefined;
const added: string[] = [];

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}

describe.skipIf(!isolated)(
  `Received "from" clause with the client's PTR name, through the relay's resolver (RFC 5321 §4.4)${isolated ? '' : ` — SKIPPED: ${SKIP_REASON}`}`,
  () => {
    beforeAll(async () => {
      ensureBuilt();
      try {
        for (const a of Object.values(CLIENT)) {
          await ip('addr', 'replace', `${a}/32`, 'dev', 'lo');
          added.push(a);
        }
        dns = await startDnsServer({
          zones: [
            { name: 'in-addr.arpa', secure: false },
            { name: DEST, secure: true },
          ],
          records: [
            { name: ptrOwner(CLIENT.named), type: 'PTR', data: 'Client.Example.' },
            { name: ptrOwner(CLIENT.servfail), type: 'PTR', data: 'never-seen.example' },
            { name: ptrOwner(CLIENT.garbage), type: 'PTR', data: 'never-seen.example' },
            // a PTR the client's network owner controls, trying to add a header field through the Received line (the
            // relay's codec gives it in RFC 1035 presentation form, `\013\010…`, and smtp-server drops a name that is no hostname)
            { name: ptrOwner(CLIENT.injection), type: 'PTR', data: 'evil.example\r\nX-Injected: yes' },
            { name: DEST, type: 'MX', data: { preference: 10, exchange: `mx.${DEST}` } },
          ],
        });
        dns.behave(ptrOwner(CLIENT.servfail), 'PTR', 'servfail');
        // the query's ID and a header claiming one answer, then bytes that are no resource record
        dns.behave(ptrOwner(CLIENT.garbage), 'PTR', {
          raw: (q) => Buffer.concat([q.subarray(0, 2), Buffer.from([0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]), Buffer.from([0xff, 0x13, 0x37, 0xc0, 0xff, 0xee])]),
        });
        // the destination waits (indeterminate): the stored message stays in the queue to be read
        dns.behave(DEST, 'MX', 'servfail');
        relay = await startRelay({
          resolver: dns.server,
          listen: `${LISTEN.host}:${LISTEN.port}`,
          extraYaml: `relay_clients: ["127.0.0.0/8", "${CLIENT.named.replace(/\.\d+$/, '.0')}/24"]`,
        });
      } catch (e) {
        await relay?.stop().catch(() => undefined);
        await dns?.close().catch(() => undefined);
        for (const a of added.splice(0)) await ip('addr', 'del', `${a}/32`, 'dev', 'lo').catch(() => undefined);
        throw e;
      }
    });

    afterAll(async () => {
      await relay?.stop().catch(() => undefined);
      await dns?.close().catch(() => undefined);
      for (const a of added.splice(0)) await ip('addr', 'del', `${a}/32`, 'dev', 'lo').catch(() => undefined);
    });

    /** One message from `from` (a local address); the queue id the relay's 250 names. */
    async function submit(from: string, subject: string): Promise<string> {
      const c = await SmtpTestClient.connect({ host: LISTEN.host, port: LISTEN.port, localAddress: from, timeout: 30_000 });
      expect(c.greeting?.code, c.greeting?.raw).toBe(220);
      await c.ehlo('app.client.invalid');
      const mail = await c.cmd('MAIL FROM:<app@client.invalid>');
      expect(mail.code, mail.raw).toBe(250);
      const rcpt = await c.cmd(`RCPT TO:<rcpt@${DEST}>`);
      expect(rcpt.code, rcpt.raw).toBe(250);
      expect((await c.cmd('DATA')).code).toBe(354);
      c.write(SmtpTestClient.dataPayload(`From: app@client.invalid\r\nTo: rcpt@${DEST}\r\nSubject: ${subject}\r\n\r\nbody of ${subject}\r\n`));
      const end = await c.reply();
      await c.quit();
      expect(end.code, end.raw).toBe(250);
      const id = /queued as (\S+)/.exec(end.raw)?.[1];
      expect(id, end.raw).toBeDefined();
      return id!;
    }

    /** The message as the relay stored it, read through the operator's CLI; and its recipients' states. */
    async function stored(id: string): Promise<{ message: string; states: string[] }> {
      const r = await relay!.cli('queue', 'show', id, '--body', '--json');
      expect(r.code, `${r.stderr}\n--- relay ---\n${relay!.output().slice(-3000)}`).toBe(0);
      const shown = JSON.parse(r.stdout) as { headers?: string; body?: string; recipients: { state: string }[] };
      expect(typeof shown.headers, r.stdout.slice(0, 2000)).toBe('string');
      // the CLI prints outside text escaped (src/text/printable.ts): undo that to see the stored octets' lines
      return { message: unescapeToString(`${shown.headers}\r\n\r\n${shown.body}`), states: shown.recipients.map((x) => x.state) };
    }

    /** The Received field the relay prepended (the first header field), unfolded. */
    function receivedLine(message: string): string {
      const first = /^Received:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*/.exec(message);
      expect(first, message.slice(0, 1000)).not.toBeNull();
      return first![0].replace(/\r?\n[ \t]+/g, ' ');
    }

    it('RFC 5321 §4.4: a non-loopback client with a PTR record gets its name in TCP-info, asked once through the configured resolver', async () => {
      const id = await submit(CLIENT.named, 'named');
      expect(dns!.queriesFor(ptrOwner(CLIENT.named), 'PTR')).toBe(1);
      const { message, states } = await stored(id);
      expect(receivedLine(message)).toMatch(/^Received: from app\.client\.invalid \(client\.example \[192\.0\.2\.10\]\) by relay\.tst with ESMTP id /);
      expect(message).toContain('body of named');
      expect(states).toEqual([expect.stringMatching(/^(pending|deferred)$/)]);
    });

    it.each([
      ['NXDOMAIN (no PTR record)', CLIENT.nxdomain],
      ['SERVFAIL', CLIENT.servfail],
      ['a garbage reply (header claims an answer, body is no record)', CLIENT.garbage],
      ['a PTR name carrying CRLF and a header field (injection attempt)', CLIENT.injection],
    ])('RFC 5321 §4.4: PTR answer %s — TCP-info is the address literal alone, the message is accepted and stored whole', async (_what, client) => {
      const id = await submit(client, `no-name ${client}`);
      expect(dns!.queriesFor(ptrOwner(client), 'PTR')).toBeGreaterThanOrEqual(1);
      const { message, states } = await stored(id);
      const lit = client.replace(/\./g, '\\.');
      expect(receivedLine(message)).toMatch(new RegExp(`^Received: from app\\.client\\.invalid \\(\\[${lit}\\]\\) by relay\\.tst with ESMTP id `));
      expect(message).not.toMatch(/never-seen|evil|X-Injected/i);
      expect(message).toContain(`body of no-name ${client}`);
      expect(states).toEqual([expect.stringMatching(/^(pending|deferred)$/)]);
    });

    it('a loopback client: no PTR query is made at all (the reason the cases above need a namespace)', async () => {
      // a lookup, had one been made, would have ended before the greeting (see the module comment): 0 is final
      const id = await submit('127.0.0.1', 'loopback');
      expect(dns!.queriesFor(ptrOwner('127.0.0.1'), 'PTR')).toBe(0);
      const { message } = await stored(id);
      expect(receivedLine(message)).toMatch(/^Received: from app\.client\.invalid \(\[127\.0\.0\.1\]\) by relay\.tst /);
    });
  },
);
