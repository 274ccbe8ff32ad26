/**
 * DestinationRun's decisions with the SMTP client's connector (issue 14): every MX host's address
 * is served by an in-process scripted SMTP peer (test/support/scriptedPeer.ts scriptedConnector), a
 * real SMTP dialogue — and real TLS after STARTTLS — with no port; an address without a peer is
 * refused like a closed port. DNS answers come from the test DNS server (real DNS messages). What
 * the run decided is read from its outcomes and from its DeliveryEvents, through the real TLSRPT
 * and metrics subscribers.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import tls from 'node:tls';
import { Readable } from 'node:stream';
import { DestinationRun, type DeliveryDeps, type DeliveryJob } from '../../src/delivery/deliver.js';
import type { DeliveryEvent } from '../../src/delivery/events.js';
import { StubResolver } from '../../src/dns/stub.js';
import { tlsrptSubscriber, type TlsSessionResult } from '../../src/reporting/tlsrpt/results.js';
import { deliveryMetrics } from '../../src/delivery/metrics.js';
import type { TlsLevel } from '../../src/dane/levels.js';
import { startDnsServer, type TestDns } from '../support/dnsServer.js';
import { makeCa, makeLeaf, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { CachedPolicy } from '../../src/mtasts/store.js';
import { StsStateError, type StsLookup } from '../../src/mtasts/policies.js';
import { normalScript, scriptedConnector, type ConnectionScript } from '../support/scriptedPeer.js';
import { deliveryDeps } from '../support/deliveryDeps.js';

/** The delivery port: the connector intercepts every dial, so nothing listens or is ever dialled there. */
const PORT = 9;
const T = 3000;
let dns: TestDns;
let resolver: StubResolver;
let good: Issued;
let wrong: Issued;

beforeAll(async () => {
  dns = await startDnsServer();
  resolver = new StubResolver({ servers: [dns.server], timeoutMs: 2000, attempts: 2 });
  good = await makeSelfSigned({ dnsNames: ['mx1.dane.test', 'mx2.dane.test'] });
  wrong = await makeSelfSigned({ dnsNames: ['mx1.dane.test'] });
  // fallback.test: two MX hosts on loopback addresses (never dialled: the connector answers)
  dns.add(
    { name: 'fallback.test', type: 'MX', data: { preference: 10, exchange: 'mx1.fallback.test' } },
    { name: 'fallback.test', type: 'MX', data: { preference: 20, exchange: 'mx2.fallback.test' } },
    { name: 'mx1.fallback.test', type: 'A', data: '127.0.0.2' },
    { name: 'mx2.fallback.test', type: 'A', data: '127.0.0.3' },
  );
  // dane.test: a secure zone, both hosts pinned to `good` with 3 1 1
  dns.addZone({ name: 'dane.test', secure: true });
  dns.add(
    { name: 'dane.test', type: 'MX', data: { preference: 10, exchange: 'mx1.dane.test' } },
    { name: 'dane.test', type: 'MX', data: { preference: 20, exchange: 'mx2.dane.test' } },
    { name: 'mx1.dane.test', type: 'A', data: '127.0.0.4' },
    { name: 'mx2.dane.test', type: 'A', data: '127.0.0.5' },
  );
  for (const h of ['mx1', 'mx2'])
    dns.add({ name: `_${PORT}._tcp.${h}.dane.test`, type: 'TLSA', data: { usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(good, 1, 1) } });
});
afterAll(async () => {
  await resolver.close();
  await dns.close();
});

function deps(
  level: TlsLevel,
  connector: DeliveryDeps['connector'],
  events: DeliveryEvent[],
  tlsrpt: TlsSessionResult[],
  deferrals: string[] = [],
  over: Partial<DeliveryDeps> = {},
): DeliveryDeps {
  return deliveryDeps({
    resolver,
    port: PORT,
    timeout: T,
    tlsLevel: () => ({ level, rule: 'test' }),
    connector,
    subscribers: [
      (e) => {
        events.push(e);
      },
      tlsrptSubscriber((r) => tlsrpt.push(r)),
      deliveryMetrics({ deferral: (e) => deferrals.push(e.reason) }),
    ],
    ...over,
  });
}

let n = 0;
function job(domain: string, recipients = [`u@${domain}`]): DeliveryJob {
  const id = `m${n++}`;
  return {
    id,
    size: 30,
    recipients,
    envelope: { kind: 'normal', from: 'a@sender.test', recipients, smtputf8: false, eightBit: false, client: { address: '127.0.0.1' }, received: Date.now() },
    body: () => Readable.from([Buffer.from(`Subject: ${id}\r\n\r\nhello\r\n`)]),
  };
}

const starttls220 = (verb: string) => (verb === 'STARTTLS' ? { reply: '220 2.0.0 ready to start TLS\r\n' } : undefined);

/** A well-behaved peer that offers STARTTLS and upgrades with `cert`. */
function tlsPeer(cert: Issued): () => ConnectionScript {
  const ctx = tls.createSecureContext({ key: cert.keyPem, cert: cert.certPem });
  const script = normalScript({ ext: ['STARTTLS', 'PIPELINING'], answer: starttls220 });
  return () => ({ ...script(), tlsContext: () => ctx });
}

const kinds = (events: DeliveryEvent[]) => events.map((e) => e.kind).filter((k) => k !== 'recipient' && k !== 'mx-insecure');

describe('DestinationRun decisions over an in-process SMTP peer (connector)', () => {
  it('RFC 5321 §5.1 MX order: the first host refuses the connection, the second takes the message; one session carries the next message', async () => {
    const peers = scriptedConnector({ '127.0.0.3': normalScript() });
    const events: DeliveryEvent[] = [];
    const run = new DestinationRun(deps('may', peers.connector, events, []), 'fallback.test');
    try {
      const first = await run.deliver(job('fallback.test'));
      expect(first).toMatchObject([{ result: 'sent', relay: `mx2.fallback.test[127.0.0.3]:${PORT}`, remoteMta: 'mx2.fallback.test' }]);
      const second = await run.deliver(job('fallback.test', ['v@fallback.test', 'w@fallback.test']));
      expect(second.map((o) => o.result)).toEqual(['sent', 'sent']);
    } finally {
      await run.close();
    }
    expect(peers.dials).toEqual(['127.0.0.2', '127.0.0.3']);
    expect(peers.connections).toHaveLength(1);
    expect(peers.connections[0]!.transactions.map((t) => [t.rcpts, t.delivered])).toEqual([
      [['u@fallback.test'], true],
      [['v@fallback.test', 'w@fallback.test'], true],
    ]);
    expect(kinds(events)).toEqual(['attempt-failed', 'session-opened']);
    const failed = events.find((e) => e.kind === 'attempt-failed');
    expect(failed).toMatchObject({ target: { host: 'mx1.fallback.test', address: '127.0.0.2' }, plan: { kind: 'may' } });
    expect(failed?.kind === 'attempt-failed' && [failed.error.stage, failed.error.kind]).toEqual(['connect', 'connection']);
    expect(events.filter((e) => e.kind === 'recipient')).toHaveLength(3);
  });

  it('maxMessagesPerConnection: three messages with a limit of two take two connections', async () => {
    const peers = scriptedConnector({ '127.0.0.2': normalScript() });
    const run = new DestinationRun(deps('may', peers.connector, [], [], [], { maxMessagesPerConnection: 2 }), 'fallback.test');
    try {
      for (let i = 0; i < 3; i++) expect((await run.deliver(job('fallback.test')))[0]!.result).toBe('sent');
    } finally {
      await run.close();
    }
    expect(peers.connections.map((c) => c.transactions.length)).toEqual([2, 1]);
    expect(peers.connections[0]!.commands.at(-1)).toBe('QUIT');
  });

  it('DANE-44 may: a failed TLS handshake is retried in cleartext and delivered; TLSRPT counts the failed session once, the retry not at all', async () => {
    // The peer says 220 to STARTTLS but never speaks TLS: it answers the ClientHello in plain text, the handshake fails.
    const peers = scriptedConnector({ '127.0.0.2': normalScript({ ext: ['STARTTLS'], answer: starttls220 }) });
    const events: DeliveryEvent[] = [];
    const tlsrpt: TlsSessionResult[] = [];
    const run = new DestinationRun(deps('may', peers.connector, events, tlsrpt), 'fallback.test');
    try {
      expect(await run.deliver(job('fallback.test'))).toMatchObject([{ result: 'sent', relay: `mx1.fallback.test[127.0.0.2]:${PORT}` }]);
    } finally {
      await run.close();
    }
    expect(peers.connections.map((c) => c.commands.includes('STARTTLS'))).toEqual([true, false]);
    expect(peers.connections[1]!.transactions[0]!.delivered).toBe(true);
    const failed = events.find((e) => e.kind === 'attempt-failed');
    expect(failed).toMatchObject({ next: 'cleartext', plan: { kind: 'may' } });
    expect(failed?.kind === 'attempt-failed' && [failed.error.stage, failed.error.kind, failed.error.cleartextRetryAllowed]).toEqual([
      'tls',
      'tls-handshake',
      true,
    ]);
    expect(events.find((e) => e.kind === 'session-opened')).toMatchObject({ retry: 'cleartext', plan: { kind: 'none' } });
    expect(tlsrpt).toEqual([
      expect.objectContaining({
        ok: false,
        resultType: 'validation-failure',
        reasonCode: 'tls-handshake-failure',
        host: 'mx1.fallback.test',
        address: '127.0.0.2',
        receivingHelo: 'peer.test.invalid',
      }),
    ]);
  });

  it('DANE-41 DANE-63 a mismatching certificate at the first MX: QUIT right after the handshake, nothing of the envelope; the second MX verifies and delivers', async () => {
    const peers = scriptedConnector({ '127.0.0.4': tlsPeer(wrong), '127.0.0.5': tlsPeer(good) });
    const events: DeliveryEvent[] = [];
    const tlsrpt: TlsSessionResult[] = [];
    const run = new DestinationRun(deps('dane', peers.connector, events, tlsrpt), 'dane.test');
    try {
      expect(await run.deliver(job('dane.test'))).toMatchObject([{ result: 'sent', relay: `mx2.dane.test[127.0.0.5]:${PORT}` }]);
    } finally {
      await run.close();
    }
    const [mx1, mx2] = peers.connections;
    expect(mx1!.tls).toBe(true);
    expect(mx1!.commands.slice(mx1!.commands.indexOf('STARTTLS') + 1)).toEqual(['QUIT']);
    expect(mx2!.transactions[0]!.delivered).toBe(true);
    const failed = events.find((e) => e.kind === 'attempt-failed');
    expect(failed?.kind === 'attempt-failed' && [failed.error.stage, failed.error.kind, failed.error.verify?.reason]).toEqual([
      'verify',
      'unauthenticated',
      'dane-no-match',
    ]);
    const opened = events.find((e) => e.kind === 'session-opened');
    expect(opened?.kind === 'session-opened' && opened.tls?.verified).toBe(true);
    expect(tlsrpt.map((r) => [r.host, r.ok, r.resultType ?? null, r.reasonCode ?? null])).toEqual([
      ['mx1.dane.test', false, 'certificate-not-trusted', 'dane-no-match'],
      ['mx2.dane.test', true, null, null],
    ]);
    expect(tlsrpt[0]!.policy).toEqual({ type: 'tlsa', baseDomain: 'mx1.dane.test', records: [expect.stringMatching(/^3 1 1 [0-9A-F]{64}$/)] });
  });

  it('DANE-43 every host failing DANE defers with 4.7.5 and never falls back to cleartext; the deferral is labelled by the typed cause', async () => {
    const peers = scriptedConnector({ '127.0.0.4': tlsPeer(wrong) }); // mx2 refuses the connection
    const events: DeliveryEvent[] = [];
    const deferrals: string[] = [];
    const run = new DestinationRun(deps('dane', peers.connector, events, [], deferrals), 'dane.test');
    let out: Awaited<ReturnType<DestinationRun['deliver']>>;
    try {
      out = await run.deliver(job('dane.test'));
    } finally {
      await run.close();
    }
    expect(out).toMatchObject([{ result: 'deferred', code: '4.7.5' }]);
    expect(out[0]!.relay).toBeUndefined();
    expect(peers.connections).toHaveLength(1); // no cleartext retry under DANE
    expect(deferrals).toEqual(['dane-no-match']);
    const r = events.find((e) => e.kind === 'recipient');
    expect(r?.kind === 'recipient' && r.cause).toEqual({
      kind: 'unreachable',
      hosts: [
        {
          kind: 'attempt',
          target: expect.objectContaining({ host: 'mx1.dane.test' }),
          code: '4.7.5',
          stage: 'verify',
          planKind: 'dane',
          verifyReason: 'dane-no-match',
        },
        { kind: 'attempt', target: expect.objectContaining({ host: 'mx2.dane.test' }), code: '4.4.1', stage: 'connect', planKind: 'dane' },
      ],
    });
  });

  it('RFC 5321 §4.2.5 a 452 to RCPT defers that recipient (remote-temporary), a 550 bounces the other, the third is delivered', async () => {
    const peers = scriptedConnector({
      '127.0.0.2': normalScript({
        answer: (verb, line) =>
          verb !== 'RCPT'
            ? undefined
            : line.includes('<full@')
              ? { reply: '452 4.2.2 mailbox full\r\n' }
              : line.includes('<gone@')
                ? { reply: '550 5.1.1 no such user\r\n' }
                : undefined,
      }),
    });
    const deferrals: string[] = [];
    const run = new DestinationRun(deps('may', peers.connector, [], [], deferrals), 'fallback.test');
    try {
      const out = await run.deliver(job('fallback.test', ['full@fallback.test', 'gone@fallback.test', 'ok@fallback.test']));
      expect(out.map((o) => [o.address, o.result, o.code])).toEqual([
        ['full@fallback.test', 'deferred', '4.2.2'],
        ['gone@fallback.test', 'bounced', '5.1.1'],
        ['ok@fallback.test', 'sent', '2.0.0'],
      ]);
    } finally {
      await run.close();
    }
    expect(deferrals).toEqual(['remote-temporary']);
  });

  it('RFC 5321 §3.1 a 421 greeting at the first host (the second refuses the connection) defers with 4.4.2 (connection-lost); the client QUITs', async () => {
    const peers = scriptedConnector({ '127.0.0.2': normalScript({ greeting: { reply: '421 4.3.2 busy\r\n' } }) });
    const deferrals: string[] = [];
    const run = new DestinationRun(deps('may', peers.connector, [], [], deferrals), 'fallback.test');
    try {
      expect(await run.deliver(job('fallback.test'))).toMatchObject([{ result: 'deferred', code: '4.4.2' }]);
    } finally {
      await run.close();
    }
    expect(deferrals).toEqual(['connection-lost']);
    expect(peers.connections[0]!.commands).toEqual(['QUIT']);
  });

  it('RT-23 RT-25 a REQUIRETLS run: a DANE failure at MX1, MX2 verified but without REQUIRETLS is QUIT before MAIL (4.7.30); every event says requireTls and TLSRPT counts none of them', async () => {
    const peers = scriptedConnector({ '127.0.0.4': tlsPeer(wrong), '127.0.0.5': tlsPeer(good) });
    const events: DeliveryEvent[] = [];
    const tlsrpt: TlsSessionResult[] = [];
    const deferrals: string[] = [];
    // tls_level may for the destination: a REQUIRETLS run ignores it (REQUIRETLS_LEVEL, dane-only)
    const run = new DestinationRun(deps('may', peers.connector, events, tlsrpt, deferrals), 'dane.test', { requireTls: true });
    const j = job('dane.test');
    j.envelope.requireTls = true;
    try {
      expect(await run.deliver(j)).toMatchObject([{ result: 'deferred', code: '4.7.30' }]);
    } finally {
      await run.close();
    }
    const [mx1, mx2] = peers.connections;
    expect(mx1!.commands.slice(mx1!.commands.indexOf('STARTTLS') + 1)).toEqual(['QUIT']);
    expect(mx2!.tls).toBe(true);
    expect(mx2!.commands.some((c) => c.startsWith('MAIL'))).toBe(false);
    expect(kinds(events)).toEqual(['attempt-failed', 'session-opened', 'requiretls-host-refused']);
    expect(events.find((e) => e.kind === 'requiretls-host-refused')).toMatchObject({ problem: 'not-advertised', target: { host: 'mx2.dane.test' } });
    expect(events.every((e) => e.requireTls === true)).toBe(true);
    expect(tlsrpt).toEqual([]);
    expect(deferrals).toEqual(['requiretls-unsupported']);
  });

  it('STS-40 STS-41 STS-43 STS-60 STS-61 an MTA-STS enforce run: MX outside the patterns skipped, a WebPKI certificate for another name refused, the matching MX delivers; TLSRPT counts each under the sts policy', async () => {
    const ca = await makeCa({ cn: 'STS test root' });
    const otherName = await makeLeaf(ca, { dnsNames: ['mx9.sts.test'] });
    const right = await makeLeaf(ca, { dnsNames: ['mx2.sts.test'] });
    dns.add(
      { name: 'sts.test', type: 'MX', data: { preference: 5, exchange: 'mx0.elsewhere.test' } },
      { name: 'sts.test', type: 'MX', data: { preference: 10, exchange: 'mx1.sts.test' } },
      { name: 'sts.test', type: 'MX', data: { preference: 20, exchange: 'mx2.sts.test' } },
      { name: 'mx0.elsewhere.test', type: 'A', data: '127.0.0.6' },
      { name: 'mx1.sts.test', type: 'A', data: '127.0.0.7' },
      { name: 'mx2.sts.test', type: 'A', data: '127.0.0.8' },
    );
    const lines = ['version: STSv1', 'mode: enforce', 'mx: *.sts.test', 'max_age: 86400'];
    const policy: CachedPolicy = {
      domain: 'sts.test',
      id: 'id1',
      fetchedAt: Date.now(),
      expiresAt: Date.now() + 86_400_000,
      lastUsed: Date.now(),
      policy: { mode: 'enforce', maxAge: 86_400, mx: ['*.sts.test'], lines },
    };
    const peers = scriptedConnector({ '127.0.0.6': tlsPeer(right), '127.0.0.7': tlsPeer(otherName), '127.0.0.8': tlsPeer(right) });
    const events: DeliveryEvent[] = [];
    const tlsrpt: TlsSessionResult[] = [];
    const run = new DestinationRun(
      deps('may', peers.connector, events, tlsrpt, [], {
        sts: async () => ({ applied: policy, discovery: { kind: 'record', id: 'id1', name: '_mta-sts.sts.test' }, fetch: 'cached' }),
        stsRoots: [ca.certPem],
      }),
      'sts.test',
    );
    try {
      expect(await run.deliver(job('sts.test'))).toMatchObject([{ result: 'sent', relay: `mx2.sts.test[127.0.0.8]:${PORT}` }]);
    } finally {
      await run.close();
    }
    expect(peers.dials).toEqual(['127.0.0.7', '127.0.0.8']);
    expect(peers.connections[0]!.commands.slice(peers.connections[0]!.commands.indexOf('STARTTLS') + 1)).toEqual(['QUIT']);
    const sts = { type: 'sts', policyDomain: 'sts.test', lines, mx: ['*.sts.test'] };
    expect(tlsrpt.map((r) => [r.host, r.ok, r.resultType ?? null, r.reasonCode ?? null])).toEqual([
      ['mx0.elsewhere.test', false, 'validation-failure', 'mx-mismatch'],
      ['mx1.sts.test', false, 'certificate-host-mismatch', null],
      ['mx2.sts.test', true, null, null],
    ]);
    for (const r of tlsrpt) expect(r.policy).toEqual(sts);
  });

  it('STS-16 STS-33 a lookup that fails locally (cache unreadable, a bug) defers 4.7.0 (sts-state) and contacts no host; the next message asks again', async () => {
    const peers = scriptedConnector({ '127.0.0.2': normalScript() });
    const events: DeliveryEvent[] = [];
    const tlsrpt: TlsSessionResult[] = [];
    const deferrals: string[] = [];
    const answers: (() => Promise<StsLookup>)[] = [
      () => Promise.reject(new StsStateError('MTA-STS policy cache for fallback.test cannot be read: EISDIR')),
      () => Promise.reject(new TypeError("Cannot read properties of undefined (reading 'mode')")), // a bug
      async () => ({ discovery: { kind: 'none', name: '_mta-sts.fallback.test', why: 'no such name' }, fetch: 'cached' }),
    ];
    let asked = 0;
    const run = new DestinationRun(deps('may', peers.connector, events, tlsrpt, deferrals, { sts: () => answers[asked++]!() }), 'fallback.test');
    try {
      expect(await run.deliver(job('fallback.test'))).toMatchObject([
        { result: 'deferred', code: '4.7.0', reason: expect.stringMatching(/^MTA-STS policy state for fallback.test unavailable \(MTA-STS policy cache/) },
      ]);
      expect(await run.deliver(job('fallback.test'))).toMatchObject([{ result: 'deferred', code: '4.7.0', reason: expect.stringContaining('reading') }]);
      expect(peers.dials).toEqual([]);
      // the state is readable again (here: no policy at all): delivered
      expect(await run.deliver(job('fallback.test'))).toMatchObject([{ result: 'sent' }]);
    } finally {
      await run.close();
    }
    expect(asked).toBe(3);
    expect(events.filter((e) => e.kind === 'sts-lookup-failed')).toHaveLength(2);
    expect(events.filter((e) => e.kind === 'recipient').map((e) => (e.kind === 'recipient' ? (e.cause?.kind ?? 'sent') : ''))).toEqual([
      'sts-state',
      'sts-state',
      'sent',
    ]);
    expect(deferrals).toEqual(['sts-state-unavailable', 'sts-state-unavailable']);
    // nothing was tried: no TLSRPT session before the state was known
    expect(tlsrpt.map((r) => r.host)).toEqual(['mx1.fallback.test']);
  });

  it('STS-16 STS-60 STS-62 a policy fetch that failed with nothing cached: delivered as without MTA-STS; TLSRPT counts sts-policy-fetch-error under an empty sts policy', async () => {
    const peers = scriptedConnector({ '127.0.0.2': normalScript() });
    const events: DeliveryEvent[] = [];
    const tlsrpt: TlsSessionResult[] = [];
    const run = new DestinationRun(
      deps('may', peers.connector, events, tlsrpt, [], {
        sts: async () => ({
          discovery: { kind: 'record', id: 'id2', name: '_mta-sts.fallback.test' },
          fetch: 'failed',
          failure: { resultType: 'sts-policy-fetch-error', reason: 'HTTP 404' },
        }),
      }),
      'fallback.test',
    );
    try {
      expect(await run.deliver(job('fallback.test'))).toMatchObject([{ result: 'sent', relay: `mx1.fallback.test[127.0.0.2]:${PORT}` }]);
    } finally {
      await run.close();
    }
    expect(events.find((e) => e.kind === 'sts-fetch-failed')).toMatchObject({ resultType: 'sts-policy-fetch-error', reason: 'HTTP 404' });
    expect(tlsrpt.map((r) => [r.host ?? null, r.ok, r.resultType ?? null, r.policy?.type ?? null])).toEqual([
      [null, false, 'sts-policy-fetch-error', 'sts'],
      // the session itself: no policy applied, STARTTLS not offered by this peer
      ['mx1.fallback.test', false, 'starttls-not-supported', null],
    ]);
    expect(tlsrpt[0]!.policy).toEqual({ type: 'sts', policyDomain: 'fallback.test', lines: [], mx: [] });
  });
});
