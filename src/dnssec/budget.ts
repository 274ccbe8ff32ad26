/**
 * Work limits for one lookup. DNSSEC validation does expensive work (public
 * key operations, iterated hashes) whose amount is chosen by whoever writes
 * the zone; without limits one answer can pin a CPU for minutes (KeyTrap,
 * CVE-2023-50387; NSEC3 closest-encloser, CVE-2023-50868). When a limit is
 * hit the lookup ends `indeterminate` — an error, never "insecure", so an
 * attacker cannot buy a downgrade by sending more junk.
 */

/**
 * Public-key signature verifications per lookup, over the whole chain of
 * trust and every alias. An honest MX+TLSA chain below the root needs about
 * two per zone (DNSKEY, then DS or data), so 10 zones deep with aliases stays
 * well below; KeyTrap needs thousands.
 */
export const MAX_SIGNATURE_VERIFICATIONS = 64;
/**
 * DNSKEYs tried for one RRSIG (same algorithm and key tag). Key tags are a
 * 16-bit checksum, so honest collisions exist but are rare (RFC 4034 App. B);
 * more than a handful of colliding keys is the KeyTrap pattern.
 */
export const MAX_KEYS_PER_SIGNATURE = 4;
/** RRSIGs considered for one RRset: a rollover or multi-algorithm zone has 2–3. */
export const MAX_SIGNATURES_PER_RRSET = 8;
/**
 * NSEC3 hash computations (each of `iterations + 1` SHA-1 rounds) per lookup.
 * A closest-encloser proof hashes each ancestor of the name once; names are
 * hashed at most once per proof (memoised): the deepest legal name (127 labels)
 * needs 127 for its closest encloser plus one for the wildcard, so 160 leaves
 * room for a second, shallower proof in the same lookup.
 */
export const MAX_NSEC3_HASHES = 160;
/**
 * RFC 9276 §3.2: validators may treat NSEC3 with more iterations as insecure.
 * Unbound 1.17's `val-nsec3-keysize-iterations` default is "1024 150 2048 150
 * 4096 150" — 150 for every key size — and it answers such a zone insecure
 * WITHOUT checking the proof (so an on-path attacker can replay any signed
 * high-iteration NSEC3 of the zone as a "denial"). We check the proof in full
 * first (closest encloser, next closer, wildcard, signatures): a proof that
 * does not cover the name is bogus; one that does is insecure with the reason
 * `nsec3-iterations`, which DANE treats as a lookup failure (route/host.ts).
 */
export const MAX_NSEC3_ITERATIONS = 150;
/**
 * SHA-1 rounds (iterations + 1 per NSEC3 hash) per lookup: what MAX_NSEC3_HASHES
 * hashes at MAX_NSEC3_ITERATIONS cost. It bounds checking a proof over the
 * iteration limit (CVE-2023-50868): 200 iterations still allow 120 hashes, 2,500
 * (RFC 5155 §10.3's old maximum) 9 — a TLSA denial needs about 4 — and a
 * 65,535-iteration chain none: such a lookup is indeterminate.
 */
export const MAX_NSEC3_HASH_ROUNDS = MAX_NSEC3_HASHES * (MAX_NSEC3_ITERATIONS + 1);
/** Labels walked from a trust anchor down to a name (one DS question each). */
export const MAX_CHAIN_DEPTH = 32;
/** Upstream questions per lookup (chain of trust + aliases). */
export const MAX_QUERIES = 96;

/**
 * Validation yields to the event loop after this many expensive operations (signature verifications
 * or NSEC3 hashes) since the last yield, as Unbound suspends after 8 NSEC3 hashes or 8 signature checks:
 * the worst slice is then 8 × 151 SHA-1 rounds or 8 public-key operations (a few ms), not a whole proof,
 * so ingress and other deliveries keep running while an attacker's zone is being checked.
 */
export const YIELD_EVERY = 8;

/** Let I/O callbacks and timers run (setImmediate runs after the poll phase, unlike a microtask). */
const breathe = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class BudgetExceeded extends Error {
  constructor(what: string) {
    super(`work limit reached: ${what}`);
    this.name = 'BudgetExceeded';
  }
}

/** Counters for one lookup; `spend*` throws BudgetExceeded when a limit is passed. */
export class Budget {
  verifications = 0;
  nsec3Hashes = 0;
  nsec3Rounds = 0;
  queries = 0;
  /** times this lookup gave the event loop back (`pace`) */
  yields = 0;
  private sinceYield = 0;

  /**
   * Call before each expensive operation from async code: yields to the event loop once YIELD_EVERY
   * operations have run since the last yield. The operation is charged by its `spend*` call.
   */
  async pace(): Promise<void> {
    if (++this.sinceYield <= YIELD_EVERY) return;
    this.sinceYield = 1;
    this.yields++;
    await breathe();
  }

  spendVerification(): void {
    if (++this.verifications > MAX_SIGNATURE_VERIFICATIONS) throw new BudgetExceeded(`more than ${MAX_SIGNATURE_VERIFICATIONS} signature verifications`);
  }

  /** One NSEC3 hash of `iterations` extra iterations; charged before it is computed. */
  spendNsec3Hash(iterations = 0): void {
    if (++this.nsec3Hashes > MAX_NSEC3_HASHES) throw new BudgetExceeded(`more than ${MAX_NSEC3_HASHES} NSEC3 hashes`);
    this.nsec3Rounds += iterations + 1;
    if (this.nsec3Rounds > MAX_NSEC3_HASH_ROUNDS) {
      throw new BudgetExceeded(`more than ${MAX_NSEC3_HASH_ROUNDS} NSEC3 hash rounds (a chain of ${iterations} iterations)`);
    }
  }

  spendQuery(): void {
    if (++this.queries > MAX_QUERIES) throw new BudgetExceeded(`more than ${MAX_QUERIES} upstream queries`);
  }
}
