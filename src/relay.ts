/**
 * The running relay: `Relay.start` starts the components `compose` lists (src/compose.ts), in order;
 * `stop` drains and stops them in reverse from the same list. No policy lives here.
 */
import type { Logger } from 'pino';
import type { LoadedConfig } from './config/load.js';
import type { QueueStore } from './spool/types.js';
import type { Scheduler } from './scheduler/scheduler.js';
import type { Ingress } from './ingress/server.js';
import type { Resolver } from './dns/types.js';
import type { PolicyStore, ReloadResult } from './policy/store.js';
import type { ExceptionProber } from './check/probe.js';
import type { ControlServer } from './control/server.js';
import type { SelfTestMonitor } from './dns/selftest.js';
import type { TlsrptService } from './reporting/tlsrpt/daily.js';
import type { StsPolicies } from './mtasts/policies.js';
import { loadConfig, ConfigError } from './config/load.js';
import { planReload, type ReloadPlan } from './config/reload.js';
import { compose, startAll, stopAll, type Component, type Parts, type RelayOptions } from './compose.js';
import type { RelayEvents } from './metrics/events.js';

export type { RelayOptions } from './compose.js';

/** What a SIGHUP did with the YAML configuration (issue 21): refused whole, or planned and applied. */
export type ConfigReloadOutcome =
  | { file: string; ok: true; plan: ReloadPlan }
  | { file: string; ok: false; problems: string[] }
  | { file: undefined; ok: true; plan: undefined };

export class Relay {
  /** per-destination TLS policy in force (issue 7); reloaded by `reload()` */
  readonly policy?: PolicyStore;
  /** probes danefail-listed destinations for working DANE */
  readonly prober?: ExceptionProber;
  /** queue control socket (src/control/) */
  readonly control?: ControlServer;
  /** metrics (src/metrics/), when `metrics` is configured */
  readonly metrics?: Parts['metrics'];
  /** TLSRPT (issue 6): recorder on the delivery seam and the daily report job; undefined when disabled */
  readonly tlsrpt?: TlsrptService;
  /** MTA-STS policy state (issue 15), when `mta_sts.enabled`; its `maintain()` runs hourly */
  readonly sts?: StsPolicies;
  /** the DNSSEC self-test (DANE-4), repeated while DANE is in force; in trust-ad mode a failure holds DANE deliveries */
  readonly selfTests?: SelfTestMonitor;
  readonly log: Logger;
  readonly spool: QueueStore;
  readonly scheduler: Scheduler;
  readonly ingress: Ingress;
  readonly resolver: Resolver;
  /** is a DANE level in force (default or a tls_policy entry)? */
  private readonly daneInForce: () => boolean;
  private readonly applyConfig: (next: LoadedConfig) => void;
  private configInForce: LoadedConfig;
  private readonly events?: RelayEvents;
  /** the config reload the last SIGHUP started (tests wait on it; the process logs its outcome) */
  lastConfigReload?: Promise<ConfigReloadOutcome>;

  private constructor(
    config: LoadedConfig,
    parts: Parts,
    private readonly started: readonly Component[],
    private readonly trustCheck: boolean,
  ) {
    this.configInForce = config;
    const need = <T>(v: T | undefined, what: string): T => {
      if (v === undefined) throw new Error(`relay: ${what} did not start`);
      return v;
    };
    this.log = parts.log;
    this.spool = need(parts.spool, 'spool');
    this.scheduler = need(parts.scheduler, 'scheduler');
    this.ingress = need(parts.ingress, 'ingress');
    this.resolver = need(parts.resolver, 'resolver');
    this.policy = parts.policy;
    this.prober = parts.prober;
    this.control = parts.control;
    this.metrics = parts.metrics;
    this.tlsrpt = parts.tlsrpt;
    this.selfTests = parts.selfTests;
    this.sts = parts.sts;
    this.daneInForce = parts.daneInForce;
    this.applyConfig = parts.applyConfig;
    this.events = parts.events;
  }

  /** The configuration in force: the one started with, with the reloadable keys of the last valid reload. */
  get config(): LoadedConfig {
    return this.configInForce;
  }

  /** Starts the components of `compose` in order; if one fails, those already started are stopped in reverse. */
  static async start(opts: RelayOptions): Promise<Relay> {
    const { components, parts } = await compose(opts);
    const started = await startAll(components);
    return new Relay(opts.config, parts, started, !opts.resolver);
  }

  /**
   * SIGHUP: re-read the policy files and the users file, and (asynchronously, `lastConfigReload`) the YAML
   * configuration; a file with an error is rejected whole, its previous version stays.
   */
  reload(): ReloadResult {
    void this.ingress.reloadUsers();
    const r = this.policy ? this.policy.reload('SIGHUP') : { loaded: [], rejected: [], unchanged: [] };
    // One at a time, in signal order: each reads the file when its turn comes, so the last SIGHUP's file wins
    // (two overlapping reloads could otherwise finish out of order and leave the older file in force).
    const previous = this.lastConfigReload;
    const run = () =>
      this.reloadConfig().catch((e: unknown): ConfigReloadOutcome => {
        // never an unhandled rejection (it would end the process): say it, keep running
        this.log.error({ err: e, config: this.configInForce.file }, `CONFIG RELOAD FAILED: ${(e as Error).message}`);
        return { file: this.configInForce.file!, ok: false, problems: [(e as Error).message] };
      });
    this.lastConfigReload = previous !== undefined ? previous.then(run) : run();
    // DANE-4: re-test the resolver too (a reload that brought DANE in has started the monitor already).
    if (this.daneInForce()) void this.selfTests?.run('SIGHUP');
    return r;
  }

  /**
   * Issue 21 item 1: re-read the config file with the loader and start-up checks of `dane-relay config check`
   * (src/config/load.ts, src/preflight.ts). An invalid file changes nothing and the error names the problems;
   * a valid one puts every reloadable key in force (src/config/reload.ts) and names each changed key that
   * needs a restart (its old value stays). A relay started from a configuration built in code has no file.
   */
  private async reloadConfig(): Promise<ConfigReloadOutcome> {
    const file = this.configInForce.file;
    if (!file) return { file: undefined, ok: true, plan: undefined };
    const refuse = (problems: string[]): ConfigReloadOutcome => {
      this.events?.reload?.({ what: 'config', result: 'refused' });
      this.log.error({ config: file, problems }, `CONFIG RELOAD REFUSED: ${file}: ${problems.join('; ')}; the running configuration stays in force`);
      return { file, ok: false, problems };
    };
    let next: LoadedConfig;
    try {
      next = loadConfig(file);
      const { startupProblems } = await import('./preflight.js');
      const problems = await startupProblems(next, { trustCheck: this.trustCheck });
      if (problems.length) return refuse(problems);
    } catch (e) {
      return refuse(e instanceof ConfigError ? e.problems : [(e as Error).message]);
    }
    const plan = planReload(this.configInForce, next);
    for (const r of plan.restartNeeded) {
      this.log.warn(
        { config: file, config_key: r.key, reason: r.reason },
        `config reload: ${r.key} changed, restart needed (${r.reason}); the old value stays in force until then`,
      );
    }
    if (plan.applied.length) {
      this.applyConfig(plan.config);
      this.configInForce = plan.config;
    }
    this.events?.reload?.({ what: 'config', result: 'ok' });
    this.log.info(
      { config: file, applied: plan.applied, restart_needed: plan.restartNeeded.map((r) => r.key), tls_level: plan.config.delivery.tls_level },
      'config reloaded',
    );
    return { file, ok: true, plan };
  }

  /** SIGTERM: stop accepting, let deliveries finish within `graceMs`, leave the spool consistent (compose.ts: drain, then stop, in reverse start order). */
  async stop(graceMs = 10_000): Promise<void> {
    this.log.info({ grace_ms: graceMs }, 'stopping');
    await stopAll(this.started, graceMs);
    this.log.info('stopped');
  }
}
