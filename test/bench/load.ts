/**
 * The closed-loop submission load the end-to-end benchmarks share: `clients` SMTP connections to
 * the relay, each sending the next message number until `total` are acknowledged.
 */
import { SmtpTestClient } from '../support/submit.js';

export async function connectClients(port: number, clients: number): Promise<SmtpTestClient[]> {
  return Promise.all(Array.from({ length: clients }, async () => {
    const c = await SmtpTestClient.connect({ port, timeout: 30_000 });
    await c.ehlo('bench.client');
    return c;
  }));
}

/** Submits messages 0…total-1 (recipient user<i>@dest.test) over the open connections; throws on any refusal. */
export async function submitAll(conns: SmtpTestClient[], total: number, payload: Buffer): Promise<void> {
  let next = 0;
  await Promise.all(conns.map(async (c) => {
    while (next < total) {
      const i = next++;
      await c.cmd('MAIL FROM:<app@sender.test>');
      await c.cmd(`RCPT TO:<user${i}@dest.test>`);
      const d = await c.cmd('DATA');
      if (d.code !== 354) throw new Error(`DATA: ${d.raw}`);
      c.write(payload);
      const end = await c.reply();
      if (end.code !== 250) throw new Error(`end of data: ${end.raw}`);
    }
  }));
}
