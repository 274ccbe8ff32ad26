/**
 * The closed-loop submission load the end-to-end benchmarks share: `clients` SMTP connections to
 * the relay, each sending the next message number until `total` are acknowledged.
 */
import { SmtpTestClient } from '../support/submit.js';
import type { Receiver } from '../support/receiver.js';

export async function connectClients(port: number, clients: number): Promise<SmtpTestClient[]> {
  return Promise.all(
    Array.from({ length: clients }, async () => {
      const c = await SmtpTestClient.connect({ port, timeout: 30_000 });
      await c.ehlo('bench.client');
      return c;
    }),
  );
}

/** Submits messages 0…total-1 (recipient `rcpt(i)`, default user<i>@dest.test) over the open connections; throws on any refusal. */
export async function submitAll(
  conns: SmtpTestClient[],
  total: number,
  payload: Buffer | ((i: number) => Buffer),
  rcpt: (i: number) => string = (i) => `user${i}@dest.test`,
): Promise<void> {
  let next = 0;
  await Promise.all(
    conns.map(async (c) => {
      while (next < total) {
        const i = next++;
        await c.cmd('MAIL FROM:<app@sender.test>');
        await c.cmd(`RCPT TO:<${rcpt(i)}>`);
        const d = await c.cmd('DATA');
        if (d.code !== 354) throw new Error(`DATA: ${d.raw}`);
        c.write(typeof payload === 'function' ? payload(i) : payload);
        const end = await c.reply();
        if (end.code !== 250) throw new Error(`end of data: ${end.raw}`);
      }
    }),
  );
}

/**
 * The timed run the end-to-end benchmarks share: `clients` connections submit `total` copies of
 * `payload`; ms from the first submission until `rx` has accepted all of them (or `timeoutMs`).
 */
export async function timedDelivery(port: number, rx: Receiver, clients: number, total: number, payload: Buffer, timeoutMs: number): Promise<number> {
  const conns = await connectClients(port, clients);
  const t0 = performance.now();
  await submitAll(conns, total, payload);
  const deadline = Date.now() + timeoutMs;
  while (rx.messages.length < total && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const ms = performance.now() - t0;
  await Promise.all(conns.map((c) => c.quit()));
  return ms;
}
