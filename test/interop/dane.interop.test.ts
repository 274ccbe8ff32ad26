/**
 * RFC 7672 against the real thing: nsd serving zones signed under a private root, Unbound
 * validating with that root as its only trust anchor, Postfix smtpd receivers with real
 * certificate chains, our relay as a real process (dist/) in `dns.mode: trust-ad` pointed at the
 * Unbound. Every case is submitted with swaks and judged by its OUTCOME: which listener got the
 * message and whether over TLS (the receiver's Received header), or that it stays deferred
 * (`dane-relay queue list --json`), or that a DSN came back to the sender.
 *
 * The differential runs Postfix 3.7 as a DANE relay (smtp_dns_support_level = dnssec,
 * smtp_tls_security_level = dane) in the same world and requires the same verdict on every case,
 * except where a case records a difference (`postfixDiffers`) with the RFC text that decides it:
 * Postfix wrong by the RFC, or the RFC leaving the choice to the client.
 *
 * Modes: INTEROP_DNS_MODES (comma-separated, default "trust-ad,validate") runs our relay once per
 * `dns.mode`; "validate" gives it the private root's trust anchor instead of trusting AD.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCases, type CaseWorld } from './support/cases.js';
import { startDnsWorld, type DnsWorld } from './support/dnsworld.js';
import { describeVerdict, rcptOf, settle, type Queued } from './support/outcome.js';
import { postfixTmpdir, startPostfixReceivers, startPostfixRelay, type PostfixReceivers, type PostfixRelay } from './support/postfix.js';
import { startRelay, swaks, type DnsMode, type RelayProcessHandle } from './support/relay.js';
import type { Verdict } from './support/cases.js';
import { ensureBuilt } from '../support/build.js';
import { configSchema } from '../../src/config/schema.js';
import { buildTlsrptWorld, type TlsrptWorld } from './support/tlsrptCases.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Resolver as NodeResolver } from 'node:dns/promises';
import { simpleParser } from 'mailparser';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import type { ReceivedMessage } from './support/postfix.js';
import { clearOfUtcMidnight } from '../support/utcDay.js';

const MODES = (process.env.INTEROP_DNS_MODES ?? 'trust-ad,validate').split(',').map((s) => s.trim()) as DnsMode[];

/** per-destination policy cases run when the relay has policy tables (a `policy` config section, issue 7) */
const HAS_POLICY = 'policy' in configSchema.shape;
// top-level await: the cases (with their fresh certificates) exist when the tests are declared
const world: CaseWorld = await buildCases({ policy: HAS_POLICY });
// Postfix reads smtp_tls_policy_maps from here too (postfixTmpdir: a directory its user can reach)
const policyDir = mkdtempSync(join(postfixTmpdir(), 'dane-relay-interop-policy-'));
/** our relay's policy section and Postfix's smtp_tls_policy_maps, when the world has policy cases */
const policyYaml = world.policy
  ? (() => {
      writeFileSync(join(policyDir, 'tls_policy'), world.policy.tlsPolicy.join('\n') + '\n');
      writeFileSync(join(policyDir, 'danefail'), world.policy.danefail.join('\n') + '\n');
      writeFileSync(join(policyDir, 'postfix_tls_policy'), world.policy.postfix.join('\n') + '\n');
      return `policy:\n  tls_policy: ${join(policyDir, 'tls_policy')}\n  danefail: ${join(policyDir, 'danefail')}\n  probe_interval: 0\n`;
    })()
  : '';
/**
 * TLSRPT (RFC 8460) cases run when the relay has reporting (a `tlsrpt` config section, issue 6):
 * declared only then, never as skipped placeholders.
 */
const HAS_TLSRPT = 'tlsrpt' in configSchema.shape;
if (HAS_TLSRPT) ensureBuilt(); // the world's DKIM key comes from `dane-relay dkim keygen`
const rpt: TlsrptWorld | undefined = HAS_TLSRPT ? await buildTlsrptWorld() : undefined;
let dns: DnsWorld | undefined;
let rx: PostfixReceivers | undefined;
const started: { stop(): Promise<void> }[] = [];

beforeAll(async () => {
  ensureBuilt(); // our relay runs from dist/
  try {
    dns = await startDnsWorld({ zones: [...world.zones, ...(rpt?.zones ?? [])] });
    rx = await startPostfixReceivers({ listeners: [...world.listeners, ...(rpt?.listeners ?? [])], resolver: dns.unbound });
  } catch (e) {
    await rx?.stop();
    await dns?.stop();
    throw e;
  }
});

afterAll(async () => {
  // everything is stopped, even when a case or a start failed
  for (const s of started.reverse()) await s.stop().catch(() => undefined);
  await rx?.stop().catch(() => undefined);
  await dns?.stop().catch(() => undefined);
  rmSync(policyDir, { recursive: true, force: true });
  if (rpt) rmSync(rpt.dir, { recursive: true, force: true });
});

async function submitAll(server: string, tag: string): Promise<void> {
  // a few at a time: swaks is a process per message
  const queue = [...world.cases];
  await Promise.all(
    Array.from({ length: 6 }, async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        await swaks({
          server,
          from: `${tag}@${world.senderDomain}`,
          to: rcptOf(tag, c),
          headers: { 'X-Interop-Case': `${tag} ${c.id}`, Subject: `interop ${c.id}` },
        });
      }
    }),
  );
}

const verdicts = new Map<string, Map<string, Verdict | undefined>>();
/** our relay's enhanced status code per case: from `queue list --json` (deferred) or the DSN (bounced) */
const codes = new Map<string, Map<string, string | undefined>>();

for (const [i, mode] of MODES.entries()) {
  const tag = `ours${i}`;
  describe(`dane-relay (dns.mode ${mode}) against nsd + unbound + Postfix receivers`, () => {
    let relay: RelayProcessHandle;
    beforeAll(async () => {
      relay = await startRelay({ resolver: dns!.unbound, mode, trustAnchorFile: dns!.trustAnchorFile, listen: `127.0.0.${3 + i}:2525`, extraYaml: policyYaml });
      started.push(relay);
      await submitAll(`${relay.host}:${relay.port}`, tag);
      const read = async () => {
        const l = await relay.queueList();
        const queued: Queued = new Map();
        for (const m of l.messages)
          for (const r of m.recipients)
            if (r.state !== 'delivered')
              queued.set(r.address.toLowerCase(), r.state === 'deferred' && r.attempts > 0 ? 'deferred' : r.state === 'failed' ? 'failed' : 'pending');
        return { messages: rx!.messages(), queued };
      };
      verdicts.set(tag, await settle(world.cases, tag, read, world.senderListener));
      const listing = await relay.queueList();
      const byRcpt = new Map(listing.messages.flatMap((m) => m.recipients.map((r) => [r.address.toLowerCase(), r.dsnCode] as const)));
      codes.set(
        tag,
        new Map(
          world.cases.map((c) => {
            const rcpt = rcptOf(tag, c);
            if (byRcpt.has(rcpt)) return [c.id, byRcpt.get(rcpt)];
            const dsn = rx!.messages().find((m) => m.by === world.senderListener && m.raw.toLowerCase().includes(rcpt));
            return [c.id, dsn ? /^Status:\s*(\d\.\d+\.\d+)/m.exec(dsn.raw)?.[1] : undefined];
          }),
        ),
      );
    });

    it('every case reached a verdict', () => {
      const open = world.cases.filter((c) => verdicts.get(tag)!.get(c.id) === undefined).map((c) => c.id);
      if (open.length) {
        // diagnostics for the cases without an outcome: what the relay and the receivers said
        console.log(`relay output:\n${relay.output().slice(-20_000)}\nreceivers log:\n${rx!.log().slice(-20_000)}`);
      }
      expect(open).toEqual([]);
    });

    for (const c of world.cases) {
      it(`${c.title} [${c.id}]`, () => {
        expect(describeVerdict(verdicts.get(tag)!.get(c.id))).toBe(describeVerdict(c.expect));
        if (c.code) expect(codes.get(tag)!.get(c.id), 'DANE-72 enhanced status code').toBe(c.code);
      });
    }
  });
}

describe('differential: Postfix 3.7 as a DANE relay in the same world', () => {
  let pf: PostfixRelay;
  const tag = 'pf';
  beforeAll(async () => {
    pf = await startPostfixRelay({
      address: '127.0.0.2',
      resolver: dns!.unbound,
      extra: world.policy ? { smtp_tls_policy_maps: `texthash:${join(policyDir, 'postfix_tls_policy')}` } : {},
    });
    started.push(pf);
    await submitAll(`${pf.address}:${pf.port}`, tag);
    const read = async () => {
      const queued: Queued = new Map();
      for (const e of pf.queue()) {
        for (const r of e.recipients) queued.set(r.address.toLowerCase(), e.queue_name === 'deferred' ? 'deferred' : 'pending');
      }
      return { messages: rx!.messages(), queued };
    };
    verdicts.set(tag, await settle(world.cases, tag, read, world.senderListener));
  });

  it('DANE-41 our relay reaches the same verdict as Postfix on every case, except the recorded ones (Postfix wrong by RFC 7672, or the RFC permits both)', () => {
    const ours = verdicts.get('ours0');
    expect(ours, 'the first mode of our relay ran').toBeDefined();
    const table: string[] = [];
    const mismatches: string[] = [];
    for (const c of world.cases) {
      const p = verdicts.get(tag)!.get(c.id);
      const o = ours!.get(c.id);
      const postfixShould = c.postfixDiffers ? c.postfixDiffers.verdict : c.expect;
      table.push(
        `${c.id.padEnd(34)} ours: ${describeVerdict(o).padEnd(70)} postfix: ${describeVerdict(p)}${c.postfixDiffers ? `  [${c.postfixDiffers.judgement}: ${c.postfixDiffers.rfc}]` : ''}`,
      );
      if (describeVerdict(p) !== describeVerdict(postfixShould))
        mismatches.push(`${c.id}: postfix ${describeVerdict(p)}, recorded ${describeVerdict(postfixShould)}`);
      if (!c.postfixDiffers && describeVerdict(p) !== describeVerdict(o))
        mismatches.push(`${c.id}: ours ${describeVerdict(o)} ≠ postfix ${describeVerdict(p)}`);
    }
    console.log(`interop verdicts:\n${table.join('\n')}`);
    expect(mismatches).toEqual([]);
  });
});

if (rpt) {
  describe('TLSRPT (RFC 8460) reports as the receivers get them', () => {
    let relay: RelayProcessHandle;
    let day = '';
    const policyDomains = [...rpt.reportedToGood, rpt.loopDomain, rpt.ambiguousDomain];
    const reports = () => rx!.messages().filter((m) => m.header('tls-report-domain'));
    const reportFor = (d: string) => reports().find((m) => m.header('tls-report-domain') === d);
    beforeAll(async () => {
      day = await clearOfUtcMidnight(5 * 60_000); // sessions counted and the report's day must be one UTC day
      relay = await startRelay({ resolver: dns!.unbound, listen: '127.0.0.9:2525', extraYaml: rpt.yaml });
      started.push(relay);
      for (const d of policyDomains) await swaks({ server: `${relay.host}:${relay.port}`, from: `rpt@${world.senderDomain}`, to: `rpt@${d}` });
      // every policy domain's MX fails DANE: one failed session each, message deferred
      const deadline = Date.now() + 60_000;
      for (;;) {
        const l = await relay.queueList();
        const deferredCount = l.messages.flatMap((m) => m.recipients).filter((r) => r.state === 'deferred' && r.attempts > 0).length;
        if (deferredCount >= policyDomains.length || Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      await new Promise((r) => setTimeout(r, 1500)); // the relay flushes its counts at most a second late
      // Only a closed UTC day can be reported: the CLI runs a day later (libfaketime), the relay keeps the real clock.
      const sent = await relay.cliAt('+1d', 'tlsrpt', 'send', '--day', day);
      if (sent.code !== 0) throw new Error(`tlsrpt send: ${sent.stdout}${sent.stderr}`);
      await relay.restart(); // the outbox is taken into the spool at start
      const until = Date.now() + 60_000;
      while (Date.now() < until && !(reportFor(rpt.loopDomain) && rpt.reportedToGood.every((d) => reportFor(d)))) await new Promise((r) => setTimeout(r, 250));
    }, 600_000); // may first wait out a UTC midnight (clearOfUtcMidnight)

    it('TLSRPT-3 case 1: one v=TLSRPTv1 record among unrelated TXT records is used; a record split into two strings is joined without a space; an unknown extension is ignored', () => {
      for (const d of rpt.reportedToGood) expect(reportFor(d)?.by, `report for ${d}`).toBe(rpt.goodRuaListener);
    });

    it('TLSRPT-3 case 1: two v=TLSRPTv1 records → the domain gets no report', () => {
      expect(reportFor(rpt.loopDomain)).toBeDefined(); // the run got as far as delivering reports
      expect(reportFor(rpt.ambiguousDomain)).toBeUndefined();
    });

    it('TLSRPT-42 TLSRPT-43 TLSRPT-44 case 7: multipart/report; report-type="tlsrpt", two parts, gzip JSON with the filename grammar, TLS-Report-* headers, Subject grammar, DKIM pass covering both headers without l=', async () => {
      const m = reportFor(rpt.reportedToGood[0]!) as ReceivedMessage;
      expect(m).toBeDefined();
      const raw = readFileSync(m.file);
      const ct = m.header('content-type') ?? '';
      expect(ct).toMatch(/^multipart\/report;/i);
      expect(ct).toMatch(/report-type="?tlsrpt"?/i);
      const boundary = /boundary="?([^";]+)"?/i.exec(ct)![1]!;
      // Maildir files have LF line ends (Postfix's virtual agent); count the delimiter lines
      expect(
        raw
          .toString('latin1')
          .split(/\r?\n/)
          .filter((l) => l === `--${boundary}`).length,
        'MIME parts',
      ).toBe(2);
      expect(m.header('tls-report-domain')).toBe(rpt.reportedToGood[0]);
      expect(m.header('tls-report-submitter')).toBe(rpt.submitter);
      expect(m.header('subject')).toMatch(
        new RegExp(`^Report Domain: ${rpt.reportedToGood[0]!.replace(/\./g, '\\.')} Submitter: ${rpt.submitter.replace(/\./g, '\\.')} Report-ID: <[^>]+>$`),
      );
      const parsed = await simpleParser(raw);
      expect(parsed.attachments).toHaveLength(1);
      const att = parsed.attachments[0]!;
      expect(att.contentType).toBe('application/tlsrpt+gzip');
      // RFC 8460 §5.3: sender "!" policy-domain "!" begin "!" end [ "!" unique-id ] "." extension
      expect(att.filename).toMatch(
        new RegExp(`^${rpt.submitter.replace(/\./g, '\\.')}!${rpt.reportedToGood[0]!.replace(/\./g, '\\.')}!\\d+!\\d+(![A-Za-z0-9._-]+)?\\.json\\.gz$`),
      );
      const { gunzipSync } = await import('node:zlib');
      const json = JSON.parse(gunzipSync(att.content).toString('utf8')) as { policies: { summary: Record<string, number> }[] };
      expect(json.policies.reduce((n, p) => n + p.summary['total-failure-session-count']!, 0)).toBeGreaterThanOrEqual(1);
      const r = new NodeResolver({ timeout: 2000, tries: 1 });
      r.setServers([dns!.unbound]);
      const dkim = await dkimVerify(raw, { resolver: (name: string, rr: string) => r.resolve(name, rr as 'TXT') as Promise<never> });
      const pass = dkim.results.find(
        (x: { status: { result: string }; signingDomain?: string }) => x.status.result === 'pass' && x.signingDomain === rpt.dkimDomain,
      );
      expect(pass, JSON.stringify(dkim.results.map((x: { status: unknown }) => x.status))).toBeDefined();
      const sig = (m.header('dkim-signature') ?? '').replace(/\s+/g, '');
      const h = /(?:^|;)h=([^;]+)/.exec(sig)![1]!.toLowerCase().split(':');
      expect(h).toEqual(expect.arrayContaining(['tls-report-domain', 'tls-report-submitter', 'subject']));
      expect(sig).not.toMatch(/(?:^|;)l=/);
    });

    it('TLSRPT-30 TLSRPT-10 TLSRPT-26 cases 3, 4, 10 as received: every report matches the §4.4 schema; a tlsa policy-string is one "u s m HEX" per RR and its policy-domain is the TLSA base domain (the MX host), not the recipient domain; totals are integers and equal the failure-details sums', async () => {
      const { Ajv } = await import('ajv');
      const schema = JSON.parse(readFileSync(join(process.cwd(), 'test/reporting/fixtures/rfc8460-report.schema.json'), 'utf8'));
      const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);
      const { gunzipSync } = await import('node:zlib');
      const received = reports();
      expect(received.length).toBeGreaterThanOrEqual(rpt.reportedToGood.length);
      let tlsaPolicies = 0;
      for (const m of received) {
        const att = (await simpleParser(readFileSync(m.file))).attachments[0]!;
        const json = JSON.parse(gunzipSync(att.content).toString('utf8')) as {
          policies: {
            policy: { 'policy-type': string; 'policy-string'?: string[]; 'policy-domain': string };
            summary: Record<string, number>;
            'failure-details'?: { 'failed-session-count': number; 'receiving-mx-hostname'?: string }[];
          }[];
        };
        expect(validate(json), JSON.stringify(validate.errors)).toBe(true);
        const recipientDomain = m.header('tls-report-domain')!;
        for (const p of json.policies) {
          const details = p['failure-details'] ?? [];
          for (const n of Object.values(p.summary)) expect(Number.isInteger(n)).toBe(true);
          expect(p.summary['total-failure-session-count']).toBe(details.reduce((n, d) => n + d['failed-session-count'], 0));
          if (p.policy['policy-type'] !== 'tlsa') continue;
          tlsaPolicies++;
          expect(p.policy['policy-string']?.length).toBeGreaterThan(0);
          for (const rr of p.policy['policy-string'] ?? []) expect(rr).toMatch(/^[0-3] [01] [0-2] [0-9A-Fa-f]+$/);
          expect(p.policy['policy-domain']).not.toBe(recipientDomain);
          for (const d of details)
            if (d['receiving-mx-hostname']) expect(d['receiving-mx-hostname'].replace(/\.$/, '').toLowerCase()).toBe(p.policy['policy-domain']);
        }
      }
      expect(tlsaPolicies).toBeGreaterThan(0);
    });

    it('TLSRPT-45 case 9: a report whose rua MX fails DANE is still delivered (no DANE for reports) and adds no session to the next report', async () => {
      const m = reportFor(rpt.loopDomain);
      expect(m?.by).toBe(rpt.brokenRuaListener);
      const show = await relay.cli('tlsrpt', 'show', '--day', day, '--json');
      const next = JSON.parse(show.stdout) as { policies: { policy: { 'policy-domain': string } }[] }[];
      const domains = next.flatMap((rep) => rep.policies.map((p) => p.policy['policy-domain']));
      expect(domains.some((d) => d.endsWith('rua-broken.tst'))).toBe(false);
      expect(domains.some((d) => d.endsWith(rpt.loopDomain))).toBe(true); // the report for the failing domain is still there
    });
  });
}
