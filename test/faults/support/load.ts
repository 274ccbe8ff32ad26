/**
 * Closed-loop submission load for the crash and full-disk cases: `clients` persistent SMTP
 * connections, each sending its messages one by one (MAIL/RCPT/DATA pipelined, RFC 2920) and
 * counting a message as acknowledged only on the 250 after its final dot. A connection that
 * breaks (the relay was killed) or a transient refusal (4xx: full disk) is retried until the
 * message is acknowledged: the submitter never gives a message up, as a real MTA would not.
 */
import { SmtpTestClient } from '../../support/submit.js';
import { sleep } from '../../support/relayProcess.js';

export interface LoadResult {
  /** ids answered 250 */
  acked: Set<string>;
  /** per id, how many times it was sent (> 1: retried after a broken connection or a 4xx) */
  attempts: Map<string, number>;
  /** replies seen other than 250 to the dot, by code (e.g. 452 on a full disk) */
  refusals: Map<number, number>;
  /** enhanced codes of 452 replies */
  enhanced: Set<string>;
  reconnects: number;
}

export interface LoadOptions {
  port: number;
  clients: number;
  /** message ids to send; recipient and body are derived from the id */
  ids: string[];
  recipient: (id: string) => string;
  body: (id: string) => Buffer | string;
  /** called whenever a message is acknowledged */
  onAck?: (id: string) => void;
  /** called for every refusal (code, enhanced code) */
  onRefusal?: (code: number, enhanced: string | undefined) => void;
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const res: LoadResult = { acked: new Set(), attempts: new Map(), refusals: new Map(), enhanced: new Set(), reconnects: 0 };
  let next = 0;
  const client = async (): Promise<void> => {
    let c: SmtpTestClient | undefined;
    for (;;) {
      const n = next++;
      if (n >= o.ids.length) break;
      const id = o.ids[n]!;
      const payload = SmtpTestClient.dataPayload(o.body(id));
      for (;;) {
        try {
          if (!c) {
            res.reconnects++;
            c = await SmtpTestClient.connect({ port: o.port, timeout: 10_000 });
            if (c.greeting?.code !== 220) throw new Error(`greeting ${c.greeting?.code}`);
            await c.cmd('EHLO load.test');
          }
          res.attempts.set(id, (res.attempts.get(id) ?? 0) + 1);
          c.write(`MAIL FROM:<app@sender.test>\r\nRCPT TO:<${o.recipient(id)}>\r\nDATA\r\n`);
          const [mail, rcpt, data] = await c.replies(3);
          if (mail!.code !== 250 || rcpt!.code !== 250 || data!.code !== 354) {
            const bad = [mail!, rcpt!, data!].find((r) => r.code !== 250 && r.code !== 354)!;
            res.refusals.set(bad.code, (res.refusals.get(bad.code) ?? 0) + 1);
            o.onRefusal?.(bad.code, bad.enhanced);
            if (data!.code === 354) {
              c.write('.\r\n');
              await c.reply();
            }
            await c.cmd('RSET');
            await sleep(20);
            continue;
          }
          c.write(payload);
          const end = await c.reply();
          if (end.code === 250) {
            res.acked.add(id);
            o.onAck?.(id);
            break;
          }
          res.refusals.set(end.code, (res.refusals.get(end.code) ?? 0) + 1);
          if (end.enhanced) res.enhanced.add(`${end.code} ${end.enhanced}`);
          o.onRefusal?.(end.code, end.enhanced);
          await sleep(20); // 4xx: try again (RFC 5321 §4.2.5: a transient condition)
        } catch {
          // connection refused, reset, or closed mid-transaction: not acknowledged, send again
          c?.destroy();
          c = undefined;
          await sleep(30);
        }
      }
    }
    c?.destroy();
  };
  await Promise.all(Array.from({ length: o.clients }, client));
  return res;
}
