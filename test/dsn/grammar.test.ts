/**
 * Issue 21 item 6: DSNs conform to RFC 3464 (message/delivery-status) and RFC 6522 (multipart/report).
 * The checker (test/support/dsnGrammar.ts) is itself tested on hand-written reports, good and broken;
 * then a property over generated failure causes: whatever the outcome (bounced, deferred, expired,
 * relayed; remote reply or the relay's own reason; hostile text; ENVID/ORCPT; UTF-8 addresses), the
 * DSN the scheduler's rules and the composer make conforms, and its Diagnostic-Code is typed `smtp`
 * exactly when a remote server replied, `X-Dane-Relay` otherwise.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { composeDsn, headerBlock, type DsnRecipient } from '../../src/dsn/compose.js';
import { applyOutcome } from '../../src/scheduler/settle.js';
import { printableOutcome, type RecipientOutcome } from '../../src/delivery/outcome.js';
import type { Envelope, RecipientStatus } from '../../src/spool/types.js';
import { checkDeliveryStatus, dsnProblems, isDsn } from '../support/dsnGrammar.js';
import { hostileString } from '../support/printable.js';

const crlf = (lines: string[]) => lines.join('\r\n');
const good = crlf([
  'Reporting-MTA: dns; relay.example',
  'Arrival-Date: Fri, 02 Jan 2026 03:04:05 +0000',
  '',
  'Final-Recipient: rfc822; bob@dest.example',
  'Action: failed',
  'Status: 5.1.1',
  'Remote-MTA: dns; mx.dest.example',
  'Diagnostic-Code: smtp; 550 5.1.1 no such user',
  '',
]);

describe('the RFC 3464 checker', () => {
  it('accepts a conforming delivery-status, folded fields and X- extensions included', () => {
    expect(checkDeliveryStatus(good).problems).toEqual([]);
    expect(checkDeliveryStatus(good.replace('Arrival-Date', 'X-Queue-ID: Q1\r\nArrival-Date').replace('smtp; 550', 'smtp;\r\n 550')).problems).toEqual([]);
  });
  it.each([
    ['Diagnostic-Code: smtp; 550 5.1.1 no such user', 'Diagnostic-Code: domain dest.example does not exist (NXDOMAIN)', /Diagnostic-Code .* lacks its type/],
    ['Reporting-MTA: dns; relay.example\r\n', '', /Reporting-MTA is required/],
    ['Action: failed', 'Action: bounced', /Action "bounced" is not one of/],
    ['Status: 5.1.1', 'Status: 5.1', /Status "5.1" is not class.subject.detail/],
    ['Status: 5.1.1', 'Status: 4.1.1', /Status 4.1.1 does not agree with Action failed/],
    ['Final-Recipient: rfc822; bob@dest.example', 'Final-Recipient: bob@dest.example', /final-recipient .* lacks its type/],
    ['Final-Recipient: rfc822; bob@dest.example\r\n', '', /final-recipient is required/],
    ['Status: 5.1.1', 'Status: 5.1.1\r\nStatus: 5.1.1', /Status appears twice/],
    ['Status: 5.1.1', 'Status: 5.1.1\r\nWill-Retry-Until: Fri, 09 Jan 2026 03:04:05 +0000', /Will-Retry-Until only with Action delayed/],
    ['Arrival-Date: Fri, 02 Jan 2026 03:04:05 +0000', 'Arrival-Date: yesterday', /Arrival-Date "yesterday" is not a date-time/],
    ['Arrival-Date: Fri, 02 Jan 2026 03:04:05 +0000', 'Final-Recipient: rfc822; x@y', /Final-Recipient is not a per-message field/],
    ['no such user', 'no such us\u00e9r', /not 7-bit/],
    ['no such user', 'no such\nuser', /bare CR or LF|not a header field/],
  ])('refuses %s → %s', (from, to, why) => {
    expect(checkDeliveryStatus(good.replace(from, to)).problems.join('\n')).toMatch(why);
  });
  it('refuses a report without its per-recipient group, and a multipart/report out of shape (RFC 6522)', () => {
    expect(checkDeliveryStatus('Reporting-MTA: dns; relay.example\r\n').problems.join()).toMatch(/at least one per-recipient group/);
    const msg = (ct: string, parts: [string, string][]) =>
      crlf([`Content-Type: ${ct}`, '', ...parts.flatMap(([t, b]) => ['--B', `Content-Type: ${t}`, '', b]), '--B--', '']);
    const ok = msg('multipart/report; report-type=delivery-status; boundary=B', [
      ['text/plain', 'bounced'],
      ['message/delivery-status', good],
      ['text/rfc822-headers', 'Subject: x\r\n'],
    ]);
    expect(isDsn(ok)).toBe(true);
    expect(dsnProblems(ok).problems).toEqual([]);
    expect(dsnProblems(ok.replace('report-type=delivery-status; ', '')).problems.join()).toMatch(/without its required report-type/);
    expect(dsnProblems(ok.replace('Content-Type: message/delivery-status', 'Content-Type: text/plain')).problems.join()).toMatch(/second part is text\/plain/);
    expect(dsnProblems(ok.replace('text/rfc822-headers', 'application/octet-stream')).problems.join()).toMatch(/third part is application\/octet-stream/);
    expect(dsnProblems(ok.replace('--B--', '')).problems.join()).toMatch(/no closing boundary/);
  });
});

const now = Date.UTC(2026, 5, 1);
const day = 86_400_000;
const cfg = { min_backoff: 30 * 60_000, max_backoff: 4 * 3_600_000, lifetime: 5 * day, delay_warning: 4 * 3_600_000 };

/** A failure cause as an outcome: what the delivery stage hands the scheduler (delivery/outcome.ts). */
const cause = fc.oneof(
  // a remote reply (4xx/5xx at MAIL, RCPT or DATA)
  fc.record({
    kind: fc.constant('reply' as const),
    result: fc.constantFrom('deferred' as const, 'bounced' as const),
    detail: fc.tuple(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 99 })),
    text: hostileString,
    mta: fc.option(hostileString, { nil: undefined }),
  }),
  // the relay's own reason: DNS (NXDOMAIN, SERVFAIL), DANE (no match, TLSA lookup), TLS, connection, expiry, loops
  fc.record({
    kind: fc.constant('local' as const),
    result: fc.constantFrom('deferred' as const, 'bounced' as const),
    code: fc.constantFrom('4.4.3', '4.7.5', '4.4.1', '4.4.2', '4.5.0', '4.3.0', '5.1.2', '5.4.4', '5.4.6', '5.6.3', '5.7.10'),
    text: fc.oneof(
      fc.constantFrom('domain dest.test does not exist (NXDOMAIN)', 'TLSA lookup for _25._tcp.mx.dest.test: SERVFAIL', 'no TLSA record matched'),
      hostileString,
    ),
  }),
  // a success passed to a next hop without DSN (relayed, RFC 3461 §5.2.2)
  fc.record({ kind: fc.constant('sent' as const), text: hostileString, mta: hostileString }),
);

type Cause = typeof cause extends fc.Arbitrary<infer T> ? T : never;

function outcomeOf(address: string, c: Cause): RecipientOutcome {
  if (c.kind === 'sent') return { address, result: 'sent', code: '2.0.0', reason: 'sent', reply: `250 2.0.0 ${c.text}`, remoteMta: c.mta, nextHopDsn: false };
  if (c.kind === 'local') {
    const code = c.result === 'bounced' ? `5${c.code.slice(1)}` : `4${c.code.slice(1)}`;
    return { address, result: c.result, code, reason: c.text };
  }
  const cls = c.result === 'bounced' ? 5 : 4;
  const code = `${cls}.${c.detail[0]}.${c.detail[1]}`;
  return { address, result: c.result, code, reason: `${cls}50 ${code} ${c.text}`, reply: `${cls}50 ${code} ${c.text}`, remoteMta: c.mta };
}

describe('every DSN made from generated failure causes conforms to RFC 3464 (issue 21 item 6)', () => {
  it('DANE-72 failed, delayed, expired and relayed DSNs: grammar holds, Diagnostic-Code typed smtp exactly for a remote reply', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom('bob@dest.test', 'carol@dest.test', 'd\u00e9@dest.test', 'e@dest.test'), cause), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 0, max: 7 * day }),
        fc.option(fc.stringMatching(/^[\x21-\x7e]{1,20}$/), { nil: undefined }),
        fc.boolean(),
        async (given, age, envid, orcpt) => {
          const seen = new Set<string>();
          const rcpts = given.filter(([a]) => !seen.has(a) && seen.add(a));
          const envelope: Envelope = {
            from: 'app@sender.test',
            recipients: rcpts.map(([a]) => a),
            smtputf8: rcpts.some(([a]) => /[^\x00-\x7f]/.test(a)),
            eightBit: false,
            client: { address: '127.0.0.1' },
            received: now - age,
            kind: 'normal',
            ...(envid ? { dsn: { envid } } : {}),
            rcptDsn: Object.fromEntries(
              rcpts.map(([a]) => [a, { notify: ['SUCCESS', 'FAILURE', 'DELAY'], ...(orcpt ? { orcpt: { type: 'rfc822', address: `orig+${a}` } } : {}) }]),
            ) as Envelope['rcptDsn'],
          };
          // the scheduler's rule (settle.ts) decides the action per recipient; one DSN per action, as the scheduler sends them
          const byAction = new Map<string, { dsn: DsnRecipient; replied: boolean }[]>();
          for (const [address, c] of rcpts) {
            const cur: RecipientStatus = { address, state: 'deferred', attempts: 3, nextAttempt: now };
            const o = printableOutcome(outcomeOf(address, c));
            const { dsn } = applyOutcome(cur, o, envelope, now, cfg, () => 0.5);
            if (dsn) byAction.set(dsn.action, [...(byAction.get(dsn.action) ?? []), { dsn, replied: o.reply !== undefined }]);
          }
          for (const list of byAction.values()) {
            const d = await composeDsn({
              reportingMta: 'relay.test',
              queueId: 'Q1',
              original: envelope,
              originalHeaders: headerBlock(Buffer.from('Subject: x\r\nMessage-ID: <m@sender.test>\r\n\r\nbody\r\n')),
              recipients: list.map((x) => x.dsn),
              now,
            });
            const { problems, status } = dsnProblems(d.message);
            expect(problems).toEqual([]);
            expect(status!.perRecipient).toHaveLength(list.length);
            status!.perRecipient.forEach((fields, i) => {
              const diag = fields.find((f) => f.name === 'Diagnostic-Code')?.value;
              if (diag !== undefined) expect(diag.split(';')[0]).toBe(list[i]!.replied ? 'smtp' : 'X-Dane-Relay');
            });
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});
