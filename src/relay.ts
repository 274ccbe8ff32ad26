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

/** dns.mode validate: DNSSEC checked in-process from the trust anchors (file, or the built-in IANA root). */
async function validatingResolver(cfg: LoadedConfig): Promise<Resolver> {
  const { ValidatingResolver } = await import('./dnssec/resolver.js');
  const { readFileSync } = await import('node:fs');
  const trustAnchors = cfg.dns.trust_anchors ? readFileSync(cfg.dns.trust_anchors, 'utf8') : undefined;
  return new ValidatingResolver({ servers: cfg.resolvedResolvers, timeoutMs: cfg.dns.timeout, attempts: cfg.dns.attempts, trustAnchors });
}

export interface RelayOptions {
  config: LoadedConfig;
  log?: Logger;
  /** clock; tests pass a controllable one */
  now?: () => number;
  resolver?: Resolver;
  rand?: () => number;
}

export class Relay {
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
      ? await validatingResolver(cfg)
      : new StubResolver({ servers: cfg.resolvedResolvers, timeoutMs: cfg.dns.timeout, attempts: cfg.dns.attempts }));

    const spool = await Spool.open(cfg.queue_dir, { now, log });
    let ingress: Ingress | undefined;
    try {
      const recovered = await spool.recover();
      if (cfg.delivery.tls_level === 'dane' || cfg.delivery.tls_level === 'dane-only') {
        // DANE-4: a resolver that does not validate turns DANE silently off; say so loudly.
        void selfTest(resolver).then((r) => {
          if (r.ok) log.info({ selftest: r }, 'DNSSEC self-test passed');
          else log.warn({ selftest: r }, `DNSSEC SELF-TEST FAILED: ${r.detail} — DANE cannot protect deliveries until the resolver validates`);
        });
      }
      const delivery: DeliveryDeps = {
        resolver,
        heloName: cfg.hostname,
        selfNames: [cfg.hostname],
        port: cfg.delivery.port,
        tlsLevel: () => ({ level: cfg.delivery.tls_level, rule: `delivery.tls_level=${cfg.delivery.tls_level}` }),
        timeouts: cfg.delivery.timeouts,
        digestPreference: cfg.delivery.digest_preference,
        maxMessagesPerConnection: cfg.delivery.max_messages_per_connection,
        log,
        now,
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
      ingress = await Ingress.start({
        config: { ...cfg.ingress, listen: cfg.listen, relayClients: cfg.relay_clients, hostname: cfg.hostname },
        spool,
        log,
        now,
        onQueued: (m) => scheduler.add(m),
      });
      log.info({ listen: ingress.addresses, hostname: cfg.hostname, tls_level: cfg.delivery.tls_level, dns_mode: cfg.dns.mode }, 'dane-relay started');
      return new Relay(cfg, log, spool, scheduler, ingress, resolver);
    } catch (e) {
      await ingress?.close().catch(() => undefined);
      await spool.close().catch(() => undefined);
      throw e;
    }
  }

  /** SIGTERM: stop accepting, let deliveries finish within `graceMs`, leave the spool consistent. */
  async stop(graceMs = 10_000): Promise<void> {
    this.log.info({ grace_ms: graceMs }, 'stopping');
    await this.ingress.stopAccepting();
    await this.scheduler.stop(graceMs);
    await this.ingress.close();
    await this.resolver.close();
    await this.spool.close();
    this.log.info('stopped');
  }
}
