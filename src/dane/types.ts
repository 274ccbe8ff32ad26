/**
 * What the DANE verifier (verify.ts) is given and what it answers: the chain a peer presented and the
 * outcome with its per-record facts. Delivery's TLS requirement carries a verify callback of this
 * shape, `dane-relay check` shows the facts and the rollover warnings (policy/rollover.ts) read them,
 * so the types live in the lowest of those layers, here.
 */
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
  records: {
    index: number;
    usage: number;
    selector: number;
    matchingType: number;
    usable: boolean /** depth of the presented certificate it matches, null = none */;
    matchDepth: number | null /** stable identity of the record ("u s m sha256(data)"), to recognise it across sessions */;
    id?: string;
  }[];
  chain: { depth: number; subject: string; issuer: string; notBefore: string; notAfter: string; spkiSha256: string; ca: boolean }[];
}
