/**
 * An Ingress on loopback over a real spool, with its log lines, queued messages and a clock the
 * test moves: the harness of the ingress protocol and limit tests. `closeIngresses()` in afterEach.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../../src/config/schema.js';
import { Ingress, type IngressOptions } from '../../src/ingress/server.js';
import { Spool } from '../../src/spool/spool.js';
import type { QueuedMessage } from '../../src/spool/types.js';
import { SmtpTestClient } from './submit.js';

export interface IngressHarness {
  ingress: Ingress;
  spool: Spool;
  /** the first listener's port */
  port: number;
  queued: QueuedMessage[];
  logs: Record<string, unknown>[];
  clock: { t: number };
  connect(): Promise<SmtpTestClient>;
}

const open: IngressHarness[] = [];
let seq = 0;

/** Listens on 127.0.0.1 (and whatever `patch.listen` says), spool in a new directory under `root`. */
export async function startIngress(root: string, patch: Partial<IngressOptions['config']> = {}): Promise<IngressHarness> {
  const dir = join(root, `spool-${++seq}`);
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  const spool = await Spool.open(dir, { log });
  await spool.recover();
  const queued: QueuedMessage[] = [];
  const clock = { t: Date.UTC(2026, 10, 24, 12, 0, 0) };
  const ingress = await Ingress.start({
    config: {
      ...configSchema.parse({}).ingress,
      listen: ['127.0.0.1:0'],
      relayClients: ['127.0.0.0/8', '::1/128'],
      hostname: 'relay.test',
      ...patch,
    },
    spool,
    log,
    now: () => clock.t,
    onQueued: (m) => queued.push(m),
  });
  const port = ingress.addresses[0]!.port;
  const h: IngressHarness = { ingress, spool, port, queued, logs, clock, connect: () => SmtpTestClient.connect({ port }) };
  open.push(h);
  return h;
}

/** Closes every harness started since the last call. */
export async function closeIngresses(): Promise<void> {
  while (open.length) {
    const h = open.pop()!;
    await h.ingress.close();
    await h.spool.close();
  }
}
