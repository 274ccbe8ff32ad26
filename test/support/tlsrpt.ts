/**
 * Receivers for TLSRPT reports, as a report consumer would run them (RFC 8460 §3, §5.3–5.4, digest TLSRPT-50):
 * - `readMailedReport`: DKIM-verifies a received message with mailauth (an independent verifier) whose
 *   key lookups go as real DNS messages to the test DNS server, parses the multipart/report and gunzips
 *   the JSON (bounded size);
 * - `startHttpsEndpoint`: an HTTPS server on loopback (real TLS, test PKI) answering 201, 500 or never.
 */
import https from 'node:https';
import { Resolver as NodeResolver } from 'node:dns/promises';
import { gunzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { dkimVerify } from 'mailauth/lib/dkim/verify.js';
import type { TestDns } from './dnsServer.js';
import { makeCa, makeLeaf, chainPem, type Issued } from './pki.js';

/** Publishes a DKIM TXT record (split into ≤250-byte strings, as a zone file would). */
export function publishDkim(dns: TestDns, name: string, txt: string): void {
  dns.add({ name, type: 'TXT', data: txt.match(/.{1,250}/g)! });
}

export interface MailedReport {
  parsed: ParsedMail;
  dkim: Awaited<ReturnType<typeof dkimVerify>>;
  signatureHeader: string;
  json: unknown;
  gz: Buffer;
  filename: string;
  contentType: string;
}

export async function readMailedReport(raw: Buffer, dns: TestDns): Promise<MailedReport> {
  const r = new NodeResolver({ timeout: 1000, tries: 1 });
  r.setServers([dns.server]);
  const dkim = await dkimVerify(raw, { resolver: (name: string, rr: string) => r.resolve(name, rr as 'TXT') as Promise<never> });
  const parsed = await simpleParser(raw);
  const att = parsed.attachments[0];
  if (!att) throw new Error('no report attachment');
  if (att.size > 10 * 1024 * 1024) throw new Error('report larger than 10 MB'); // TLSRPT-50: untrusted input
  const json = JSON.parse(gunzipSync(att.content, { maxOutputLength: 10 * 1024 * 1024 }).toString('utf8'));
  const head = raw.subarray(0, raw.indexOf('\r\n\r\n')).toString('latin1');
  const signatureHeader = /^DKIM-Signature:(.*(?:\r\n[ \t].*)*)/im.exec(head)?.[1]?.replace(/\r\n[ \t]+/g, ' ') ?? '';
  return { parsed, dkim, signatureHeader, json, gz: att.content, filename: att.filename ?? '', contentType: att.contentType };
}

export type EndpointMode = 201 | 200 | 500 | 'stall';

export interface HttpsEndpoint {
  url: (path?: string) => string;
  ca: string;
  mode: EndpointMode;
  requests: { path: string; contentType?: string; body: Buffer; at: number }[];
  close(): Promise<void>;
}

let pki: Promise<{ ca: Issued; leaf: Issued }> | undefined;

export async function startHttpsEndpoint(mode: EndpointMode = 201): Promise<HttpsEndpoint> {
  pki ??= (async () => {
    const ca = await makeCa({ cn: 'TLSRPT test CA' });
    return { ca, leaf: await makeLeaf(ca, { dnsNames: ['localhost'], cn: 'localhost' }) };
  })();
  const { ca, leaf } = await pki;
  const stalled = new Set<import('node:http').ServerResponse>();
  const ep: HttpsEndpoint = {
    url: (path = '/tlsrpt') => `https://localhost:${(server.address() as AddressInfo).port}${path}`,
    ca: ca.certPem,
    mode,
    requests: [],
    close: async () => {
      for (const s of stalled) s.destroy();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server = https.createServer({ key: leaf.keyPem, cert: chainPem(leaf) }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      ep.requests.push({ path: req.url ?? '', contentType: req.headers['content-type'], body: Buffer.concat(chunks), at: Date.now() });
      if (ep.mode === 'stall') {
        stalled.add(res);
        return;
      }
      res.writeHead(ep.mode).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return ep;
}
