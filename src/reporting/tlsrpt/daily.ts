/**
 * TLSRPT inside the relay: the recorder on the delivery seam, the store, and the daily job that
 * sends each closed UTC day's reports after a random delay (RFC 8460 §4.1, digest TLSRPT-34).
 *
 * On disk under `tlsrpt.dir` (default `<queue_dir>/tlsrpt`):
 *   counts/<day>.jsonl     the counters (store.ts)
 *   plan/<day>.json        when each domain's report for that day is due (random delay, fixed once chosen)
 *   sent/<day>/<domain>    a report that went out (or was dropped, with why); never sent twice by the job
 *   pending/<id>.json      https sends awaiting retry (https.ts)
 *   outbox/<name>.msg      mailed reports composed by `dane-relay tlsrpt send` while the relay runs:
 *                          the relay moves them into its spool as Envelope.kind 'tlsrpt'
 */
import { promises as fsp, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { configPath, type LoadedConfig } from '../../config/load.js';
import type { Resolver } from '../../dns/types.js';
import type { Envelope } from '../../spool/types.js';
import { TlsrptStore, writeFileDurable, type CountStore } from './store.js';
import type { PgSendClaims, SendClaim } from './pgStore.js';
import { ensurePrivateSubdir, readFileNoFollow } from '../../files/private.js';
import { TlsrptDiscovery } from './discovery.js';
import { TlsrptRecorder } from './recorder.js';
import { HttpsSender, type HttpsOptions, type PendingStore } from './https.js';
import type { RelayEvents } from '../../metrics/events.js';
import { mailtoTargetProblem } from './targets.js';
import { checkDkimKey, composeReportMail, type DkimKey } from './mail.js';
import { aLabel, buildReport, dayOf, isDay, makeReportId, nextDay, reportFilename, submitterOf, type ReportJson } from './report.js';

export interface TlsrptSettings {
  dir: string;
  organizationName: string;
  contactInfo: string;
  submitter: string;
  retentionDays: number;
  maxDelayMs: number;
  dkim?: DkimKey;
  /** `tlsrpt.allow_private_targets`: rua may point at special-purpose addresses and address literals (targets.ts) */
  allowPrivateTargets: boolean;
}

/** The `tlsrpt:` config section with its defaults applied; reads the DKIM key (clear error if unreadable). */
export function tlsrptSettings(cfg: LoadedConfig): TlsrptSettings {
  const t = cfg.tlsrpt;
  const contactInfo = t.contact_info ?? `postmaster@${cfg.hostname}`;
  let dkim: DkimKey | undefined;
  if (t.dkim) {
    const file = configPath(cfg, t.dkim.key_file);
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`tlsrpt.dkim.key_file: cannot read ${file}: ${(e as Error).message}`);
    }
    if (!/-----BEGIN (RSA |)PRIVATE KEY-----/.test(pem)) throw new Error(`tlsrpt.dkim.key_file: ${file} holds no PEM private key`);
    dkim = { domain: t.dkim.domain, selector: t.dkim.selector, privateKey: pem };
  }
  return {
    dir: t.dir ? configPath(cfg, t.dir) : join(cfg.queue_dir, 'tlsrpt'),
    organizationName: t.organization_name ?? cfg.hostname,
    contactInfo,
    submitter: t.submitter ? aLabel(t.submitter) : submitterOf(contactInfo),
    retentionDays: t.retention_days,
    maxDelayMs: t.max_delay,
    dkim,
    allowPrivateTargets: t.allow_private_targets,
  };
}

export interface Log {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** How a composed mailed report enters the relay: its spool (in the relay) or the outbox (CLI). */
export type SubmitMail = (envelope: Envelope, message: Buffer) => Promise<string>;

export interface BuiltReport {
  day: string;
  domain: string;
  json: ReportJson;
  gz: Buffer;
  filename: string;
}

export interface SendOutcome {
  day: string;
  domain: string;
  /** sent: handed to at least one endpoint (mail queued or https 2xx); pending: https retries scheduled */
  result: 'sent' | 'pending' | 'dropped' | 'retry-later' | 'dry-run' | 'written';
  detail: string;
  reportId?: string;
  file?: string;
}

export interface ServiceDeps {
  settings: TlsrptSettings;
  resolver: Resolver;
  log: Log;
  now: () => number;
  rand?: () => number;
  https?: HttpsOptions;
  readOnly?: boolean;
  /** largest gzipped report sent (default MAX_REPORT_BYTES) */
  maxReportBytes?: number;
  /**
   * `spool.backend: postgres` (issue 16): counts and report sends shared by the cluster's nodes
   * (pgStore.ts) instead of the files under `dir`; plans stay per node (each node's own random delay,
   * the first due node claims the send).
   */
  shared?: { store: CountStore; sends: PgSendClaims; pending?: PendingStore };
  /** metrics: what became of each report the job sent (dane_relay_tlsrpt_reports_total) */
  events?: RelayEvents;
}

const OUTBOX_SUFFIX = '.msg';
/**
 * Digest TLSRPT-41 (RFC 8460 §5.2, §6.5): receivers commonly accept about 10 MB. A larger report would be
 * refused by every endpoint (and retried for a day), so it is not sent; the reason is logged and recorded.
 */
export const MAX_REPORT_BYTES = 10 * 1024 * 1024;
const TICK_MS = 60_000;
/**
 * A closed day is read again on every tick until this long after its end: a session that ended at
 * 23:59:59.9 is flushed a second later, possibly after the tick that first planned the day.
 */
export const SETTLE_MS = 10 * 60_000;

export class TlsrptService {
  readonly recorder: TlsrptRecorder;
  readonly discovery: TlsrptDiscovery;
  readonly https: HttpsSender;
  private timer?: NodeJS.Timeout;
  private ticking?: Promise<void>;
  private submit?: SubmitMail;
  private stopped = false;
  /** closed days already planned: their count files are not read again every tick */
  private readonly planned = new Set<string>();

  private constructor(
    readonly store: CountStore,
    private readonly deps: ServiceDeps,
  ) {
    this.discovery = new TlsrptDiscovery(deps.resolver, deps.now);
    this.recorder = new TlsrptRecorder({ store, discovery: this.discovery, now: deps.now, log: deps.log });
    // Report hosts are looked up through the relay's own resolver and checked (targets.ts, issue 13).
    this.https = new HttpsSender(deps.settings.dir, {
      ...deps.https,
      ...(deps.shared?.pending ? { store: deps.shared.pending } : {}),
      now: deps.now,
      log: deps.log,
      resolver: deps.resolver,
      allowPrivateTargets: deps.settings.allowPrivateTargets,
    });
  }

  static async open(deps: ServiceDeps): Promise<TlsrptService> {
    // A key nodemailer cannot sign with is a start-up error (clear message), not a failure the next night.
    if (deps.settings.dkim && !deps.readOnly) await checkDkimKey(deps.settings.dkim);
    if (deps.shared) return new TlsrptService(deps.shared.store, deps);
    const store = await TlsrptStore.open(deps.settings.dir, { log: deps.log, readOnly: deps.readOnly });
    return new TlsrptService(store, deps);
  }

  get settings(): TlsrptSettings {
    return this.deps.settings;
  }
  private get dir(): string {
    return this.deps.settings.dir;
  }

  /** Starts the daily job; `submit` queues a mailed report in the relay's spool. */
  start(submit: SubmitMail): void {
    this.submit = submit;
    // RFC 8460 §3: mailed reports MUST be DKIM-signed; without a key, mailto-only domains get no report.
    if (!this.deps.settings.dkim)
      this.deps.log.warn(
        { submitter: this.deps.settings.submitter },
        'tlsrpt: tlsrpt.dkim is not configured; reports to mailto: addresses cannot be signed and will not be sent (https reports are)',
      );
    const loop = () => {
      if (this.stopped) return;
      void this.tick();
      this.timer = setTimeout(loop, TICK_MS);
      this.timer.unref?.();
    };
    loop();
  }

  /** One pass of the job; concurrent calls share the running pass. */
  tick(): Promise<void> {
    if (!this.ticking)
      this.ticking = this.tickNow().finally(() => {
        this.ticking = undefined;
      });
    return this.ticking;
  }

  private async tickNow(): Promise<void> {
    const step = async (what: string, f: () => Promise<unknown>) => {
      try {
        await f();
      } catch (e) {
        this.deps.log.warn({ err: (e as Error).message, step: what }, 'tlsrpt: daily job step failed; will retry');
      }
    };
    await step('outbox', () => this.drainOutbox());
    await step('plan', () => this.planClosedDays());
    await step('send', () => this.sendDue());
    await step('https-retry', () => this.https.retryDue());
    await step('retention', () => this.prune());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    // A pass may be waiting on a slow report endpoint: give it a moment, never the whole https timeout.
    // Whatever it has not finished is on disk (plan, pending) and resumes at the next start.
    await Promise.race([this.ticking?.catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.store.close();
  }

  // ---- the daily plan -------------------------------------------------------------------------

  private planFile(day: string): string {
    return join(this.dir, 'plan', `${day}.json`);
  }
  private sentFile(day: string, domain: string): string {
    return join(this.dir, 'sent', day, domain);
  }

  async readPlan(day: string): Promise<Record<string, number> | undefined> {
    try {
      return JSON.parse(await readFileNoFollow(this.planFile(day), 'utf8')) as Record<string, number>;
    } catch {
      return undefined;
    }
  }

  /** Each closed day with counts gets, once, a due time per domain: the day's end plus a random delay (TLSRPT-34). */
  private async planClosedDays(): Promise<void> {
    const today = dayOf(this.deps.now());
    const oldest = nextDay(today, -this.deps.settings.retentionDays);
    await this.store.flush().catch(() => undefined);
    for (const day of await this.store.days()) {
      if (day >= today || day < oldest || this.planned.has(day)) continue;
      const plan = (await this.readPlan(day)) ?? {};
      const domains = [...(await this.store.read(day)).keys()].filter((d) => !(d in plan));
      const end = Date.parse(`${nextDay(day)}T00:00:00Z`);
      // Only a day read after it settled is done with; until then it is read again on later ticks.
      const settled = this.deps.now() >= end + SETTLE_MS;
      if (domains.length > 0) {
        const rand = this.deps.rand ?? Math.random;
        for (const d of domains) plan[d] = end + Math.floor(rand() * this.deps.settings.maxDelayMs);
        await ensurePrivateSubdir(this.dir, 'plan');
        await writeFileDurable(this.planFile(day), JSON.stringify(plan));
        this.deps.log.info({ day, domains: domains.length }, 'tlsrpt: reports planned');
      }
      // After the durable write: a failed write leaves the day to be planned on the next tick.
      if (settled) this.planned.add(day);
    }
  }

  private async sendDue(): Promise<void> {
    let names: string[];
    try {
      names = await fsp.readdir(join(this.dir, 'plan'));
    } catch {
      return;
    }
    const now = this.deps.now();
    for (const day of names
      .map((n) => n.replace(/\.json$/, ''))
      .filter(isDay)
      .sort()) {
      const plan = (await this.readPlan(day)) ?? {};
      for (const [domain, due] of Object.entries(plan)) {
        if (this.stopped) return;
        if (due > now || (await this.wasSent(day, domain))) continue;
        // One domain's failure (a bad endpoint, a signing error) must not hold back the others: it is
        // logged and, not being marked sent, tried again on the next tick.
        // In a cluster, exactly one node sends: the one whose claim on (day, domain) succeeds.
        const sends = this.deps.shared?.sends;
        let claim: SendClaim | undefined;
        if (sends && !(claim = await sends.claim(day, domain))) continue;
        try {
          await this.sendReport(day, domain, { claim });
        } catch (e) {
          if (claim) await sends?.release(claim).catch(() => undefined);
          this.deps.log.warn({ day, domain, err: (e as Error).message }, 'tlsrpt: report failed; will retry next tick');
          this.deps.events?.tlsrptReport?.({ result: 'failed' });
        }
      }
    }
  }

  async wasSent(day: string, domain: string): Promise<boolean> {
    if (this.deps.shared) return this.deps.shared.sends.wasSent(day, domain);
    try {
      await fsp.access(this.sentFile(day, domain));
      return true;
    } catch {
      return false;
    }
  }

  private async markSent(o: SendOutcome, claim?: SendClaim): Promise<void> {
    if (this.deps.shared) {
      // without a claim (the CLI's explicit send) there is nothing to record in the cluster's table
      if (claim && !(await this.deps.shared.sends.done(claim, { ...o, at: new Date(this.deps.now()).toISOString() }))) {
        this.deps.log.warn({ day: o.day, domain: o.domain }, 'tlsrpt: send claim had expired before the outcome was recorded (lease too short for this send?)');
      }
      return;
    }
    await ensurePrivateSubdir(this.dir, 'sent', o.day);
    await writeFileDurable(this.sentFile(o.day, o.domain), `${JSON.stringify({ ...o, at: new Date(this.deps.now()).toISOString() })}\n`);
  }

  private async prune(): Promise<void> {
    const today = dayOf(this.deps.now());
    const oldest = nextDay(today, -this.deps.settings.retentionDays);
    const removed = await this.store.prune(today, this.deps.settings.retentionDays);
    for (const sub of ['plan', 'sent']) {
      let names: string[] = [];
      try {
        names = await fsp.readdir(join(this.dir, sub));
      } catch {
        /* none */
      }
      for (const n of names) {
        const day = n.replace(/\.json$/, '');
        if (isDay(day) && day < oldest) await fsp.rm(join(this.dir, sub, n), { recursive: true, force: true });
      }
    }
    if (removed.length) this.deps.log.info({ days: removed }, 'tlsrpt: counts past retention removed');
  }

  // ---- building and sending ------------------------------------------------------------------

  /** The reports of one day (all domains, or the given ones), built but not sent. */
  async build(day: string, domains?: string[]): Promise<BuiltReport[]> {
    const counts = await this.store.read(day);
    const want = domains?.map(aLabel);
    const out: BuiltReport[] = [];
    for (const [domain, policies] of [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (want && !want.includes(domain)) continue;
      const s = this.deps.settings;
      const json = buildReport({
        organizationName: s.organizationName,
        contactInfo: s.contactInfo,
        reportId: makeReportId(day, domain, randomBytes(6).toString('hex')),
        day,
        policies,
      });
      out.push({ day, domain, json, gz: gzipSync(JSON.stringify(json)), filename: reportFilename({ submitter: s.submitter, policyDomain: domain, day }) });
    }
    return out;
  }

  /**
   * Sends one day's report for one domain: rua is looked up again now (TLSRPT-6); mailto reports
   * are DKIM-signed and queued (TLSRPT-42…45), https reports POSTed and retried (TLSRPT-46…48).
   */
  async sendReport(day: string, domain: string, opts: { submit?: SubmitMail; mark?: boolean; claim?: SendClaim } = {}): Promise<SendOutcome> {
    const mark = opts.mark ?? true;
    // In a cluster a send outside the job (the CLI) claims the report too, so no node sends it as well.
    const sends = this.deps.shared?.sends;
    const claim = opts.claim ?? (mark && sends ? await sends.claim(day, domain) : undefined);
    if (mark && sends && !claim) return { day, domain, result: 'retry-later', detail: 'another node is sending this report or has sent it' };
    const finish = async (o: SendOutcome) => {
      if (claim && o.result === 'retry-later') await sends?.release(claim);
      if (mark && o.result !== 'retry-later') await this.markSent(o, claim);
      this.deps.log.info({ ...o }, 'tlsrpt: report');
      if (o.result === 'sent' || o.result === 'pending' || o.result === 'dropped' || o.result === 'retry-later')
        this.deps.events?.tlsrptReport?.({ result: o.result });
      return o;
    };
    const disc = await this.discovery.lookup(domain, { fresh: true });
    if (disc.kind === 'tempfail') return finish({ day, domain, result: 'retry-later', detail: disc.why });
    if (disc.kind === 'none') return finish({ day, domain, result: 'dropped', detail: `no TLSRPT policy now: ${disc.why}` });
    const [r] = await this.build(day, [domain]);
    if (!r) return finish({ day, domain, result: 'dropped', detail: 'no sessions counted' });
    const reportId = r.json['report-id'];
    const limit = this.deps.maxReportBytes ?? MAX_REPORT_BYTES;
    if (r.gz.length > limit) {
      this.deps.log.warn({ day, domain, bytes: r.gz.length, limit }, 'tlsrpt: report too large for receivers; not sent');
      return finish({
        day,
        domain,
        result: 'dropped',
        detail: `report is ${r.gz.length} bytes gzipped, over the ${limit} bytes receivers accept (RFC 8460 §5.2)`,
        reportId,
      });
    }
    const done: string[] = [];
    const problems: string[] = [];
    const mailto = disc.rua.flatMap((u) => {
      if (u.scheme !== 'mailto') return [];
      const refused = mailtoTargetProblem(u.address, this.deps.settings.allowPrivateTargets);
      if (!refused) return [u.address];
      this.deps.log.warn({ day, domain, rua: u.uri, reason: refused }, 'tlsrpt: rua target refused');
      problems.push(`refused: ${refused}`);
      return [];
    });
    const urls = disc.rua.flatMap((u) => (u.scheme === 'https' ? [u.url] : []));
    const submit = opts.submit ?? this.submit;
    if (mailto.length) {
      if (!this.deps.settings.dkim) problems.push('mailto skipped: tlsrpt.dkim is not configured (RFC 8460 §3: reports MUST be DKIM-signed)');
      else if (!submit) problems.push('mailto skipped: nowhere to queue the message');
      else {
        const mail = await composeReportMail({
          report: r.json,
          gz: r.gz,
          filename: r.filename,
          policyDomain: domain,
          submitter: this.deps.settings.submitter,
          to: mailto,
          dkim: this.deps.settings.dkim,
          now: this.deps.now(),
        });
        const id = await submit(mail.envelope, mail.message);
        done.push(`mail queued as ${id} to ${mailto.join(', ')}`);
      }
    }
    if (urls.length) {
      // TLSRPT-47: one accepting endpoint is enough; with mail already queued, no retries are kept.
      const sent = await this.https.send({
        id: `${day}-${domain}-${reportId.split('.').pop()}`,
        day,
        domain,
        filename: r.filename,
        urls,
        body: r.gz.toString('base64'),
      });
      if (sent === 'accepted') done.push(`https accepted (${urls.join(', ')})`);
      else if (sent === 'refused') problems.push(`https refused: every rua https target is one the relay must not send to (${urls.join(', ')})`);
      else if (done.length) await this.https.store.remove(`${day}-${domain}-${reportId.split('.').pop()}`);
      else if (sent === 'pending') return finish({ day, domain, result: 'pending', detail: `https failed; retrying for 24 h (${urls.join(', ')})`, reportId });
    }
    if (done.length) return finish({ day, domain, result: 'sent', detail: [...done, ...problems].join('; '), reportId });
    return finish({ day, domain, result: 'dropped', detail: problems.join('; ') || 'no usable rua', reportId });
  }

  // ---- the outbox (CLI → running relay) ------------------------------------------------------

  /** Writes a composed mailed report for the relay to pick up (used by `dane-relay tlsrpt send`). */
  async toOutbox(envelope: Envelope, message: Buffer): Promise<string> {
    const dir = await ensurePrivateSubdir(this.dir, 'outbox');
    const name = `${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
    await writeFileDurable(join(dir, `${name}${OUTBOX_SUFFIX}`), Buffer.concat([Buffer.from(`${JSON.stringify(envelope)}\n`), message]));
    return `outbox/${name}`;
  }

  /** Moves outbox files into the spool. A crash between enqueue and unlink repeats a report, never loses one. */
  private async drainOutbox(): Promise<void> {
    if (!this.submit) return;
    const dir = join(this.dir, 'outbox');
    let names: string[];
    try {
      names = await fsp.readdir(dir);
    } catch {
      return;
    }
    for (const n of names.filter((x) => x.endsWith(OUTBOX_SUFFIX)).sort()) {
      const file = join(dir, n);
      // never through a link: an outbox entry becomes mail the relay sends
      const buf = await readFileNoFollow(file);
      const nl = buf.indexOf(0x0a);
      let env: Envelope;
      try {
        env = JSON.parse(buf.subarray(0, nl).toString('utf8')) as Envelope;
        if (env.kind !== 'tlsrpt' || !Array.isArray(env.recipients) || env.recipients.length === 0) throw new Error('not a tlsrpt envelope');
      } catch (e) {
        this.deps.log.warn({ file, err: (e as Error).message }, 'tlsrpt: outbox file is not a report; moved aside');
        await fsp.rename(file, `${file}.bad`);
        continue;
      }
      const id = await this.submit({ ...env, received: this.deps.now() }, buf.subarray(nl + 1));
      await fsp.rm(file, { force: true });
      this.deps.log.info({ queue_id: id, file: n }, 'tlsrpt: outbox report queued');
    }
  }
}
