/**
 * The relay's composition (issue 14 item 6): `compose(options)` returns its components in start order;
 * `startAll` starts them in that order and `stopAll` stops them in reverse, from the same list, also when
 * a start fails half-way (the components already started are stopped, in reverse, before the error is
 * rethrown). No policy lives here: this is start-up, shutdown and plumbing.
 *
 * A stop has two passes over the list, both in reverse start order: `drain` stops taking new work (the
 * readiness probe says "stopping", the listeners close, the control socket closes, deliveries get the
 * grace period), then `stop` releases what `start` took (sessions still open get 421, counts are flushed,
 * the resolver and the spool are closed). So the SMTP sessions and the deliveries share the grace period,
 * and nothing is released while something started after it still runs.
 *
 * Start order (what each step relies on is above it): the privilege drop (root with `user:`: listeners
 * bound, state handed over, then setuid), the start-up checks as the run-as user (issue 23's file checks,
 * then src/preflight.ts), the resolver, the policy tables, the spool, TLSRPT, recovery, the DNSSEC
 * self-test, the scheduler, the operator surfaces, the TLSRPT daily job, ingress (the gate opens: the
 * relay is ready), the policy file watch, the danefail probe.
 */
import type { Logger } from 'pino';
import { configuredTlsrptDir, type LoadedConfig } from './config/load.js';
import { Spool } from './spool/spool.js';
import { Scheduler } from './scheduler/scheduler.js';
import { Ingress } from './ingress/server.js';
import { resolverFor } from './config/resolver.js';
import { reverseNames } from './dns/reverse.js';
import { assertStartable, startupPaths } from './preflight.js';
import type { Resolver } from './dns/types.js';
import type { DeliveryDeps } from './delivery/deliver.js';
import { makeLogger } from './log.js';
import { OwnEndpoints, type Endpoint } from './route/self.js';
import { metricsEndpoint, parseHostPort } from './config/schema.js';
import { SelfTestMonitor, selfTestProbes } from './dns/selftest.js';
import { fanOutEvents, type RelayEvents } from './metrics/events.js';
import type { PolicyStore } from './policy/store.js';
import { policyStoreFor } from './policy/config.js';
import { ExceptionProber } from './check/probe.js';
import { MxFactsStore } from './policy/mxFacts.js';
import { deliveryLog } from './delivery/log.js';
import { rolloverWatch } from './delivery/rollover.js';
import { deliveryMetrics } from './delivery/metrics.js';
import { stsFetchFailure, tlsrptSubscriber } from './reporting/tlsrpt/results.js';
import type { ControlServer } from './control/server.js';
import type { RelayMetrics } from './metrics/registry.js';
import type { MetricsServer } from './metrics/http.js';
import type { Readiness } from './metrics/readiness.js';
import type { TlsrptService } from './reporting/tlsrpt/daily.js';
import type { HttpsOptions } from './reporting/tlsrpt/https.js';
import { dropPrivileges, handOverState, privilegePlan, stateDirs } from './files/privileges.js';
import { currentIdentity, startupFileProblems, UnsafeStateError } from './files/checks.js';
import type { QueuedMessage, QueueStore, SpoolWriter } from './spool/types.js';
import type { StsPolicies } from './mtasts/policies.js';
import { mkdir } from 'node:fs/promises';
import { hostname } from 'node:os';
import { packageVersion } from './config/path.js';

/** read at load, while still root: package.json may not be readable after the privilege drop */
const VERSION = packageVersion();

/** One step of the relay's life: started in list order, drained and stopped in reverse. */
export interface Component {
  readonly name: string;
  start(): Promise<void>;
  /** first pass of a stop: take no new work (listeners, sockets, timers); deliveries get `graceMs` */
  drain?(graceMs: number): Promise<void>;
  /** second pass: release what start took */
  stop?(): Promise<void>;
}

/**
 * Starts the components in order. When one fails, the ones already started are stopped in reverse
 * (drained with no grace, then stopped) and the start's error is rethrown; a failing start cleans up
 * after itself. Returns the started list (all of them).
 */
export async function startAll(components: readonly Component[]): Promise<Component[]> {
  const started: Component[] = [];
  for (const c of components) {
    try {
      await c.start();
    } catch (e) {
      await stopAll(started, 0, { rollback: true });
      throw e;
    }
    started.push(c);
  }
  return started;
}

/**
 * Stops started components in reverse order: every `drain`, then every `stop`. A failing step does not
 * keep the rest from running; on a rollback its error is dropped (the start's error is the one that
 * matters), otherwise the first one is rethrown at the end.
 */
export async function stopAll(started: readonly Component[], graceMs: number, opts: { rollback?: boolean } = {}): Promise<void> {
  const reversed = [...started].reverse();
  let first: unknown;
  const step = async (f: () => Promise<void>) => {
    try {
      await f();
    } catch (e) {
      first ??= e;
    }
  };
  for (const c of reversed) if (c.drain) await step(() => c.drain!(graceMs));
  for (const c of reversed) if (c.stop) await step(() => c.stop!());
  if (first !== undefined && !opts.rollback) throw first;
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

/** What the components made, filled in as they start (a component reads only what started before it). */
export interface Parts {
  log: Logger;
  resolver?: Resolver;
  policy?: PolicyStore;
  spool?: QueueStore;
  scheduler?: Scheduler;
  ingress?: Ingress;
  control?: ControlServer;
  metrics?: { events: RelayMetrics; server: MetricsServer; readiness: Readiness };
  tlsrpt?: TlsrptService;
  selfTests?: SelfTestMonitor;
  prober?: ExceptionProber;
  /** MTA-STS policies (issue 15): the durable cache, loaded at start, maintained hourly */
  sts?: StsPolicies;
  /** WebPKI roots for MX certificates under an MTA-STS policy (`mta_sts.ca_file`); undefined = the system store */
  stsRoots?: readonly (string | Buffer)[];
  /** is a DANE level in force (default or a tls_policy entry)? */
  daneInForce: () => boolean;
  /** the hooks every stage reports to (metrics and the caller's), once the `events` component ran */
  events?: RelayEvents;
  /**
   * SIGHUP (issue 21): puts the reloadable keys of `next` in force in the running components (src/config/reload.ts
   * decides which keys those are; `next` carries the old value of every other key).
   */
  applyConfig: (next: LoadedConfig) => void;
}

export interface Composition {
  components: Component[];
  parts: Parts;
}

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

/**
 * Modules the relay's start imports only when a component needs them (a CLI command never pays for them). Every
 * lazy import of the start goes through this table, so the privilege drop can load them all while still root:
 * after it, a module the relay user cannot read would fail the start or, worse, a later reload.
 */
const LAZY = {
  controlServer: () => import('./control/server.js'),
  pgStore: () => import('./reporting/tlsrpt/pgStore.js'),
  metricsRegistry: () => import('./metrics/registry.js'),
  tlsrptDaily: () => import('./reporting/tlsrpt/daily.js'),
  mtastsSettings: () => import('./mtasts/settings.js'),
  timedResolver: () => import('./metrics/timedResolver.js'),
  controlBackends: () => import('./control/backends.js'),
  readiness: () => import('./metrics/readiness.js'),
  metricsHttp: () => import('./metrics/http.js'),
  pgConnect: () => import('./spool/postgres/connect.js'),
  pgMigrate: () => import('./spool/postgres/migrate.js'),
  pgQueue: () => import('./spool/postgres/queue.js'),
  pgRollover: () => import('./policy/pgRollover.js'),
  pgProbeLedger: () => import('./check/pgProbeLedger.js'),
  dnssecResolver: () => import('./dnssec/resolver.js'),
};

export async function compose(opts: RelayOptions): Promise<Composition> {
  const cfg = opts.config;
  const log = opts.log ?? makeLogger(cfg.log.level);
  const now = opts.now ?? Date.now;
  const { controlSocketPath } = await LAZY.controlServer();
  const tlsrptDir = configuredTlsrptDir(cfg);
  const parts: Parts = { log, daneInForce: () => false, applyConfig: () => undefined };
  /** the delivery policy level in force (a config reload changes it) */
  let defaultLevel = cfg.delivery.tls_level;
  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`compose: ${what} used before it started`);
    return v;
  };
  /** true once every component has started: an injected resolver is then the relay's to close */
  let running = false;

  // Root with `user:` binds the SMTP listeners early (sessions wait at the gate until the relay is ready).
  type Late = { spool?: QueueStore; onQueued?: (m: QueuedMessage) => void; events?: RelayEvents; reverse?: (ip: string) => Promise<string[]> };
  let early: { ingress: Ingress; open: () => void; fail: () => void; late: Late } | undefined;
  let recovered: QueuedMessage[] = [];
  let metricsEvents: RelayMetrics | undefined;
  // spool.backend postgres (issue 16): TLSRPT counts and sends in the queue database, on a small pool of their own
  let tlsrptPool: import('pg').Pool | undefined;
  const sharedTlsrpt = async () => {
    const shared = await (await LAZY.pgStore()).openSharedTlsrpt(cfg, nodeName(cfg), log);
    tlsrptPool = shared?.pool;
    return shared;
  };
  let events: RelayEvents | undefined;
  let extraResolver: Resolver | undefined;
  let stsTimer: NodeJS.Timeout | undefined;
  let stsLoading: Promise<void> | undefined;
  /** spool.backend postgres: the pool for the cluster's shared state other than the queue and TLSRPT */
  let statePool: import('pg').Pool | undefined;
  let delivery: DeliveryDeps | undefined;
  // RFC 5321 §5.1 loop check by address (route/self.ts): ingress's bound addresses (port 0 is known only then;
  // before it has bound, the configured ones); rebuilt each minute, interfaces come and go.
  let listening: Endpoint[] = [];
  let own: { set: OwnEndpoints; at: number } | undefined;
  const ownEndpoints = (): OwnEndpoints => {
    if (!own || Date.now() - own.at > 60_000) own = { set: new OwnEndpoints(listening), at: Date.now() };
    return own.set;
  };
  const ingressConfig = { ...cfg.ingress, listen: cfg.listen, relayClients: cfg.relay_clients, hostname: cfg.hostname };

  const components: Component[] = [
    {
      // Issue 23 §3: root with `user:` binds the SMTP listeners, hands the state directories over and drops
      // to that user before anything else; root without it says why that is risky.
      name: 'privileges',
      start: async () => {
        const privileges = privilegePlan(cfg, process.geteuid?.() ?? -1);
        if (privileges.rootWarning) log.warn({ uid: 0, allow_root: cfg.allow_root }, privileges.rootWarning);
        if (!privileges.drop) return;
        const u = privileges.drop;
        const handed = await handOverState(stateDirs(cfg.queue_dir, tlsrptDir, controlSocketPath(cfg)), u);
        // Bound now, as root (ports below 1024); sessions wait at the gate until the relay is ready.
        let open!: () => void;
        let fail!: () => void;
        const gate = new Promise<void>((res, rej) => {
          open = res;
          fail = () => rej(new Error('relay did not start'));
        });
        gate.catch(() => undefined);
        const late: Late = {};
        const lateSpool: SpoolWriter = { begin: (e) => late.spool!.begin(e), enqueue: (e, b) => late.spool!.enqueue(e, b) };
        const ingressEarly = await Ingress.start({
          config: ingressConfig,
          spool: lateSpool,
          log,
          now,
          onQueued: (m) => late.onQueued?.(m),
          reverse: (ip) => late.reverse?.(ip) ?? Promise.resolve([]),
          events: { messageReceived: (e) => late.events?.messageReceived?.(e), ingressRejection: (e) => late.events?.ingressRejection?.(e) },
          gate,
        });
        // What the start imports lazily (LAZY, below), imported while root can still read it: a root-only
        // install, a clone under /root, then still starts (the installation should be readable by \`user\` anyway).
        await Promise.all(Object.values(LAZY).map((load) => load()));
        try {
          dropPrivileges(u);
        } catch (e) {
          fail();
          await ingressEarly.close();
          throw e;
        }
        early = { ingress: ingressEarly, open, fail, late };
        log.info(
          { user: u.name, uid: u.uid, gid: u.gid, state_entries_handed_over: handed },
          'privileges dropped: listeners bound as root, running as the configured user',
        );
      },
      stop: async () => {
        // the listeners bound as root, when the start did not get as far as opening them (idempotent)
        early?.fail();
        await early?.ingress.close().catch(() => undefined);
      },
    },
    {
      // The rest of what `dane-relay config check` checks (src/preflight.ts), as the user the relay runs as,
      // before the spool, the resolver or any listener of ours is opened (an injected resolver is the caller's).
      name: 'start-up checks',
      start: async () => {
        await checkFiles(cfg, log, tlsrptDir, controlSocketPath(cfg));
        await assertStartable(cfg, { trustCheck: !opts.resolver, files: false, ingress: !early });
      },
    },
    {
      name: 'resolver',
      // The relay's clock: signature windows and cache ages follow it.
      start: async () => {
        parts.resolver = opts.resolver ?? resolverFor(cfg, { now });
      },
      stop: async () => {
        if (!opts.resolver || running) await parts.resolver?.close();
      },
    },
    {
      // DANE-2: a tls_policy DANE entry under an untrusted trust-ad resolver is refused like a DANE default (an injected resolver
      // is the caller's). The stub resolver opens sockets per query only: nothing has been sent when this throws.
      name: 'policy',
      start: async () => {
        parts.policy = policyStoreFor(cfg, log, opts.policyStatIntervalMs, !opts.resolver);
      },
      stop: async () => parts.policy?.close(),
    },
    {
      name: 'spool',
      start: async () => {
        parts.spool = await openQueue(cfg, log, now);
        // issue 16: the cluster's shared state beside the queue (MTA-STS cache, probe results, rollover facts), on a small pool of its own
        if (cfg.spool.backend === 'postgres')
          statePool = (await LAZY.pgConnect()).openPool({ ...cfg.spool.postgres!, pool: 2 }, { application: `dane-relay ${nodeName(cfg)} state` });
      },
      stop: async () => {
        await parts.spool?.close();
        await statePool?.end().catch(() => undefined);
      },
    },
    {
      name: 'events',
      start: async () => {
        // issue 16: in a cluster every series carries the node's name (file backend: label sets unchanged)
        metricsEvents = cfg.metrics
          ? new (await LAZY.metricsRegistry()).RelayMetrics({ now, node: cfg.spool.backend === 'postgres' ? nodeName(cfg) : undefined, version: VERSION })
          : undefined;
        events = fanOutEvents(opts.events, metricsEvents);
        parts.events = events;
      },
    },
    {
      name: 'tlsrpt',
      start: async () => {
        if (!cfg.tlsrpt.enabled) return;
        const { TlsrptService: Service, tlsrptSettings } = await LAZY.tlsrptDaily();
        parts.tlsrpt = await Service.open({
          settings: tlsrptSettings(cfg),
          resolver: need(parts.resolver, 'resolver'),
          log,
          now,
          rand: opts.rand,
          https: opts.tlsrptHttps,
          shared: await sharedTlsrpt(),
          events,
        });
      },
      // flushes the last second of TLSRPT counts (to the database in a cluster: its pool ends after)
      stop: async () => {
        await parts.tlsrpt?.stop();
        await tlsrptPool?.end().catch(() => undefined);
      },
    },
    {
      name: 'recovery',
      start: async () => {
        recovered = await need(parts.spool, 'spool').recover();
      },
    },
    {
      // DANE-4: a resolver that does not validate turns DANE silently off. The self-test runs at start,
      // every metrics.selftest_interval and on SIGHUP; in trust-ad mode it asks without an answer cache
      // (a re-test must see the resolver as it is now), and while it fails the deliveries that need DANE
      // are held (issue 13): an AD bit that proves nothing must not decide that DANE does not apply.
      name: 'DNSSEC self-test',
      start: async () => {
        const policy = need(parts.policy, 'policy');
        const defaultDane = () => defaultLevel === 'dane' || defaultLevel === 'dane-only';
        const trustAd = cfg.dns.mode === 'trust-ad';
        extraResolver = trustAd && !opts.resolver ? resolverFor(cfg, { cache: false }) : undefined;
        const selfTests = new SelfTestMonitor({
          resolver: extraResolver ?? need(parts.resolver, 'resolver'),
          intervalMs: cfg.metrics?.selftest_interval ?? 60_000,
          log,
          holds: trustAd,
          probes: selfTestProbes(cfg.dns.dnssec_probe, cfg.dns.dnssec_bogus_probe),
        });
        parts.selfTests = selfTests;
        let daneInForce = defaultDane() || policy.mentionsDane();
        parts.daneInForce = () => daneInForce;
        if (daneInForce) void selfTests.start('start');
        // Again when a reload brings the first DANE entry in (the start-up test did not run or did not cover it).
        policy.onReload((r) => {
          // a reread that changed nothing is no reload; one rejected file is a refusal (its previous version stays)
          if (r.rejected.length || r.loaded.length) events?.reload?.({ what: 'policy', result: r.rejected.length ? 'refused' : 'ok' });
          const now = defaultDane() || policy.mentionsDane();
          if (now && !daneInForce) void selfTests.start('reload introduced DANE');
          daneInForce = now;
        });
      },
      stop: async () => {
        parts.selfTests?.stop();
        await extraResolver?.close();
      },
    },
    {
      // MTA-STS (RFC 8461): each lookup reads its domain's cached entry (STS-30); the whole cache is loaded in the background and refreshed/pruned hourly.
      name: 'mta-sts',
      start: async () => {
        if (!cfg.mta_sts.enabled) return;
        const { stsPoliciesFor, stsStoreFor, stsTrustAnchors } = await LAZY.mtastsSettings();
        // spool.backend postgres (issue 16): the cache is the cluster's, in the queue database, on a small pool of its own
        // TLSRPT-22: a failed proactive refresh is one failed session of the policy kept in force (deliveries count their own fetches)
        const sts = stsPoliciesFor(
          cfg,
          need(parts.resolver, 'resolver'),
          log,
          now,
          (f) => {
            const r = stsFetchFailure(f.domain, f.resultType, f.kept);
            if (r) parts.tlsrpt?.recorder.record(r);
          },
          stsStoreFor(cfg, statePool),
        );
        // Each lookup reads its own domain's entry (StsPolicies.current: file or row), so the start does not wait for the
        // whole cache: 100,000 cached domains take a minute or more to read (BENCHMARKS.md §8). The load only warms memory
        // and fills the hourly refresh's list. A database not reachable yet (PgQueue.open runs without it) is no reason
        // to refuse the start either: what is in memory stays in force while the database is away.
        stsLoading = sts.load().then(
          (n) => log.info({ policies: n }, 'mta-sts: cached policies loaded'),
          (e: unknown) => log.warn({ err: (e as Error).message }, 'mta-sts: the policy cache could not be read at start; each lookup reads its own entry'),
        );
        const ca = stsTrustAnchors(cfg);
        parts.sts = sts;
        if (ca) parts.stsRoots = [ca];
        stsTimer = setInterval(() => {
          sts.maintain().then(
            (m) => {
              if (m.refreshed.length + m.failed.length + m.dropped.length) log.info(m, 'mta-sts: maintenance');
            },
            (e) => log.error({ err: e }, 'mta-sts: maintenance failed'),
          );
        }, 3600_000);
        stsTimer.unref();
      },
      drain: async () => {
        if (stsTimer) clearInterval(stsTimer);
        await stsLoading;
      },
    },
    {
      name: 'scheduler',
      start: async () => {
        const { TimedResolver } = await LAZY.timedResolver();
        const resolver = need(parts.resolver, 'resolver');
        const policy = need(parts.policy, 'policy');
        const spool = need(parts.spool, 'spool');
        const selfTests = need(parts.selfTests, 'DNSSEC self-test');
        listening = early
          ? [...early.ingress.addresses]
          : cfg.listen
              .map((l) => parseHostPort(l, true))
              .filter((h): h is { host: string; port: number } => !!h && h.port > 0)
              .map((h) => ({ address: h.host, port: h.port }));
        delivery = {
          resolver: events ? new TimedResolver(resolver, events) : resolver,
          ownEndpoints,
          heloName: cfg.hostname,
          selfNames: [cfg.hostname],
          port: cfg.delivery.port,
          tlsLevel: (domain) => policy.resolve(domain),
          timeouts: cfg.delivery.timeouts,
          digestPreference: cfg.delivery.digest_preference,
          maxMessagesPerConnection: cfg.delivery.max_messages_per_connection,
          discardExtensions: cfg.delivery.discard_ehlo_keywords.map((k) => k.toUpperCase()),
          mxHostLimit: cfg.delivery.mx_host_limit,
          now,
          // One subscriber list for what deliveries do (delivery/events.ts): log, rollover warnings, metrics, TLSRPT.
          subscribers: [
            deliveryLog(log),
            rolloverWatch({
              now,
              mxFacts: new MxFactsStore(cfg.policy.rollover_warn),
              warnMs: cfg.policy.rollover_warn,
              ...(statePool
                ? {
                    shared: {
                      ledger: new (await LAZY.pgRollover()).PgRolloverLedger(statePool, nodeName(cfg), now),
                      onError: (err: unknown) => log.warn({ err: (err as Error).message }, 'rollover facts: the shared table could not be used'),
                    },
                  }
                : {}),
            }),
            ...(events ? [deliveryMetrics(events)] : []),
            ...(parts.tlsrpt ? [tlsrptSubscriber(parts.tlsrpt.recorder.record)] : []),
          ],
          mimeConversion: cfg.delivery.mime_conversion,
          dnssecHold: () => selfTests.hold(),
          ...(parts.sts ? { sts: (domain: string) => parts.sts!.lookup(domain), ...(parts.stsRoots ? { stsRoots: parts.stsRoots } : {}) } : {}),
        };
        const schedulerConfig = {
          ...cfg.queue,
          concurrency: cfg.delivery.concurrency,
          per_destination: cfg.delivery.per_destination,
          connection_cache_time: cfg.delivery.connection_cache_time,
        };
        const scheduler = new Scheduler({
          spool,
          delivery,
          config: schedulerConfig,
          hostname: cfg.hostname,
          log,
          now,
          rand: opts.rand,
          events,
        });
        parts.scheduler = scheduler;
        // The live objects read per delivery, per scheduling pass and per connection: a config reload writes
        // the reloadable keys (src/config/reload.ts RELOADABLE) into them.
        const live = delivery;
        parts.applyConfig = (next) => {
          defaultLevel = next.delivery.tls_level;
          // issue 21 item 3: new probe names are asked at once (while DANE is in force), so /readyz and the hold judge by them
          if (selfTests.setProbes(selfTestProbes(next.dns.dnssec_probe, next.dns.dnssec_bogus_probe)) && parts.daneInForce())
            void selfTests.run('reload changed the probes');
          policy.setLevels({ defaultLevel: next.delivery.tls_level, exceptionLevel: next.policy.exception_level });
          Object.assign(live, {
            timeouts: next.delivery.timeouts,
            digestPreference: next.delivery.digest_preference,
            maxMessagesPerConnection: next.delivery.max_messages_per_connection,
            discardExtensions: next.delivery.discard_ehlo_keywords.map((k) => k.toUpperCase()),
            mxHostLimit: next.delivery.mx_host_limit,
            mimeConversion: next.delivery.mime_conversion,
          });
          Object.assign(schedulerConfig, {
            ...next.queue,
            concurrency: next.delivery.concurrency,
            per_destination: next.delivery.per_destination,
            connection_cache_time: next.delivery.connection_cache_time,
          });
          const i = next.ingress;
          Object.assign(ingressConfig, {
            max_recipients: i.max_recipients,
            max_connections: i.max_connections,
            max_connections_per_client: i.max_connections_per_client,
            max_hops: i.max_hops,
            postmaster: i.postmaster,
            long_lines: i.long_lines,
          });
        };
        for (const m of recovered) scheduler.add(m);
        log.info({ recovered: recovered.length, queue_dir: cfg.queue_dir }, 'spool recovered');
        scheduler.start();
      },
      // deliveries under way get the grace period, then are cut; the queue's state is written
      drain: async (graceMs) => parts.scheduler?.stop(graceMs),
    },
    {
      // Operator surfaces must never stop mail: if one cannot start, say so loudly and run without it.
      name: 'control socket',
      start: async () => {
        const { ControlServer: Control } = await LAZY.controlServer();
        const { schedulerBackend } = await LAZY.controlBackends();
        parts.control = await Control.start({
          path: controlSocketPath(cfg),
          backend: schedulerBackend(need(parts.scheduler, 'scheduler'), need(parts.spool, 'spool')),
          now,
          log,
        }).catch((e) => {
          log.error({ err: e }, `CONTROL SOCKET NOT AVAILABLE: ${(e as Error).message}; queue commands need the relay stopped`);
          return undefined;
        });
      },
      drain: async () => {
        await parts.control?.close().catch(() => undefined);
      },
    },
    {
      name: 'metrics',
      start: async () => {
        if (!cfg.metrics || !metricsEvents) return;
        const metricsCfg = cfg.metrics;
        const registry = metricsEvents;
        const { Readiness: Ready } = await LAZY.readiness();
        const { MetricsServer: Server } = await LAZY.metricsHttp();
        registry.watchQueue(need(parts.scheduler, 'scheduler'));
        const selfTests = need(parts.selfTests, 'DNSSEC self-test');
        registry.watchSelfTest(() => (parts.daneInForce() ? selfTests.latest : undefined));
        const readiness = new Ready({
          queueDir: cfg.queue_dir,
          spoolTtlMs: metricsCfg.ready_cache,
          ...(parts.spool?.shared ? { spoolProbe: () => parts.spool!.shared!.probe() } : {}),
          // the same condition as the self-test monitor, read at every /readyz: DANE by default or by a
          // tls_policy entry, also when a reload brought it in after the start
          selfTest: { required: () => parts.daneInForce(), latest: () => selfTests.latest, current: () => selfTests.current('readyz') },
        });
        const server = await Promise.resolve()
          .then(() => Server.start({ listen: metricsEndpoint(metricsCfg), registry: registry.registry, readiness, log }))
          .catch((e) => {
            log.error({ err: e }, `METRICS NOT AVAILABLE: ${(e as Error).message}`);
            return undefined;
          });
        if (server) parts.metrics = { events: registry, readiness, server };
      },
      stop: async () => {
        await parts.metrics?.server.close().catch(() => undefined);
      },
    },
    {
      // TLSRPT-34: the daily job queues mailed reports in this spool as Envelope.kind 'tlsrpt' (stopped with TLSRPT).
      name: 'TLSRPT daily job',
      start: async () => {
        const spool = need(parts.spool, 'spool');
        const scheduler = need(parts.scheduler, 'scheduler');
        parts.tlsrpt?.start(async (envelope, message) => {
          const queued = await spool.enqueue(envelope, message);
          scheduler.add(queued);
          return queued.id;
        });
      },
    },
    {
      name: 'ingress',
      start: async () => {
        const spool = need(parts.spool, 'spool');
        const scheduler = need(parts.scheduler, 'scheduler');
        const resolver = need(parts.resolver, 'resolver');
        const reverse = (ip: string) => reverseNames(resolver, ip);
        if (early) {
          // bound before the privilege drop: now the spool and scheduler exist, let the sessions in
          Object.assign(early.late, { spool, onQueued: (m: QueuedMessage) => scheduler.add(m, now()), events, reverse });
          parts.ingress = early.ingress;
          early.open();
        } else {
          parts.ingress = await Ingress.start({ config: ingressConfig, spool, log, now, onQueued: (m) => scheduler.add(m, now()), events, reverse });
        }
        listening = [...parts.ingress.addresses];
        own = undefined;
        log.info(
          {
            version: VERSION,
            config: cfg.file,
            listen: parts.ingress.addresses,
            hostname: cfg.hostname,
            tls_level: cfg.delivery.tls_level,
            dns_mode: cfg.dns.mode,
          },
          'dane-relay started',
        );
      },
      // no new connections; messages being committed finish; sessions still open get 421 at the stop
      drain: async () => parts.ingress?.stopAccepting(),
      stop: async () => parts.ingress?.close(),
    },
    {
      name: 'policy file watch',
      start: async () => need(parts.policy, 'policy').watch(),
      drain: async () => parts.policy?.close(),
    },
    {
      name: 'danefail probe',
      start: async () => {
        const policy = need(parts.policy, 'policy');
        if (cfg.policy.danefail) {
          const d = need(delivery, 'delivery');
          parts.prober = new ExceptionProber({
            store: policy,
            ...(statePool ? { ledger: new (await LAZY.pgProbeLedger()).PgProbeLedger(statePool, nodeName(cfg)) } : {}),
            intervalMs: cfg.policy.probe_interval,
            log,
            events,
            inspect: {
              resolver: need(parts.resolver, 'resolver'),
              selfNames: d.selfNames,
              mxHostLimit: cfg.delivery.mx_host_limit,
              heloName: d.heloName,
              port: d.port,
              timeouts: d.timeouts,
              digestPreference: d.digestPreference,
              now,
            },
          });
          parts.prober.start();
        }
        log.info({ ...policy.counts(), tls_policy: cfg.policy.tls_policy, danefail: cfg.policy.danefail }, 'policy loaded');
      },
      drain: async () => parts.prober?.stop(),
    },
    {
      // Last to start, first to drain: /readyz says "stopping" before anything else stops.
      name: 'readiness',
      start: async () => {
        running = true;
      },
      drain: async () => {
        if (parts.metrics) parts.metrics.readiness.stopping = true;
      },
    },
  ];
  return { components, parts };
}

/**
 * Opens the queue backend the configuration names (`spool.backend`, issue 16): the embedded file spool under
 * queue_dir (the default), or the queue shared with other nodes on PostgreSQL, whose schema is brought up to
 * date first (the same migrations as `dane-relay db migrate`).
 */
/** This node's name in leases: `spool.postgres.node`, else hostname:pid (unique among live processes on a host). */
export function nodeName(cfg: LoadedConfig): string {
  return cfg.spool.postgres?.node ?? `${hostname()}:${process.pid}`;
}

export async function openQueue(cfg: LoadedConfig, log: Logger, now: () => number): Promise<QueueStore> {
  if (cfg.spool.backend !== 'postgres') return Spool.open(cfg.queue_dir, { now, log });
  const pgc = cfg.spool.postgres!;
  const { openPool, describeUrl } = await LAZY.pgConnect();
  const { migrate } = await LAZY.pgMigrate();
  const { PgQueue } = await LAZY.pgQueue();
  const pool = openPool(pgc, { application: `dane-relay ${nodeName(cfg)}` });
  try {
    // queue_dir still holds the control socket (and TLSRPT's counts unless tlsrpt.dir says otherwise).
    await mkdir(cfg.queue_dir, { recursive: true, mode: 0o700 });
    // The migrations run at open, or (database down at start) when it first answers: the node starts either way,
    // answering 451 until then (PgQueue.open); a schema newer than this relay's refuses the start or the recovery.
    const prepare = async () => {
      const m = await migrate(pool, { node: nodeName(cfg), leaseMs: pgc.lease });
      log.info({ db: describeUrl(pgc.url), schema_from: m.from, schema_version: m.to, node: nodeName(cfg), lease_ms: pgc.lease }, 'queue database opened');
    };
    return await PgQueue.open(pool, { node: nodeName(cfg), leaseMs: pgc.lease, now, log, prepare });
  } catch (e) {
    await pool.end().catch(() => undefined);
    throw new Error(`queue database ${describeUrl(pgc.url)}: ${(e as Error).message}`, { cause: e });
  }
}
