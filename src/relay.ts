/**
 * Wires the stages together: spool (recovered) → scheduler → delivery, and ingress → spool.
 * No policy lives here; this is start-up, shutdown and plumbing.
 */
import type { Logger } from 'pino';
import { resolve } from 'node:path';
import type { LoadedConfig } from './config/load.js';
import { Spool } from './spool/spool.js';
import { Scheduler } from './scheduler/scheduler.js';
import { Ingress } from './ingress/server.js';
import { resolverFor } from './dns/factory.js';
import { assertStartable, startupPaths } from './config/preflight.js';
import type { Resolver } from './dns/types.js';
import type { DeliveryDeps } from './delivery/deliver.js';
import { makeLogger } from './log.js';
import { OwnEndpoints, type Endpoint } from './route/self.js';
import { parseHostPort } from './config/schema.js';
import { SelfTestMonitor } from './dns/selftest.js';
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
import { dropPrivileges, handOverState, privilegePlan, stateDirs } from './privileges.js';
import { currentIdentity, startupFileProblems, UnsafeStateError } from './files/checks.js';
import type { QueuedMessage, SpoolWriter } from './spool/types.js';

/**
 * Issue 23 §3: the files the relay trusts, checked before it trusts them (files/checks.ts). Refusals
 * stop the start with every problem listed; warnings are logged at every start.
 */
async function checkFiles(cfg: LoadedConfig, log: Logger, tlsrptDir: string | undefined, controlSocket: string): Promise<void> {
  const problems = await startupFileProblems(startupPaths(cfg, tlsrptDir, controlSocket), currentIdentity());
  for (const p of problems) {
    if (p.level === 'warn') log.warn({ file: p.path }, `UNSAFE FILE: ${p.message}`);
    else if (p.level === 'fixed') log.info({ file: p.path }, p.message);
  }
  const refusals = problems.filter((p) => p.level === 'refuse');
  if (refusals.length) throw new UnsafeStateError(refusals);
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
  /** the DNSSEC self-test (DANE-4), repeated while DANE is in force; in trust-ad mode a failure holds DANE deliveries */
  selfTests?: SelfTestMonitor;
  /** is a DANE level in force (default or a tls_policy entry)? */
  private daneInForce: () => boolean = () => false;
  /** closed at stop, besides the relay's resolver (the self-test's own, uncached one) */
  private extraResolver?: Resolver;
  /** MTA-STS refresh and pruning (hourly) */
  private stsTimer?: NodeJS.Timeout;

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
    const { controlSocketPath } = await import('./control/server.js');
    const tlsrptDir = cfg.tlsrpt.enabled ? (cfg.tlsrpt.dir ? resolve(cfg.baseDir, cfg.tlsrpt.dir) : undefined) : undefined;

    // Issue 23 §3: root with `user:` binds the SMTP listeners, hands the state directories over
    // and drops to that user before anything else; root without it says why that is risky.
    const privileges = privilegePlan(cfg, process.geteuid?.() ?? -1);
    if (privileges.rootWarning) log.warn({ uid: 0, allow_root: cfg.allow_root }, privileges.rootWarning);
    type Late = { spool?: Spool; onQueued?: (m: QueuedMessage) => void; events?: RelayEvents };
    let early: { ingress: Ingress; open: () => void; fail: () => void; late: Late } | undefined;
    if (privileges.drop) {
      const u = privileges.drop;
      const handed = await handOverState(stateDirs(cfg.queue_dir, tlsrptDir, controlSocketPath(cfg)), u);
      // Bound now, as root (ports below 1024); sessions wait at the gate until the relay is ready.
      let open!: () => void;
      let fail!: () => void;
      const gate = new Promise<void>((res, rej) => { open = res; fail = () => rej(new Error('relay did not start')); });
      gate.catch(() => undefined);
      const late: Late = {};
      const lateSpool: SpoolWriter = { begin: (e) => late.spool!.begin(e), enqueue: (e, b) => late.spool!.enqueue(e, b) };
      const ingressEarly = await Ingress.start({
        config: { ...cfg.ingress, listen: cfg.listen, relayClients: cfg.relay_clients, hostname: cfg.hostname },
        spool: lateSpool, log, now, onQueued: (m) => late.onQueued?.(m), events: { messageReceived: (e) => late.events?.messageReceived?.(e) }, gate,
      });
      // What the start imports lazily, imported while root can still read it (a root-only install, a
      // clone under /root, then still starts; the installation should be readable by `user` anyway).
      await Promise.all([
        import('./dnssec/resolver.js'), import('./metrics/registry.js'), import('./metrics/timedResolver.js'), import('./metrics/readiness.js'),
        import('./metrics/http.js'), import('./reporting/tlsrpt/daily.js'), import('./control/backends.js'),
      ]);
      try {
        dropPrivileges(u);
      } catch (e) {
        fail();
        await ingressEarly.close();
        throw e;
      }
      early = { ingress: ingressEarly, open, fail, late };
      log.info({ user: u.name, uid: u.uid, gid: u.gid, state_entries_handed_over: handed }, 'privileges dropped: listeners bound as root, running as the configured user');
    }
    let resolver: Resolver;
    let policy: PolicyStore;
    let spool: Spool;
    try {
      await checkFiles(cfg, log, tlsrptDir, controlSocketPath(cfg));
      // The rest of what `dane-relay config check` checks (config/preflight.ts), as the user the relay runs
      // as, before the spool, the resolver or any listener of ours is opened (an injected resolver is the caller's).
      await assertStartable(cfg, { trustCheck: !opts.resolver, files: false, ingress: !early });
      // The relay's clock: signature windows and cache ages follow it.
      resolver = opts.resolver ?? resolverFor(cfg, { now });
      // DANE-2: a tls_policy DANE entry under an untrusted trust-ad resolver is refused like a DANE default (an injected resolver
      // is the caller's). The stub resolver opens sockets per query only: nothing has been sent when this throws.
      policy = policyStoreFor(cfg, log, opts.policyStatIntervalMs, !opts.resolver);
      spool = await Spool.open(cfg.queue_dir, { now, log });
    } catch (e) {
      early?.fail();
      await early?.ingress.close().catch(() => undefined);
      throw e;
    }
    let ingress: Ingress | undefined;
    let control: ControlServer | undefined;
    let metrics: Relay['metrics'];
    let selfTestRun: Promise<SelfTestResult> | undefined;
    const metricsEvents = cfg.metrics ? new (await import('./metrics/registry.js')).RelayMetrics({ now }) : undefined;
    const events = fanOutEvents(opts.events, metricsEvents);
    const { TimedResolver } = await import('./metrics/timedResolver.js');
    let tlsrpt: TlsrptService | undefined;
    let extraResolver: Resolver | undefined;
    try {
      if (cfg.tlsrpt.enabled) {
        const { TlsrptService: Service, tlsrptSettings } = await import('./reporting/tlsrpt/daily.js');
        tlsrpt = await Service.open({ settings: tlsrptSettings(cfg), resolver, log, now, rand: opts.rand, https: opts.tlsrptHttps });
      }
      const recovered = await spool.recover();
      const defaultDane = cfg.delivery.tls_level === 'dane' || cfg.delivery.tls_level === 'dane-only';
      // DANE-4: a resolver that does not validate turns DANE silently off. The self-test runs at start,
      // every metrics.selftest_interval and on SIGHUP; in trust-ad mode it asks without an answer cache
      // (a re-test must see the resolver as it is now), and while it fails the deliveries that need DANE
      // are held (issue 13): an AD bit that proves nothing must not decide that DANE does not apply.
      const trustAd = cfg.dns.mode === 'trust-ad';
      extraResolver = trustAd && !opts.resolver ? resolverFor(cfg, { cache: false }) : undefined;
      const selfTests = new SelfTestMonitor({ resolver: extraResolver ?? resolver, intervalMs: cfg.metrics?.selftest_interval ?? 60_000, log, holds: trustAd });
      let daneInForce = defaultDane || policy.mentionsDane();
      if (daneInForce) selfTestRun = selfTests.start('start');
      // Again when a reload brings the first DANE entry in (the start-up test did not run or did not cover it).
      policy.onReload(() => {
        const now = defaultDane || policy.mentionsDane();
        if (now && !daneInForce) void selfTests.start('reload introduced DANE');
        daneInForce = now;
      });
      // RFC 5321 §5.1 loop check by address (route/self.ts): ingress's bound addresses (port 0 is known only then;
      // before it has bound, the configured ones); rebuilt each minute, interfaces come and go.
      let listening: Endpoint[] = early ? [...early.ingress.addresses]
        : cfg.listen.map((l) => parseHostPort(l, true)).filter((h): h is { host: string; port: number } => !!h && h.port > 0).map((h) => ({ address: h.host, port: h.port }));
      let own: { set: OwnEndpoints; at: number } | undefined;
      const ownEndpoints = (): OwnEndpoints => {
        if (!own || Date.now() - own.at > 60_000) own = { set: new OwnEndpoints(listening), at: Date.now() };
        return own.set;
      };
      // MTA-STS (issue 15): the durable policy cache, read at start; refreshed and pruned hourly (mtasts/policies.ts).
      const { stsPoliciesFor, stsTrustAnchors } = await import('./mtasts/settings.js');
      const sts = cfg.mta_sts.enabled ? stsPoliciesFor(cfg, resolver, log, now) : undefined;
      if (sts) log.info({ policies: await sts.load() }, 'mta-sts: cached policies loaded');
      const stsCa = stsTrustAnchors(cfg);
      const delivery: DeliveryDeps = {
        resolver: events ? new TimedResolver(resolver, events) : resolver,
        ownEndpoints,
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
        mimeConversion: cfg.delivery.mime_conversion,
        dnssecHold: () => selfTests.hold(),
        ...(sts ? { sts: (domain: string) => sts.lookup(domain), ...(stsCa ? { stsRoots: [stsCa] } : {}) } : {}),
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
      const { ControlServer: Control } = await import('./control/server.js');
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
          selfTest: daneInForce ? () => selfTests.current('readyz') : undefined, initialSelfTest: selfTestRun,
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
      if (early) {
        // bound before the privilege drop: now the spool and scheduler exist, let the sessions in
        Object.assign(early.late, { spool, onQueued: (m: QueuedMessage) => scheduler.add(m), events });
        ingress = early.ingress;
        early.open();
      } else {
        ingress = await Ingress.start({
          config: { ...cfg.ingress, listen: cfg.listen, relayClients: cfg.relay_clients, hostname: cfg.hostname },
          spool,
          log,
          now,
          onQueued: (m) => scheduler.add(m),
          events,
        });
      }
      listening = [...ingress.addresses];
      own = undefined;
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
      relay.selfTests = selfTests;
      relay.daneInForce = () => daneInForce;
      relay.extraResolver = extraResolver;
      if (sts) {
        relay.stsTimer = setInterval(() => {
          sts.maintain().then(
            (m) => { if (m.refreshed.length + m.failed.length + m.dropped.length) log.info(m, 'mta-sts: maintenance'); },
            (e) => log.error({ err: e }, 'mta-sts: maintenance failed'),
          );
        }, 3600_000);
        relay.stsTimer.unref();
      }
      return relay;
    } catch (e) {
      policy.close();
      await extraResolver?.close().catch(() => undefined);
      await control?.close().catch(() => undefined);
      await metrics?.server.close().catch(() => undefined);
      early?.fail();
      await (ingress ?? early?.ingress)?.close().catch(() => undefined);
      await tlsrpt?.stop().catch(() => undefined);
      await spool.close().catch(() => undefined);
      throw e;
    }
  }

  /** SIGHUP: re-read the policy files and the users file (asynchronously); a file with an error is rejected whole, its previous version stays. */
  reload(): ReloadResult {
    void this.ingress.reloadUsers();
    const r = this.policy ? this.policy.reload('SIGHUP') : { loaded: [], rejected: [], unchanged: [] };
    // DANE-4: re-test the resolver too (a reload that brought DANE in has started the monitor already).
    if (this.daneInForce()) void this.selfTests?.run('SIGHUP');
    return r;
  }

  /** SIGTERM: stop accepting, let deliveries finish within `graceMs`, leave the spool consistent. */
  async stop(graceMs = 10_000): Promise<void> {
    this.log.info({ grace_ms: graceMs }, 'stopping');
    if (this.metrics) this.metrics.readiness.stopping = true;
    await this.ingress.stopAccepting();
    this.policy?.close();
    await this.prober?.stop();
    if (this.stsTimer) clearInterval(this.stsTimer);
    await this.control?.close().catch(() => undefined);
    await this.scheduler.stop(graceMs);
    await this.tlsrpt?.stop(); // flushes the last second of TLSRPT counts
    await this.ingress.close();
    await this.metrics?.server.close().catch(() => undefined);
    this.selfTests?.stop();
    await this.resolver.close();
    await this.extraResolver?.close();
    await this.spool.close();
    this.log.info('stopped');
  }
}
