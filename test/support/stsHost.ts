/**
 * An MTA-STS policy host for tests: real HTTPS on 127.0.0.1 (random port) with a certificate from the
 * test PKI, recording each request (Host header, SNI, path) and answering with whatever the test sets:
 * a policy, a status, a content type, a stall. `set()` changes the answer between fetches.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface PolicyAnswer {
  status?: number;
  /** default text/plain; null sends no Content-Type at all */
  contentType?: string | null;
  body?: string | Buffer;
  headers?: Record<string, string>;
  /** accept the request and never answer */
  stall?: boolean;
  /** send the headers and this many body bytes, then stall */
  stallAfterBytes?: number;
}

export interface PolicyHost {
  port: number;
  requests: { host?: string; servername?: string; path?: string }[];
  set(a: PolicyAnswer | ((req: IncomingMessage, res: ServerResponse) => void)): void;
  close(): Promise<void>;
}

export async function startPolicyHost(
  tls: { key: string; cert: string; minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2'; maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3'; ciphers?: string },
  answer: PolicyAnswer = {},
): Promise<PolicyHost> {
  let current: PolicyAnswer | ((req: IncomingMessage, res: ServerResponse) => void) = answer;
  const requests: PolicyHost['requests'] = [];
  const server = https.createServer(tls, (req, res) => {
    requests.push({ host: req.headers.host, servername: (req.socket as TLSSocket).servername || undefined, path: req.url });
    if (typeof current === 'function') {
      current(req, res);
      return;
    }
    const a = current;
    if (a.stall) return;
    const body = typeof a.body === 'string' ? Buffer.from(a.body) : (a.body ?? Buffer.alloc(0));
    const headers: Record<string, string> = { ...(a.contentType === null ? {} : { 'Content-Type': a.contentType ?? 'text/plain' }), ...a.headers };
    if (a.stallAfterBytes !== undefined) {
      res.writeHead(a.status ?? 200, headers);
      res.write(body.subarray(0, a.stallAfterBytes));
      return;
    }
    res.writeHead(a.status ?? 200, { ...headers, 'Content-Length': String(body.length) }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    set(a) {
      current = a;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * One policy host for several Policy Domains: the policy is chosen by the request's Host header
 * (`mta-sts.<domain>`), a domain `policyOf` does not know gets 404. For `PolicyHost.set`.
 */
export function policyByHost(policyOf: (domain: string) => string | undefined): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const d = String(req.headers.host)
      .replace(/^mta-sts\./, '')
      .replace(/:\d+$/, '');
    const body = policyOf(d);
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200, { 'Content-Type': 'text/plain' }).end(body);
  };
}
