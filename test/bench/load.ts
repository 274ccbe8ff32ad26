/**
 * The closed-loop submission load the end-to-end benchmarks share: `clients` SMTP connections to
 * the relay, each sending the next message number until `total` are acknowledged.
 */
import { SmtpTestClient } from '../support/submit.js';
import type { Receiver } from '../support/receiver.js';

/** A bench message of about `size` octets (7-bit, short lines), numbered `i`. */
export function benchBody(size: number, i: number): Buffer {
  let s = `From: app@sender.test\r\nTo: user@dest.test\r\nSubject: bench ${i}\r\nMessage-ID: <${i}.${Date.now()}@sender.test>\r\n\r\n`;
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl\r\n';
  while (s.length + line.length <= size) s += line;
  s += 'z'.repeat(Math.max(0, size - s.length - 2)) + '\r\n';
  return Buffer.from(s);
}

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

/**
 * Two destinations delivered side by side by one relay: `total` copies of `payload` by `clients` connections,
 * alternating between `a` (even message numbers, recipient `rcpt(i, 'a')`) and `b` (odd). Both halves share the
 * machine's load, the spool and the scheduler, so the ratio of their rates is what the difference between the
 * two destinations costs, with the noise of a shared machine cancelled as far as it can be. Rates in msgs/s
 * from the first submission until each receiver has accepted its half.
 */
export async function sideBySideRates(
  port: number,
  a: Receiver,
  b: Receiver,
  o: { clients: number; total: number; payload: Buffer; rcpt: (i: number, side: 'a' | 'b') => string; timeoutMs: number },
): Promise<{ rateA: number; rateB: number }> {
  const half = o.total / 2;
  const done = { a: 0, b: 0 };
  const t0 = performance.now();
  const watch = setInterval(() => {
    if (!done.a && a.messages.length >= half) done.a = performance.now() - t0;
    if (!done.b && b.messages.length >= half) done.b = performance.now() - t0;
  }, 2);
  const conns = await connectClients(port, o.clients);
  await submitAll(conns, o.total, o.payload, (i) => o.rcpt(i, i % 2 ? 'b' : 'a'));
  const deadline = Date.now() + o.timeoutMs;
  while ((!done.a || !done.b) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  clearInterval(watch);
  await Promise.all(conns.map((c) => c.quit()));
  return { rateA: half / (done.a / 1000), rateB: half / (done.b / 1000) };
}
