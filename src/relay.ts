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
import { compose, startAll, stopAll, type Component, type Parts, type RelayOptions } from './compose.js';

export type { RelayOptions } from './compose.js';

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
  /** the DNSSEC self-test (DANE-4), repeated while DANE is in force; in trust-ad mode a failure holds DANE deliveries */
  readonly selfTests?: SelfTestMonitor;
  readonly log: Logger;
  readonly spool: QueueStore;
  readonly scheduler: Scheduler;
  readonly ingress: Ingress;
  readonly resolver: Resolver;
  /** is a DANE level in force (default or a tls_policy entry)? */
  private readonly daneInForce: () => boolean;

  private constructor(readonly config: LoadedConfig, parts: Parts, private readonly started: readonly Component[]) {
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
    this.daneInForce = parts.daneInForce;
  }

  /** Starts the components of `compose` in order; if one fails, those already started are stopped in reverse. */
  static async start(opts: RelayOptions): Promise<Relay> {
    const { components, parts } = await compose(opts);
    const started = await startAll(components);
    return new Relay(opts.config, parts, started);
  }

  /** SIGHUP: re-read the policy files and the users file (asynchronously); a file with an error is rejected whole, its previous version stays. */
  reload(): ReloadResult {
    void this.ingress.reloadUsers();
    const r = this.policy ? this.policy.reload('SIGHUP') : { loaded: [], rejected: [], unchanged: [] };
    // DANE-4: re-test the resolver too (a reload that brought DANE in has started the monitor already).
    if (this.daneInForce()) void this.selfTests?.run('SIGHUP');
    return r;
  }

  /** SIGTERM: stop accepting, let deliveries finish within `graceMs`, leave the spool consistent (compose.ts: drain, then stop, in reverse start order). */
  async stop(graceMs = 10_000): Promise<void> {
    this.log.info({ grace_ms: graceMs }, 'stopping');
    await stopAll(this.started, graceMs);
    this.log.info('stopped');
  }
}
