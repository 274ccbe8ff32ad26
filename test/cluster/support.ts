/**
 * Shared-queue cluster tests (issue 16): N relay processes (the built CLI) on one throwaway PostgreSQL,
 * in front of one receiver that records, per SMTP session, what arrived over it and whether the
 * session ended with QUIT (a session cut without QUIT is one whose relay was killed or stopped).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { SMTPServer } from 'smtp-server';
import { RelayProcess, freePort } from '../support/relayProcess.js';
import type { TestDns } from '../support/dnsServer.js';
import type { TestPostgres } from '../support/postgres.js';

export interface Delivery {
  /** X-Test-Id of the message */
  testId: string;
  /** the relay's queue id, from the Received field it added */
  queueId: string;
  /** smtp-server's session id */
  session: string;
  at: number;
}

export interface ClusterReceiver {
  host: string;
  port: number;
  deliveries: Delivery[];
  /** sessions that sent QUIT */
  quit: Set<string>;
  /** sessions whose connection has closed */
  closed: Set<string>;
  /**
   * Most sessions open at once. A session is open from its connection until its QUIT (or its close, if it
   * never says QUIT): the relay gives a session's slot back only after the 221 to its QUIT, so this count
   * cannot be raised by a close that the receiver notices late.
   */
  maxConcurrent: number;
  close(): Promise<void>;
}

export interface Reply {
  code: number;
  message: string;
}

/** `decide` answers the end of DATA (undefined = 250); it may wait. */
export async function startClusterReceiver(
  opts: { host?: string; decide?: (d: Delivery) => Promise<Reply | undefined> | Reply | undefined } = {},
): Promise<ClusterReceiver> {
  const host = opts.host ?? '127.0.0.1';
  const deliveries: Delivery[] = [];
  const quit = new Set<string>();
  const closed = new Set<string>();
  const open = new Set<string>();
  const r = { maxConcurrent: 0 };
  const never = (): void => undefined;
  const server = new SMTPServer({
    name: 'mx.cluster.test',
    disableReverseLookup: true,
    authOptional: true,
    disabledCommands: ['AUTH', 'STARTTLS'],
    hideSTARTTLS: true,
    hideENHANCEDSTATUSCODES: false,
    closeTimeout: 200,
    socketTimeout: 120_000,
    logger: {
      debug: (entry: { tnx?: string; cid?: string; command?: string } | undefined) => {
        if (entry?.tnx === 'command' && entry.command === 'QUIT' && entry.cid) {
          quit.add(entry.cid);
          open.delete(entry.cid);
        }
      },
      info: never,
      warn: never,
      error: never,
      trace: never,
      fatal: never,
    } as never,
    onConnect(s, cb) {
      open.add(s.id);
      r.maxConcurrent = Math.max(r.maxConcurrent, open.size);
      cb();
    },
    onClose(s) {
      open.delete(s.id);
      closed.add(s.id);
    },
    onData(stream, session, cb) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        const text = Buffer.concat(chunks).toString('latin1');
        const d: Delivery = {
          testId: /\r\nX-Test-Id: (\S+)\r\n/.exec(`\r\n${text}`)?.[1] ?? '?',
          queueId: / id ([0-9a-z]{16})/.exec(text)?.[1] ?? '?',
          session: session.id,
          at: Date.now(),
        };
        void Promise.resolve(opts.decide?.(d)).then((reply) => {
          if (reply && reply.code !== 250) return cb(Object.assign(new Error(reply.message), { responseCode: reply.code }));
          deliveries.push(d);
          cb(null, 'Ok');
        });
      });
    },
  });
  server.on('error', () => undefined); // a peer that was killed resets its connection: that is the point
  await new Promise<void>((res) => server.listen(0, host, res));
  const port = (server.server.address() as { port: number }).port;
  return Object.assign(r, {
    host,
    port,
    deliveries,
    quit,
    closed,
    get maxConcurrent() {
      return r.maxConcurrent;
    },
    close: () => new Promise<void>((res) => server.close(() => res())),
  });
}

/** Starts a node (RelayProcess.start: until it listens, or it exits). */
export function startNode(n: { relay: RelayProcess }): Promise<void> {
  return n.relay.start();
}

export interface Node {
  name: string;
  port: number;
  relay: RelayProcess;
  config: string;
  metricsPort?: number;
}

export interface ClusterOptions {
  pg: TestPostgres;
  dns: TestDns;
  rx: ClusterReceiver;
  nodes: number;
  lease?: string;
  minBackoff?: string;
  perDestination?: number;
  concurrency?: number;
  logLevel?: string;
  /** TLSRPT on (counts in the database); default off */
  tlsrpt?: boolean;
  /** a metrics listener per node (Node.metricsPort) */
  metrics?: boolean;
}

export interface Cluster {
  dir: string;
  nodes: Node[];
  remove(): void;
}

/** Writes one config per node (same database, own port and queue_dir for the control socket) and starts them. */
export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'dane-relay-cluster-'));
  const nodes: Node[] = [];
  const write = (name: string, port: number, metricsPort?: number) => {
    const f = join(dir, `${name}.yml`);
    writeFileSync(
      f,
      `listen: ["127.0.0.1:${port}"]\nhostname: relay.test\nqueue_dir: ${join(dir, name)}\n` +
        `spool:\n  backend: postgres\n  postgres:\n    url: "${o.pg.url}"\n    password_file: ${o.pg.passwordFile}\n    node: ${name}\n    lease: ${o.lease ?? '2s'}\n` +
        `dns:\n  mode: trust-ad\n  resolvers: ["${o.dns.server}"]\n  timeout: 1s\n  attempts: 1\n` +
        `delivery:\n  port: ${o.rx.port}\n  tls_level: may\n  concurrency: ${o.concurrency ?? 20}\n  per_destination: ${o.perDestination ?? 5}\n` +
        `queue:\n  min_backoff: ${o.minBackoff ?? '1s'}\n  max_backoff: ${o.minBackoff ?? '2s'}\n  run_interval: 200ms\n` +
        `tlsrpt:\n  enabled: ${o.tlsrpt ? 'true' : 'false'}\n` +
        (metricsPort ? `metrics:\n  listen: "127.0.0.1:${metricsPort}"\n` : '') +
        `log:\n  level: ${o.logLevel ?? 'warn'}\n`,
      { mode: 0o644 },
    );
    return f;
  };
  for (let i = 0; i < o.nodes; i++) {
    const name = `n${i}`;
    const port = await freePort();
    const metricsPort = o.metrics ? await freePort() : undefined;
    const config = write(name, port, metricsPort);
    nodes.push({ name, port, config, relay: new RelayProcess(config, port), ...(metricsPort ? { metricsPort } : {}) });
  }
  for (const n of nodes) await startNode(n);
  return { dir, nodes, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
