/**
 * Notices when a destination on the danefail list has working DANE again (DANE-70: the list is
 * meant to shrink). The probe is `dane-relay check`'s inspection (check/inspect.ts), which runs
 * the delivery path's own planHost with the level the destination would have without the
 * exception and SmtpSession.connect with the real verify callback, then QUIT: no mail is sent.
 */
import type { Logger } from 'pino';
import type { RelayEvents } from '../metrics/events.js';
import { inspectDomain, type InspectDeps, type InspectReport } from './inspect.js';
import type { PolicyStore } from '../policy/store.js';

/**
 * Pure: the exception is no longer needed when delivery under the real level would reach a
 * DANE-authenticated session and no MX host fails for a DNSSEC or DANE reason on the way.
 */
export function recovered(report: InspectReport): { ok: boolean; host?: string; why: string } {
  if (report.verdict.kind !== 'dane') return { ok: false, why: `verdict ${report.verdict.kind}: ${report.verdict.detail}` };
  for (const h of report.hosts) {
    if (h.skip && h.skip.cause?.kind !== 'no-address') return { ok: false, why: `${h.host} skipped: ${h.skip.reason}` };
    const bad = h.connections.find((c) => c.verify && !c.verify.ok);
    if (bad) return { ok: false, why: `${h.host}[${bad.address}]: ${bad.verify!.detail}` };
  }
  return { ok: true, host: report.verdict.host, why: report.verdict.detail };
}

/**
 * Where probes are coordinated (issue 16): the default is this node alone (every round probes every listed
 * destination); with spool.backend postgres, the cluster's table (pgProbeLedger.ts), so that one node probes
 * each destination per interval and every node can read what it found.
 */
export interface ProbeLedger {
  /** true when this node should probe `domain` now (no node has within `intervalMs`); the claim is recorded */
  claim(domain: string, intervalMs: number): Promise<boolean>;
  /** what the probe found */
  record(domain: string, r: { ok: boolean; host?: string; why: string }): Promise<void>;
}

export interface ProberOptions {
  store: PolicyStore;
  /** shared coordination (a cluster); none: this node probes every destination every round */
  ledger?: ProbeLedger;
  inspect: InspectDeps;
  intervalMs: number;
  log: Logger;
  events?: RelayEvents;
}

export class ExceptionProber {
  private timer?: NodeJS.Timeout;
  private first?: NodeJS.Timeout;
  private running?: Promise<void>;

  constructor(private readonly opts: ProberOptions) {}

  /** Probe one listed destination; logs and counts a recovery. */
  async probe(domain: string): Promise<{ ok: boolean; host?: string; why: string }> {
    const policy = this.opts.store.resolveWithoutException(domain);
    const level = policy.level === 'dane' || policy.level === 'dane-only' ? policy : { ...policy, level: 'dane' as const };
    const report = await inspectDomain(domain, level, { ...this.opts.inspect, diagnose: false });
    const r = recovered(report);
    if (r.ok) {
      this.opts.log.warn({ domain, mx: r.host, level: level.level, detail: r.why }, `DANE works again for ${domain}: the danefail exception can be removed`);
      this.opts.events?.exceptionRecovered?.({ domain, host: r.host ?? '' });
    } else {
      this.opts.log.info({ domain, level: level.level, detail: r.why }, `DANE still failing for ${domain}: exception kept`);
    }
    return r;
  }

  async probeAll(): Promise<void> {
    const ledger = this.opts.ledger;
    for (const d of this.opts.store.exceptionDomains()) {
      // a cluster: another node probed it this interval (or the database cannot say: skip this round, not probe twice)
      if (ledger) {
        const mine = await ledger.claim(d, this.opts.intervalMs).catch((e: unknown) => {
          this.opts.log.warn({ domain: d, err: (e as Error).message }, 'exception probe skipped: the shared probe table could not be asked');
          return false;
        });
        if (!mine) continue;
      }
      const r = await this.probe(d).catch((e) => {
        this.opts.log.error({ domain: d, err: (e as Error).message }, 'exception probe failed');
        return undefined;
      });
      if (r && ledger)
        await ledger.record(d, r).catch((e: unknown) => this.opts.log.warn({ domain: d, err: (e as Error).message }, 'exception probe result not recorded'));
    }
  }

  /** First round a minute after start (not at once: start-up stays quick), then every interval. */
  start(): void {
    if (this.opts.intervalMs <= 0) return;
    const round = () => {
      if (!this.running)
        this.running = this.probeAll().finally(() => {
          this.running = undefined;
        });
    };
    this.first = setTimeout(round, Math.min(60_000, this.opts.intervalMs));
    this.first.unref();
    this.timer = setInterval(round, this.opts.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.first) clearTimeout(this.first);
    this.timer = undefined;
    this.first = undefined;
    await this.running;
  }
}
