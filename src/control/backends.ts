/**
 * The two QueueBackends of commands.ts: the running relay's scheduler (online) and a spool
 * opened by the CLI while the relay is stopped (offline; Spool.open holds the spool lock,
 * so no relay can start and work on the same files meanwhile).
 */
import type { Scheduler } from '../scheduler/scheduler.js';
import type { Spool } from '../spool/spool.js';
import type { QueueStore } from '../spool/types.js';
import { listSpool } from '../spool/inspect.js';
import { flushRecipients, requeueRecipients, type QueueBackend } from './commands.js';

const isENOENT = (e: unknown) => (e as { code?: unknown })?.code === 'ENOENT';

/** The message's bytes, or undefined when it is gone (delivered or deleted since it was listed). */
async function readIfThere(read: () => Promise<Buffer>): Promise<Buffer | undefined> {
  try {
    return await read();
  } catch (e) {
    if (isENOENT(e)) return undefined;
    throw e;
  }
}

/** Online: the scheduler's index is the newest truth (it may be ahead of the disk by one write in flight). */
export function schedulerBackend(scheduler: Scheduler, store: Pick<QueueStore, 'readBodyPrefix'>): QueueBackend {
  return {
    content: (id, max) => readIfThere(() => store.readBodyPrefix(id, max)),
    async list() {
      return { messages: scheduler.list(), unreadable: [] };
    },
    async get(id) {
      return scheduler.get(id);
    },
    setHeld: (id, held) => scheduler.setHeld(id, held),
    remove: (id) => scheduler.remove(id),
    async flush(domain) {
      return scheduler.flush(domain);
    },
    async requeue(id, now) {
      let changed = 0;
      const msg = await scheduler.amend(id, (rs) => {
        const r = requeueRecipients(rs, now);
        changed = r.changed;
        return r.recipients;
      });
      return msg ? { changed, held: msg.held === true } : undefined;
    },
  };
}

/** Offline: the files, through the spool's durable operations (state replaced atomically, fsynced). */
export function spoolBackend(spool: Spool): QueueBackend {
  const get = async (id: string) => (await listSpool(spool.dir)).messages.find((m) => m.id === id);
  return {
    content: (id, max) => readIfThere(() => spool.readBodyPrefix(id, max)),
    list: () => listSpool(spool.dir),
    get,
    async setHeld(id, held) {
      try {
        await spool.setHeld(id, held);
        return true;
      } catch (e) {
        if (isENOENT(e)) return false;
        throw e;
      }
    },
    async remove(id) {
      try {
        await spool.remove(id);
        return true;
      } catch (e) {
        if (isENOENT(e)) return false;
        throw e;
      }
    },
    async flush(domain, now) {
      let n = 0;
      for (const m of (await listSpool(spool.dir)).messages) {
        const next = flushRecipients(m, domain, now);
        if (!next) continue;
        await spool.updateRecipients(m.id, next);
        n++;
      }
      return n;
    },
    async requeue(id, now) {
      const m = await get(id);
      if (!m) return undefined;
      const r = requeueRecipients(m.recipients, now);
      if (r.changed) await spool.updateRecipients(id, r.recipients);
      return { changed: r.changed, held: m.held === true };
    },
  };
}
