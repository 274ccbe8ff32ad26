/**
 * Prometheus series of the relay (issue 7), on a registry of its own (never prom-client's
 * global one, so two relays in one process — tests — do not share counters). `RelayMetrics`
 * is the `RelayEvents` implementation: stages call the hooks, this counts.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueuedMessage } from '../spool/types.js';
import type { DaneStatus, DeliveryOutcomeKind, RelayEvents } from './events.js';
import { printable } from '../text/printable.js';

/** What the queue gauges read at scrape time (the scheduler). */
export interface QueueView {
  list(): QueuedMessage[];
}

export class RelayMetrics implements RelayEvents {
  readonly registry = new Registry();
  private readonly received: Counter<string>;
  private readonly receivedRecipients: Counter<string>;
  private readonly receivedBytes: Counter<string>;
  private readonly deliveries: Counter<'outcome' | 'dane'>;
  private readonly deferrals: Counter<'reason'>;
  private readonly downgrades: Counter<'domain' | 'level'>;
  private readonly recovered: Counter<'domain'>;
  private readonly rollovers: Counter<'kind'>;
  private readonly dnsLookups: Counter<'type' | 'status'>;
  private readonly dnsLatency: Histogram<'type'>;
  private readonly tls: Counter<'result'>;
  private queue?: QueueView;

  /** `node`: in a cluster (spool.backend postgres, issue 16), every series carries `node="<name>"`. */
  constructor(opts: { now?: () => number; defaultMetrics?: boolean; node?: string } = {}) {
    const registers = [this.registry];
    if (opts.node !== undefined) this.registry.setDefaultLabels({ node: opts.node });
    const now = opts.now ?? Date.now;
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'dane_relay_' });
    this.received = new Counter({ name: 'dane_relay_messages_received_total', help: 'Messages accepted and committed to the spool (250 sent)', registers });
    this.receivedRecipients = new Counter({ name: 'dane_relay_received_recipients_total', help: 'Recipients of accepted messages', registers });
    this.receivedBytes = new Counter({ name: 'dane_relay_received_bytes_total', help: 'Bytes of accepted messages', registers });
    this.deliveries = new Counter({
      name: 'dane_relay_deliveries_total',
      help: 'Per-recipient delivery attempt results, by outcome and how the session was protected',
      labelNames: ['outcome', 'dane'],
      registers,
    });
    this.deferrals = new Counter({
      name: 'dane_relay_deferrals_total',
      help: 'Recipients deferred after an attempt, by reason',
      labelNames: ['reason'],
      registers,
    });
    this.downgrades = new Counter({
      name: 'dane_relay_exception_downgrades_total',
      help: 'Deliveries to a destination on the exception list below its DANE level',
      labelNames: ['domain', 'level'],
      registers,
    });
    this.recovered = new Counter({
      name: 'dane_relay_exception_recovered_total',
      help: 'Listed destinations whose DANE verified again (the exception can go)',
      labelNames: ['domain'],
      registers,
    });
    this.rollovers = new Counter({
      name: 'dane_relay_rollover_warnings_total',
      help: 'Destinations one certificate renewal away from failing DANE, by kind',
      labelNames: ['kind'],
      registers,
    });
    this.dnsLookups = new Counter({
      name: 'dane_relay_dns_lookups_total',
      help: 'DNS lookups by query type and result (DNSSEC status or error kind)',
      labelNames: ['type', 'status'],
      registers,
    });
    this.dnsLatency = new Histogram({
      name: 'dane_relay_dns_lookup_duration_seconds',
      help: 'DNS lookup latency',
      labelNames: ['type'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.tls = new Counter({ name: 'dane_relay_tls_handshakes_total', help: 'Outbound TLS handshakes by result', labelNames: ['result'], registers });
    const self = this;
    new Gauge({
      name: 'dane_relay_queue_messages',
      help: 'Messages in the queue',
      registers,
      collect() {
        this.set(self.queue ? self.queue.list().length : 0);
      },
    });
    new Gauge({
      name: 'dane_relay_queue_recipients',
      help: 'Recipients in the queue by state (held counts recipients of held messages still waiting)',
      labelNames: ['state'],
      registers,
      collect() {
        const n = { pending: 0, deferred: 0, held: 0 };
        for (const m of self.queue?.list() ?? [])
          for (const r of m.recipients) {
            if (r.state !== 'pending' && r.state !== 'deferred') continue;
            if (m.held) n.held++;
            else n[r.state]++;
          }
        for (const [state, v] of Object.entries(n)) this.set({ state }, v);
      },
    });
    new Gauge({
      name: 'dane_relay_queue_oldest_age_seconds',
      help: 'Age of the oldest queued message (0 when the queue is empty)',
      registers,
      collect() {
        let oldest = Infinity;
        for (const m of self.queue?.list() ?? []) oldest = Math.min(oldest, m.envelope.received);
        this.set(oldest === Infinity ? 0 : Math.max(0, (now() - oldest) / 1000));
      },
    });
  }

  /** The queue gauges read this at scrape time. */
  watchQueue(q: QueueView): void {
    this.queue = q;
  }

  messageReceived(e: { recipients: number; bytes: number }): void {
    this.received.inc();
    this.receivedRecipients.inc(e.recipients);
    this.receivedBytes.inc(e.bytes);
  }
  deliveryOutcome(e: { domain: string; outcome: DeliveryOutcomeKind; dane: DaneStatus }): void {
    this.deliveries.inc({ outcome: e.outcome, dane: e.dane });
  }
  deferral(e: { domain: string; reason: string }): void {
    this.deferrals.inc({ reason: e.reason });
  }
  exceptionDowngrade(e: { domain: string; level: string }): void {
    this.downgrades.inc({ domain: printable(e.domain), level: e.level });
  }
  exceptionRecovered(e: { domain: string; host: string }): void {
    this.recovered.inc({ domain: printable(e.domain) });
  }
  rolloverWarning(e: { domain: string; host: string; kind: string; detail: string }): void {
    this.rollovers.inc({ kind: e.kind });
  }
  dnsLookup(e: { type: string; status: string; seconds: number }): void {
    this.dnsLookups.inc({ type: e.type, status: e.status });
    this.dnsLatency.observe({ type: e.type }, e.seconds);
  }
  tlsHandshake(e: { result: 'ok' | 'starttls-unsupported' | 'handshake-failed' | 'verify-failed' }): void {
    this.tls.inc({ result: e.result });
  }
}
