import type { Readable } from 'node:stream';
import type { BodyFacts } from '../mime/scan.js';
import type { MailDsn, RcptDsn } from '../dsn/params.js';

export type RecipientState = 'pending' | 'deferred' | 'delivered' | 'failed';

export interface RecipientStatus {
  address: string;
  state: RecipientState;
  attempts: number;
  /** epoch ms; only meaningful while pending/deferred */
  nextAttempt: number;
  /** last reply or reason, e.g. "4.7.5 TLSA lookup for _25._tcp.mx1.example.com: SERVFAIL" */
  lastReason?: string;
  /** enhanced status code of the final/last result, e.g. "5.1.1" */
  dsnCode?: string;
  /** remote MTA that gave the last answer */
  remoteMta?: string;
  /** epoch ms of the "delayed" DSN already sent, if any */
  delayNotified?: number;
}

export interface Envelope {
  /** "" for the null sender */
  from: string;
  recipients: string[];
  /** SMTPUTF8 requested by the client */
  smtputf8: boolean;
  /** BODY=8BITMIME declared by the client (what the body holds is in QueuedMessage.body) */
  eightBit: boolean;
  /** client address/name for the Received header and logs */
  client: { address: string; name?: string; user?: string };
  /** epoch ms the message was accepted */
  received: number;
  /** messages the relay generated itself: DSNs never get DSNs; TLSRPT reports bypass DANE */
  kind: 'normal' | 'dsn' | 'tlsrpt';
  /** the ENVID / message-id for DSNs */
  messageId?: string;
  /** RFC 3461 MAIL parameters RET and ENVID, as the client gave them (xtext-decoded) */
  dsn?: MailDsn;
  /** RFC 3461 RCPT parameters NOTIFY and ORCPT, by recipient address; only recipients that had any */
  rcptDsn?: Record<string, RcptDsn>;
  /**
   * RFC 8689 §4.1: MAIL FROM carried REQUIRETLS. Every copy keeps it (RT-13); delivery only over an
   * authenticated route to a server that offers REQUIRETLS, passing it on (RT-21…26). Spool format 3.
   */
  requireTls?: true;
  /**
   * RFC 8689 §4.1: the message carries a valid `TLS-Required: No` header field and no REQUIRETLS (which wins,
   * RT-32): delivered opportunistically, the recipient's DANE and MTA-STS policies not enforced (RT-31, RT-33).
   * A reader that ignores it delivers under the destination's policy (stricter): no format change.
   */
  tlsRequiredNo?: true;
}

export interface QueuedMessage {
  id: string;
  envelope: Envelope;
  size: number;
  /**
   * What the body holds (8-bit octets, lines over 998 octets, NUL), learned while it was written;
   * undefined for a message written before the spool kept it (format v1): delivery scans those.
   */
  body?: BodyFacts;
  recipients: RecipientStatus[];
  /** held by the operator: not scheduled */
  held?: boolean;
}

export interface SpoolError extends Error {
  /** ENOSPC, EIO, ... */
  code?: string;
}

/** A message being received: body bytes are streamed into it, then committed or aborted. */
export interface Draft {
  /** queue id assigned at begin() */
  readonly id: string;
  /** what the body written so far holds (ingress refuses long lines with it before commit) */
  readonly facts: BodyFacts;
  write(chunk: Buffer): Promise<void>;
  /** fsync + rename + (group-committed) directory fsync; resolves when durable. Throws SpoolError (code ENOSPC/EIO...) and leaves nothing behind. */
  commit(): Promise<QueuedMessage>;
  /** drop everything written so far; never throws */
  abort(): Promise<void>;
}

/** What ingress and the relay's own generators (DSN, TLSRPT) need from the spool. */
export interface SpoolWriter {
  begin(envelope: Envelope): Promise<Draft>;
  /** convenience: begin + write + commit */
  enqueue(envelope: Envelope, body: Buffer): Promise<QueuedMessage>;
}

/**
 * Everything the scheduler and the relay need from a queue backend: the embedded file spool
 * (spool.ts) or the shared PostgreSQL queue (postgres/queue.ts).
 */
export interface QueueStore extends SpoolWriter {
  /** The message bytes as received. */
  openBody(id: string): Readable;
  /** At most `max` octets from the start of the body. */
  readBodyPrefix(id: string, max: number): Promise<Buffer>;
  /** The whole body in memory (small messages: DSN composition, tests). */
  readBody(id: string): Promise<Buffer>;
  /** Durably replaces a message's recipient states; removes it when all are delivered/failed. */
  updateRecipients(id: string, recipients: RecipientStatus[]): Promise<void>;
  setHeld(id: string, held: boolean): Promise<void>;
  /** Operator delete; rejects with ENOENT if there is no such message. */
  remove(id: string): Promise<void>;
  /** Messages to schedule at start (the file spool: all of them; a shared queue: none, work is claimed). */
  recover(): Promise<QueuedMessage[]>;
  close(): Promise<void>;
  /** Set for a queue shared by several nodes: work is claimed under leases (issue 16). */
  readonly shared?: SharedQueue;
}

/**
 * A queue several relay nodes share. A node works only on messages it holds a lease on; every
 * outcome write is conditioned on the lease's token, and one made after the lease was lost
 * (expired and taken by another node) rejects with a SpoolError of code ELEASE and changes nothing.
 */
export interface SharedQueue {
  /** This node's name in leases. */
  readonly node: string;
  /** Claims up to `max` due messages no live lease holds (their due recipients made due on this node's clock). */
  claim(max: number): Promise<QueuedMessage[]>;
  /** Gives back the lease on a message this node is done with for now (its retry is due later). */
  release(id: string): Promise<void>;
  /** Does this node hold a lease on `id`? */
  holds(id: string): boolean;
  /** Called with the id of a message whose lease renewal found it taken by another node. */
  onLost(cb: (id: string) => void): void;
  /**
   * Who says whether the node works on a message (the scheduler). A lease held on one it does not work on, at
   * two renewals in a row, is given back rather than renewed: a lease is held only by a node that works on it.
   */
  setInUse(inUse: (id: string) => boolean): void;
  /**
   * A session slot for `destination` among `limit` shared by all nodes (the per-destination limit across
   * the cluster): its token, or undefined when all are taken. Held under a lease renewed with the
   * message leases; a dead node's slots expire.
   */
  acquireSlot(destination: string, limit: number): Promise<string | undefined>;
  releaseSlot(token: string): Promise<void>;
  /** /readyz: a committed write to the database; resolves with what it proved, rejects when the database cannot take one. */
  probe(): Promise<string>;
}
