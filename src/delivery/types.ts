/**
 * The seam between routing (MX, DANE) and the SMTP client: a TLS requirement
 * for one connection, decided before connecting and enforced by the client
 * after the TLS handshake and before any envelope command (RFC 7672 §2.2, digest DANE-63).
 */
import type { PeerCertificate } from 'node:tls';

/**
 * - `none`: never STARTTLS (cleartext).
 * - `may`: STARTTLS if offered; on handshake failure retry in cleartext (DANE-44).
 * - `encrypt`: STARTTLS mandatory, peer not authenticated (DANE-42).
 * - `verify`: STARTTLS mandatory and `verify` must accept the peer's chain (DANE-41).
 */
export type TlsMode = 'none' | 'may' | 'encrypt' | 'verify';

/** What the TLS verifier sees: the chain as presented, leaf first, DER. */
export interface PresentedChain {
  certificates: Buffer[];
  protocol: string | null;
  cipher: string | null;
  /**
   * OpenSSL's chain validation against `TlsRequirement.webpkiRoots` (MTA-STS, RFC 8461 §4.2), names not
   * checked; set only when the requirement gave roots.
   */
  pkix?: { authorized: boolean; error?: string };
}

export interface VerifyOutcome {
  ok: boolean;
  /** short machine reason, e.g. "dane-no-match", "certificate-host-mismatch" */
  reason?: string;
  /** human text for logs and DSNs */
  detail: string;
  /** e.g. the TLSA record that matched, "3 1 1 ab12..." and its chain depth */
  matched?: string;
  depth?: number;
  /** index in the TLSA RRset given to the verifier of the record that authenticated the peer */
  matchedIndex?: number;
  /** that record's usage (2 DANE-TA, 3 DANE-EE) */
  matchedUsage?: number;
  /** per-record and per-certificate facts (rollover warnings, `dane-relay check`); absent when the chain was unreadable */
  facts?: DaneFacts;
}

/** What the verifier saw: which record matches which presented certificate, and the certificates' dates. */
export interface DaneFacts {
  records: { index: number; usage: number; selector: number; matchingType: number; usable: boolean; /** depth of the presented certificate it matches, null = none */ matchDepth: number | null; /** stable identity of the record ("u s m sha256(data)"), to recognise it across sessions */ id?: string }[];
  chain: { depth: number; subject: string; issuer: string; notBefore: string; notAfter: string; spkiSha256: string; ca: boolean }[];
}

export interface TlsRequirement {
  mode: TlsMode;
  /** SNI to send; undefined = none */
  servername?: string;
  /** required when mode === 'verify'; runs after the handshake, before EHLO */
  verify?: (chain: PresentedChain) => VerifyOutcome | Promise<VerifyOutcome>;
  /** label for logs: dane=verified|untrusted|cleartext|... */
  label?: string;
  /**
   * WebPKI trust anchors (PEM): the handshake validates the chain against them and reports the result in
   * `PresentedChain.pkix` for `verify` to judge. Unset (DANE): an empty store, so the presented chain is
   * exactly what the peer sent (DANE-53).
   */
  webpkiRoots?: readonly (string | Buffer)[];
  /** sees the presented chain after every handshake, in any mode (diagnostics: `dane-relay check`); decides nothing */
  observe?: (chain: PresentedChain) => void;
}

/** Where to connect. */
export interface Target {
  /** MX host name as returned (for logs and TLSRPT receiving-mx-hostname) */
  host: string;
  address: string;
  port: number;
}

export type TlsPeerCert = PeerCertificate;
