/**
 * Prometheus series of the relay (issue 7), on a registry of its own (never prom-client's
 * global one, so two relays in one process — tests — do not share counters). `RelayMetrics`
 * is the `RelayEvents` implementation: stages call the hooks, this counts.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { QueuedMessage } from '../spool/types.js';
import type { DaneStatus, DeliveryOutcomeKind, DsnAction, RelayEvents, ReloadKind, ReloadResult, TlsrptSendResult } from './events.js';
import { DEFERRAL_REASONS, INGRESS_REJECT_REASONS, ROLLOVER_KINDS, type IngressRejectReason } from './labels.js';
import { SHAPE_COLUMNS, shapeRows } from '../spool/shape.js';
import { STATUS_WORDS, TLS_WORDS } from '../vocabulary/words.js';

/** Domains the by-domain queue gauge names; the rest are summed as "other" (a label set an attacker cannot grow). */
const SHAPE_TOP_DOMAINS = 20;
import { printable } from '../text/printable.js';

/** What the queue gauges read at scrape time (the scheduler). */
export interface QueueView {
  list(): QueuedMessage[];
}

/** The DNSSEC self-test as the status gauge reads it at scrape time: undefined when it has not run (no DANE in force). */
export type SelfTestView = () => { ok: boolean } | undefined;

/** Every value of the delivery labels, so each series exists (at 0) from the first scrape: rate() needs a sample before the first event. */
const OUTCOMES = STATUS_WORDS satisfies readonly DeliveryOutcomeKind[];
const PROTECTIONS = TLS_WORDS satisfies readonly DaneStatus[];
// a value added to either type fails to compile here until it is listed above
const _allOutcomes: [Exclude<DeliveryOutcomeKind, (typeof OUTCOMES)[number]> | Exclude<DaneStatus, (typeof PROTECTIONS)[number]>] extends [never]
  ? true
  : never = true;
void _allOutcomes;

/** Seconds buckets of an attempt (a DNS answer and a fast SMTP transaction, up to the stage timeouts of RFC 5321 §4.5.3.2). */
const ATTEMPT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** Seconds buckets of the time before an attempt: straight through, the retry schedule (30 min, hours), the 5-day lifetime. */
const QUEUE_WAIT_BUCKETS = [0.1, 1, 10, 60, 300, 1800, 3600, 4 * 3600, 12 * 3600, 86_400, 2 * 86_400, 5 * 86_400];

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
  private readonly ingressRejections: Counter<'reason'>;
  private readonly attemptDuration: Histogram<string>;
  private readonly queueWait: Histogram<string>;
  private readonly dsns: Counter<'action'>;
  private readonly reloads: Counter<'what' | 'result'>;
  private readonly tlsrptReports: Counter<'result'>;
  private queue?: QueueView;
  private selfTest?: SelfTestView;

  /**
   * `node`: in a cluster (spool.backend postgres, issue 16), every series carries `node="<name>"`.
   * `version`: the package's, for `dane_relay_build_info`.
   */
  constructor(opts: { now?: () => number; defaultMetrics?: boolean; node?: string; version?: string } = {}) {
    const registers = [this.registry];
    if (opts.node !== undefined) this.registry.setDefaultLabels({ node: opts.node });
    const now = opts.now ?? Date.now;
    if (opts.defaultMetrics ?? true) {
      // The standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, …) that stock Node.js
      // dashboards and alerts query (issue 21 item 7), and the dane_relay_-prefixed copies that README and
      // alerts written before them use (dane_relay_nodejs_eventloop_lag_seconds).
      collectDefaultMetrics({ register: this.registry });
      collectDefaultMetrics({ register: this.registry, prefix: 'dane_relay_' });
    }
    new Gauge({
      name: 'dane_relay_build_info',
      help: 'Always 1; the labels say which build runs (version from package.json, Node.js version)',
      labelNames: ['version', 'nodejs'],
      registers,
    }).set({ version: opts.version ?? 'unknown', nodejs: process.versions.node }, 1);
    this.ingressRejections = new Counter({
      name: 'dane_relay_ingress_rejections_total',
      help: 'Connections, commands and messages ingress refused, by reason',
      labelNames: ['reason'],
      registers,
    });
    // every reason at 0 from the start, so rate() and "no rejections" panels work before the first one
    for (const reason of INGRESS_REJECT_REASONS) this.ingressRejections.inc({ reason }, 0);
    this.attemptDuration = new Histogram({
      name: 'dane_relay_delivery_attempt_duration_seconds',
      help: "Duration of each recipient's delivery attempt (MX/TLSA lookups, connection, TLS, transaction)",
      buckets: ATTEMPT_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'dane_relay_queue_wait_seconds',
      help: 'Time a recipient had waited in the queue (since the message arrived) when its delivery attempt began',
      buckets: QUEUE_WAIT_BUCKETS,
      registers,
    });
    this.dsns = new Counter({
      name: 'dane_relay_dsns_total',
      help: 'DSNs queued, by RFC 3464 action (failed, delayed, relayed)',
      labelNames: ['action'],
      registers,
    });
    this.reloads = new Counter({
      name: 'dane_relay_reloads_total',
      help: 'Rereads of the configuration (SIGHUP) and of the policy files (SIGHUP or a change), by result: ok, or refused (the previous version stays)',
      labelNames: ['what', 'result'],
      registers,
    });
    for (const what of ['config', 'policy']) for (const result of ['ok', 'refused']) this.reloads.inc({ what, result }, 0);
    this.tlsrptReports = new Counter({
      name: 'dane_relay_tlsrpt_reports_total',
      help: 'TLSRPT (RFC 8460) report sends by result: sent, pending (https retries), dropped (no policy, too large, no target), retry-later, failed',
      labelNames: ['result'],
      registers,
    });
    for (const result of ['sent', 'failed']) this.tlsrptReports.inc({ result }, 0);
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
    for (const action of ['failed', 'delayed', 'relayed']) this.dsns.inc({ action }, 0);
    for (const outcome of OUTCOMES) for (const dane of PROTECTIONS) this.deliveries.inc({ outcome, dane }, 0);
    for (const reason of DEFERRAL_REASONS) this.deferrals.inc({ reason }, 0);
    // the rollover panel shows 0 rather than "no data" before the first warning
    for (const kind of ROLLOVER_KINDS) this.rollovers.inc({ kind }, 0);
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
      name: 'dane_relay_dnssec_selftest_status',
      help: 'The DNSSEC self-test (DANE-4): 1 passing, 0 failing, -1 not run (no DANE level in force)',
      registers,
      collect() {
        const r = self.selfTest?.();
        this.set(r === undefined ? -1 : r.ok ? 1 : 0);
      },
    });
    new Gauge({
      name: 'dane_relay_queue_recipients_by_domain_age',
      help: 'Waiting recipients by destination domain and age bucket (the `dane-relay queue shape` table); the 20 busiest domains, the rest as "(other)"',
      labelNames: ['domain', 'age'],
      registers,
      collect() {
        this.reset();
        const waiting = (self.queue?.list() ?? []).map((m) => ({
          ...m,
          recipients: m.recipients.filter((r) => r.state === 'pending' || r.state === 'deferred'),
        }));
        const rows = shapeRows(waiting, now());
        const other = SHAPE_COLUMNS.map(() => 0);
        for (const r of rows.slice(SHAPE_TOP_DOMAINS)) for (const [i, n] of r.counts.entries()) other[i]! += n;
        const named = rows.slice(0, SHAPE_TOP_DOMAINS).map((r) => ({ domain: printable(r.domain), counts: r.counts }));
        for (const r of [...named, ...(rows.length > SHAPE_TOP_DOMAINS ? [{ domain: '(other)', counts: other }] : [])])
          r.counts.forEach((n, i) => {
            if (n > 0) this.set({ domain: r.domain, age: SHAPE_COLUMNS[i]! }, n);
          });
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

  /** The self-test gauge reads this at scrape time. */
  watchSelfTest(v: SelfTestView): void {
    this.selfTest = v;
  }

  ingressRejection(e: { reason: IngressRejectReason }): void {
    this.ingressRejections.inc({ reason: e.reason });
  }
  attemptTimed(e: { attemptSeconds: number; queueWaitSeconds: number }): void {
    this.attemptDuration.observe(Math.max(0, e.attemptSeconds));
    this.queueWait.observe(Math.max(0, e.queueWaitSeconds));
  }
  dsnQueued(e: { action: DsnAction }): void {
    this.dsns.inc({ action: e.action });
  }
  reload(e: { what: ReloadKind; result: ReloadResult }): void {
    this.reloads.inc({ what: e.what, result: e.result });
  }
  tlsrptReport(e: { result: TlsrptSendResult }): void {
    this.tlsrptReports.inc({ result: e.result });
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
