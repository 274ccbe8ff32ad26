/**
 * The queue manager: decides what is due, groups recipients per destination domain
 * (one transaction carries all recipients of a message for that domain), keeps
 * global and per-destination concurrency, applies outcomes durably, and turns
 * permanent failures and expiry into DSNs.
 *
 * State lives in the spool; this keeps only an in-memory index of it. On a shared queue
 * (spool.shared, issue 16) the index holds only the messages this node has leased: due work is
 * claimed every run_interval up to what the node can start, and a message whose deliveries have
 * all settled is given back (its retry may be claimed by any node).
 */
import type { Logger } from 'pino';
import type { QueuedMessage, QueueStore, RecipientStatus } from '../spool/types.js';
import { DestinationRun, type DeliveryDeps, type DeliveryJob } from '../delivery/deliver.js';
import { oneOutcomeEach, printableOutcome, type RecipientOutcome } from '../delivery/outcome.js';
import { composeDsn, dsnAllowed, headerBlock, returnsFull, DSN_RETURN_LIMIT, type DsnRecipient } from '../dsn/compose.js';
import type { BackoffConfig } from './backoff.js';
import { applyOutcome } from './settle.js';
import { MinHeap } from './heap.js';
import type { RelayEvents } from '../metrics/events.js';

export interface SchedulerConfig extends BackoffConfig {
  concurrency: number;
  per_destination: number;
  run_interval: number;
  /**
   * ms a destination's idle session stays open for the next message (delivery.connection_cache_time, Postfix's
   * smtp_connection_cache_time_limit); 0 or absent: closed as soon as its worker has nothing left to send.
   */
  connection_cache_time?: number;
}

/**
 * A run older than this is not kept idle (Postfix's smtp_connection_reuse_time_limit): it resolved its MX
 * hosts and MTA-STS policy when it began, so an idle gap is where they are looked up again at the latest.
 */
export const RUN_REUSE_LIMIT_MS = 300_000;

/** An idle run kept for its open session, and the timer that closes it. */
interface Parked {
  run: DestinationRun;
  timer: NodeJS.Timeout;
}

export interface SchedulerDeps {
  spool: QueueStore;
  delivery: DeliveryDeps;
  config: SchedulerConfig;
  hostname: string;
  log: Logger;
  now: () => number;
  rand?: () => number;
  /** metrics: each DSN queued */
  events?: RelayEvents;
}

export { recipientDomain as domainOf } from '../spool/shape.js';
import { recipientDomain as domainOf } from '../spool/shape.js';

interface Destination {
  domain: string;
  /** TLSRPT reports travel in their own runs: no DANE enforcement, never counted (digest TLSRPT-45) */
  report?: boolean;
  /** REQUIRETLS messages (RFC 8689) too: DANE only, REQUIRETLS passed on (delivery/deliver.ts REQUIRETLS_LEVEL) */
  requireTls?: boolean;
  /** `TLS-Required: No` messages (RFC 8689 §4.2.2) too: opportunistic TLS, the recipient's DANE/MTA-STS not enforced */
  tlsRequiredNo?: boolean;
  jobs: { id: string; recipients: string[] }[];
  active: number;
  /** shared queue: no cluster-wide session slot was free; not tried again before this (node clock) */
  slotWait?: number;
}

/**
 * One run per destination and kind of protection: a REQUIRETLS message never shares a weaker session, and an
 * ordinary message never shares the opportunistic session of a `TLS-Required: No` one.
 */
function destinationKey(domain: string, report: boolean, requireTls: boolean, tlsRequiredNo: boolean): string {
  return report ? `${domain}\0tlsrpt` : requireTls ? `${domain}\0requiretls` : tlsRequiredNo ? `${domain}\0tls-required-no` : domain;
}
const destKey = (d: Destination) => destinationKey(d.domain, !!d.report, !!d.requireTls, !!d.tlsRequiredNo);

const isOpen = (r: RecipientStatus) => r.state === 'pending' || r.state === 'deferred';

export class Scheduler {
  private readonly messages = new Map<string, QueuedMessage>();
  /** when ingress committed a message this process received (in memory: unknown after a restart) */
  private readonly arrivals = new WeakMap<QueuedMessage, number>();
  private readonly timetable = new MinHeap<string>();
  /** "id\0address" of recipients handed to a worker and not yet settled */
  private readonly inflight = new Set<string>();
  /** recipients in flight per message (shared queue: a message is given back only when none is) */
  private readonly inflightPerMsg = new Map<string, number>();
  private claiming = false;
  /** shared queue: not before this (node clock), unless the last claim came back full */
  private nextClaim = 0;
  private readonly destinations = new Map<string, Destination>();
  private readonly runs = new Set<DestinationRun>();
  /** idle runs with an open session, by destination key, newest last: the next worker there takes one (connection cache) */
  private readonly parked = new Map<string, Parked[]>();
  /** QUITs of runs closed after their idle time, awaited by stop() */
  private readonly closing = new Set<Promise<void>>();
  private active = 0;
  private timer?: NodeJS.Timeout;
  private stopping = false;
  private dirty = new Set<string>();
  private idleWaiters: (() => void)[] = [];
  private readonly rand: () => number;

  constructor(private readonly deps: SchedulerDeps) {
    this.rand = deps.rand ?? Math.random;
    // Another node took a message over (our lease expired): forget it unless a delivery is running,
    // whose outcome write will be refused by the token.
    deps.spool.shared?.onLost((id) => {
      if (this.inflightPerMsg.has(id)) return;
      this.messages.delete(id);
      this.dirty.delete(id);
      this.deps.log.warn({ queue_id: id, node: deps.spool.shared?.node }, 'lease lost: another node has the message');
    });
    // A lease is renewed only while this node works on the message: in the index, in flight, or with a write owed.
    // One it holds otherwise (a commit or claim whose message never reached add()) is given back, never held idle.
    deps.spool.shared?.setInUse((id) => this.messages.has(id) || this.inflightPerMsg.has(id) || this.dirty.has(id) || this.persisting.has(id));
  }

  get size(): number {
    return this.messages.size;
  }
  get activeDeliveries(): number {
    return this.active;
  }
  list(): QueuedMessage[] {
    return [...this.messages.values()];
  }
  get(id: string): QueuedMessage | undefined {
    return this.messages.get(id);
  }

  /** A message is queued (ingress, DSN, recovery). */
  /** `queuedAt`: the message was committed just now by ingress (Postfix's delays: before queue vs queue wait) */
  add(msg: QueuedMessage, queuedAt?: number): void {
    if (queuedAt !== undefined) this.arrivals.set(msg, queuedAt);
    this.messages.set(msg.id, msg);
    this.schedule(msg);
    if (!this.stopping) queueMicrotask(() => this.run());
  }

  private schedule(msg: QueuedMessage): void {
    const open = msg.recipients.filter(isOpen);
    if (open.length === 0 || msg.held) return;
    this.timetable.push(Math.min(...open.map((r) => r.nextAttempt)), msg.id);
  }

  start(): void {
    this.stopping = false;
    const tick = () => {
      this.run();
      this.timer = setTimeout(tick, this.deps.config.run_interval);
      this.timer.unref?.();
    };
    tick();
  }

  /** Make everything (or one domain) due now, like `postqueue -f`. */
  flush(domain?: string): number {
    let n = 0;
    const now = this.deps.now();
    for (const msg of this.messages.values()) {
      if (msg.held) continue;
      let touched = false;
      for (const r of msg.recipients) {
        if (isOpen(r) && (!domain || domainOf(r.address) === domain.toLowerCase()) && r.nextAttempt > now) {
          r.nextAttempt = now;
          touched = true;
        }
      }
      if (touched) {
        n++;
        this.schedule(msg);
      }
    }
    this.run();
    return n;
  }

  /** Look at the timetable now (after a clock change in tests, or on demand). */
  kick(): void {
    this.run();
  }

  private run(): void {
    if (this.stopping) return;
    void this.persistDirty();
    void this.claim();
    const now = this.deps.now();
    while ((this.timetable.peekKey() ?? Infinity) <= now) {
      const id = this.timetable.pop()!;
      const msg = this.messages.get(id);
      if (!msg || msg.held) continue;
      const byDomain = new Map<string, string[]>();
      for (const r of msg.recipients) {
        if (!isOpen(r) || r.nextAttempt > now || this.inflight.has(`${id}\0${r.address}`)) continue;
        const d = domainOf(r.address);
        byDomain.set(d, [...(byDomain.get(d) ?? []), r.address]);
      }
      for (const [domain, recipients] of byDomain) {
        for (const a of recipients) this.inflight.add(`${id}\0${a}`);
        this.inflightPerMsg.set(id, (this.inflightPerMsg.get(id) ?? 0) + recipients.length);
        const report = msg.envelope.kind === 'tlsrpt';
        const requireTls = !report && msg.envelope.requireTls === true;
        const tlsRequiredNo = !report && !requireTls && msg.envelope.tlsRequiredNo === true;
        const key = destinationKey(domain, report, requireTls, tlsRequiredNo);
        let dest = this.destinations.get(key);
        if (!dest) {
          dest = {
            domain,
            jobs: [],
            active: 0,
            ...(report ? { report } : {}),
            ...(requireTls ? { requireTls } : {}),
            ...(tlsRequiredNo ? { tlsRequiredNo } : {}),
          };
          this.destinations.set(key, dest);
        }
        dest.jobs.push({ id, recipients });
      }
      // A later attempt for recipients not yet due is re-armed by schedule() when outcomes land.
      const later = msg.recipients.filter((r) => isOpen(r) && r.nextAttempt > now);
      if (later.length) this.timetable.push(Math.min(...later.map((r) => r.nextAttempt)), id);
    }
    this.pump();
  }

  private pump(): void {
    const now = this.deps.now();
    for (const dest of this.destinations.values()) {
      if (dest.slotWait !== undefined && dest.slotWait > now) continue;
      while (!this.stopping && dest.jobs.length > dest.active && dest.active < this.deps.config.per_destination && this.active < this.deps.config.concurrency) {
        dest.active++;
        this.active++;
        void this.worker(dest);
      }
      if (dest.jobs.length === 0 && dest.active === 0) this.destinations.delete(destKey(dest));
    }
    this.checkIdle();
  }

  private async worker(dest: Destination): Promise<void> {
    // Shared queue: per_destination holds across all nodes; a session needs one of the destination's slots.
    const shared = this.deps.spool.shared;
    let slot: string | undefined;
    if (shared) {
      slot = await shared.acquireSlot(dest.report ? `tlsrpt:${dest.domain}` : dest.domain, this.deps.config.per_destination).catch((e: unknown) => {
        this.deps.log.warn({ err: (e as Error).message, domain: dest.domain }, 'could not take a delivery slot from the queue database; will retry');
        return undefined;
      });
      if (!slot) {
        dest.active--;
        this.active--;
        // the next queue run tries again (pump() would otherwise ask the database in a loop)
        dest.slotWait = this.deps.now() + this.deps.config.run_interval / 2;
        this.checkIdle();
        return;
      }
      dest.slotWait = undefined;
    }
    const key = destKey(dest);
    let run = slot ? undefined : this.unpark(key);
    if (!run) {
      // a new connection: an idle one elsewhere makes room if the total would pass `concurrency`
      if (this.active + this.parkedCount() > this.deps.config.concurrency) this.evictOldest();
      run = new DestinationRun(this.deps.delivery, dest.domain, { report: dest.report, requireTls: dest.requireTls, tlsRequiredNo: dest.tlsRequiredNo });
    }
    this.runs.add(run);
    // The previous job's settle (DSNs, the durable state write or removal with its fsyncs) runs while the
    // next transaction goes over the connection: at most one behind, awaited before the next settle and
    // before the worker ends, so `active` (stop(), whenIdle()) still counts it. Its recipients stay in
    // flight until it is done, so none can be handed out again meanwhile.
    let settling: Promise<void> = Promise.resolve();
    try {
      for (let job = dest.jobs.shift(); job; job = this.stopping ? undefined : dest.jobs.shift()) {
        const msg = this.messages.get(job.id);
        if (!msg) {
          // gone from the index meanwhile (lost, removed, finished): a lease still held on it goes back too
          this.release(job.id, job.recipients);
          await this.giveBack(job.id);
          continue;
        }
        const dj: DeliveryJob = {
          id: msg.id,
          envelope: msg.envelope,
          size: msg.size,
          recipients: job.recipients,
          body: () => this.deps.spool.openBody(msg.id),
          ...(msg.body ? { bodyFacts: msg.body } : {}),
          ...(this.arrivals.has(msg) ? { queuedAt: this.arrivals.get(msg)! } : {}),
        };
        let outcomes: RecipientOutcome[];
        try {
          outcomes = await run.deliver(dj);
        } catch (e) {
          // A bug or an unexpected failure must never lose or mark a recipient: defer it.
          this.deps.log.error({ err: e, queue_id: msg.id, domain: dest.domain }, 'delivery failed unexpectedly');
          outcomes = job.recipients.map((address) => ({ address, result: 'deferred', code: '4.3.0', reason: `internal error: ${(e as Error)?.message ?? e}` }));
        }
        // Exactly one outcome per recipient handed out (issue 13): one left without an outcome would stay
        // due and be retried at every queue run, without backoff and without ever expiring.
        const checked = oneOutcomeEach(job.recipients, outcomes);
        if (checked.breaches.length)
          this.deps.log.error(
            { queue_id: msg.id, domain: dest.domain, breaches: checked.breaches },
            'internal invariant breach: not exactly one outcome per recipient (repaired: deferred)',
          );
        await settling;
        settling = this.settle(msg, checked.outcomes)
          .then(async () => {
            this.release(job.id, job.recipients);
            await this.giveBack(msg.id);
          })
          .catch((e: unknown) => {
            // settle and giveBack handle their failures; this is a bug, kept from becoming an unhandled rejection
            this.deps.log.error({ err: e, queue_id: msg.id, domain: dest.domain }, 'settling a delivery failed unexpectedly');
          });
      }
    } finally {
      await settling;
      this.runs.delete(run);
      // A shared queue's session holds a cluster-wide slot: it is never kept idle, the slot goes back now.
      if (slot || !this.park(key, run)) await run.close().catch(() => undefined);
      // after QUIT's 221 (or the connection's end): the session is over, another node may open one
      if (slot) await shared!.releaseSlot(slot);
      dest.active--;
      this.active--;
      if (!this.stopping) this.pump();
      this.checkIdle();
    }
  }

  /**
   * Keeps a run whose worker ran out of messages, with its verified session, for connection_cache_time:
   * the next message to the destination goes over it instead of a new TCP connection, TLS handshake and
   * DANE verification (Postfix's connection cache; here the whole run, as its session was planned and
   * verified under the run's MX answer and policy). Each message still resolves the policy again
   * (DestinationRun.refreshPolicy) and a session the server closed meanwhile is not used
   * (SmtpSession.usable). False when the run is not kept: the caller closes it.
   */
  private park(key: string, run: DestinationRun): boolean {
    const ms = this.deps.config.connection_cache_time ?? 0;
    if (ms <= 0 || this.stopping || !run.reusable || this.deps.now() - run.started >= RUN_REUSE_LIMIT_MS) return false;
    const list = this.parked.get(key) ?? [];
    // Idle sessions count against the limits: per destination (active + kept ≤ per_destination) and in all
    // (active + kept ≤ concurrency; this worker is still counted active here).
    if (list.length >= this.deps.config.per_destination || this.active - 1 + this.parkedCount() >= this.deps.config.concurrency) return false;
    const entry: Parked = {
      run,
      timer: setTimeout(() => {
        const at = list.indexOf(entry);
        if (at >= 0) list.splice(at, 1);
        if (list.length === 0 && this.parked.get(key) === list) this.parked.delete(key);
        this.closeParked(run);
      }, ms),
    };
    // an idle session never keeps the process alive by itself
    entry.timer.unref();
    list.push(entry);
    this.parked.set(key, list);
    return true;
  }

  /** Closes the longest-kept idle run of the destination kept longest. */
  private evictOldest(): void {
    for (const [key, list] of this.parked) {
      const entry = list.shift();
      if (list.length === 0) this.parked.delete(key);
      if (!entry) continue;
      clearTimeout(entry.timer);
      this.closeParked(entry.run);
      return;
    }
  }

  private parkedCount(): number {
    let n = 0;
    for (const list of this.parked.values()) n += list.length;
    return n;
  }

  /** The most recently parked run of a destination, taken out of the cache; one grown too old meanwhile is closed instead. */
  private unpark(key: string): DestinationRun | undefined {
    const list = this.parked.get(key);
    const entry = list?.pop();
    if (list && list.length === 0) this.parked.delete(key);
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    if (this.deps.now() - entry.run.started < RUN_REUSE_LIMIT_MS) return entry.run;
    this.closeParked(entry.run);
    return undefined;
  }

  private closeParked(run: DestinationRun): void {
    const p = run.close().catch(() => undefined);
    this.closing.add(p);
    void p.finally(() => this.closing.delete(p));
  }

  private release(id: string, recipients: string[]): void {
    for (const a of recipients) this.inflight.delete(`${id}\0${a}`);
    const left = (this.inflightPerMsg.get(id) ?? 0) - recipients.length;
    if (left > 0) this.inflightPerMsg.set(id, left);
    else this.inflightPerMsg.delete(id);
  }

  /**
   * Shared queue: claims due messages up to what this node can start now (free delivery slots, less
   * what is already waiting here), so the work spreads over the nodes that have room for it.
   */
  private async claim(): Promise<void> {
    const shared = this.deps.spool.shared;
    if (!shared || this.claiming || this.stopping) return;
    const waiting = [...this.destinations.values()].reduce((n, d) => n + d.jobs.length, 0);
    const room = this.deps.config.concurrency - this.active - waiting;
    const now = this.deps.now();
    // run() comes with every message queued here; one claim per half queue run is enough, unless the last filled up
    if (room <= 0 || now < this.nextClaim) return;
    this.claiming = true;
    try {
      const claimed = await shared.claim(room);
      this.nextClaim = claimed.length >= room ? 0 : now + this.deps.config.run_interval / 2;
      for (const m of claimed) {
        if (this.stopping) {
          void shared.release(m.id);
          continue;
        }
        this.add(m);
      }
    } catch (e) {
      this.nextClaim = now + this.deps.config.run_interval;
      this.deps.log.warn({ err: (e as Error).message }, 'could not claim work from the queue database; will retry');
    } finally {
      this.claiming = false;
    }
  }

  /**
   * Shared queue: once no delivery of a message is running here and its state is written, the lease
   * goes back and the message leaves this node's index; its next attempt is claimed by whichever node
   * is free when it is due. (A message all of whose recipients are done was deleted by the write.)
   */
  private async giveBack(id: string): Promise<void> {
    const shared = this.deps.spool.shared;
    if (!shared || this.inflightPerMsg.has(id) || this.dirty.has(id)) return;
    const msg = this.messages.get(id);
    if (msg) {
      const now = this.deps.now();
      // something of it is due right now (a flush, a quick retry, a copy claimed again while an older job ran):
      // keep it and let run() hand it out, from a timetable entry of its own (the one it had may have been
      // taken while its recipients were in flight)
      if (!msg.held && msg.recipients.some((r) => isOpen(r) && r.nextAttempt <= now)) {
        this.schedule(msg);
        if (!this.stopping) queueMicrotask(() => this.run());
        return;
      }
      this.messages.delete(id);
    }
    await shared.release(id);
  }

  /**
   * Apply outcomes: DSNs first (queued durably), then the recipients' new states. The rule per
   * recipient, including which DSN the sender's NOTIFY asks for (failed, delayed, or relayed for
   * SUCCESS past a next hop without DSN), is scheduler/settle.ts applyOutcome; here the DSNs are
   * queued. A failure without its DSN queued stays open; a relayed DSN that cannot be queued is
   * only logged (the next hop has the message).
   */
  private async settle(msg: QueuedMessage, outcomes: RecipientOutcome[]): Promise<void> {
    const now = this.deps.now();
    const cfg = this.deps.config;
    const failed: DsnRecipient[] = [];
    const delayed: DsnRecipient[] = [];
    const relayed: DsnRecipient[] = [];
    // Copies of the recipients this job touched; merged back after the awaits below, because a
    // worker for another domain of the same message may settle in between.
    const next = new Map<string, RecipientStatus>();
    for (const raw of outcomes) {
      const o = printableOutcome(raw); // outside text enters the queue's state (and DSNs) only printable
      const cur = msg.recipients.find((x) => x.address === o.address);
      if (!cur || !isOpen(cur)) continue;
      const { next: r, dsn } = applyOutcome(cur, o, msg.envelope, now, cfg, this.rand);
      next.set(r.address, r);
      if (dsn) (dsn.action === 'failed' ? failed : dsn.action === 'delayed' ? delayed : relayed).push(dsn);
    }
    for (const list of [failed, delayed, relayed]) {
      if (list.length === 0 || !dsnAllowed(msg.envelope)) continue;
      try {
        await this.sendDsn(msg, list);
      } catch (e) {
        if (list === relayed) {
          // The next hop has the message: sending it again for a lost notice would be worse than the loss.
          this.deps.log.error(
            { err: e, queue_id: msg.id, to: list.map((d) => d.address) },
            'could not queue the relayed DSN (NOTIFY=SUCCESS); the recipients stay delivered',
          );
          continue;
        }
        // Without its DSN a failure must not be recorded: keep the recipients open and retry later.
        this.deps.log.error({ err: e, queue_id: msg.id }, 'could not queue DSN; will retry');
        for (const d of list) {
          const r = next.get(d.address)!;
          if (d.action === 'failed') {
            r.state = 'deferred';
            r.nextAttempt = now + cfg.min_backoff;
          } else r.delayNotified = undefined;
        }
      }
    }
    msg.recipients = msg.recipients.map((r) => next.get(r.address) ?? r);
    await this.persist(msg);
    if (!this.forgetIfDone(msg)) this.schedule(msg);
  }

  /**
   * Drops a finished message from the index once its final state is on disk. While the write
   * is still owed (dirty) it stays, so persistDirty can retry; otherwise a restart would
   * deliver it again and repeat its DSNs.
   */
  private forgetIfDone(msg: QueuedMessage): boolean {
    if (msg.recipients.some(isOpen)) return false;
    if (!this.dirty.has(msg.id)) this.messages.delete(msg.id);
    return true;
  }

  private async sendDsn(msg: QueuedMessage, recipients: DsnRecipient[]): Promise<void> {
    // RET=FULL (RFC 3461 §4.3) returns the whole message up to DSN_RETURN_LIMIT; otherwise only the header is read.
    const full =
      returnsFull(
        msg.envelope,
        recipients.every((r) => r.action === 'failed'),
      ) && msg.size <= DSN_RETURN_LIMIT;
    const body = await this.deps.spool.readBodyPrefix(msg.id, full ? DSN_RETURN_LIMIT : 64 * 1024).catch(() => Buffer.alloc(0));
    const dsn = await composeDsn({
      reportingMta: this.deps.hostname,
      queueId: msg.id,
      original: msg.envelope,
      originalHeaders: headerBlock(body),
      ...(full && body.length === msg.size ? { originalFull: body } : {}),
      recipients,
      now: this.deps.now(),
    });
    const queued = await this.deps.spool.enqueue(dsn.envelope, dsn.message);
    this.deps.log.info({ queue_id: queued.id, original: msg.id, to: msg.envelope.from, action: recipients[0]!.action, nrcpt: recipients.length }, 'DSN queued');
    this.deps.events?.dsnQueued?.({ action: recipients[0]!.action });
    this.add(queued);
  }

  private readonly persisting = new Map<string, Promise<void>>();

  /** Writes of one message's state are serialised so an older state never lands after a newer one. */
  private persist(msg: QueuedMessage): Promise<void> {
    const prev = this.persisting.get(msg.id) ?? Promise.resolve();
    const p = prev.then(() => this.persistNow(msg));
    this.persisting.set(msg.id, p);
    void p.finally(() => {
      if (this.persisting.get(msg.id) === p) this.persisting.delete(msg.id);
    });
    return p;
  }

  private async persistNow(msg: QueuedMessage): Promise<void> {
    try {
      await this.deps.spool.updateRecipients(
        msg.id,
        msg.recipients.map((r) => ({ ...r })),
      );
      this.dirty.delete(msg.id);
    } catch (e) {
      if ((e as { code?: string }).code === 'ELEASE') {
        // Shared queue: another node took the message over when our lease expired (we were paused,
        // cut off, too slow). The token refused the write; the message is that node's now.
        this.dirty.delete(msg.id);
        // only this copy: one this node claimed again meanwhile (a newer lease) is work it holds now
        if (this.messages.get(msg.id) === msg) this.messages.delete(msg.id);
        this.deps.log.warn(
          { queue_id: msg.id, node: this.deps.spool.shared?.node, err: (e as Error).message },
          'outcome not recorded: the lease was lost to another node',
        );
        return;
      }
      // In memory the state is right; on disk it is older, which at worst repeats a delivery.
      this.dirty.add(msg.id);
      this.deps.log.error({ err: e, queue_id: msg.id }, 'could not record recipient state; will retry');
    }
  }

  private async persistDirty(): Promise<void> {
    for (const id of [...this.dirty]) {
      const msg = this.messages.get(id);
      if (!msg) {
        this.dirty.delete(id);
        continue;
      }
      await this.persist(msg);
      this.forgetIfDone(msg);
      await this.giveBack(id);
    }
  }

  /** Operator controls (queue hold/release/delete). */
  async setHeld(id: string, held: boolean): Promise<boolean> {
    const msg = this.messages.get(id);
    if (!msg) return false;
    await this.deps.spool.setHeld(id, held);
    msg.held = held;
    if (!held) {
      this.schedule(msg);
      this.run();
    }
    return true;
  }

  async remove(id: string): Promise<boolean> {
    if (!this.messages.has(id)) return false;
    await this.deps.spool.remove(id);
    this.messages.delete(id);
    return true;
  }

  /**
   * Operator change of a message's recipients (control `requeue`): `change` maps the current
   * recipients to new ones, which are made durable and scheduled. undefined if no such message.
   */
  async amend(id: string, change: (recipients: RecipientStatus[]) => RecipientStatus[]): Promise<QueuedMessage | undefined> {
    const msg = this.messages.get(id);
    if (!msg) return undefined;
    msg.recipients = change(msg.recipients);
    await this.deps.spool.updateRecipients(
      msg.id,
      msg.recipients.map((r) => ({ ...r })),
    );
    this.schedule(msg);
    this.run();
    return msg;
  }

  private checkIdle(): void {
    if (this.active > 0) return;
    const now = this.deps.now();
    if ((this.timetable.peekKey() ?? Infinity) <= now && !this.stopping) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /** Resolves when no delivery is running and nothing is due at the current clock (for tests and `flush`). */
  whenIdle(): Promise<void> {
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      queueMicrotask(() => this.checkIdle());
    });
  }

  /** Stop starting deliveries; wait for running ones, then cut them off after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    for (const d of this.destinations.values()) {
      for (const j of d.jobs) this.release(j.id, j.recipients);
      d.jobs.length = 0;
    }
    const deadline = Date.now() + graceMs;
    while (this.active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.active > 0) {
      for (const run of this.runs) await run.close().catch(() => undefined);
      const hard = Date.now() + 2000;
      while (this.active > 0 && Date.now() < hard) await new Promise((r) => setTimeout(r, 20));
    }
    // idle sessions: QUIT now, and wait for those already closing
    for (const list of this.parked.values())
      for (const e of list) {
        clearTimeout(e.timer);
        this.closeParked(e.run);
      }
    this.parked.clear();
    await Promise.all([...this.closing]);
    await this.persistDirty();
  }
}
