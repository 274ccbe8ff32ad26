/** RFC 3461 parameter rules, one row each (src/dsn/params.ts). */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  commandParams,
  decodeXtext,
  encodeXtext,
  mailDsnOf,
  mailDsnParams,
  rcptDsnOf,
  notifyAllows,
  parseEnvid,
  parseNotify,
  parseOrcpt,
  parseRet,
  rcptDsnParams,
  MAX_ENVID,
  MAX_ORCPT,
  type RcptDsn,
} from '../../src/dsn/params.js';

describe('xtext (RFC 3461 §4)', () => {
  const rows: [string, string | undefined][] = [
    ['abc', 'abc'],
    ['QQ+2B314159', 'QQ+314159'],
    ['a+20b', 'a b'],
    ['a+2bb', 'a+b'], // lower-case hex accepted, as Postfix does
    ['a+2', undefined], // "+" needs two hex digits
    ['a+zz', undefined],
    ['a=b', undefined], // "=" is not an xchar
    ['a b', undefined], // nor is a space
    ['ä', undefined], // nor non-ASCII
    ['', ''],
  ];
  for (const [raw, decoded] of rows) it(`${JSON.stringify(raw)} → ${JSON.stringify(decoded)}`, () => expect(decodeXtext(raw)).toBe(decoded));

  it('encode then decode is the identity for any string; the encoding is xtext', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme-ascii' }), (s) => {
        const e = encodeXtext(s);
        expect(e).toMatch(/^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/);
        expect(decodeXtext(e)).toBe(s);
      }),
    );
  });
});

describe('MAIL parameters', () => {
  const rows: [string, () => unknown, unknown][] = [
    ['RET=FULL', () => parseRet('FULL'), { ok: true, value: 'FULL' }],
    ['RET=hdrs (case-insensitive)', () => parseRet('hdrs'), { ok: true, value: 'HDRS' }],
    ['RET=BODY refused', () => parseRet('BODY').ok, false],
    ['ENVID decoded', () => parseEnvid('QQ+2B314159'), { ok: true, value: 'QQ+314159' }],
    ['ENVID with a space inside (+20) is printable', () => parseEnvid('a+20b'), { ok: true, value: 'a b' }],
    ['ENVID of 100 characters accepted', () => parseEnvid('x'.repeat(MAX_ENVID)).ok, true],
    ['ENVID of 101 characters refused', () => parseEnvid('x'.repeat(MAX_ENVID + 1)).ok, false],
    ['ENVID smuggling a CR LF refused', () => parseEnvid('a+0D+0Ab').ok, false],
    ['ENVID with a NUL refused', () => parseEnvid('a+00').ok, false],
    ['ENVID with 8-bit octet refused', () => parseEnvid('a+C3').ok, false],
    ['ENVID not xtext refused', () => parseEnvid('a+').ok, false],
  ];
  for (const [name, f, want] of rows) it(name, () => expect(f()).toEqual(want));
});

describe('RCPT parameters', () => {
  const rows: [string, () => unknown, unknown][] = [
    ['NOTIFY=NEVER', () => parseNotify('NEVER'), { ok: true, value: ['NEVER'] }],
    ['NOTIFY=success,failure,delay (any case)', () => parseNotify('success,failure,delay'), { ok: true, value: ['SUCCESS', 'FAILURE', 'DELAY'] }],
    ['NOTIFY=NEVER,SUCCESS refused (§4.1)', () => parseNotify('NEVER,SUCCESS').ok, false],
    ['NOTIFY=FAILURE,NEVER refused', () => parseNotify('FAILURE,NEVER').ok, false],
    ['NOTIFY=SOMETIMES refused', () => parseNotify('SOMETIMES').ok, false],
    ['NOTIFY=SUCCESS, (empty item) refused', () => parseNotify('SUCCESS,').ok, false],
    ['NOTIFY repeated value collapses', () => parseNotify('DELAY,DELAY'), { ok: true, value: ['DELAY'] }],
    [
      'ORCPT=rfc822;a+40b.example',
      () => parseOrcpt('rfc822;Alias+40Client.example', false),
      { ok: true, value: { type: 'rfc822', address: 'Alias@Client.example' } },
    ],
    ['ORCPT without ";" refused', () => parseOrcpt('rfc822', false).ok, false],
    ['ORCPT with an empty address refused', () => parseOrcpt('rfc822;', false).ok, false],
    ['ORCPT with an empty type refused', () => parseOrcpt(';a@b', false).ok, false],
    ['ORCPT type must be an atom', () => parseOrcpt('rfc 822;a@b', false).ok, false],
    ['ORCPT address must be printable US-ASCII', () => parseOrcpt('rfc822;a+0Ab@c', false).ok, false],
    ['ORCPT of 500 characters accepted', () => parseOrcpt(`rfc822;${'a'.repeat(MAX_ORCPT - 9)}@b`, false).ok, true],
    ['ORCPT of 501 characters refused', () => parseOrcpt(`rfc822;${'a'.repeat(MAX_ORCPT - 8)}@b`, false).ok, false],
    [
      'ORCPT utf-8 type carries UTF-8 in an SMTPUTF8 session (RFC 6533 §3)',
      () => parseOrcpt('utf-8;jörg@bücher.example', true),
      { ok: true, value: { type: 'utf-8', address: 'jörg@bücher.example' } },
    ],
    ['ORCPT raw UTF-8 refused without SMTPUTF8', () => parseOrcpt('utf-8;jörg@b.example', false).ok, false],
    ['ORCPT raw UTF-8 refused for the rfc822 type', () => parseOrcpt('rfc822;jörg@b.example', true).ok, false],
  ];
  for (const [name, f, want] of rows) it(name, () => expect(f()).toEqual(want));
});

describe('passing them on (RFC 3461 §5.2.1)', () => {
  it('MAIL gets exactly what was received: RET and ENVID (re-encoded canonically), nothing made up', () => {
    expect(mailDsnParams(undefined)).toBe('');
    expect(mailDsnParams({})).toBe('');
    expect(mailDsnParams({ envid: 'QQ+314159' })).toBe(' ENVID=QQ+2B314159');
    expect(mailDsnParams({ ret: 'HDRS', envid: 'a b=c' })).toBe(' RET=HDRS ENVID=a+20b+3Dc');
  });
  it('RCPT gets NOTIFY and ORCPT only when received', () => {
    expect(rcptDsnParams(undefined)).toBe('');
    expect(rcptDsnParams({ notify: ['NEVER'] })).toBe(' NOTIFY=NEVER');
    expect(rcptDsnParams({ notify: ['SUCCESS', 'DELAY'], orcpt: { type: 'rfc822', address: 'a+b@c' } })).toBe(' NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+2Bb@c');
    expect(rcptDsnParams({ orcpt: { type: 'utf-8', address: 'jörg@b' } })).toBe(' ORCPT=utf-8;jörg@b');
  });
});

describe('which notifications NOTIFY allows', () => {
  const cases: [string, RcptDsn | undefined, boolean, boolean, boolean][] = [
    // [NOTIFY, dsn, success, failure, delay]
    ['absent: failures and delays as before, no success (§4.1 default)', undefined, false, true, true],
    ['NEVER: none (§5.2.6 (b), §5.2.5 (c))', { notify: ['NEVER'] }, false, false, false],
    ['SUCCESS only', { notify: ['SUCCESS'] }, true, false, false],
    ['FAILURE only: no delay DSN (§5.2.5 (c))', { notify: ['FAILURE'] }, false, true, false],
    ['DELAY only: no failure DSN (§5.2.6 (b))', { notify: ['DELAY'] }, false, false, true],
    ['SUCCESS,FAILURE,DELAY', { notify: ['SUCCESS', 'FAILURE', 'DELAY'] }, true, true, true],
    ['ORCPT alone changes nothing', { orcpt: { type: 'rfc822', address: 'a@b' } }, false, true, true],
  ];
  for (const [name, d, s, f, dl] of cases) {
    it(name, () => expect([notifyAllows(d, 'success'), notifyAllows(d, 'failure'), notifyAllows(d, 'delay')]).toEqual([s, f, dl]));
  }
});

describe('a command line as the client sent it', () => {
  const rows: [string, unknown][] = [
    ['MAIL FROM:<a@b> SIZE=10 RET=HDRS ENVID=x+2By', { ok: true, value: { ret: 'HDRS', envid: 'x+y' } }],
    ['MAIL FROM:<a@b> BODY=8BITMIME', { ok: true, value: undefined }],
    ['MAIL FROM:<> ENVID=a ENVID=b', { ok: false, text: 'ENVID given more than once (RFC 3461 §4)' }],
    ['MAIL FROM:<a@b> RET', { ok: false, text: 'Bad RET parameter syntax (RFC 3461 §4.3: FULL or HDRS)' }],
    ['MAIL FROM:<a@b> ENVID=', { ok: false, text: 'Bad ENVID parameter syntax (RFC 3461 §4.4: xtext of printable US-ASCII)' }],
  ];
  for (const [line, want] of rows) it(line, () => expect(mailDsnOf(commandParams(line))).toEqual(want));

  const rcpt: [string, unknown][] = [
    [
      'RCPT TO:<x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y',
      { ok: true, value: { notify: ['SUCCESS', 'FAILURE'], orcpt: { type: 'rfc822', address: 'x@y' } } },
    ],
    ['RCPT TO:<x@y>', { ok: true, value: undefined }],
    ['RCPT TO:<x@y> NOTIFY=NEVER NOTIFY=NEVER', { ok: false, text: 'NOTIFY given more than once (RFC 3461 §4)' }],
    ['RCPT TO:<x@y> ORCPT=rfc822;x@y ORCPT=rfc822;z@y', { ok: false, text: 'ORCPT given more than once (RFC 3461 §4)' }],
  ];
  for (const [line, want] of rcpt) it(line, () => expect(rcptDsnOf(commandParams(line), false)).toEqual(want));
});
