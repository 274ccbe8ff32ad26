/**
 * DestinationRun.deliver against a scripted peer (./scriptedPeer.ts) on loopback, one message at a time to
 * address-literal recipients (the run's resolver is never asked), and the invariant every reply test checks
 * (issue 13): one outcome per recipient, `sent` only where the peer itself holds the message as delivered.
 * Used by the reply tests of DATA (test/delivery/replies.test.ts) and BDAT (test/delivery/bdat.test.ts).
 */
import { expect } from 'vitest';
import { Readable } from 'node:stream';
import { DestinationRun, type DeliveryDeps } from '../../src/delivery/deliver.js';
import type { RecipientOutcome } from '../../src/delivery/outcome.js';
import { startScriptedPeer, type PeerAction, type PeerTransaction, type ScriptedPeer } from './scriptedPeer.js';
import { deliveryDeps } from './deliveryDeps.js';

/** every stage timeout of these runs (ms) */
export const PEER_TIMEOUT = 2000;

export const peerDeps = (port: number, over: Partial<DeliveryDeps> = {}): DeliveryDeps => deliveryDeps({ port, timeout: PEER_TIMEOUT, ...over });

/** Scripted peers that `close()` stops together (call it in afterAll). */
export function scriptedPeers(): { peer(script: Parameters<typeof startScriptedPeer>[0]['script']): Promise<ScriptedPeer>; close(): Promise<void> } {
  const started: ScriptedPeer[] = [];
  return {
    async peer(script) {
      const p = await startScriptedPeer({ script });
      started.push(p);
      return p;
    },
    async close() {
      for (const p of started.reverse()) await p.close();
    },
  };
}

export const textBody = (text: string) => () => Readable.from([Buffer.from(text, 'latin1')]);

let n = 0;
/**
 * One message to `recipients` (in domain [127.0.0.1]) through `given`, or a fresh DestinationRun closed after it.
 * No body facts: like a format 1 spool message, delivery scans the body before deciding.
 */
export async function deliverOnce(
  p: ScriptedPeer,
  recipients: string[],
  given?: DestinationRun,
  body: () => Readable = textBody('Subject: t\r\n\r\nbody\r\n'),
  size = 30,
): Promise<RecipientOutcome[]> {
  const run = given ?? new DestinationRun(peerDeps(p.port), '[127.0.0.1]');
  const rcpts = recipients.map((r) => `${r}@[127.0.0.1]`);
  const id = `m${n++}`;
  try {
    return await run.deliver({
      id,
      size,
      recipients: rcpts,
      envelope: {
        kind: 'normal',
        from: `${id}@sender.test`,
        recipients: rcpts,
        smtputf8: false,
        eightBit: false,
        client: { address: '127.0.0.1' },
        received: Date.now(),
      },
      body,
    });
  } finally {
    if (!given) await run.close();
  }
}

/** All transactions the peer saw. */
export const txs = (p: ScriptedPeer): PeerTransaction[] => p.connections.flatMap((c) => c.transactions);

/**
 * The invariant of issue 13, per call: one outcome per recipient; `sent` only for a recipient of a transaction the
 * peer holds as delivered (its RCPTs, not only `accepted`: a test peer may answer several commands in one reply).
 */
export function expectOneEach(out: RecipientOutcome[], recipients: string[], p: ScriptedPeer): void {
  expect(out.map((o) => o.address).sort()).toEqual(recipients.map((r) => `${r}@[127.0.0.1]`).sort());
  const delivered = new Set(txs(p).flatMap((t) => (t.delivered ? t.rcpts : [])));
  for (const o of out)
    if (o.result === 'sent') expect({ address: o.address, deliveredByPeer: delivered.has(o.address) }).toEqual({ address: o.address, deliveredByPeer: true });
}

/** A normalScript `answer`: these verbs get this reply (or action), the rest the normal one. */
export const answer =
  (over: Record<string, PeerAction | string>) =>
  (verb: string): PeerAction | undefined => {
    const a = over[verb];
    return a === undefined ? undefined : typeof a === 'string' ? { reply: a } : a;
  };

/** As `answer`, for the first transaction only: once `last` was answered, every verb gets the normal reply. */
export function firstTransaction(over: Record<string, PeerAction | string>, last: string): (verb: string) => PeerAction | undefined {
  let done = false;
  const a = answer(over);
  return (verb) => {
    if (done) return undefined;
    if (verb === last) done = true;
    return a(verb);
  };
}
