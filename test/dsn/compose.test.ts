import { describe, expect, it } from 'vitest';
import { simpleParser } from 'mailparser';
import { composeDsn as compose, dsnAllowed, headerBlock, type DsnInput } from '../../src/dsn/compose.js';
import type { Envelope } from '../../src/spool/types.js';
import { assertValidDsn } from '../support/dsnGrammar.js';

/** Every DSN composed here is checked against RFC 3464 / RFC 6522 (issue 21 item 6). */
async function composeDsn(input: DsnInput): ReturnType<typeof compose> {
  const d = await compose(input);
  assertValidDsn(d.message);
  return d;
}

const original: Envelope = {
  from: 'alice@sender.example',
  recipients: ['bob@dest.example', 'carol@dest.example'],
  smtputf8: false,
  eightBit: false,
  client: { address: '127.0.0.1' },
  received: Date.UTC(2026, 0, 2, 3, 4, 5),
  kind: 'normal',
};
const body = Buffer.from('Subject: hello\r\nFrom: alice@sender.example\r\nMessage-ID: <m1@sender.example>\r\n\r\nsecret body\r\n');

/** Splits a multipart body by its boundary, without trusting our own composer. */
function parts(raw: string): { headers: string; body: string }[] {
  const boundary = /boundary="?([^";\r\n]+)"?/.exec(raw)![1]!;
  return raw
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((p) => {
      const i = p.indexOf('\r\n\r\n');
      return { headers: p.slice(2, i), body: p.slice(i + 4) };
    });
}

describe('DSN composition (RFC 3464, RFC 6522)', () => {
  it('DANE-72 failed DSN: multipart/report with text, message/delivery-status and the original headers', async () => {
    const dsn = await composeDsn({
      reportingMta: 'relay.example.net',
      queueId: 'Q123',
      original,
      originalHeaders: headerBlock(body),
      now: Date.UTC(2026, 0, 3),
      recipients: [
        {
          address: 'bob@dest.example',
          action: 'failed',
          status: '5.1.1',
          remoteMta: 'mx.dest.example',
          diagnostic: { type: 'smtp', text: '550 5.1.1 no such user' },
          lastAttempt: Date.UTC(2026, 0, 3),
        },
      ],
    });
    expect(dsn.envelope).toMatchObject({ from: '', recipients: ['alice@sender.example'], kind: 'dsn' });
    const raw = dsn.message.toString('utf8');
    expect(raw).toMatch(/^Content-Type: multipart\/report; report-type=delivery-status;/m);
    expect(raw).toMatch(/^Auto-Submitted: auto-replied/m);
    const [text, status, headers] = parts(raw);
    expect(text!.headers).toMatch(/text\/plain/);
    expect(text!.body).toContain('<bob@dest.example>: host mx.dest.example said: 550 5.1.1 no such user');
    expect(status!.headers).toMatch(/Content-Type: message\/delivery-status/);
    const fields = status!.body.split('\r\n\r\n');
    expect(fields[0]).toContain('Reporting-MTA: dns; relay.example.net');
    expect(fields[0]).toContain('Arrival-Date: Fri, 02 Jan 2026 03:04:05 +0000');
    expect(fields[1]).toContain('Final-Recipient: rfc822; bob@dest.example');
    expect(fields[1]).toContain('Action: failed');
    expect(fields[1]).toContain('Status: 5.1.1');
    expect(fields[1]).toContain('Remote-MTA: dns; mx.dest.example');
    expect(fields[1]).toContain('Diagnostic-Code: smtp; 550 5.1.1 no such user');
    expect(headers!.headers).toMatch(/Content-Type: text\/rfc822-headers/);
    expect(headers!.body).toContain('Message-ID: <m1@sender.example>');
    expect(headers!.body).not.toContain('secret body');
    const parsed = await simpleParser(dsn.message);
    expect(parsed.subject).toBe('Undelivered Mail Returned to Sender');
    expect(parsed.to && 'text' in parsed.to ? parsed.to.text : '').toContain('alice@sender.example');
  });

  it('DANE-72 delayed DSN carries Action delayed and Will-Retry-Until', async () => {
    const dsn = await composeDsn({
      reportingMta: 'relay.example.net',
      queueId: 'Q124',
      original,
      originalHeaders: headerBlock(body),
      now: Date.UTC(2026, 0, 2, 8),
      recipients: [
        {
          address: 'carol@dest.example',
          action: 'delayed',
          status: '4.7.5',
          diagnostic: { type: 'X-Dane-Relay', text: 'TLSA lookup for _25._tcp.mx1.dest.example: SERVFAIL' },
          willRetryUntil: Date.UTC(2026, 0, 7, 3, 4, 5),
        },
      ],
    });
    const raw = dsn.message.toString();
    expect(raw).toContain('Action: delayed');
    expect(raw).toContain('Status: 4.7.5');
    expect(raw).toContain('Will-Retry-Until: Wed, 07 Jan 2026 03:04:05 +0000');
    expect(raw).toContain('TLSA lookup for _25._tcp.mx1.dest.example: SERVFAIL');
    expect((await simpleParser(dsn.message)).subject).toBe('Delayed Mail (still being retried)');
  });

  it('never a DSN to the null sender or about a DSN', async () => {
    expect(dsnAllowed({ ...original, from: '' })).toBe(false);
    expect(dsnAllowed({ ...original, kind: 'dsn' })).toBe(false);
    expect(dsnAllowed({ ...original, kind: 'tlsrpt' })).toBe(false);
    await expect(
      composeDsn({ reportingMta: 'r', queueId: 'q', original: { ...original, from: '' }, originalHeaders: Buffer.alloc(0), recipients: [], now: 0 }),
    ).rejects.toThrow();
  });

  it('remote text with CR/LF cannot inject DSN fields', async () => {
    const dsn = await composeDsn({
      reportingMta: 'relay.example.net',
      queueId: 'Q',
      original,
      originalHeaders: headerBlock(body),
      now: 0,
      recipients: [{ address: 'bob@dest.example', action: 'failed', status: '5.0.0', diagnostic: { type: 'smtp', text: '550 bad\r\nAction: delivered' } }],
    });
    expect(dsn.message.toString()).not.toMatch(/^Action: delivered/m);
  });

  it('RFC 3464 §2.2.1/§2.3.1: Original-Envelope-Id from ENVID, Original-Recipient only for recipients that gave ORCPT', async () => {
    const withDsn: Envelope = {
      ...original,
      dsn: { envid: 'QQ+314159' },
      rcptDsn: { 'bob@dest.example': { orcpt: { type: 'rfc822', address: 'Bob@Alias.example' } } },
    };
    const dsn = await composeDsn({
      reportingMta: 'relay.example.net',
      queueId: 'Q',
      original: withDsn,
      originalHeaders: headerBlock(body),
      now: 0,
      recipients: [
        { address: 'bob@dest.example', action: 'failed', status: '5.1.1' },
        { address: 'carol@dest.example', action: 'failed', status: '5.1.1' },
      ],
    });
    const [, status] = parts(dsn.message.toString());
    const [perMessage, bob, carol] = status!.body.split('\r\n\r\n');
    expect(perMessage).toMatch(/^Original-Envelope-Id: QQ\+314159\r\nReporting-MTA: dns; relay\.example\.net/);
    expect(bob).toMatch(/^Original-Recipient: rfc822; Bob@Alias\.example\r\nFinal-Recipient: rfc822; bob@dest\.example/);
    expect(carol).not.toContain('Original-Recipient');
  });

  it('RFC 3461 §5.2.2 relayed DSN: Action relayed, a subject that says so, the header returned', async () => {
    const dsn = await composeDsn({
      reportingMta: 'relay.example.net',
      queueId: 'Q',
      original,
      originalHeaders: headerBlock(body),
      now: 0,
      recipients: [
        { address: 'bob@dest.example', action: 'relayed', status: '2.0.0', remoteMta: 'mx.dest.example', diagnostic: { type: 'smtp', text: '250 2.0.0 ok' } },
      ],
    });
    const raw = dsn.message.toString();
    expect(raw).toContain('Action: relayed');
    expect(raw).toContain('does not support delivery status notifications');
    expect(raw).toContain('Content-Type: text/rfc822-headers');
    expect((await simpleParser(dsn.message)).subject).toBe('Successful Mail Delivery Report');
  });

  it('RFC 3461 §4.3 RET=FULL: the whole message for failures (message/rfc822, 8bit when it is); the header only for a delay or when too large', async () => {
    const full: Envelope = { ...original, dsn: { ret: 'FULL' } };
    const eight = Buffer.from('Subject: ü\r\n\r\nGrüße\r\n', 'utf8');
    const failed = await composeDsn({
      reportingMta: 'r.example',
      queueId: 'Q',
      original: full,
      originalHeaders: headerBlock(eight),
      originalFull: eight,
      now: 0,
      recipients: [{ address: 'bob@dest.example', action: 'failed', status: '5.1.1' }],
    });
    const [, , returned] = parts(failed.message.toString('utf8'));
    expect(returned!.headers).toMatch(/Content-Type: message\/rfc822/);
    expect(returned!.headers).toMatch(/Content-Transfer-Encoding: 8bit/);
    expect(returned!.body).toBe('Subject: ü\r\n\r\nGrüße\r\n\r\n'); // + the CRLF that belongs to the boundary
    const delayed = await composeDsn({
      reportingMta: 'r.example',
      queueId: 'Q',
      original: full,
      originalHeaders: headerBlock(eight),
      originalFull: eight,
      now: 0,
      recipients: [{ address: 'bob@dest.example', action: 'delayed', status: '4.4.1' }],
    });
    expect(delayed.message.toString()).toContain('Content-Type: text/rfc822-headers');
    const big = await composeDsn({
      reportingMta: 'r.example',
      queueId: 'Q',
      original: full,
      originalHeaders: headerBlock(body),
      now: 0,
      recipients: [{ address: 'bob@dest.example', action: 'failed', status: '5.1.1' }],
    });
    expect(big.message.toString()).toContain('only its header is returned');
    expect(big.message.toString()).toContain('Content-Type: text/rfc822-headers');
  });

  it('headerBlock stops at the first empty line (CRLF or bare LF)', () => {
    expect(headerBlock(Buffer.from('A: 1\r\nB: 2\r\n\r\nbody')).toString()).toBe('A: 1\r\nB: 2\r\n');
    expect(headerBlock(Buffer.from('A: 1\n\nbody')).toString()).toBe('A: 1\n');
  });
});
