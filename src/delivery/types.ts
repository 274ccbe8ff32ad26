/**
 * The seam between routing (MX, DANE) and the SMTP client: a TLS requirement
 * for one connection, decided before connecting and enforced by the client
 * after the TLS handshake and before any envelope command (RFC 7672 §2.2, digest DANE-63).
 */
import type { PresentedChain, VerifyOutcome } from '../dane/types.js';

/**
 * - `none`: never STARTTLS (cleartext).
 * - `may`: STARTTLS if offered; on handshake failure retry in cleartext (DANE-44).
 * - `encrypt`: STARTTLS mandatory, peer not authenticated (DANE-42).
 * - `verify`: STARTTLS mandatory and `verify` must accept the peer's chain (DANE-41).
 */
export type TlsMode = 'none' | 'may' | 'encrypt' | 'verify';

/**
 * RFC 8689 §4.2.1 steps 2 and 4 (RT-21, RT-22): what a verified session proves about the route, so that a
 * REQUIRETLS message may use it. `dnssec-dane`: DANE after a DNSSEC-secure MX RRset; `sts-enforce`: the MX
 * host matched an MTA-STS `enforce` policy and its certificate is WebPKI-valid for the MX name. Nothing
 * else qualifies (DANE after an insecure MX with trust-insecure-mx, audit retries, `encrypt`, `may`).
 */
export type AuthenticatedRoute = 'dnssec-dane' | 'sts-enforce';

export interface TlsRequirement {
  mode: TlsMode;
  /** SNI to send; undefined = none */
  servername?: string;
  /** required when mode === 'verify'; runs after the handshake, before EHLO */
  verify?: (chain: PresentedChain) => VerifyOutcome | Promise<VerifyOutcome>;
  /** label for logs: dane=verified|untrusted|cleartext|... */
  label?: string;
  /** mode `verify` only: the route a successful verification authenticates for REQUIRETLS (unset: none) */
  authenticatedRoute?: AuthenticatedRoute;
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
