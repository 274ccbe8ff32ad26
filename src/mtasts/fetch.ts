/**
 * MTA-STS policy fetch (RFC 8461 §3.2, §3.3, §7; digest STS-10…15):
 * `GET https://mta-sts.<Policy Domain>/.well-known/mta-sts.txt`, the host resolved through the relay's
 * Resolver (never getaddrinfo) and connected to by address, with `mta-sts.<D>` as SNI, Host header and
 * the DNS-ID the certificate must carry (SAN dNSName only, `*` only as the whole leftmost label).
 * TLS 1.2 or higher; no redirect is followed; only 200 with `text/plain` (parameters ignored) gives a
 * policy; the body stops at 64 KiB; one deadline bounds the whole fetch; HTTP caching headers are
 * ignored (only `max_age` counts). Never rejects: every failure is one of RFC 8460's result types.
 *
 * The policy host is not refused for a private address (unlike TLSRPT `rua` targets): the request is a
 * fixed GET that carries nothing of ours, and its answer is used only if the server proves it is
 * `mta-sts.<D>` under WebPKI.
 */
import https from 'node:https';
import { X509Certificate } from 'node:crypto';
import type { PeerCertificate } from 'node:tls';
import type { Resolver } from '../dns/types.js';
import { hostAddresses, pinnedLookup } from '../dns/addresses.js';
import { parsePolicy, type StsPolicy } from './policy.js';

/** RFC 8460 §4.3.2.2: why no policy came out of a fetch (STS-60). */
export type FetchFailureType = 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid';

export type FetchResult =
  | { ok: true; policy: StsPolicy; notes: string[] /** the body as fetched (UTF-8) */; body: string; address: string }
  | { ok: false; resultType: FetchFailureType; reason: string; address?: string };

export interface FetchOptions {
  resolver: Resolver;
  /** trust anchors (PEM) instead of the system store (`mta_sts.ca_file`) */
  ca?: string | Buffer;
  /** whole-fetch deadline (STS-15: 60 s) */
  timeoutMs?: number;
  /** body limit in bytes (STS-15: 64 KiB) */
  maxBytes?: number;
  /** the https port; 443 but for tests on loopback */
  port?: number;
}

export const FETCH_TIMEOUT_MS = 60_000;
export const MAX_POLICY_BYTES = 65_536;
export const WELL_KNOWN_PATH = '/.well-known/mta-sts.txt';

export function policyHost(policyDomain: string): string {
  return `mta-sts.${policyDomain}`;
}

/**
 * RFC 6125 as RFC 8461 §3.3/§4.2 ask (STS-11, STS-41): the DNS-ID must be in a SAN dNSName (the CN
 * never counts, even without SANs), a wildcard only as the whole leftmost label, matching one label.
 * Returns the reason when it does not match. (OpenSSL's X509_check_host with those flags.)
 */
export function webpkiNameProblem(host: string, certDer: Buffer): string | undefined {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certDer);
  } catch (e) {
    return `unreadable certificate: ${(e as Error).message}`;
  }
  const ok = cert.checkHost(host, { subject: 'never', wildcards: true, partialWildcards: false, multiLabelWildcards: false });
  if (ok !== undefined) return undefined;
  return `certificate not valid for ${host} (subjectAltName: ${cert.subjectAltName ?? 'none'})`;
}

/** Certificate verification failures node:tls reports by OpenSSL's names, plus our name check. */
const WEBPKI_CODES =
  /^(CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_(GET_ISSUER|VERIFY_LEAF|DECRYPT_CERT|DECODE_ISSUER)|INVALID_CA|PATH_LENGTH_EXCEEDED|INVALID_PURPOSE|HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME_INVALID)/;

/** STS-14: `text/plain`, any case, parameters (charset) ignored; a missing type is no policy. */
export function isTextPlain(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  return contentType.split(';')[0]!.trim().toLowerCase() === 'text/plain';
}

/** One fetch of `policyDomain`'s policy (STS-10…15). */
export async function fetchPolicy(policyDomain: string, opts: FetchOptions): Promise<FetchResult> {
  const host = policyHost(policyDomain);
  const deadline = Date.now() + (opts.timeoutMs ?? FETCH_TIMEOUT_MS);
  let found: Awaited<ReturnType<typeof hostAddresses>>;
  try {
    found = await hostAddresses(opts.resolver, host);
  } catch (e) {
    return { ok: false, resultType: 'sts-policy-fetch-error', reason: `${host}: ${(e as Error).message}` };
  }
  if (!found.ok) return { ok: false, resultType: 'sts-policy-fetch-error', reason: found.why };
  const targets = [...found.v4.map((a) => ({ address: a, family: 4 as const })), ...found.v6.map((a) => ({ address: a, family: 6 as const }))];
  let last: FetchResult | undefined;
  for (const t of targets) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const r = await getOnce(host, t, left, opts);
    // Another address is tried only when this one could not be reached; any answer (or a certificate) decides.
    if (r.ok || !r.unreachable) return r.result;
    last = r.result;
  }
  return last ?? { ok: false, resultType: 'sts-policy-fetch-error', reason: `${host}: timed out after ${opts.timeoutMs ?? FETCH_TIMEOUT_MS} ms` };
}

type Once = { ok: true; result: FetchResult } | { ok: false; unreachable: boolean; result: FetchResult };

function getOnce(host: string, t: { address: string; family: 4 | 6 }, timeoutMs: number, opts: FetchOptions): Promise<Once> {
  const maxBytes = opts.maxBytes ?? MAX_POLICY_BYTES;
  const where = `https://${host}${WELL_KNOWN_PATH} (${t.address})`;
  return new Promise((resolve) => {
    let done = false;
    let secured = false;
    const fail = (resultType: FetchFailureType, reason: string, unreachable = false) =>
      finish({ ok: false, unreachable, result: { ok: false, resultType, reason: `${where}: ${reason}`, address: t.address } });
    const finish = (r: Once) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(r);
    };
    const req = https.request(
      {
        host,
        port: opts.port ?? 443,
        path: WELL_KNOWN_PATH,
        method: 'GET',
        headers: { Accept: 'text/plain', 'User-Agent': 'dane-relay-mta-sts' },
        servername: host, // STS-11: SNI mta-sts.<D>
        minVersion: 'TLSv1.2', // STS-12
        ...(opts.ca ? { ca: opts.ca } : {}),
        rejectUnauthorized: true,
        checkServerIdentity: (name: string, cert: PeerCertificate) => {
          const why = webpkiNameProblem(name, cert.raw);
          if (!why) return undefined;
          return Object.assign(new Error(why), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
        },
        lookup: pinnedLookup(t.address, t.family),
        agent: false, // no pooled socket to an address another lookup gave
      },
      (res) => {
        const status = res.statusCode ?? 0;
        // STS-13: only 200 is a policy; a redirect is never followed.
        if (status !== 200) {
          fail(
            'sts-policy-fetch-error',
            `HTTP ${status}${status >= 300 && status < 400 && res.headers.location ? ` (redirect to ${JSON.stringify(res.headers.location)} not followed)` : ''}`,
          );
          return;
        }
        const type = res.headers['content-type'];
        if (!isTextPlain(type)) {
          fail('sts-policy-fetch-error', `Content-Type ${type === undefined ? 'missing' : JSON.stringify(type)}, not text/plain`);
          return;
        }
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxBytes) {
          fail('sts-policy-fetch-error', `body of ${declared} bytes is over ${maxBytes}`);
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > maxBytes) {
            fail('sts-policy-fetch-error', `body over ${maxBytes} bytes`);
            return;
          }
          chunks.push(c);
        });
        res.on('error', (e) => fail('sts-policy-fetch-error', e.message));
        res.on('end', () => {
          let body: string;
          try {
            body = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks));
          } catch {
            fail('sts-policy-invalid', 'body is not UTF-8');
            return;
          }
          const p = parsePolicy(body);
          if (!p.ok) {
            fail('sts-policy-invalid', p.why);
            return;
          }
          finish({ ok: true, result: { ok: true, policy: p.policy, notes: p.notes, body, address: t.address } });
        });
      },
    );
    req.on('socket', (s) =>
      s.once('secureConnect', () => {
        secured = true;
      }),
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code && WEBPKI_CODES.test(e.code)) fail('sts-webpki-invalid', `${e.code}: ${e.message}`);
      else fail('sts-policy-fetch-error', e.message, !secured && /^(ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|EADDRNOTAVAIL)$/.test(e.code ?? ''));
    });
    const timer = setTimeout(
      () => fail('sts-policy-fetch-error', `timed out after ${timeoutMs} ms${secured ? '' : ' (before TLS was established)'}`),
      timeoutMs,
    );
    req.end();
  });
}
