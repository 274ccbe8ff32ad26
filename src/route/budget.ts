/**
 * The work one destination plan may cost (issue 22). Each lookup already has its own budget
 * (dnssec/budget.ts: signature verifications, NSEC3 hashes, upstream queries); without a budget
 * per plan, one message to a domain with many MX hosts — each a long nonexistent name in its own
 * high-iteration NSEC3 zone — costs as many lookups' worth of CPU as the attacker lists hosts.
 * Postfix and Exim bound the hosts (`smtp_mx_address_limit`, `hosts_max_try`; here
 * `delivery.mx_host_limit`); this bounds the work too, whatever the host count.
 *
 * `PlanBudget` wraps the relay's resolver for one plan (the MX lookup and the hosts planned for one
 * message): it adds up the validation work each answer reports (`DnsAnswer.work`; a cached answer
 * costs nothing) and, once a limit is passed, answers every further lookup with an indeterminate
 * failure without asking — a lookup error, which skips the host and defers the message (4.4.3),
 * never a downgrade. A lookup that was already running finishes (each is bounded by its own
 * budget), so one plan costs at most these limits plus one lookup's.
 */
import { failedAnswer, type DnsAnswer, type LookupWork, type QueryType, type Resolver } from '../dns/types.js';
import { MAX_NSEC3_HASH_ROUNDS, MAX_SIGNATURE_VERIFICATIONS } from '../dnssec/budget.js';

/**
 * Signature verifications per plan: four lookups' limit. An honest DANE destination with five MX
 * hosts needs about 2 per zone cut and RRset not yet cached — a few dozen on a cold cache.
 */
export const PLAN_MAX_VERIFICATIONS = 4 * MAX_SIGNATURE_VERIFICATIONS;
/**
 * NSEC3 SHA-1 rounds per plan: two lookups' limit (2 × 160 hashes × 151 rounds). An honest denial
 * needs a handful of hashes; a plan that spends this much is walking an attacker's chains.
 */
export const PLAN_MAX_NSEC3_ROUNDS = 2 * MAX_NSEC3_HASH_ROUNDS;

export class PlanBudget implements Resolver {
  readonly spent: LookupWork = { verifications: 0, nsec3Hashes: 0, nsec3Rounds: 0, queries: 0, yields: 0 };
  /** lookups passed to the resolver (not counting those refused once the budget was spent) */
  lookups = 0;
  /** why further lookups are refused, once a limit is passed */
  exhausted?: string;

  constructor(
    private readonly inner: Resolver,
    readonly domain: string,
  ) {}

  async lookup<T extends QueryType>(name: string, type: T): Promise<DnsAnswer<T>> {
    if (this.exhausted) return failedAnswer(name, type, 'indeterminate', { kind: 'budget', message: this.exhausted });
    this.lookups++;
    const a = await this.inner.lookup(name, type);
    if (a.work) this.charge(a.work);
    return a;
  }

  /** The plan's cost so far, for logs and `check`. */
  describe(): string {
    const s = this.spent;
    return `${s.verifications} signature verifications, ${s.nsec3Hashes} NSEC3 hashes (${s.nsec3Rounds} SHA-1 rounds), ${s.queries} upstream queries in ${this.lookups} lookups`;
  }

  /** The wrapped resolver is the relay's: not closed here. */
  async close(): Promise<void> {}

  private charge(w: LookupWork): void {
    const s = this.spent;
    s.verifications += w.verifications;
    s.nsec3Hashes += w.nsec3Hashes;
    s.nsec3Rounds += w.nsec3Rounds;
    s.queries += w.queries;
    s.yields += w.yields;
    if (this.exhausted) return;
    if (s.verifications > PLAN_MAX_VERIFICATIONS) this.exhausted = `more than ${PLAN_MAX_VERIFICATIONS} signature verifications`;
    else if (s.nsec3Rounds > PLAN_MAX_NSEC3_ROUNDS) this.exhausted = `more than ${PLAN_MAX_NSEC3_ROUNDS} NSEC3 hash rounds`;
    if (this.exhausted) this.exhausted = `DNSSEC work budget for ${this.domain} spent (${this.exhausted}: ${this.describe()})`;
  }
}
