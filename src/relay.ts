/**
 * Wires the stages together: spool (recovered) → scheduler → delivery, and ingress → spool.
 * No policy lives here; this is start-up, shutdown and plumbing.
 */
import type { Logger } from 'pino';
import type { LoadedConfig } from './config/load.js';
import { Spool } from './spool/spool.js';
import { Scheduler } from './scheduler/scheduler.js';
import { Ingress } from './ingress/server.js';
import { StubResolver } from './dns/stub.js';
import { trustAdProblem } from './dns/trust.js';
import type { Resolver } from './dns/types.js';
import type { DeliveryDeps } from './delivery/deliver.js';
import { makeLogger } from './log.js';
import { selfTest } from './dns/selftest.js';
import { fanOutEvents, type RelayEvents } from './metrics/events.js';
import type { PolicyStore, ReloadResult } from './policy/store.js';
import { policyStoreFor } from './policy/config.js';
import { ExceptionProber } from './policy/probe.js';
import { MxFactsStore } from './policy/mxFacts.js';
import type { ControlServer } from './control/server.js';
import type { SelfTestResult } from './dns/selftest.js';
import type { RelayMetrics } from './metrics/registry.js';
import type { MetricsServer } from './metrics/http.js';
import type { Readiness } from './metrics/readiness.js';
import type { TlsrptService } from './reporting/tlsrpt/daily.js';
import type { HttpsOptions } from './reporting/tlsrpt/https.js';

/** dns.mode validate: DNSSEC checked in-process from the trust anchors (file, or the built-in IANA root). */
async function validatingResolver(cfg: LoadedConfig, now: () => number): Promise<Resolver> {
  const { ValidatingResolver } = await import('./dnssec/resolver.js');
  const { readFileSync } = await import('node:fs');
  const trustAnchors = cfg.dns.trust_anchors ? readFileSync(cfg.dns.trust_anchors, 'utf8') : undefined;
  return new ValidatingResolver({ servers: cfg.resolvedResolvers, timeoutMs: cfg.dns.timeout, attempts: cfg.dns.attempts, trustAnchors, now });
}

export interface RelayOptions {
  config: LoadedConfig;
  log?: Logger;
  /** clock; tests pass a controllable one */
  now?: () => number;
  resolver?: Resolver;
  rand?: () => number;
  /** metrics hooks */
  events?: RelayEvents;
  /** policy files' stat fallback period (tests shorten it) */
  policyStatIntervalMs?: number;
  /** TLSRPT https endpoints: extra CA and timeout (tests; private endpoints) */
  tlsrptHttps?: HttpsOptions;
}

export class Relay {
  /** per-destination TLS policy in force (issue 7); reloaded by `reload()` */
  policy?: PolicyStore;
  /** probes danefail-listed destinations for working DANE */
  prober?: ExceptionProber;

  /** queue control socket (src/control/) */
  control?: ControlServer;
  /** metrics (src/metrics/), when `metrics` is configured */
  metrics?: { events: RelayMetrics; server: MetricsServer; readiness: Readiness };
  /** TLSRPT (issue 6): recorder on the delivery seam and the daily report job; undefined when disabled */
  tlsrpt?: TlsrptService;

  private constructor(
    readonly config: LoadedConfig,
    readonly log: Logger,
    readonly spool: Spool,
    readonly scheduler: Scheduler,
    readonly ingress: Ingress,
    readonly resolver: Resolver,
  ) {}

  static async start(opts: RelayOptions): Promise<Relay> {
    const cfg = opts.config;
    const log = opts.log ?? makeLogger(cfg.log.level);
    const now = opts.now ?? Date.now;
    const problem = trustAdProblem(cfg);
    if (problem && !opts.resolver) throw new Error(problem);
    const resolver = opts.resolver ?? (cfg.dns.mode === 'validate'
      ? await validatingResolver(cfg, now) // the relay's clock: signature windows and cache ages follow it
      : new StubResolver({ servers: cfg.resolvedResolvers, timeoutMs: cfg.dns.timeout, attempts: cfg.dns.attempts }));

    // DANE-2: a tls_policy DANE entry under an untrusted trust-ad resolver is refused like a DANE default (an injected resolver
    // is the caller's). The stub resolver opens sockets per query only: nothing has been sent when this throws.
    const policy = policyStoreFor(cfg, log, opts.policyStatIntervalMs, !opts.resolver);
    const spool = await Spool.open(cfg.queue_dir, { now, log });
    let ingress: Ingress | undefined;
    let control: ControlServer | undefined;
    let metrics: Relay['metrics'];
    let selfTestRun: Promise<SelfTestResult> | undefined;
    const metricsEvents = cfg.metrics ? new (await import('./metrics/registry.js')).RelayMetrics({ now }) : undefined;
    const events = fanOutEvents(opts.events, metricsEvents);
    const { TimedResolver } = await import('./metrics/timedResolver.js');
    let tlsrpt: TlsrptService | undefined;
    try {
      if (cfg.tlsrpt.enabled) {
        const { TlsrptService: Service, tlsrptSettings } = await import('./reporting/tlsrpt/daily.js');
        tlsrpt = await Service.open({ settings: tlsrptSettings(cfg), resolver, log, now, rand: opts.rand, https: opts.tlsrptHttps });
      }
      const recovered = await spool.recover();
      const defaultDane = cfg.delivery.tls_level === 'dane' || cfg.delivery.tls_level === 'dane-only';
      const runSelfTest = (why: string): Promise<SelfTestResult> => {
        // DANE-4: a resolver that does not validate turns DANE silently off; say so loudly.
        const run = selfTest(resolver);
        void run.then((r) => {
          if (r.ok) log.info({ selftest: r, why }, 'DNSSEC self-test passed');
          else log.warn({ selftest: r, why }, `DNSSEC SELF-TEST FAILED: ${r.detail} — DANE cannot protect deliveries until the resolver validates`);
        }, (e) => log.warn({ err: (e as Error).message, why }, 'DNSSEC self-test could not run'));
        return run;
      };
      if (defaultDane || policy.mentionsDane()) selfTestRun = runSelfTest('start');
      // DANE-4 again when a reload brings the first DANE entry in (the start-up test did not run or did not cover it).
      let daneInForce = defaultDane || policy.mentionsDane();
      policy.onReload(() => {
        const now = defaultDane || policy.mentionsDane();
        if (now && !daneInForce) void runSelfTest('reload introduced DANE').catch(() => undefined);
        daneInForce = now;
      });
      const delivery: DeliveryDeps = {
        resolver: events ? new TimedResolver(resolver, events) : resolver,
        events,
        heloName: cfg.hostname,
        selfNames: [cfg.hostname],
        port: cfg.delivery.port,
        tlsLevel: (domain) => policy.resolve(domain),
        timeouts: cfg.delivery.timeouts,
        digestPreference: cfg.delivery.digest_preference,
        maxMessagesPerConnection: cfg.delivery.max_messages_per_connection,
        log,
        now,
        rolloverWarnMs: cfg.policy.rollover_warn,
        mxFacts: new MxFactsStore(cfg.policy.rollover_warn),
        onTlsResult: tlsrpt?.recorder.record,
      };
      const scheduler = new Scheduler({
        spool,
        delivery,
        config: { ...cfg.queue, concurrency: cfg.delivery.concurrency, per_destination: cfg.delivery.per_destination },
        hostname: cfg.hostname,
        log,
        now,
        rand: opts.rand,
      });
      for (const m of recovered) scheduler.add(m);
      log.info({ recovered: recovered.length, queue_dir: cfg.queue_dir }, 'spool recovered');
      scheduler.start();
      const { ControlServer: Control, controlSocketPath } = await import('./control/server.js');
      const { schedulerBackend } = await import('./control/backends.js');
      // Operator surfaces must never stop mail: if one cannot start, say so loudly and run without it.
      control = await Control.start({ path: controlSocketPath(cfg), backend: schedulerBackend(scheduler), now, log })
        .catch((e) => { log.error({ err: e }, `CONTROL SOCKET NOT AVAILABLE: ${(e as Error).message}; queue commands need the relay stopped`); return undefined; });
      if (cfg.metrics && metricsEvents) {
        const { Readiness: Ready } = await import('./metrics/readiness.js');
        const { MetricsServer: Server } = await import('./metrics/http.js');
        metricsEvents.watchQueue(scheduler);
        const readiness = new Ready({
          queueDir: cfg.queue_dir, spoolTtlMs: cfg.metrics.ready_cache, selfTestIntervalMs: cfg.metrics.selftest_interval,
          // the same condition as the start-up self-test: DANE by default or by a tls_policy entry
          selfTest: daneInForce ? () => selfTest(resolver) : undefined, initialSelfTest: selfTestRun,
        });
        const server = await Server.start({ listen: cfg.metrics.listen, allowRemote: cfg.metrics.allow_remote, registry: metricsEvents.registry, readiness, log })
          .catch((e) => { log.error({ err: e }, `METRICS NOT AVAILABLE: ${(e as Error).message}`); return undefined; });
        if (server) metrics = { events: metricsEvents, readiness, server };
      }
      // TLSRPT-34: the daily job queues mailed reports in this spool as Envelope.kind 'tlsrpt'.
      tlsrpt?.start(async (envelope, message) => {
        const queued = await spool.enqueue(envelope, message);
        scheduler.add(queued);
        return queued.id;
      });
      ingress = await Ingress.start({
        config: { ...cfg.ingress, listen: cfg.listen, relayClients: cfg.relay_clients, hostname: cfg.hostname },
        spool,
        log,
        now,
        onQueued: (m) => scheduler.add(m),
        events,
      });
      log.info({ listen: ingress.addresses, hostname: cfg.hostname, tls_level: cfg.delivery.tls_level, dns_mode: cfg.dns.mode }, 'dane-relay started');
      const relay = new Relay(cfg, log, spool, scheduler, ingress, resolver);
      relay.policy = policy;
      policy.watch();
      if (cfg.policy.danefail) {
        relay.prober = new ExceptionProber({
          store: policy, intervalMs: cfg.policy.probe_interval, log, events,
          inspect: { resolver, selfNames: delivery.selfNames, heloName: delivery.heloName, port: delivery.port, timeouts: delivery.timeouts, digestPreference: delivery.digestPreference, now },
        });
        relay.prober.start();
      }
      log.info({ ...policy.counts(), tls_policy: cfg.policy.tls_policy, danefail: cfg.policy.danefail }, 'policy loaded');
      relay.control = control;
      relay.metrics = metrics;
      relay.tlsrpt = tlsrpt;
      return relay;
    } catch (e) {
      policy.close();
      await control?.close().catch(() => undefined);
      await metrics?.server.close().catch(() => undefined);
      await ingress?.close().catch(() => undefined);
      await tlsrpt?.stop().catch(() => undefined);
      await spool.close().catch(() => undefined);
      throw e;
    }
  }

  /** SIGHUP: re-read the policy files and the users file (asynchronously); a file with an error is rejected whole, its previous version stays. */
  reload(): ReloadResult {
    void this.ingress.reloadUsers();
    return this.policy ? this.policy.reload('SIGHUP') : { loaded: [], rejected: [], unchanged: [] };
  }

  /** SIGTERM: stop accepting, let deliveries finish within `graceMs`, leave the spool consistent. */
  async stop(graceMs = 10_000): Promise<void> {
    this.log.info({ grace_ms: graceMs }, 'stopping');
    if (this.metrics) this.metrics.readiness.stopping = true;
    await this.ingress.stopAccepting();
    this.policy?.close();
    await this.prober?.stop();
    await this.control?.close().catch(() => undefined);
    await this.scheduler.stop(graceMs);
    await this.tlsrpt?.stop(); // flushes the last second of TLSRPT counts
    await this.ingress.close();
    await this.metrics?.server.close().catch(() => undefined);
    await this.resolver.close();
    await this.spool.close();
    this.log.info('stopped');
  }
}
