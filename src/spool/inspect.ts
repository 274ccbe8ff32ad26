/**
 * Read-only view of a spool for operators (`dane-relay queue list`): it takes no lock and
 * changes nothing, so it works beside a running relay. Files that are mid-update or
 * unreadable are reported, never repaired here (recovery does that).
 */
import { lstat, readdir } from 'node:fs/promises';
import { READ, readFileNoFollow } from '../files/private.js';
import { join } from 'node:path';
import { initialRecipients, parseHeader, parseState } from './format.js';
import type { QueuedMessage } from './types.js';
import { shownState } from '../vocabulary/words.js';

/** A message as `queue list --json` / `queue show --json` show it: each recipient's state in the vocabulary's words. */
export function shownMessage(m: QueuedMessage): QueuedMessage | (Omit<QueuedMessage, 'recipients'> & { recipients: unknown[] }) {
  return { ...m, recipients: m.recipients.map((r) => ({ ...r, state: shownState(r.state) })) };
}

export interface SpoolListing {
  messages: QueuedMessage[];
  unreadable: { id: string; reason: string }[];
}

export async function listSpool(dir: string): Promise<SpoolListing> {
  const out: SpoolListing = { messages: [], unreadable: [] };
  let ids: string[];
  try {
    ids = (await readdir(join(dir, 'msg'))).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out;
    throw e;
  }
  for (const id of ids) {
    try {
      const file = join(dir, 'msg', id);
      // Never through a link: the CLI may run as root, and a planted msg/ link must not show another file's head.
      const st = await lstat(file);
      if (!st.isFile()) throw new Error(st.isSymbolicLink() ? 'is a symbolic link, not a message file' : 'is not a regular file');
      const size = st.size;
      const head = await readHead(file);
      const h = parseHeader(head, size);
      let recipients = initialRecipients(h.envelope);
      let held = false;
      try {
        const st = parseState(await readFileNoFollow(join(dir, 'state', `${id}.json`)), h.envelope);
        recipients = st.recipients;
        held = st.held;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      out.messages.push({ id, envelope: h.envelope, size: h.size, ...(h.body ? { body: h.body } : {}), recipients, held });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // delivered meanwhile
      out.unreadable.push({ id, reason: (e as Error).message });
    }
  }
  return out;
}

/**
 * At most `max` octets of a message as received (the spool's own header line skipped), read without the
 * lock and never through a link (`queue show` beside a running or stopped relay). Undefined when there is
 * no such message file.
 */
export async function readMessagePrefix(dir: string, id: string, max: number): Promise<Buffer | undefined> {
  let buf: Buffer;
  try {
    buf = await readFileNoFollow(join(dir, 'msg', id));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const nl = buf.indexOf(0x0a);
  if (nl < 0) throw new Error(`message ${id} has no header line`);
  return buf.subarray(nl + 1, nl + 1 + max);
}

async function readHead(file: string): Promise<Buffer> {
  const { open } = await import('node:fs/promises');
  const fh = await open(file, READ);
  try {
    const chunks: Buffer[] = [];
    let pos = 0;
    for (;;) {
      const buf = Buffer.alloc(64 * 1024);
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      const piece = buf.subarray(0, bytesRead);
      chunks.push(piece);
      pos += bytesRead;
      if (piece.includes(0x0a) || pos > 16 * 1024 * 1024) break;
    }
    return Buffer.concat(chunks);
  } finally {
    await fh.close();
  }
}

/** mailq-like text: one block per message, one line per recipient with state, attempts, next attempt and last reason. */
export function formatListing(l: SpoolListing, now: number): string {
  const lines: string[] = [];
  for (const m of l.messages) {
    const age = Math.round((now - m.envelope.received) / 60_000);
    lines.push(`${m.id}${m.held ? ' (held)' : ''}  ${m.size} bytes  ${new Date(m.envelope.received).toISOString()} (${age} min)  from <${m.envelope.from}>`);
    for (const r of m.recipients) {
      const next = r.state === 'pending' || r.state === 'deferred' ? `  next ${new Date(r.nextAttempt || m.envelope.received).toISOString()}` : '';
      // the vocabulary's words (issue 21 item 4): delivered is shown `sent`, failed `bounced`
      lines.push(`    <${r.address}>  ${shownState(r.state)}  attempts ${r.attempts}${next}${r.dsnCode ? `  ${r.dsnCode}` : ''}`);
      if (r.lastReason && r.state !== 'delivered') lines.push(`        ${r.lastReason}`);
    }
  }
  for (const u of l.unreadable) lines.push(`${u.id}  UNREADABLE: ${u.reason}`);
  const open = l.messages.reduce((n, m) => n + m.recipients.filter((r) => r.state === 'pending' || r.state === 'deferred').length, 0);
  lines.push(`-- ${l.messages.length} message(s), ${open} recipient(s) waiting`);
  return lines.join('\n') + '\n';
}
