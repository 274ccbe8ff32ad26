/**
 * The WebPKI check of an MX under an MTA-STS policy (RFC 8461 §4.2, digest STS-41): the chain
 * validated by OpenSSL against the configured roots during the handshake (`PresentedChain.pkix`),
 * then the MX host name (from DNS, never a policy pattern) as a SAN DNS-ID (RFC 6125, `webpkiNameProblem`).
 */
import type { PresentedChain, VerifyOutcome } from '../dane/types.js';
import { webpkiNameProblem } from './fetch.js';

export function webpkiVerdict(chain: PresentedChain, mxHost: string): VerifyOutcome {
  const leaf = chain.certificates[0];
  if (!leaf) return { ok: false, reason: 'no-certificate', detail: 'peer presented no certificate' };
  if (!chain.pkix?.authorized) {
    const error = chain.pkix?.error ?? 'not validated';
    // RFC 8460 §4.3.1 result types for the TLSRPT seam
    const reason = /EXPIRED|NOT_YET_VALID/.test(error) ? 'certificate-expired' : 'certificate-not-trusted';
    return { ok: false, reason, detail: `WebPKI: ${error}` };
  }
  const why = webpkiNameProblem(mxHost, leaf);
  if (why) return { ok: false, reason: 'certificate-host-mismatch', detail: `WebPKI: ${why}` };
  return { ok: true, detail: `WebPKI: chain valid, certificate valid for ${mxHost}` };
}
