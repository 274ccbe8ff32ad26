/**
 * The shared queue on a real PostgreSQL (issue 16): schema and migrations, commit, leases claimed with
 * FOR UPDATE SKIP LOCKED, every outcome write conditioned on the lease token, renewal on the database's
 * clock, leases given back at close. Several PgQueue instances (each its own pool, its own node name)
 * stand for several relay nodes on one database.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openPool, describeUrl, dbPassword } from '../../src/spool/postgres/connect.js';
import { FEATURES, migrate, SCHEMA_VERSION } from '../../src/spool/postgres/migrate.js';
import { isUnreachable, PgQueue } from '../../src/spool/postgres/queue.js';
import { parseConfigText } from '../../src/config/load.js';
import { Readiness } from '../../src/metrics/readiness.js';
import { runQueueCommand } from '../../src/control/client.js';
import { pgSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { envelope } from '../spool/support.js';
import type { RecipientStatus } from '../../src/spool/types.js';
import { pino } from 'pino';
import { Scheduler } from '../../src/scheduler/scheduler.js';
import { normalScript, scriptedConnector } from '../support/scriptedPeer.js';
import { deliveryDeps } from '../support/deliveryDeps.js';

let pg: TestPostgres;
const queues: PgQueue[] = [];
const logs: { obj: object; msg: string }[] = [];
const log = {
  warn: (obj: object, msg: string) => {
    logs.push({ obj, msg });
  },
  info: (obj: object, msg: string) => {
    logs.push({ obj, msg });
  },
};

const settings = () => ({ url: pg.url, password_file: pg.passwordFile, password_env: 'PGPASSWORD', pool: 4 });
async function node(name: string, leaseMs = 30_000): Promise<PgQueue> {
  const q = await PgQueue.open(openPool(settings()), { node: name, leaseMs, log });
  queues.push(q);
  return q;
}

if (pgSkipReason) console.warn(`test/cluster/queue.test.ts: skipped: ${pgSkipReason}`);

describe.skipIf(pgSkipReason !== undefined)('shared queue on PostgreSQL', () => {
  beforeAll(async () => {
    pg = startPostgres('queue');
    const pool = openPool(settings());
    await migrate(pool);
    await pool.end();
  }, 120_000);
  afterAll(async () => {
    for (const q of queues) await q.close().catch(() => undefined);
    pg?.destroy();
  });
  beforeEach(() => {
    pg.sql('DELETE FROM relay_messages');
  });

  it('db migrate: a version table, each migration once, a second run applies nothing', async () => {
    const pool = openPool(settings());
    try {
      const again = await migrate(pool);
      expect(again).toEqual({ from: SCHEMA_VERSION, to: SCHEMA_VERSION, applied: [] });
      expect(pg.sql('SELECT version FROM relay_schema_version ORDER BY version').trim().split('\n').map(Number)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(SCHEMA_VERSION).toBe(7);
      // several nodes starting at once: the advisory lock serialises them, nothing is applied twice
      const r = await Promise.all([migrate(pool), migrate(pool), migrate(pool)]);
      expect(r.every((x) => x.applied.length === 0)).toBe(true);
    } finally {
      await pool.end();
    }
  });

  it('a database migrated by a newer relay is refused', async () => {
    pg.sql(`INSERT INTO relay_schema_version (version, description) VALUES (${SCHEMA_VERSION + 1}, 'future')`);
    const pool = openPool(settings());
    try {
      await expect(migrate(pool)).rejects.toThrow(/newer than this relay/);
    } finally {
      pg.sql(`DELETE FROM relay_schema_version WHERE version = ${SCHEMA_VERSION + 1}`);
      await pool.end();
    }
  });

  it('password from a 0600 file or the environment; a file others can read and a password in the URL are refused; logs show no password', () => {
    expect(dbPassword(settings())).toBe(pg.password);
    expect(dbPassword({ ...settings(), password_file: undefined, password_env: 'DR_TEST_PW' }, { DR_TEST_PW: 'from-env' })).toBe('from-env');
    const open = join(pg.dir, 'open-pw');
    writeFileSync(open, 'x\n');
    chmodSync(open, 0o644);
    expect(() => dbPassword({ ...settings(), password_file: open })).toThrow(/readable by other users/);
    expect(describeUrl('postgresql://u:secret@db.example/q')).not.toContain('secret');
    expect(() => parseConfigText('spool:\n  backend: postgres\n  postgres:\n    url: "postgresql://u:secret@db/q"\n')).toThrow(/not in the URL/);
    expect(() => parseConfigText('spool:\n  backend: postgres\n')).toThrow(/spool.postgres.url is required/);
    expect(parseConfigText('{}').spool.backend).toBe('file');
  });

  it('commit: one row with envelope, body and recipients, leased to the committing node; abort leaves nothing', async () => {
    const a = await node('a');
    const body = Buffer.from('Subject: hi\r\n\r\nbody \xff bytes\r\n', 'latin1');
    const m = await a.enqueue(envelope(), body);
    expect(m.recipients.map((r) => r.state)).toEqual(['pending', 'pending']);
    expect(pg.sql(`SELECT lease_owner, size FROM relay_messages WHERE id = '${m.id}'`).trim()).toBe(`a\t${body.length}`);
    expect(a.holds(m.id)).toBe(true);
    expect((await a.readBody(m.id)).equals(body)).toBe(true);
    expect((await a.readBodyPrefix(m.id, 5)).toString()).toBe('Subje');
    const d = await a.begin(envelope());
    await d.write(Buffer.from('x'));
    await d.abort();
    expect(pg.sql('SELECT count(*) FROM relay_messages').trim()).toBe('1');
  });

  it('a body streams back in pieces, byte for byte (3 MB)', async () => {
    const a = await node('a-big');
    const body = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7919) & 0xff;
    const m = await a.enqueue(envelope(), body);
    const parts: Buffer[] = [];
    for await (const c of a.openBody(m.id) as AsyncIterable<Buffer>) parts.push(c);
    expect(parts.length).toBeGreaterThan(1);
    expect(Buffer.concat(parts).equals(body)).toBe(true);
  });

  it('claims are disjoint: nodes claiming at once (FOR UPDATE SKIP LOCKED) each get different messages, together all', async () => {
    const a = await node('c-a');
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) ids.push((await a.enqueue(envelope({ recipients: [`r${i}@example.com`] }), Buffer.from(`m${i}\r\n`))).id);
    await a.close(); // gives its leases back: all 60 are due and free
    expect(pg.sql('SELECT count(*) FROM relay_messages WHERE lease_token IS NULL').trim()).toBe('60');
    const nodes = await Promise.all(['c1', 'c2', 'c3'].map((n) => node(n)));
    const got = await Promise.all(nodes.flatMap((q) => [q.claim(15), q.claim(15)]));
    const all = got.flat().map((m) => m.id);
    expect(new Set(all).size).toBe(all.length); // nobody got a message twice
    expect(all.sort()).toEqual([...ids].sort());
    expect(pg.sql('SELECT count(DISTINCT lease_token) FROM relay_messages').trim()).toBe('60');
    // a leased message is not claimed again while its lease lives
    expect((await Promise.all(nodes.map((q) => q.claim(100)))).flat()).toEqual([]);
  });

  it('a held message or one not yet due is not claimed', async () => {
    const a = await node('h-a');
    const held = await a.enqueue(envelope(), Buffer.from('held\r\n'));
    const later = await a.enqueue(envelope(), Buffer.from('later\r\n'));
    await a.setHeld(held.id, true);
    const future: RecipientStatus[] = later.recipients.map((r) => ({ ...r, state: 'deferred', attempts: 1, nextAttempt: Date.now() + 3_600_000 }));
    await a.updateRecipients(later.id, future);
    await a.close();
    const b = await node('h-b');
    expect(await b.claim(10)).toEqual([]);
    await b.setHeld(held.id, false);
    expect((await b.claim(10)).map((m) => m.id)).toEqual([held.id]);
  });

  it('the lease token conditions every outcome write: a node whose lease was taken over writes nothing (ELEASE)', async () => {
    const a = await node('t-a', 60_000);
    const m = await a.enqueue(envelope(), Buffer.from('x\r\n'));
    // A's lease runs out (as if A were paused past it); B claims the message.
    pg.sql(`UPDATE relay_messages SET lease_expires_at = now() - interval '1 second' WHERE id = '${m.id}'`);
    const b = await node('t-b', 60_000);
    const claimed = await b.claim(10);
    expect(claimed.map((x) => x.id)).toEqual([m.id]);
    const bState: RecipientStatus[] = m.recipients.map((r) => ({
      ...r,
      state: 'deferred',
      attempts: 1,
      nextAttempt: Date.now() + 3_600_000,
      lastReason: 'by b',
    }));
    await b.updateRecipients(m.id, bState);
    // A comes back with its outcome: delivered to everyone. Refused; the row is B's.
    const aDone: RecipientStatus[] = m.recipients.map((r) => ({ ...r, state: 'delivered', attempts: 1 }));
    await expect(a.updateRecipients(m.id, aDone)).rejects.toMatchObject({ code: 'ELEASE' });
    expect(a.holds(m.id)).toBe(false);
    const row = JSON.parse(pg.sql(`SELECT recipients FROM relay_messages WHERE id = '${m.id}'`)) as RecipientStatus[];
    expect(row.map((r) => [r.state, r.lastReason])).toEqual([
      ['deferred', 'by b'],
      ['deferred', 'by b'],
    ]);
    // nor can it give B's lease back
    await a.release(m.id);
    expect(pg.sql(`SELECT lease_owner FROM relay_messages WHERE id = '${m.id}'`).trim()).toBe('t-b');
  });

  it("an expired lease nobody took is still the holder's: its write lands (nothing was done twice)", async () => {
    const a = await node('e-a', 60_000);
    const m = await a.enqueue(envelope(), Buffer.from('x\r\n'));
    pg.sql(`UPDATE relay_messages SET lease_expires_at = now() - interval '1 second' WHERE id = '${m.id}'`);
    await a.updateRecipients(
      m.id,
      m.recipients.map((r) => ({ ...r, state: 'delivered', attempts: 1 })),
    );
    expect(pg.sql(`SELECT count(*) FROM relay_messages WHERE id = '${m.id}'`).trim()).toBe('0');
  });

  it('leases are renewed on the database clock while held, and a renewal that finds the lease taken reports it lost', async () => {
    const a = await node('r-a', 900);
    const m = await a.enqueue(envelope(), Buffer.from('x\r\n'));
    const lost: string[] = [];
    a.onLost((id) => lost.push(id));
    const expiry = () => pg.sql(`SELECT extract(epoch FROM lease_expires_at) FROM relay_messages WHERE id = '${m.id}'`).trim();
    const first = expiry();
    while (expiry() === first) await new Promise((r) => setTimeout(r, 50)); // renewal moved it on
    expect(Number(expiry())).toBeGreaterThan(Number(first));
    // another node takes it over (as after a partition); A's next renewal finds out
    pg.sql(`UPDATE relay_messages SET lease_owner = 'other', lease_token = gen_random_uuid() WHERE id = '${m.id}'`);
    while (lost.length === 0) await new Promise((r) => setTimeout(r, 50));
    expect(lost).toEqual([m.id]);
    expect(a.holds(m.id)).toBe(false);
  });

  it('a lease the node holds but does not work on is given back at the second renewal, not renewed for ever; one in use is renewed', async () => {
    // Stands for a commit or claim whose message never reached the scheduler (the caller saw an error, or the
    // hand-over was dropped): the row is leased to this node, which must not keep it idle.
    const a = await node('i-a', 600);
    const working = new Set<string>();
    a.setInUse((id) => working.has(id));
    const idle = await a.enqueue(envelope(), Buffer.from('idle\r\n'));
    const busy = await a.enqueue(envelope(), Buffer.from('busy\r\n'));
    working.add(busy.id);
    const owner = (id: string) => pg.sql(`SELECT coalesce(lease_owner, '-') FROM relay_messages WHERE id = '${id}'`).trim();
    const expiry = () => Number(pg.sql(`SELECT extract(epoch FROM lease_expires_at) FROM relay_messages WHERE id = '${busy.id}'`).trim());
    const first = expiry();
    while (owner(idle.id) !== '-') await new Promise((r) => setTimeout(r, 50));
    expect(a.holds(idle.id)).toBe(false);
    expect(logs.some((l) => /given back/.test(l.msg) && JSON.stringify(l.obj).includes(idle.id))).toBe(true);
    // the one in use stayed this node's, renewed meanwhile (two renewals passed)
    expect(owner(busy.id)).toBe('i-a');
    expect(a.holds(busy.id)).toBe(true);
    expect(expiry()).toBeGreaterThan(first);
    // given back: any node claims it when due, this one included
    const b = await node('i-b', 600);
    expect((await b.claim(10)).map((m) => m.id)).toEqual([idle.id]);
  });

  it('a message committed to the queue but never handed to the scheduler (the hand-over was lost) is still delivered', async () => {
    // The defect (failover test, PostgreSQL restarted under load): a row leased to a live node that renewed the
    // lease for ever without ever delivering it. Here the commit's result never reaches scheduler.add().
    const peers = scriptedConnector({ '127.0.0.2': normalScript() });
    const T = 5000;
    // an address literal: the builder's resolver is never asked
    const delivery = deliveryDeps({ port: 9, timeout: T, connector: peers.connector });
    const q = await node('h-a', 600);
    const scheduler = new Scheduler({
      spool: q,
      delivery,
      config: { min_backoff: 600_000, max_backoff: 3_600_000, lifetime: 86_400_000, delay_warning: 0, concurrency: 4, per_destination: 2, run_interval: 200 },
      hostname: 'relay.test',
      log: pino({ level: 'silent' }),
      now: Date.now,
    });
    scheduler.start();
    try {
      const m = await q.enqueue(envelope({ recipients: ['x@[127.0.0.2]'] }), Buffer.from('Subject: lost hand-over\r\n\r\nbody\r\n'));
      // not scheduler.add(m): the lease is this node's, the scheduler never heard of the message
      const delivered = () => peers.connections.flatMap((c) => c.transactions).filter((t) => t.delivered && t.rcpts.includes('x@[127.0.0.2]')).length;
      while (delivered() === 0 || pg.sql(`SELECT count(*) FROM relay_messages WHERE id = '${m.id}'`).trim() !== '0')
        await new Promise((r) => setTimeout(r, 50));
      expect(delivered()).toBe(1);
    } finally {
      await scheduler.stop(1000);
    }
  });

  it('close gives every held lease back and marks the node stopped', async () => {
    const a = await node('g-a');
    for (let i = 0; i < 5; i++) await a.enqueue(envelope(), Buffer.from(`${i}\r\n`));
    expect(pg.sql("SELECT count(*) FROM relay_messages WHERE lease_owner = 'g-a'").trim()).toBe('5');
    await a.close();
    expect(pg.sql('SELECT count(*) FROM relay_messages WHERE lease_owner IS NULL AND lease_token IS NULL').trim()).toBe('5');
    expect(pg.sql("SELECT stopped_at IS NOT NULL FROM relay_nodes WHERE name = 'g-a'").trim()).toBe('t');
  });

  it("delivery slots: never more than the limit per destination across nodes, even when they race; given back, and a dead holder's expire", async () => {
    const nodes = await Promise.all(['s1', 's2', 's3'].map((n) => node(n, 1500)));
    // 3 nodes × 4 attempts at once for a limit of 2: exactly 2 granted (racing for one free slot may leave a free one for later, never a third)
    const got = (await Promise.all(nodes.flatMap((q) => [0, 1, 2, 3].map(() => q.acquireSlot('race.test', 2))))).filter((t): t is string => !!t);
    expect(got.length).toBeGreaterThanOrEqual(1);
    expect(got.length).toBeLessThanOrEqual(2);
    while (Number(pg.sql("SELECT count(*) FROM relay_slots WHERE destination = 'race.test'").trim()) < 2) {
      const t = await nodes[0]!.acquireSlot('race.test', 2);
      if (t) got.push(t);
    }
    expect(got).toHaveLength(2);
    expect(await nodes[1]!.acquireSlot('race.test', 2)).toBeUndefined();
    // given back: free again
    const owner = nodes.find((q) => (q as unknown as { slots: Map<string, string> }).slots.has(got[0]!))!;
    await owner.releaseSlot(got[0]!);
    const again = await nodes[2]!.acquireSlot('race.test', 2);
    expect(again).toBeDefined();
    // a dead node's slot (nobody renews it): taken over once it has expired on the database clock
    pg.sql(`UPDATE relay_slots SET owner = 'dead', token = gen_random_uuid(), expires_at = now() - interval '1 second' WHERE token = '${got[1]}'`);
    expect(await nodes[1]!.acquireSlot('race.test', 2)).toBeDefined();
    expect(pg.sql("SELECT count(*) FROM relay_slots WHERE destination = 'race.test'").trim()).toBe('2');
  });

  it('dane-relay queue … acts on the database, with no relay running: list, show, hold, flush, requeue, delete', async () => {
    const a = await node('ctl-a');
    const m1 = await a.enqueue(envelope({ recipients: ['x@one.test'] }), Buffer.from('1\r\n'));
    const m2 = await a.enqueue(envelope({ recipients: ['y@two.test'] }), Buffer.from('Subject: two\r\n\r\n2\r\n'));
    const later = Date.now() + 3_600_000;
    await a.updateRecipients(
      m1.id,
      m1.recipients.map((r) => ({ ...r, state: 'deferred', attempts: 1, nextAttempt: later, lastReason: '4.4.1 no answer' })),
    );
    await a.close();
    const view = { queue_dir: join(pg.dir, 'no-such-queue'), spool: { backend: 'postgres' as const, postgres: settings() } };
    const run = async (req: Parameters<typeof runQueueCommand>[1]) => {
      const r = await runQueueCommand(view, req);
      expect(r.via).toBe('database');
      return r.response;
    };
    const list = await run({ cmd: 'list' });
    expect(JSON.stringify(list)).toContain(m1.id);
    expect(JSON.stringify(list)).toContain(m2.id);
    expect(JSON.stringify(await run({ cmd: 'show', id: m1.id }))).toContain('4.4.1 no answer');
    // issue 21 item 8: `queue show ID [--body]` (postcat -q) reads the message from the database too
    expect(await run({ cmd: 'show', id: m2.id, content: 'headers' })).toMatchObject({ ok: true, result: { content: { headers: 'Subject: two' } } });
    expect(await run({ cmd: 'show', id: m2.id, content: 'message' })).toMatchObject({
      ok: true,
      result: { content: { headers: 'Subject: two', body: '2\r\n' } },
    });
    expect(await run({ cmd: 'flush', domain: 'one.test' })).toMatchObject({ ok: true });
    expect(Number(pg.sql(`SELECT next_due FROM relay_messages WHERE id = '${m1.id}'`))).toBeLessThan(later);
    expect(await run({ cmd: 'hold', id: m2.id })).toMatchObject({ ok: true });
    expect(pg.sql(`SELECT held FROM relay_messages WHERE id = '${m2.id}'`).trim()).toBe('t');
    const b = await node('ctl-b');
    expect((await b.claim(10)).map((m) => m.id)).toEqual([m1.id]); // flushed: due; held: not claimed
    await b.close();
    expect(await run({ cmd: 'requeue', id: m1.id })).toMatchObject({ ok: true });
    expect(await run({ cmd: 'delete', id: m2.id })).toMatchObject({ ok: true });
    expect(pg.sql(`SELECT count(*) FROM relay_messages WHERE id = '${m2.id}'`).trim()).toBe('0');
    expect(await run({ cmd: 'show', id: m2.id })).toMatchObject({ ok: false, code: 'ENOENT' });
  });

  it('/readyz: the spool check is a committed write to the database; it fails while the database is down and passes again after', async () => {
    const a = await node('ready-a');
    const ready = () => new Readiness({ queueDir: pg.dir, spoolTtlMs: 0, spoolProbe: () => a.probe() }).check();
    const up = await ready();
    expect(up.ready).toBe(true);
    expect(up.checks.find((c) => c.name === 'spool')?.detail).toMatch(/queue database took a committed write/);
    await pg.stopAsync('fast');
    try {
      const down = await ready();
      expect(down.ready).toBe(false);
      expect(down.checks.find((c) => c.name === 'spool')?.detail).toMatch(/^queue database not writable: /);
    } finally {
      await pg.startAsync();
    }
    // the pool reconnects by itself (a dead connection may fail one query first)
    let again = await ready();
    if (!again.ready) again = await ready();
    expect(again.ready).toBe(true);
  }, 120_000); // a PostgreSQL stop and start (not a speed expectation)

  it('a commit while the database is down fails with EDB and queues nothing; after the restart commits work again', async () => {
    const a = await node('d-a');
    const before = Number(pg.sql('SELECT count(*) FROM relay_messages').trim());
    await pg.stopAsync('immediate');
    try {
      const d = await a.begin(envelope());
      await d.write(Buffer.from('during the outage\r\n'));
      await expect(d.commit()).rejects.toMatchObject({ code: 'EDB' });
    } finally {
      await pg.startAsync();
    }
    expect(Number(pg.sql('SELECT count(*) FROM relay_messages').trim())).toBe(before);
    const m = await a.enqueue(envelope(), Buffer.from('after\r\n'));
    expect((await a.readBody(m.id)).toString()).toBe('after\r\n');
  }, 120_000); // a PostgreSQL stop and start (not a speed expectation)

  it('a node opened while the database is down runs without it (EDB, probe failing, nothing claimed) and prepares itself once it answers', async () => {
    let prepared = 0;
    const pool = openPool(settings());
    await pg.stopAsync('fast');
    let q: PgQueue;
    try {
      q = await PgQueue.open(pool, {
        node: 'late',
        leaseMs: 600,
        log,
        prepare: async () => {
          await migrate(pool);
          prepared++;
        },
      });
      queues.push(q);
      expect(q.connected).toBe(false);
      expect(prepared).toBe(0);
      await expect(q.begin(envelope())).rejects.toMatchObject({ code: 'EDB' });
      await expect(q.probe()).rejects.toMatchObject({ code: 'EDB' });
      await expect(q.claim(5)).rejects.toMatchObject({ code: 'EDB' });
      expect(logs.some((l) => /queue database unreachable at start/.test(l.msg))).toBe(true);
    } finally {
      await pg.startAsync();
    }
    // the lease timer (every lease/3) reaches it: prepared once, registered, then commits work
    while (!q.connected) await new Promise((r) => setTimeout(r, 50));
    expect(prepared).toBe(1);
    expect(pg.sql("SELECT stopped_at IS NULL FROM relay_nodes WHERE name = 'late'").trim()).toBe('t');
    const m = await q.enqueue(envelope(), Buffer.from('after the outage\r\n'));
    expect((await q.readBody(m.id)).toString()).toBe('after the outage\r\n');
    expect(prepared).toBe(1);
  }, 120_000); // a PostgreSQL stop and start (not a speed expectation)

  it('a database that answers with a refusal (schema newer than this relay) still refuses the open; only an unreachable one is waited for', async () => {
    pg.sql(`INSERT INTO relay_schema_version (version, description) VALUES (${SCHEMA_VERSION + 1}, 'future')`);
    const pool = openPool(settings());
    try {
      const e = await PgQueue.open(pool, { node: 'newer', leaseMs: 600, log, prepare: async () => void (await migrate(pool)) }).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'EDB', message: expect.stringMatching(/newer than this relay/) });
      expect(isUnreachable(e)).toBe(false);
    } finally {
      pg.sql(`DELETE FROM relay_schema_version WHERE version = ${SCHEMA_VERSION + 1}`);
      await pool.end().catch(() => undefined);
    }
    expect(isUnreachable(Object.assign(new Error('connect ENOENT /tmp/x/.s.PGSQL.5432'), { code: 'ENOENT' }))).toBe(true);
    expect(isUnreachable(Object.assign(new Error('the database system is starting up'), { code: '57P03' }))).toBe(true);
    expect(isUnreachable(Object.assign(new Error('password authentication failed'), { code: '28P01' }))).toBe(false);
  });

  it('RT-12 RT-25 a REQUIRETLS message is claimed only by a node that honours the tag: an older node (a claim without the feature) never gets it', async () => {
    const a = await node('rt-a');
    const tagged = await a.enqueue(envelope({ requireTls: true }), Buffer.from('secret\r\n'));
    const plain = await a.enqueue(envelope(), Buffer.from('plain\r\n'));
    expect(pg.sql(`SELECT requires FROM relay_messages WHERE id = '${tagged.id}'`).trim()).toBe('{requiretls}');
    expect(pg.sql(`SELECT requires FROM relay_messages WHERE id = '${plain.id}'`).trim()).toBe('{}');
    await a.close(); // both leases given back: both due and free
    const old = await PgQueue.open(openPool(settings()), { node: 'rt-old', leaseMs: 30_000, log, features: [] });
    queues.push(old);
    // the older node takes what it can deliver and leaves the tagged message, however often it asks
    expect((await old.claim(10)).map((m) => m.id)).toEqual([plain.id]);
    expect(await old.claim(10)).toEqual([]);
    expect(FEATURES).toContain('requiretls');
    const current = await node('rt-new');
    const got = await current.claim(10);
    expect(got.map((m) => m.id)).toEqual([tagged.id]);
    expect(got[0]!.envelope.requireTls).toBe(true);
  });

  it('RT-12 migration 4 (the claim filter) is refused while a node from before it is live; applied once that node has stopped', async () => {
    // back to schema 3 with an older node live (its row seen just now, not stopped)
    pg.sql('DELETE FROM relay_messages');
    pg.sql('DELETE FROM relay_schema_version WHERE version >= 4');
    pg.sql('ALTER TABLE relay_messages DROP COLUMN requires');
    pg.sql(
      'DROP TABLE relay_sts_policies, relay_probe_results, relay_rollover_warnings, relay_mx_facts, relay_tlsrpt_pending; DROP SEQUENCE relay_sts_policy_version',
    );
    pg.sql(
      "INSERT INTO relay_nodes (name, host, pid, started_at, seen_at) VALUES ('old-node', 'h', 1, now(), now()) ON CONFLICT (name) DO UPDATE SET seen_at = now(), stopped_at = NULL",
    );
    const pool = openPool(settings());
    try {
      await expect(migrate(pool, { node: 'upgrader', leaseMs: 30_000 })).rejects.toThrow(/migration 4 .*refused: node\(s\) .*old-node.* are live/);
      expect(pg.sql('SELECT max(version) FROM relay_schema_version').trim()).toBe('3');
      // the node migrating is not "another live node", and a stopped one does not count
      pg.sql("UPDATE relay_nodes SET stopped_at = now() WHERE name <> 'upgrader'");
      pg.sql(
        "INSERT INTO relay_nodes (name, host, pid, started_at, seen_at) VALUES ('upgrader', 'h', 2, now(), now()) ON CONFLICT (name) DO UPDATE SET seen_at = now(), stopped_at = NULL",
      );
      const r = await migrate(pool, { node: 'upgrader', leaseMs: 30_000 });
      expect(r.applied.map((m) => m.version)).toEqual([4, 5, 6, 7]);
    } finally {
      await migrate(pool, { leaseMs: 0 }).catch(() => undefined);
      await pool.end();
    }
    expect(pg.sql('SELECT max(version) FROM relay_schema_version').trim()).toBe(String(SCHEMA_VERSION));
  });
});
