/**
 * The spool's contract with ingress and the scheduler.
 *
 * Invariant: `enqueue` resolves only after the message file and its directory
 * entry are durable (fsync of file, rename, fsync of directory). Recipient
 * state changes are durable when `updateRecipients` resolves. A crash at any
 * instant leaves every recipient either pending or done (delivered/failed).
 */
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
