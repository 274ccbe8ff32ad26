/**
 * Issue 21 item 4: one vocabulary. The same outcome gives the same word in the log (`delivery` line
 * `status`/`dane`), in `queue list` (text and --json) and in the metrics (`dane_relay_deliveries_total`
 * `outcome`/`dane` labels): Postfix's sent/deferred/bounced and Verified/Trusted/Untrusted/Cleartext.
 * Real relay in-process, real receivers and DNS on loopback, metrics scraped over HTTP.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { makeSelfSigned, tlsaData } from '../support/pki.js';
import { scrape, value } from '../support/prom.js';
import { formatListing, shownMessage } from '../../src/spool/inspect.js';
import { STATUS_WORDS, TLS_WORDS, shownState, tlsWord } from '../../src/vocabulary/words.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

describe('one vocabulary: log, queue list and metrics say the same word (issue 21 item 4)', () => {
  it('issue21: the stored states are shown in the status words; every TLS fact has one word', () => {
    expect([shownState('delivered'), shownState('failed'), shownState('deferred'), shownState('pending')]).toEqual(['sent', 'bounced', 'deferred', 'pending']);
    expect(STATUS_WORDS).toEqual(['sent', 'deferred', 'bounced']);
    const facts = [
      [{ connected: false, tls: false, authenticated: false }, 'none'],
      [{ connected: true, tls: false, authenticated: false }, 'Cleartext'],
      [{ connected: true, tls: true, authenticated: false, certificate: false }, 'Anonymous'],
      [{ connected: true, tls: true, authenticated: false }, 'Untrusted'],
      [{ connected: true, tls: true, authenticated: true, nameBound: false }, 'Trusted'],
      [{ connected: true, tls: true, authenticated: true }, 'Verified'],
    ] as const;
    for (const [f, word] of facts) expect(tlsWord(f)).toBe(word);
    expect(new Set(facts.map(([, word]) => word))).toEqual(new Set(TLS_WORDS));
  });

  it('DANE-63 issue21: sent/deferred/bounced and Verified/Untrusted/Cleartext/none, the same in the delivery log, queue list (text, --json) and the metrics', async () => {
    const daneCert = await makeSelfSigned({ dnsNames: ['mx.dane.test'] });
    const tlsCert = await makeSelfSigned({ dnsNames: ['mx.tls.test'] });
    const rcpt = (a: string) =>
      a.startsWith('later') ? { code: 450, message: '4.2.1 mailbox busy' } : a.startsWith('nobody') ? { code: 550, message: '5.1.1 no such user' } : undefined;
    const rxDane = await w.receiver({ tls: { key: daneCert.keyPem, cert: daneCert.certPem }, rcpt });
    const rxTls = await w.receiver({ tls: { key: tlsCert.keyPem, cert: tlsCert.certPem }, rcpt });
    const rxPlain = await w.receiver({ rcpt });
    w.dns.addZone({ name: 'dane.test', secure: true });
    w.dns.add(
      { name: 'dane.test', type: 'MX', data: { preference: 10, exchange: 'mx.dane.test' } },
      { name: 'mx.dane.test', type: 'A', data: rxDane.host },
      { name: `_${w.port}._tcp.mx.dane.test`, type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(daneCert, 1, 1) } },
      { name: 'tls.test', type: 'MX', data: { preference: 10, exchange: 'mx.tls.test' } },
      { name: 'mx.tls.test', type: 'A', data: rxTls.host },
      { name: 'plain.test', type: 'MX', data: { preference: 10, exchange: 'mx.plain.test' } },
      { name: 'mx.plain.test', type: 'A', data: rxPlain.host },
      { name: 'dead.test', type: 'MX', data: { preference: 10, exchange: 'mx.dead.test' } },
      { name: 'mx.dead.test', type: 'A', data: w.deadHost() },
    );
    const relay = await w.start({ metrics: { listen: '127.0.0.1:0' } });
    for (const to of [['ok@dane.test', 'later@dane.test'], ['ok@tls.test', 'nobody@tls.test', 'later@tls.test'], ['ok@plain.test'], ['x@dead.test']])
      await submit({ port: w.ingressPort, from: 'app@sender.test', to });
    await w.settle();

    const s = await scrape('127.0.0.1', relay.metrics!.server.address.port);
    const listing = { messages: relay.scheduler.list(), unreadable: [] };
    const text = formatListing(listing, w.clock.now());
    const json = listing.messages.map(shownMessage).flatMap((m) => m.recipients as { address: string; state: string }[]);
    // recipient → [status, TLS word]; queue list shows the recipients of messages still queued
    const table: [string, string, string][] = [
      ['ok@dane.test', 'sent', 'Verified'],
      ['later@dane.test', 'deferred', 'Verified'],
      ['ok@tls.test', 'sent', 'Untrusted'],
      ['nobody@tls.test', 'bounced', 'Untrusted'],
      ['later@tls.test', 'deferred', 'Untrusted'],
      ['ok@plain.test', 'sent', 'Cleartext'],
      ['x@dead.test', 'deferred', 'none'],
    ];
    const counts = new Map<string, number>();
    for (const [to, status, tls] of table) {
      const line = w.deliveries().find((l) => l.to === to);
      expect(line, to).toMatchObject({ status, dane: tls });
      const shown = json.find((r) => r.address === to);
      if (shown) {
        expect(shown.state, to).toBe(status);
        expect(text).toMatch(new RegExp(`<${to.replace('.', '\\.')}>  ${status}  attempts`));
      }
      counts.set(`${status}|${tls}`, (counts.get(`${status}|${tls}`) ?? 0) + 1);
    }
    // the finished message (ok@plain.test) has left the queue; the others are listed with their words
    expect(json.map((r) => r.address)).toEqual(expect.arrayContaining(['ok@dane.test', 'nobody@tls.test', 'x@dead.test']));
    expect(text).not.toMatch(/ delivered | failed /);
    for (const [k, n] of counts) {
      const [outcome, dane] = k.split('|');
      expect(value(s, 'dane_relay_deliveries_total', { outcome: outcome!, dane: dane! }), k).toBe(n);
    }
    // nothing else was counted but the bounce's DSN to the sender (its own attempt, logged and counted alike)
    const dsn = w.deliveries().filter((l) => l.to === 'app@sender.test');
    expect(dsn.length).toBe(1);
    expect(value(s, 'dane_relay_deliveries_total')).toBe(table.length + dsn.length);
  });
});
