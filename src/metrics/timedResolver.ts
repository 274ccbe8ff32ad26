/**
 * A Resolver decorator that reports every lookup's result and latency (`RelayEvents.dnsLookup`),
 * whatever resolver the relay uses underneath. It changes no answer.
 */
import type { DnsAnswer, QueryType, Resolver } from '../dns/types.js';
import type { RelayEvents } from './events.js';

/** The status label: the DNSSEC status of an answer, or the kind of error when there is none (RFC 4035 §4.3). */
export function lookupStatus(a: DnsAnswer): string {
  if (a.error) return a.error.kind === 'bogus' || a.error.kind === 'indeterminate' ? a.error.kind : `error-${a.error.kind}`;
  return a.rcode === 'NXDOMAIN' ? `${a.status}-nxdomain` : a.status;
}

export class TimedResolver implements Resolver {
  constructor(
    private readonly inner: Resolver,
    private readonly events: RelayEvents,
  ) {}

  async lookup<T extends QueryType>(name: string, type: T): Promise<DnsAnswer<T>> {
    const t0 = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - t0) / 1e9;
    let a: DnsAnswer<T>;
    try {
      a = await this.inner.lookup(name, type);
    } catch (e) {
      this.report(type, 'error-exception', seconds());
      throw e;
    }
    this.report(type, lookupStatus(a), seconds());
    return a;
  }

  private report(type: string, status: string, seconds: number): void {
    try {
      this.events.dnsLookup?.({ type, status, seconds });
    } catch {
      // metrics must never change a lookup's outcome
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
