/**
 * Envelope address syntax (RFC 5321 §4.1.2, RFC 6531 §3.3), the Received line
 * (RFC 5321 §4.4) and the sliding-window limiter: the pure parts of ingress.
 */
import { describe, expect, it } from 'vitest';
import { checkMailbox } from '../../src/ingress/address.js';
import { addressLiteral, receivedHeader, rfc5322Date } from '../../src/ingress/received.js';
import { SlidingWindow } from '../../src/ingress/limits.js';

describe('checkMailbox', () => {
  const ok: [string, boolean, string][] = [
    ['user@example.com', false, 'user@example.com'],
    ['first.last+tag@sub.example.co.uk', false, 'first.last+tag@sub.example.co.uk'],
    ["!#$%&'*+-/=?^_`{|}~@example.com", false, "!#$%&'*+-/=?^_`{|}~@example.com"],
    ['"quoted string"@example.com', false, '"quoted string"@example.com'],
    ['"a\\"b"@example.com', false, '"a\\"b"@example.com'],
    ['User@EXAMPLE.Com', false, 'User@example.com'], // domain case folded, local part kept (RFC 5321 §2.4)
    ['u@[192.0.2.1]', false, 'u@[192.0.2.1]'],
    ['u@[IPv6:2001:db8::1]', false, 'u@[IPv6:2001:db8::1]'],
    ['u@bücher.example', false, 'u@xn--bcher-kva.example'], // smtp-server hands us U-labels; we keep A-labels
    ['u@localhost', false, 'u@localhost'],
    ['jörg@example.com', true, 'jörg@example.com'], // RFC 6531: UTF-8 local part with SMTPUTF8
    ['用户@例子.测试', true, '用户@xn--fsqu00a.xn--0zwm56d'], // IANA's IDN test domain,
    ['"jö rg"@example.com', true, '"jö rg"@example.com'],
  ];
  it.each(ok)('accepts %s (smtputf8=%s)', (addr, smtputf8, normalized) => {
    expect(checkMailbox(addr, { role: 'recipient', smtputf8 })).toEqual({ ok: true, address: normalized });
  });

  const bad: [string, boolean, number, string][] = [
    ['a@', false, 501, '5.1.3'],
    ['@example.com', false, 501, '5.1.3'],
    ['postmaster', false, 501, '5.1.3'], // not a relayable mailbox; the ingress maps it to ingress.postmaster first
    ['noatsign', false, 501, '5.1.3'],
    ['.lead@example.com', false, 501, '5.1.3'],
    ['trail.@example.com', false, 501, '5.1.3'],
    ['dou..ble@example.com', false, 501, '5.1.3'],
    ['sp ace@example.com', false, 501, '5.1.3'],
    ['a(b)@example.com', false, 501, '5.1.3'],
    ['a,b@example.com', false, 501, '5.1.3'],
    ['a@-example.com', false, 501, '5.1.3'],
    ['a@example-.com', false, 501, '5.1.3'],
    ['a@exa_mple.com', false, 501, '5.1.3'],
    ['a@example..com', false, 501, '5.1.3'],
    [`a@${'l'.repeat(64)}.example`, false, 501, '5.1.3'],
    [`${'x'.repeat(250)}@ex.com`, false, 501, '5.1.3'], // path > 256 octets (RFC 5321 §4.5.3.1.3)
    ['a@[300.1.1.1]', false, 501, '5.1.3'],
    ['a@[IPv6:zz::1]', false, 501, '5.1.3'],
    ['a@[tag:whatever]', false, 501, '5.1.3'],
    ['"unterminated@example.com', false, 501, '5.1.3'],
    ['jörg@example.com', false, 553, '5.6.7'], // UTF-8 without SMTPUTF8 (RFC 6531 §3.5)
    ['j\uFFFDrg@example.com', true, 501, '5.1.3'], // undecodable bytes
  ];
  it.each(bad)('refuses %j (smtputf8=%s) with %i %s', (addr, smtputf8, code, enhanced) => {
    const r = checkMailbox(addr, { role: 'recipient', smtputf8 });
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.code).toBe(code);
      expect(r.enhanced).toBe(enhanced);
    }
  });

  it('uses 5.1.7 for a bad sender and accepts the null sender only as sender', () => {
    expect(checkMailbox('', { role: 'sender', smtputf8: false })).toEqual({ ok: true, address: '' });
    expect(checkMailbox('', { role: 'recipient', smtputf8: false }).ok).toBe(false);
    expect(checkMailbox('a@', { role: 'sender', smtputf8: false })).toMatchObject({ ok: false, code: 501, enhanced: '5.1.7' });
  });
});

describe('Received header', () => {
  const date = Date.UTC(2026, 10, 24, 16, 31, 4);

  it('formats RFC 5322 dates with a numeric zone', () => {
    expect(rfc5322Date(date)).toBe('Tue, 24 Nov 2026 16:31:04 +0000');
    expect(rfc5322Date(Date.UTC(2027, 0, 3, 1, 2, 3))).toBe('Sun, 3 Jan 2027 01:02:03 +0000');
  });

  it('uses address literals (RFC 5321 §4.1.3)', () => {
    expect(addressLiteral('192.0.2.1')).toBe('[192.0.2.1]');
    expect(addressLiteral('2001:db8::1')).toBe('[IPv6:2001:db8::1]');
  });

  it('single recipient: from/by/with/id/for; date', () => {
    const h = receivedHeader({
      helo: 'client.example',
      rdns: 'host.example.net',
      address: '192.0.2.1',
      hostname: 'relay.example',
      protocol: 'ESMTPS',
      tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' },
      id: 'q1',
      recipients: ['rcpt@example.org'],
      date,
    });
    expect(h).toBe(
      'Received: from client.example (host.example.net [192.0.2.1])\r\n' +
        '\tby relay.example with ESMTPS (TLSv1.3 TLS_AES_256_GCM_SHA384) id q1\r\n' +
        '\tfor <rcpt@example.org>; Tue, 24 Nov 2026 16:31:04 +0000\r\n',
    );
  });

  it('several recipients are not disclosed; no rDNS shows the literal alone', () => {
    const h = receivedHeader({ helo: 'c', address: '::1', hostname: 'r', protocol: 'ESMTP', id: 'q2', recipients: ['a@x.example', 'b@x.example'], date });
    expect(h).toBe('Received: from c ([IPv6:::1])\r\n\tby r with ESMTP id q2; Tue, 24 Nov 2026 16:31:04 +0000\r\n');
    expect(h).not.toContain('a@x.example');
  });

  it('a hostile HELO cannot break the header', () => {
    const h = receivedHeader({ helo: 'x) (y;\u00e9', address: '192.0.2.1', hostname: 'r', protocol: 'ESMTP', id: 'q', recipients: [], date });
    expect(h.split('\r\n')[0]).toBe('Received: from x???y?? ([192.0.2.1])');
    expect(h.split('\r\n')).toHaveLength(3); // two lines + the final CRLF, nothing injected
  });
});

describe('SlidingWindow', () => {
  it('admits `limit` per window, frees slots as they age out, and takes released slots back', () => {
    const w = new SlidingWindow(2, 60_000);
    const a = w.tryAcquire('k', 0);
    const b = w.tryAcquire('k', 1000);
    expect(a && b).toBeTruthy();
    expect(w.tryAcquire('k', 2000)).toBeUndefined();
    expect(w.tryAcquire('other', 2000)).toBeDefined(); // keys are independent
    w.release(b!);
    const c = w.tryAcquire('k', 3000);
    expect(c).toBeDefined();
    expect(w.tryAcquire('k', 59_999)).toBeUndefined();
    expect(w.tryAcquire('k', 60_000)).toBeDefined(); // the slot taken at 0 expired
    expect(w.count('k', 60_000)).toBe(2);
    expect(w.count('k', 200_000)).toBe(0);
  });

  it('record() counts unconditionally', () => {
    const w = new SlidingWindow(3, 1000);
    for (let i = 0; i < 5; i++) w.record('ip', i);
    expect(w.count('ip', 10)).toBe(5);
    expect(w.count('ip', 1003)).toBe(1);
  });
});
