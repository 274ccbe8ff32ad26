/**
 * The shared queue on PostgreSQL (issue 16): the second backend behind QueueStore, for several relay
 * nodes on one database. The file spool (../spool.ts) stays the default.
 *
 * Rules (ARCHITECTURE.md "Shared queue"; RELIABILITY.md for the failure cases):
 * - A message is queued when one INSERT of its envelope, body (bytea) and recipient states has
 *   committed, with synchronous_commit on (connect.ts). Ingress answers 250 only after that; a failed
 *   commit rejects with SpoolError code EDB (ingress: 451 4.3.0) and leaves no row.
 * - Work is claimed with short leases: one statement selects due, unleased (or expired) rows
 *   `FOR UPDATE SKIP LOCKED` and sets lease_owner, a fresh lease_token and lease_expires_at from the
 *   database's clock (now()), never a node's. The SMTP session runs outside any transaction.
 * - Leases are renewed every lease/3 while held (one statement for all of them), and only while the node
 *   works on the message: a lease the scheduler does not hold (setInUse) at two renewals in a row (a
 *   commit or claim whose caller never got the message) is given back, not renewed for ever. Every outcome write
 *   is conditioned on the token (`WHERE id = $1 AND lease_token = $2`): a node that lost its lease
 *   (paused, partitioned, too slow) changes nothing, its write rejects with ELEASE.
 * - A dead node's leases expire and any node claims the work again: at-least-once. A delivery whose
 *   remote 250 had arrived but whose outcome write had not committed is made again (the one window
 *   for duplicates). Stale leases are never deleted: they expire and are taken over.
 * - close() (SIGTERM, after the scheduler has drained) gives every lease it still holds back.
 */
import { hostname as osHostname } from 'node:os';
import { Readable } from 'node:stream';
import type pg from 'pg';
import { SpoolError } from '../errors.js';
import { IdGenerator, isQueueId } from '../id.js';
import { envelopeProblem, initialRecipients, isDone, recipientsProblem } from '../format.js';
import type { Draft, Envelope, QueuedMessage, QueueStore, RecipientStatus, SharedQueue } from '../types.js';
import { BodyScanner, type BodyFacts } from '../../mime/scan.js';
import { FEATURES, requiredFeatures } from './migrate.js';

/** body bytes fetched per query when a body is streamed */
const READ_CHUNK = 1024 * 1024;

export interface PgQueueLog {
  warn(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
}

export interface PgQueueOptions {
  /** this node's name in leases */
  node: string;
  /** lease length, ms */
  leaseMs: number;
  now?: () => number;
  log: PgQueueLog;
  /**
   * A command, not a node (`tlsrpt send` queueing a report): not registered in relay_nodes, so `dane-relay nodes`
   * and migration 4's live-node check never count it. What it commits is given back at close for any node to claim.
   */
  transient?: boolean;
  /** the features this node honours (migrate.ts FEATURES); a test stands in for an older node with fewer */
  features?: readonly string[];
  /**
   * What must hold before the node uses the database (compose: the migrations, which also refuse a schema newer
   * than this relay's). Run at open and, when the database was unreachable then, again once it answers.
   */
  prepare?: () => Promise<void>;
}

/** SQLSTATE classes and codes of a database that is not there (yet): down, starting, restarting, full of connections. */
const UNREACHABLE_SQLSTATE = /^(08|57P0[1-3]$|53300$)/;
/** socket-level failures (Unix socket absent, TCP refused or cut) and pg's own connection failures */
const UNREACHABLE_ERRNO = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'EAI_AGAIN']);

/**
 * True when `e` (or its cause) says the database could not be reached, as opposed to a database that answered
 * with a refusal a restart will not cure (wrong password, no such database, a schema newer than this relay's).
 */
export function isUnreachable(e: unknown): boolean {
  for (let x = e as { code?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; x && depth < 5; x = x.cause as typeof x, depth++) {
    const code = typeof x.code === 'string' ? x.code : '';
    if (UNREACHABLE_ERRNO.has(code) || UNREACHABLE_SQLSTATE.test(code)) return true;
    if (/Connection terminated|timeout expired|connect ECONN|the database system is (starting up|shutting down|in recovery mode)/.test(String(x.message ?? '')))
      return true;
  }
  return false;
}

/** A database failure as the spool's error: code EDB (ingress answers 451 4.3.0), the driver's message kept. */
function dbError(step: string, e: unknown): SpoolError {
  if (e instanceof SpoolError) return e;
  return new SpoolError(`queue database ${step} failed: ${(e as Error)?.message ?? String(e)}`, 'EDB', { cause: e });
}

const isOpen = (r: RecipientStatus) => !isDone(r);
/** The earliest due time of the open recipients; null when none is open. */
export function nextDue(recipients: RecipientStatus[]): number | null {
  const open = recipients.filter(isOpen);
  return open.length ? Math.min(...open.map((r) => r.nextAttempt)) : null;
}

type Row = {
  id: string;
  envelope: Envelope;
  size: string;
  body_facts: BodyFacts | null;
  recipients: RecipientStatus[];
  held: boolean;
  lease_token: string;
  db_now: string;
};

class PgDraft implements Draft {
  private chunks: Buffer[] = [];
  private size = 0;
  private readonly scanner = new BodyScanner();
  private state: 'open' | 'committing' | 'committed' | 'failed' | 'aborted' = 'open';

  constructor(
    readonly id: string,
    private readonly queue: PgQueue,
    private readonly envelope: Envelope,
  ) {}

  get facts(): BodyFacts {
    return this.scanner.facts;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.state !== 'open') throw new SpoolError(`draft ${this.id} is ${this.state}`, 'EINVAL');
    this.scanner.push(chunk);
    this.chunks.push(chunk);
    this.size += chunk.length;
  }

  async commit(): Promise<QueuedMessage> {
    if (this.state !== 'open') throw new SpoolError(`draft ${this.id} is ${this.state}`, 'EINVAL');
    this.state = 'committing';
    const body = Buffer.concat(this.chunks, this.size);
    this.chunks = [];
    try {
      const m = await this.queue.insert(this.id, this.envelope, body, this.scanner.facts);
      this.state = 'committed';
      return m;
    } catch (e) {
      this.state = 'failed';
      throw e;
    }
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.chunks = [];
  }
}

export class PgQueue implements QueueStore, SharedQueue {
  readonly node: string;
  private readonly ids = new IdGenerator();
  /** id → lease token of every message this node holds */
  private readonly leases = new Map<string, string>();
  /** token → destination of every session slot this node holds */
  private readonly slots = new Map<string, string>();
  private readonly lostListeners: ((id: string) => void)[] = [];
  /** does the node work on this message? (the scheduler); unset: every lease held is renewed */
  private inUse?: (id: string) => boolean;
  /** id → token of leases found not in use at the last renewal (given back when found so again) */
  private readonly idle = new Map<string, string>();
  private renewTimer?: NodeJS.Timeout;
  private renewing?: Promise<void>;
  private renewFailing = false;
  /** migrations checked and node registered (prepare + registration done) */
  private up = false;
  private connecting?: Promise<void>;
  private connectFailure?: string;
  private closed = false;
  private readonly ops = new Set<Promise<unknown>>();
  private readonly now: () => number;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly opts: PgQueueOptions,
  ) {
    this.node = opts.node;
    this.now = opts.now ?? Date.now;
  }

  get shared(): SharedQueue {
    return this;
  }

  /**
   * Prepares the database (opts.prepare: the migrations), registers the node and starts renewing leases. A
   * database that cannot be reached does not stop the node: it opens anyway, every commit is refused with EDB
   * (ingress: 451 4.3.0), nothing is claimed, the readiness probe fails, and the lease timer tries again until
   * the database answers (then prepare runs). A database that answers with a refusal (schema too new, wrong
   * password) rejects the open.
   */
  static async open(pool: pg.Pool, opts: PgQueueOptions): Promise<PgQueue> {
    const q = new PgQueue(pool, opts);
    try {
      await q.connect();
    } catch (e) {
      if (!isUnreachable(e)) throw e;
      opts.log.warn(
        { node: q.node, err: (e as Error).message },
        'queue database unreachable at start: running without it (ingress answers 451 4.3.0, /readyz fails) until it answers',
      );
    }
    const every = Math.max(100, Math.floor(opts.leaseMs / 3));
    const tick = () => {
      q.renewing = (q.up ? q.renew() : q.reconnect()).finally(() => {
        q.renewing = undefined;
      });
      q.renewTimer = setTimeout(tick, every);
      q.renewTimer.unref?.();
    };
    q.renewTimer = setTimeout(tick, every);
    q.renewTimer.unref?.();
    return q;
  }

  /** True once the database has been prepared and this node registered (at open, or later when it came back). */
  get connected(): boolean {
    return this.up;
  }

  /** prepare + node registration, once; concurrent callers share one attempt, a failure is retried by the next caller. */
  private connect(): Promise<void> {
    if (this.up) return Promise.resolve();
    this.connecting ??= (async () => {
      try {
        await this.opts.prepare?.();
        if (!this.opts.transient)
          await this.pool.query(
            `INSERT INTO relay_nodes (name, host, pid, started_at, seen_at) VALUES ($1, $2, $3, now(), now())
           ON CONFLICT (name) DO UPDATE SET host = $2, pid = $3, started_at = now(), seen_at = now(), stopped_at = NULL`,
            [this.node, osHostname(), process.pid],
          );
        this.up = true;
        this.connectFailure = undefined;
      } catch (e) {
        throw dbError('connection', e);
      } finally {
        this.connecting = undefined;
      }
    })();
    return this.connecting;
  }

  /** The lease timer while the database has not been reached: try again, say so once per distinct failure. */
  private async reconnect(): Promise<void> {
    if (this.closed) return;
    try {
      await this.connect();
      this.opts.log.info?.({ node: this.node }, 'queue database reachable: schema checked, node registered; taking work');
    } catch (e) {
      const msg = (e as Error).message;
      if (msg !== this.connectFailure) this.opts.log.warn({ node: this.node, err: msg }, 'queue database still unreachable; will retry');
      this.connectFailure = msg;
    }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.ops.add(p);
    const done = () => {
      this.ops.delete(p);
    };
    p.then(done, done);
    return p;
  }

  private assertOpen(): void {
    if (this.closed) throw new SpoolError('queue is closed', 'ECLOSED');
  }

  private checkId(id: string): void {
    if (!isQueueId(id)) throw new SpoolError(`invalid queue id ${JSON.stringify(id)}`, 'EINVAL');
  }

  holds(id: string): boolean {
    return this.leases.has(id);
  }

  onLost(cb: (id: string) => void): void {
    this.lostListeners.push(cb);
  }

  setInUse(inUse: (id: string) => boolean): void {
    this.inUse = inUse;
  }

  private lost(id: string, token: string): void {
    if (this.leases.get(id) !== token) return;
    this.leases.delete(id);
    for (const f of this.lostListeners) f(id);
  }

  async begin(envelope: Envelope): Promise<Draft> {
    this.assertOpen();
    const problem = envelopeProblem(envelope);
    if (problem) throw new SpoolError(problem, 'EINVAL');
    // a database not reached yet: refuse now (451) rather than after the body
    await this.connect();
    return new PgDraft(this.ids.next(this.now()), this, JSON.parse(JSON.stringify(envelope)) as Envelope);
  }

  async enqueue(envelope: Envelope, body: Buffer): Promise<QueuedMessage> {
    const d = await this.begin(envelope);
    await d.write(body);
    return d.commit();
  }

  /**
   * @internal The commit of a draft: one INSERT (its own transaction), leased to this node so that the
   * node that accepted a message delivers it without a claim round trip.
   */
  insert(id: string, envelope: Envelope, body: Buffer, facts: BodyFacts): Promise<QueuedMessage> {
    this.assertOpen();
    const recipients = initialRecipients(envelope);
    return this.track(
      (async () => {
        let token: string;
        await this.connect();
        try {
          const r = await this.pool.query<{ lease_token: string }>(
            `INSERT INTO relay_messages (id, envelope, size, body_facts, body, recipients, next_due, lease_owner, lease_token, lease_expires_at, requires)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, gen_random_uuid(), now() + $9 * interval '1 millisecond', $10)
           RETURNING lease_token`,
            [
              id,
              JSON.stringify(envelope),
              body.length,
              JSON.stringify(facts),
              body,
              JSON.stringify(recipients),
              nextDue(recipients),
              this.node,
              this.opts.leaseMs,
              requiredFeatures(envelope),
            ],
          );
          token = r.rows[0]!.lease_token;
        } catch (e) {
          throw dbError('commit', e);
        }
        this.leases.set(id, token);
        return { id, envelope, size: body.length, body: facts, recipients };
      })(),
    );
  }

  async claim(max: number): Promise<QueuedMessage[]> {
    if (this.closed || max <= 0) return [];
    await this.connect();
    let rows: Row[];
    try {
      const r = await this.track(
        this.pool.query<Row>(
          `WITH due AS (
           SELECT id FROM relay_messages
            WHERE NOT held AND next_due IS NOT NULL
              AND next_due <= (extract(epoch FROM now()) * 1000)::bigint
              AND (lease_token IS NULL OR lease_expires_at < now())
              -- only what this node knows how to honour (a REQUIRETLS message: 'requiretls')
              AND requires <@ $4::text[]
            ORDER BY next_due
            LIMIT $1
            FOR UPDATE SKIP LOCKED)
         UPDATE relay_messages m
            SET lease_owner = $2, lease_token = gen_random_uuid(), lease_expires_at = now() + $3 * interval '1 millisecond'
           FROM due WHERE m.id = due.id
         RETURNING m.id, m.envelope, m.size, m.body_facts, m.recipients, m.held, m.lease_token,
                   (extract(epoch FROM now()) * 1000)::bigint AS db_now`,
          [max, this.node, this.opts.leaseMs, [...(this.opts.features ?? FEATURES)]],
        ),
      );
      rows = r.rows;
    } catch (e) {
      throw dbError('claim', e);
    }
    const now = this.now();
    rows.sort((a, b) => (a.id < b.id ? -1 : 1));
    return rows.map((row) => {
      this.leases.set(row.id, row.lease_token);
      const dbNow = Number(row.db_now);
      // Due by the database's clock is due now on this node's (the scheduler compares with its own).
      const recipients = row.recipients.map((r) => (isOpen(r) && r.nextAttempt <= dbNow ? { ...r, nextAttempt: Math.min(r.nextAttempt, now) } : r));
      return { id: row.id, envelope: row.envelope, size: Number(row.size), ...(row.body_facts ? { body: row.body_facts } : {}), recipients };
    });
  }

  /**
   * One statement: the lowest slot below `limit` that no live lease holds, inserted or taken over from an
   * expired holder. Two nodes racing for the same free slot: the second waits on the first's row and then
   * matches nothing (the slot is live), so it gets none this time and tries again later — never a slot too many.
   */
  async acquireSlot(destination: string, limit: number): Promise<string | undefined> {
    this.assertOpen();
    await this.connect();
    for (let attempt = 0; attempt < 3; attempt++) {
      let r: pg.QueryResult<{ token: string }>;
      try {
        r = await this.track(
          this.pool.query<{ token: string }>(
            `INSERT INTO relay_slots (destination, slot, owner, token, expires_at)
           SELECT $1, s, $3, gen_random_uuid(), now() + $4 * interval '1 millisecond'
             FROM generate_series(0, $2::int - 1) AS s
            WHERE NOT EXISTS (SELECT 1 FROM relay_slots x WHERE x.destination = $1 AND x.slot = s AND x.expires_at > now())
            ORDER BY s LIMIT 1
           ON CONFLICT (destination, slot) DO UPDATE
              SET owner = EXCLUDED.owner, token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
            WHERE relay_slots.expires_at <= now()
           RETURNING token`,
            [destination, limit, this.node, this.opts.leaseMs],
          ),
        );
      } catch (e) {
        throw dbError('slot', e);
      }
      const token = r.rows[0]?.token;
      if (token) {
        this.slots.set(token, destination);
        return token;
      }
    }
    return undefined;
  }

  async releaseSlot(token: string): Promise<void> {
    if (!this.slots.delete(token)) return;
    try {
      await this.track(this.pool.query('DELETE FROM relay_slots WHERE token = $1', [token]));
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message }, 'could not give a delivery slot back; it expires by itself');
    }
  }

  /**
   * Leases the node holds but does not work on (no scheduler job, no write owed): found so at two renewals in a
   * row, they are taken out of `leases` to be given back. Two, not one: a commit or claim has set its lease a
   * moment before its caller hands the message to the scheduler.
   */
  private unused(): [string, string][] {
    const inUse = this.inUse;
    if (!inUse) return [];
    const out: [string, string][] = [];
    for (const [id, token] of this.leases) {
      if (inUse(id)) this.idle.delete(id);
      else if (this.idle.get(id) === token) {
        this.idle.delete(id);
        this.leases.delete(id);
        out.push([id, token]);
      } else this.idle.set(id, token);
    }
    for (const [id, token] of this.idle) if (this.leases.get(id) !== token) this.idle.delete(id);
    return out;
  }

  /** One statement gives back the leases in `held` (those still under their token). */
  private async giveBackLeases(held: [string, string][]): Promise<void> {
    if (held.length === 0) return;
    await this.pool.query(
      `UPDATE relay_messages m SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
         FROM unnest($1::text[], $2::uuid[]) AS l(id, token) WHERE m.id = l.id AND m.lease_token = l.token`,
      [held.map((h) => h[0]), held.map((h) => h[1])],
    );
  }

  /**
   * One statement renews every lease this node holds and works on; the ones it no longer has are reported
   * lost; the ones it holds without working on them are given back (any node claims them when due).
   */
  private async renew(): Promise<void> {
    if (this.closed) return;
    const unused = this.unused();
    if (unused.length) {
      this.opts.log.warn(
        { node: this.node, queue_ids: unused.map((u) => u[0]) },
        'leases held without the message being worked on here (its commit or claim was not handed over): given back',
      );
      await this.giveBackLeases(unused).catch((e: unknown) => {
        this.opts.log.warn({ node: this.node, err: (e as Error).message }, 'could not give the leases back; they expire by themselves');
      });
    }
    const held = [...this.leases];
    try {
      await this.pool.query('UPDATE relay_nodes SET seen_at = now() WHERE name = $1', [this.node]);
      const slots = [...this.slots.keys()];
      if (slots.length) {
        const kept = await this.pool.query<{ token: string }>(
          `UPDATE relay_slots SET expires_at = now() + $2 * interval '1 millisecond' WHERE token = ANY($1::uuid[]) RETURNING token`,
          [slots, this.opts.leaseMs],
        );
        const live = new Set(kept.rows.map((x) => x.token));
        for (const t of slots) {
          // expired and taken over while this node could not renew (paused, cut off): its session runs on regardless
          if (!live.has(t) && this.slots.delete(t))
            this.opts.log.warn(
              { node: this.node },
              'a delivery slot expired before it could be renewed; the per-destination limit may be exceeded by this session',
            );
        }
      }
      if (held.length === 0) {
        this.renewFailing = false;
        return;
      }
      const r = await this.pool.query<{ id: string }>(
        `UPDATE relay_messages m SET lease_expires_at = now() + $3 * interval '1 millisecond'
           FROM unnest($1::text[], $2::uuid[]) AS l(id, token)
          WHERE m.id = l.id AND m.lease_token = l.token
          RETURNING m.id`,
        [held.map((h) => h[0]), held.map((h) => h[1]), this.opts.leaseMs],
      );
      const kept = new Set(r.rows.map((x) => x.id));
      for (const [id, token] of held) if (!kept.has(id)) this.lost(id, token);
      if (this.renewFailing) this.opts.log.info?.({ node: this.node, leases: kept.size }, 'queue database reachable again; leases renewed');
      this.renewFailing = false;
    } catch (e) {
      if (!this.renewFailing)
        this.opts.log.warn(
          { node: this.node, err: (e as Error).message, leases: held.length },
          'lease renewal failed; will retry (a lease that expires meanwhile may be taken by another node)',
        );
      this.renewFailing = true;
    }
  }

  async probe(): Promise<string> {
    await this.connect();
    const r = await this.pool.query('UPDATE relay_nodes SET seen_at = now() WHERE name = $1', [this.node]);
    if (r.rowCount !== 1) throw new Error(`node ${this.node} is not registered in relay_nodes`);
    return `queue database took a committed write (node ${this.node})`;
  }

  /** Runs `sql` (conditioned on this node's token for `id` as $2); rejects with ELEASE when it matched no row. */
  private async leased(id: string, step: string, sql: string, params: unknown[]): Promise<number> {
    const token = this.leases.get(id);
    if (!token) throw new SpoolError(`${step} ${id}: this node holds no lease on it`, 'ELEASE');
    let n: number;
    try {
      n = (await this.pool.query(sql, [id, token, ...params])).rowCount ?? 0;
    } catch (e) {
      throw dbError(step, e);
    }
    if (n === 0) {
      this.lost(id, token);
      throw new SpoolError(`${step} ${id}: the lease was lost (another node has taken the message); nothing was written`, 'ELEASE');
    }
    return n;
  }

  updateRecipients(id: string, recipients: RecipientStatus[]): Promise<void> {
    try {
      this.assertOpen();
      this.checkId(id);
      const problem = recipientsProblem(id, recipients);
      if (problem) throw new SpoolError(problem, 'EINVAL');
    } catch (e) {
      return Promise.reject(e);
    }
    const copy = JSON.stringify(recipients);
    return this.track(
      (async () => {
        if (recipients.every(isDone)) {
          await this.leased(id, 'finish', 'DELETE FROM relay_messages WHERE id = $1 AND lease_token = $2', []);
          this.leases.delete(id);
          return;
        }
        await this.leased(id, 'state update', 'UPDATE relay_messages SET recipients = $3, next_due = $4 WHERE id = $1 AND lease_token = $2', [
          copy,
          nextDue(recipients),
        ]);
      })(),
    );
  }

  async release(id: string): Promise<void> {
    const token = this.leases.get(id);
    if (!token) return;
    this.leases.delete(id);
    try {
      await this.track(
        this.pool.query('UPDATE relay_messages SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL WHERE id = $1 AND lease_token = $2', [
          id,
          token,
        ]),
      );
    } catch (e) {
      // It expires by itself.
      this.opts.log.warn({ queue_id: id, err: (e as Error).message }, 'could not give a lease back; it expires by itself');
    }
  }

  /** Operator hold/release: takes effect whoever holds the lease (a held message is not claimed again). */
  async setHeld(id: string, held: boolean): Promise<void> {
    this.assertOpen();
    this.checkId(id);
    let n: number;
    try {
      n = (await this.track(this.pool.query('UPDATE relay_messages SET held = $2 WHERE id = $1', [id, held]))).rowCount ?? 0;
    } catch (e) {
      throw dbError('hold', e);
    }
    if (n === 0) throw new SpoolError(`no message ${id}`, 'ENOENT');
  }

  /** Operator delete: a node delivering it finds its lease gone and writes nothing. */
  async remove(id: string): Promise<void> {
    this.assertOpen();
    this.checkId(id);
    let n: number;
    try {
      n = (await this.track(this.pool.query('DELETE FROM relay_messages WHERE id = $1', [id]))).rowCount ?? 0;
    } catch (e) {
      throw dbError('remove', e);
    }
    this.leases.delete(id);
    if (n === 0) throw new SpoolError(`no message ${id}`, 'ENOENT');
  }

  /** Nothing to recover on a shared queue: work is claimed (claim()) when it is due. */
  async recover(): Promise<QueuedMessage[]> {
    return [];
  }

  private async bodyPart(id: string, from: number, len: number): Promise<Buffer> {
    let r: pg.QueryResult<{ part: Buffer }>;
    try {
      r = await this.pool.query<{ part: Buffer }>('SELECT substring(body FROM $2 FOR $3) AS part FROM relay_messages WHERE id = $1', [id, from + 1, len]);
    } catch (e) {
      throw dbError(`read body ${id}`, e);
    }
    if (r.rows.length === 0) throw new SpoolError(`no message ${id}`, 'ENOENT');
    return r.rows[0]!.part;
  }

  openBody(id: string): Readable {
    const part = (from: number, len: number) => this.bodyPart(id, from, len);
    const checkId = () => this.checkId(id);
    async function* chunks(): AsyncGenerator<Buffer> {
      checkId();
      for (let pos = 0; ; pos += READ_CHUNK) {
        const b = await part(pos, READ_CHUNK);
        if (b.length > 0) yield b;
        if (b.length < READ_CHUNK) return;
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  async readBodyPrefix(id: string, max: number): Promise<Buffer> {
    this.checkId(id);
    return this.bodyPart(id, 0, max);
  }

  async readBody(id: string): Promise<Buffer> {
    this.checkId(id);
    const parts: Buffer[] = [];
    for await (const c of this.openBody(id) as AsyncIterable<Buffer>) parts.push(c);
    return Buffer.concat(parts);
  }

  /** Waits for writes in flight, then gives back every lease still held and marks the node stopped. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.renewTimer);
    await this.renewing;
    while (this.ops.size > 0) await Promise.allSettled([...this.ops]);
    await this.connecting?.catch(() => undefined);
    if (!this.up) {
      // never reached the database: nothing held, nothing to mark (a transient queue is in relay_nodes either way)
      await this.pool.end().catch(() => undefined);
      return;
    }
    const held = [...this.leases];
    this.leases.clear();
    try {
      await this.giveBackLeases(held);
      if (this.slots.size) await this.pool.query('DELETE FROM relay_slots WHERE token = ANY($1::uuid[])', [[...this.slots.keys()]]);
      this.slots.clear();
      if (!this.opts.transient) await this.pool.query('UPDATE relay_nodes SET stopped_at = now(), seen_at = now() WHERE name = $1', [this.node]);
      this.opts.log.info?.({ node: this.node, leases_returned: held.length }, 'leases given back');
    } catch (e) {
      this.opts.log.warn({ node: this.node, err: (e as Error).message, leases: held.length }, 'could not give the leases back; they expire by themselves');
    }
    await this.pool.end().catch(() => undefined);
  }
}
