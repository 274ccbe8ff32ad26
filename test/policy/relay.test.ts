/**
 * Per-destination policy through the whole relay: tls_policy levels and rules in the delivery
 * log, the danefail exception list (DANE-70), reload on change / SIGHUP with a bad file kept out,
 * the recovery probe, DANE-15 opt-in and rollover warnings. Real DNS messages, real TLS, real files.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { writeFileAtomic } from '../support/files.js';
import { World } from '../support/world.js';
import { submit } from '../support/mail.js';
import { chainPem, makeSelfSigned, tlsaData, type Issued } from '../support/pki.js';
import type { Receiver } from '../support/receiver.js';
import type { RelayEvents } from '../../src/metrics/events.js';

let w: World;
beforeEach(async () => {
  w = await World.create();
});
afterEach(async () => {
  await w.close();
});

const tlsa311 = (cert: Issued) => ({ usage: 3, selector: 1, matchingType: 1, certificate: tlsaData(cert, 1, 1) });

async function tlsReceiver(cert: Issued, extra: Parameters<World['receiver']>[0] = {}): Promise<Receiver> {
  return w.receiver({ tls: { key: cert.keyPem, cert: chainPem(cert) }, ...extra });
}

function domain(name: string, rx: Receiver, tlsa: object[], opts: { mxSecure?: boolean; hostSecure?: boolean } = {}): string {
  const mx = `mx.${name}`;
  w.dns.addZone({ name, secure: opts.mxSecure ?? true });
  if (opts.hostSecure !== undefined) w.dns.addZone({ name: mx, secure: opts.hostSecure });
  w.dns.add({ name, type: 'MX', data: { preference: 10, exchange: mx } });
  w.dns.add({ name: mx, type: 'A', data: rx.host });
  for (const t of tlsa) w.dns.add({ name: `_${w.port}._tcp.${mx}`, type: 'TLSA', data: t });
  return mx;
}

function recorder() {
  const calls: { hook: string; e: unknown }[] = [];
  const events: RelayEvents = {
    exceptionDowngrade: (e) => calls.push({ hook: 'exceptionDowngrade', e }),
    exceptionRecovered: (e) => calls.push({ hook: 'exceptionRecovered', e }),
    rolloverWarning: (e) => calls.push({ hook: 'rolloverWarning', e }),
  };
  return { events, calls, of: (h: string) => calls.filter((c) => c.hook === h).map((c) => c.e) };
}

const send = (to: string) => submit({ port: w.ingressPort, from: 'app@sender.test', to: [to] });
const stateOf = (addr: string) =>
  w
    .relay!.scheduler.list()
    .flatMap((m) => m.recipients)
    .find((r) => r.address === addr);

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('tls_policy through the relay', () => {
  it('DANE-45 a dane-only entry defers a domain without TLSA (4.7.5); the log names the rule; .parent and default apply elsewhere', async () => {
    const plain = await makeSelfSigned({ dnsNames: ['mx.strict.test'] });
    const rx = await tlsReceiver(plain);
    domain('strict.test', rx, []);
    domain('sub.loose.test', rx, []);
    const file = join(w.dir, 'tls_policy');
    writeFileAtomic(file, '# test\nstrict.test dane-only\n.loose.test may\n');
    await w.start({ policy: { tls_policy: file } });
    await send('a@strict.test');
    await send('b@sub.loose.test');
    await w.settle();
    expect(stateOf('a@strict.test')).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
    expect(rx.messages.map((m) => m.to[0])).toEqual(['b@sub.loose.test']);
    const byTo = (to: string) => w.deliveries().find((l) => l.to === to)!;
    expect(byTo('a@strict.test').tls_rule).toBe(`${file}:2 strict.test dane-only`);
    expect(byTo('b@sub.loose.test').tls_rule).toBe(`${file}:3 .loose.test may`);
  });

  it('DANE-15 trust-insecure-mx: TLSA under an insecure MX is used and logged `trusted`; without the option it is not queried', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.opt.test'] });
    const rx = await tlsReceiver(ee);
    domain('opt.test', rx, [tlsa311(ee)], { mxSecure: false, hostSecure: true });
    domain('noopt.test', rx, [tlsa311(ee)], { mxSecure: false, hostSecure: true });
    const file = join(w.dir, 'tls_policy');
    writeFileAtomic(file, 'opt.test dane trust-insecure-mx\n');
    await w.start({ policy: { tls_policy: file } });
    await send('a@opt.test');
    await send('b@noopt.test');
    await w.settle();
    expect(rx.messages).toHaveLength(2);
    const byTo = (to: string) => w.deliveries().find((l) => l.to === to)!;
    expect(byTo('a@opt.test')).toMatchObject({ status: 'sent', dane: 'Trusted' });
    expect(byTo('b@noopt.test')).toMatchObject({ status: 'sent', dane: 'Untrusted' });
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.opt.test`, 'TLSA')).toBeGreaterThan(0);
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.noopt.test`, 'TLSA')).toBe(0);
  });
});

describe('DANE-46 audit-only', () => {
  it('DANE-46 an audit entry delivers after a failed DANE check over TLS, logged untrusted with the failure; without it the message defers', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.audit.test'] });
    const stale = await makeSelfSigned();
    const rx = await tlsReceiver(ee);
    domain('audit.test', rx, [tlsa311(stale)]);
    domain('strict.test', rx, [tlsa311(stale)]);
    const file = join(w.dir, 'tls_policy');
    writeFileAtomic(file, 'audit.test dane audit\n');
    await w.start({ policy: { tls_policy: file } });
    await send('a@audit.test');
    await send('b@strict.test');
    await w.settle();
    expect(rx.messages.map((m) => m.to[0])).toEqual(['a@audit.test']);
    expect(rx.messages[0]!.secure).toBe(true);
    expect(w.deliveries().find((l) => l.to === 'a@audit.test')).toMatchObject({
      status: 'sent',
      dane: 'Untrusted',
      tls_rule: `${file}:1 audit.test dane audit`,
    });
    expect(w.logs.find((l) => l.msg.startsWith('DANE audit'))).toMatchObject({ domain: 'audit.test', error: expect.stringContaining('dane-no-match') });
    expect(stateOf('b@strict.test')).toMatchObject({ state: 'deferred', dsnCode: '4.7.5' });
  });
});

describe('DANE-70 danefail exception list', () => {
  it('DANE-70 a listed domain with stale TLSA is delivered opportunistically, gets no TLSA query, and every delivery is logged and counted', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.broken.test'] });
    const other = await makeSelfSigned({ dnsNames: ['mx.broken.test'] });
    const rx = await tlsReceiver(ee);
    domain('broken.test', rx, [tlsa311(other)]); // the record matches a key the server no longer has
    const file = join(w.dir, 'danefail');
    writeFileAtomic(file, '# shared list\n\n  BROKEN.test.  \n');
    const rec = recorder();
    await w.start({ policy: { danefail: file } }, { events: rec.events });
    await send('a@broken.test');
    await w.settle();
    await send('b@broken.test');
    await w.settle();
    expect(rx.messages.map((m) => m.to[0])).toEqual(['a@broken.test', 'b@broken.test']);
    expect(rx.messages.every((m) => m.secure)).toBe(true);
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.broken.test`, 'TLSA')).toBe(0);
    for (const d of w.deliveries()) {
      expect(d).toMatchObject({ status: 'sent', dane: 'Untrusted', dane_exception: true, tls_rule: `${file}:3 broken.test exception dane→may` });
    }
    expect(w.logs.filter((l) => l.msg.startsWith('DANE exception applied'))).toHaveLength(2);
    expect(rec.of('exceptionDowngrade')).toEqual([
      { domain: 'broken.test', level: 'may' },
      { domain: 'broken.test', level: 'may' },
    ]);
  });

  it('DANE-70 the exception cannot cure a bogus MX: still deferred 4.4.3, nothing counted', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.bogus.test'] });
    const rx = await tlsReceiver(ee);
    domain('bogus.test', rx, [tlsa311(ee)]);
    w.dns.behave('bogus.test', 'MX', 'servfail');
    const file = join(w.dir, 'danefail');
    writeFileAtomic(file, 'bogus.test\n');
    const rec = recorder();
    await w.start({ policy: { danefail: file } }, { events: rec.events });
    await send('a@bogus.test');
    await w.settle();
    expect(rx.connections).toBe(0);
    expect(stateOf('a@bogus.test')).toMatchObject({ state: 'deferred', dsnCode: '4.4.3' });
    expect(rec.of('exceptionDowngrade')).toEqual([]);
  });

  it('DANE-70 an attempt under the exception that defers before connecting is still logged and counted (no TLSA query)', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.down.test'] });
    const rx = await tlsReceiver(ee);
    domain('down.test', rx, [tlsa311(ee)]);
    await rx.close(); // nothing listens any more: connection refused
    const file = join(w.dir, 'danefail');
    writeFileAtomic(file, 'down.test\n');
    const rec = recorder();
    await w.start({ policy: { danefail: file } }, { events: rec.events });
    await send('a@down.test');
    await w.settle();
    expect(stateOf('a@down.test')).toMatchObject({ state: 'deferred' });
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.down.test`, 'TLSA')).toBe(0);
    const l = w.logs.filter((x) => x.msg.startsWith('DANE exception applied'));
    expect(l).toHaveLength(1);
    expect(l[0]).toMatchObject({
      domain: 'down.test',
      level: 'may',
      instead_of: 'dane',
      msg: 'DANE exception applied: attempted without DANE, deferred (danefail list)',
    });
    expect(rec.of('exceptionDowngrade')).toEqual([{ domain: 'down.test', level: 'may' }]);
  });

  it('DANE-70 probe: a listed domain whose DANE verifies again is reported (log + exceptionRecovered), no mail sent; a still-broken one is not', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.fixed.test'] });
    const rxFixed = await tlsReceiver(ee);
    domain('fixed.test', rxFixed, [tlsa311(ee)]);
    const ee2 = await makeSelfSigned({ dnsNames: ['mx.still.test'] });
    const stale = await makeSelfSigned();
    const rxStill = await tlsReceiver(ee2);
    domain('still.test', rxStill, [tlsa311(stale)]);
    const file = join(w.dir, 'danefail');
    writeFileAtomic(file, 'fixed.test\nstill.test\n');
    const rec = recorder();
    await w.start({ policy: { danefail: file, probe_interval: 0 } }, { events: rec.events });
    expect(await w.relay!.prober!.probe('fixed.test')).toMatchObject({ ok: true, host: 'mx.fixed.test' });
    expect(await w.relay!.prober!.probe('still.test')).toMatchObject({ ok: false });
    expect(rec.of('exceptionRecovered')).toEqual([{ domain: 'fixed.test', host: 'mx.fixed.test' }]);
    expect(w.logs.some((l) => l.msg === 'DANE works again for fixed.test: the danefail exception can be removed')).toBe(true);
    // The probe used the real level: TLSA was queried, the peer verified, and it said QUIT, never MAIL.
    expect(w.dns.queriesFor(`_${w.port}._tcp.mx.fixed.test`, 'TLSA')).toBeGreaterThan(0);
    expect(rxFixed.tlsHandshakes).toBe(1);
    expect(rxFixed.commands.some((c) => /^MAIL/i.test(c))).toBe(false);
    // The broken one failed verification after the handshake: not even the post-TLS EHLO (DANE-63).
    expect(rxStill.tlsHandshakes).toBe(1);
    expect(rxStill.commands.filter((c) => /^EHLO/i.test(c))).toHaveLength(1);
    expect(rxStill.commands.some((c) => /^MAIL/i.test(c))).toBe(false);
    expect(rxFixed.messages).toHaveLength(0);
  });
});

describe('DANE-70 periodic probe', () => {
  it('DANE-70 with probe_interval set, the relay probes listed domains on its own and says when DANE works again', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.healed.test'] });
    const rx = await tlsReceiver(ee);
    domain('healed.test', rx, [tlsa311(ee)]);
    const file = join(w.dir, 'danefail');
    writeFileAtomic(file, 'healed.test\n');
    const rec = recorder();
    await w.start({ policy: { danefail: file, probe_interval: '300ms' } }, { events: rec.events });
    await until(() => rec.of('exceptionRecovered').length > 0);
    expect(rec.of('exceptionRecovered')[0]).toEqual({ domain: 'healed.test', host: 'mx.healed.test' });
    expect(rx.messages).toHaveLength(0);
  });
});

describe('reload', () => {
  it('issue7: fs.watch / stat: a good new file takes effect; a bad one is rejected with its line and the previous stays; SIGHUP path via reload()', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.r.test'] });
    const rx = await tlsReceiver(ee);
    domain('r.test', rx, []);
    const file = join(w.dir, 'tls_policy');
    writeFileAtomic(file, 'r.test may\n');
    await w.start({ policy: { tls_policy: file } }, { policyStatIntervalMs: 200 });
    expect(w.relay!.policy!.resolve('r.test')).toMatchObject({ level: 'may' });

    writeFileAtomic(file, '# now strict\nr.test dane-only\n');
    await until(() => w.relay!.policy!.resolve('r.test').level === 'dane-only');
    expect(w.logs.some((l) => l.msg === 'policy reloaded')).toBe(true);

    writeFileAtomic(file, 'r.test may\nother.test sometimes\n');
    await until(() => w.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('rejected')));
    const err = w.logs.find((l) => l.msg.includes('rejected'))!;
    // issue 21 item 5: one line; the problems as a structured field
    expect(err.msg).toBe(`${file}: rejected (previous version stays in force)`);
    expect(err.problems).toEqual([{ line: 2, message: expect.stringContaining('unknown TLS level "sometimes"') }]);
    expect(w.relay!.policy!.resolve('r.test')).toMatchObject({ level: 'dane-only', rule: `${file}:2 r.test dane-only` });

    // SIGHUP handler calls relay.reload(): the same bad file is still rejected, then a fixed one loads.
    expect(w.relay!.reload().rejected[0]!.error).toContain('line 2');
    const p = w.relay!.policy!;
    p.close(); // stop watching so only the explicit reload can pick the next version up
    writeFileAtomic(file, 'r.test encrypt\n');
    expect(p.resolve('r.test').level).toBe('dane-only');
    expect(w.relay!.reload()).toMatchObject({ loaded: [file], rejected: [] });
    expect(p.resolve('r.test')).toMatchObject({ level: 'encrypt', rule: `${file}:1 r.test encrypt` });
    await send('a@r.test');
    await w.settle();
    expect(w.deliveries()[0]).toMatchObject({ status: 'sent', tls_rule: `${file}:1 r.test encrypt`, dane: 'Untrusted' });
  });

  it('issue7: a reload reaches a backlog being drained: later messages of the same run follow the new level', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.bl.test'] });
    const file = join(w.dir, 'tls_policy');
    let reloadAfterFirst = false;
    const rx = await tlsReceiver(ee, {
      data: () => {
        // The first message of the backlog has arrived; the run still holds the rest: tighten the policy now.
        if (reloadAfterFirst) {
          reloadAfterFirst = false;
          writeFileAtomic(file, 'bl.test dane-only\n');
          expect(w.relay!.reload().loaded).toEqual([file]);
        }
        return undefined;
      },
    });
    domain('bl.test', rx, []); // no TLSA: dane-only defers 4.7.5
    writeFileAtomic(file, 'bl.test dane-only\n');
    await w.start({ policy: { tls_policy: file }, delivery: { per_destination: 1 } });
    for (let i = 0; i < 5; i++) await send(`m${i}@bl.test`);
    await w.settle();
    expect(rx.messages).toHaveLength(0);
    // Relax, then make the whole deferred backlog due at once: one run (per_destination 1) drains it.
    writeFileAtomic(file, 'bl.test may\n');
    w.relay!.reload();
    reloadAfterFirst = true;
    const before = w.deliveries().length;
    expect(w.relay!.scheduler.flush('bl.test')).toBe(5);
    await w.settle();
    const drained = w.deliveries().slice(before);
    expect(drained).toHaveLength(5);
    expect(rx.messages).toHaveLength(1);
    expect(drained[0]).toMatchObject({ status: 'sent', tls_rule: `${file}:1 bl.test may` });
    for (const d of drained.slice(1)) expect(d).toMatchObject({ status: 'deferred', dsn: '4.7.5', tls_rule: `${file}:1 bl.test dane-only` });
    expect(w.logs.some((l) => l.msg.startsWith('policy changed while delivering') && l.previous_rule === `${file}:1 bl.test may`)).toBe(true);
  });

  it('DANE-2 the relay refuses to start when a tls_policy entry asks for DANE and the trust-ad resolver is off-host', async () => {
    await w.receiver(); // fixes the world's port
    const file = join(w.dir, 'tls_policy');
    writeFileAtomic(file, 'ok.test may\nstrict.test dane-only\n');
    // 192.0.2.53 (TEST-NET-1) is refused before any query is sent; no resolver is injected, so the real check runs.
    const config = w.config({ dns: { resolvers: ['192.0.2.53:53'] }, delivery: { tls_level: 'may' }, policy: { tls_policy: file } });
    const { Relay } = await import('../../src/relay.js');
    await expect(Relay.start({ config, log: (await import('pino')).pino({ level: 'silent' }) })).rejects.toThrow(
      /a DANE entry in .*tls_policy: resolver\(s\) 192\.0\.2\.53:53 are not on loopback/,
    );
  });

  it('DANE-4 a reload that brings in the first DANE entry re-runs the DNSSEC self-test; a later SIGHUP re-tests too (issue 13)', async () => {
    await w.receiver();
    const file = join(w.dir, 'tls_policy');
    writeFileAtomic(file, 'x.test may\n');
    await w.start({ delivery: { tls_level: 'may' }, policy: { tls_policy: file } });
    const selftests = () =>
      w.logs.filter((l) => l.msg === 'DNSSEC self-test passed' || (typeof l.msg === 'string' && l.msg.startsWith('DNSSEC SELF-TEST FAILED')));
    await new Promise((r) => setTimeout(r, 200));
    expect(selftests()).toHaveLength(0); // nothing asks for DANE yet
    writeFileAtomic(file, 'x.test may\ny.test dane\n');
    expect(w.relay!.reload().loaded).toEqual([file]);
    await until(() => selftests().length === 1);
    expect(selftests()[0]).toMatchObject({ why: 'reload introduced DANE' });
    writeFileAtomic(file, 'x.test encrypt\ny.test dane\n');
    expect(w.relay!.reload().loaded).toEqual([file]);
    await until(() => selftests().length === 2);
    expect(selftests()[1]).toMatchObject({ why: 'SIGHUP' });
  });

  it('issue7: a bad file at start-up refuses to start, naming the line', async () => {
    await w.receiver(); // fixes the world's port
    const file = join(w.dir, 'danefail');
    writeFileAtomic(file, 'ok.test\nnot a domain\n');
    await expect(w.start({ policy: { danefail: file } })).rejects.toThrow(/line 2: one bare domain per line/);
  });
});

describe('rollover warnings while delivering', () => {
  it('issue7: a single 3 1 1 on a leaf that expires in 5 days: delivered, then warned in the log and RelayEvents.rolloverWarning', async () => {
    const ee = await makeSelfSigned({ dnsNames: ['mx.roll.test'], notAfter: new Date(Date.now() + 5 * 86_400_000) });
    const rx = await tlsReceiver(ee);
    domain('roll.test', rx, [tlsa311(ee)]);
    const ee2 = await makeSelfSigned({ dnsNames: ['mx.safe.test'], notAfter: new Date(Date.now() + 5 * 86_400_000) });
    const next = await makeSelfSigned();
    const rx2 = await tlsReceiver(ee2);
    domain('safe.test', rx2, [tlsa311(ee2), tlsa311(next)]);
    const rec = recorder();
    // no connection cache: c@roll.test must open a second session to the same MX (the case under test)
    await w.start({ delivery: { connection_cache_time: 0 } }, { events: rec.events });
    await send('a@roll.test');
    await send('b@safe.test');
    await w.settle();
    await send('c@roll.test'); // a new session to the same MX: the facts are kept, no second warning today
    await w.settle();
    expect(rx.messages).toHaveLength(2);
    expect(rx.tlsHandshakes).toBe(2);
    expect(rx2.messages).toHaveLength(1);
    const warn = w.logs.filter((l) => l.msg.startsWith('DANE rollover risk'));
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatchObject({ domain: 'roll.test', mx: 'mx.roll.test', rollover: 'ee-key-expiring', record: 0, depth: 0 });
    expect(rec.of('rolloverWarning')).toEqual([expect.objectContaining({ domain: 'roll.test', host: 'mx.roll.test', kind: 'ee-key-expiring' })]);
    // a day later the risk is still there and is said again
    w.clock.advance(86_400_000 + 1);
    await send('d@roll.test');
    await w.settle();
    expect(rec.of('rolloverWarning')).toHaveLength(2);
  });
});
