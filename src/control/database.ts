/**
 * `dane-relay queue …` on the shared queue (issue 16): the commands act on the database, from any node and
 * whether or not a relay runs, by the same rules as on the file spool (control/commands.ts). A message a
 * node is delivering right now: hold and delete take effect at once (the node's outcome write finds its
 * lease gone after a delete; a held message is not claimed again); a flush or requeue of it is overtaken
 * by that node's outcome, which is newer.
 */
import type pg from 'pg';
import { flushRecipients, requeueRecipients, type QueueBackend } from './commands.js';
import type { Envelope, QueuedMessage, RecipientStatus } from '../spool/types.js';
import type { BodyFacts } from '../mime/scan.js';
import { nextDue } from '../spool/postgres/queue.js';

type Row = { id: string; envelope: Envelope; size: string; body_facts: BodyFacts | null; recipients: RecipientStatus[]; held: boolean };
const COLUMNS = 'id, envelope, size, body_facts, recipients, held';

function message(row: Row): QueuedMessage {
  return {
    id: row.id,
    envelope: row.envelope,
    size: Number(row.size),
    ...(row.body_facts ? { body: row.body_facts } : {}),
    recipients: row.recipients,
    ...(row.held ? { held: true } : {}),
  };
}

/** Runs `fn` in one transaction on one connection (the rows it reads FOR UPDATE stay as read until it commits). */
async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    const r = await fn(c);
    await c.query('COMMIT');
    return r;
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    c.release();
  }
}

const write = (c: pg.PoolClient, id: string, recipients: RecipientStatus[]) =>
  c.query('UPDATE relay_messages SET recipients = $2, next_due = $3 WHERE id = $1', [id, JSON.stringify(recipients), nextDue(recipients)]);

export function databaseBackend(pool: pg.Pool): QueueBackend {
  return {
    async content(id, max) {
      const r = await pool.query<{ part: Buffer }>('SELECT substring(body FROM 1 FOR $2) AS part FROM relay_messages WHERE id = $1', [id, max]);
      return r.rows[0]?.part;
    },
    async list() {
      const r = await pool.query<Row>(`SELECT ${COLUMNS} FROM relay_messages ORDER BY id`);
      return { messages: r.rows.map(message), unreadable: [] };
    },
    async get(id) {
      const r = await pool.query<Row>(`SELECT ${COLUMNS} FROM relay_messages WHERE id = $1`, [id]);
      return r.rows[0] ? message(r.rows[0]) : undefined;
    },
    async setHeld(id, held) {
      return ((await pool.query('UPDATE relay_messages SET held = $2 WHERE id = $1', [id, held])).rowCount ?? 0) > 0;
    },
    async remove(id) {
      return ((await pool.query('DELETE FROM relay_messages WHERE id = $1', [id])).rowCount ?? 0) > 0;
    },
    flush: (domain, now) =>
      inTransaction(pool, async (c) => {
        let n = 0;
        for (const row of (await c.query<Row>(`SELECT ${COLUMNS} FROM relay_messages WHERE NOT held AND next_due IS NOT NULL ORDER BY id FOR UPDATE`)).rows) {
          const next = flushRecipients(message(row), domain, now);
          if (!next) continue;
          await write(c, row.id, next);
          n++;
        }
        return n;
      }),
    requeue: (id, now) =>
      inTransaction(pool, async (c) => {
        const row = (await c.query<Row>(`SELECT ${COLUMNS} FROM relay_messages WHERE id = $1 FOR UPDATE`, [id])).rows[0];
        if (!row) return undefined;
        const r = requeueRecipients(row.recipients, now);
        if (r.changed) await write(c, id, r.recipients);
        return { changed: r.changed, held: row.held };
      }),
  };
}
