/**
 * The metrics listener: GET /metrics (Prometheus text format), /healthz (liveness: answers
 * while the event loop runs), /readyz (200 only when readiness.ts says so, else 503 with
 * the reasons). Loopback only unless `metrics.allow_remote: true`: the series name
 * destinations and the queue's state, which is nobody else's business.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Readiness } from './readiness.js';
import { printable } from '../text/printable.js';

export class MetricsServer {
  private constructor(private readonly server: Server) {}

  /** `listen`: the endpoint the configuration allows (`metricsEndpoint` in config/schema.ts: loopback unless allow_remote). */
  static async start(opts: { listen: { host: string; port: number }; registry: Registry; readiness: Readiness; log: Logger }): Promise<MetricsServer> {
    const hp = opts.listen;
    const server = createServer((req, res) => {
      void handle(req, res, opts).catch((e) => {
        opts.log.error({ err: e }, 'metrics request failed');
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    server.keepAliveTimeout = 5000;
    server.headersTimeout = 10_000;
    server.requestTimeout = 10_000;
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(hp.port, hp.host, () => {
        server.off('error', rej);
        res();
      });
    });
    const s = new MetricsServer(server);
    opts.log.info({ metrics_listen: `${hp.host.includes(':') ? `[${s.address.address}]` : s.address.address}:${s.address.port}` }, 'metrics listening');
    return s;
  }

  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    await new Promise<void>((res) => {
      this.server.close(() => res());
      this.server.closeAllConnections();
    });
  }
}

async function handle(req: IncomingMessage, res: ServerResponse, opts: { registry: Registry; readiness: Readiness }): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    return;
  }
  if (path === '/metrics') {
    const body = await opts.registry.metrics();
    res.writeHead(200, { 'content-type': opts.registry.contentType }).end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  if (path === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    return;
  }
  if (path === '/readyz') {
    const r = await opts.readiness.check();
    // Details carry error texts (DNS, file system): printable, as every operator-facing sink.
    const body = r.checks.map((c) => `${c.name}: ${c.ok ? 'ok' : 'FAIL'}: ${printable(c.detail)}`).join('\n') + '\n';
    res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(`${r.ready ? 'ready' : 'not ready'}\n${body}`);
    return;
  }
  res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz\n');
}
