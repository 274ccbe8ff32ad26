/**
 * Per-MX DANE facts kept while delivering (which record matched, certificate expiry, whether a
 * record for the next key exists), so a rollover risk is warned about once per day per MX and
 * kind instead of on every session, and so the latest facts can be looked up.
 */
import type { DaneFacts } from '../dane/types.js';
import { assessRollover, authenticates, type RolloverFinding } from './rollover.js';

export interface MxFacts {
  domain: string;
  host: string;
  at: number;
  matchedIndex?: number;
  matchedUsage?: number;
  facts: DaneFacts;
  findings: RolloverFinding[];
  /** ids of records that authenticated this MX in some session (to tell a retired record from a next one) */
  matchedIds: string[];
}

const MAX_IDS = 32;

/** The identity of one warning (an MX, a risk, a record, an expiry): warned about once per repeat period. */
export function warningKey(domain: string, host: string, f: RolloverFinding): string {
  return `${domain}|${host}|${f.kind}|${f.record}|${f.expires}`;
}

/**
 * Rollover facts shared by a cluster's nodes (issue 16, spool.backend postgres: pgRollover.ts): a warning goes
 * out once per period for the whole cluster, and the record ids that authenticated an MX on any node are known
 * to every node. Without one, each node keeps its own (MxFactsStore alone).
 */
export interface RolloverLedger {
  /** true when no node has warned about `key` within `repeatMs` (this one now has) */
  claimWarning(key: string, repeatMs: number): Promise<boolean>;
  /** records this node's latest facts for an MX; returns the ids that have authenticated it on any node */
  share(f: MxFacts): Promise<string[]>;
}

export class MxFactsStore {
  private readonly byMx = new Map<string, MxFacts>();
  private readonly warned = new Map<string, number>();

  constructor(
    private readonly warnMs: number,
    /** how long a warning is not repeated (per MX, risk, record, expiry) */
    readonly repeatMs = 86_400_000,
    private readonly max = 10_000,
  ) {}

  /** Record a verified session's facts; returns the warnings that are new (or due again). */
  note(domain: string, host: string, v: { facts: DaneFacts; matchedIndex?: number; matchedUsage?: number }, now: number): RolloverFinding[] {
    const key = `${domain}|${host}`;
    const seen = new Set(this.byMx.get(key)?.matchedIds ?? []);
    // A record that authenticated this MX before and matches nothing now is the old key's, left behind.
    const retired = new Set(v.facts.records.filter((r) => r.id && r.matchDepth === null && seen.has(r.id)).map((r) => r.index));
    const findings = assessRollover(v.facts, now, this.warnMs, { retired });
    for (const r of v.facts.records)
      if (r.id && authenticates(r)) {
        seen.delete(r.id);
        seen.add(r.id);
      }
    const matchedIds = [...seen].slice(-MAX_IDS);
    if (!this.byMx.has(key) && this.byMx.size >= this.max) this.byMx.delete(this.byMx.keys().next().value!);
    this.byMx.set(key, { domain, host, at: now, matchedIndex: v.matchedIndex, matchedUsage: v.matchedUsage, facts: v.facts, findings, matchedIds });
    const due: RolloverFinding[] = [];
    for (const f of findings) {
      if (f.severity !== 'warning') continue;
      const k = warningKey(domain, host, f);
      const last = this.warned.get(k);
      if (last !== undefined && now - last < this.repeatMs) continue;
      if (this.warned.size >= this.max) this.warned.delete(this.warned.keys().next().value!);
      this.warned.set(k, now);
      due.push(f);
    }
    return due;
  }

  /** Ids other nodes have seen authenticate this MX (RolloverLedger.share): known here from the next session on. */
  merge(domain: string, host: string, ids: string[]): void {
    const m = this.byMx.get(`${domain}|${host}`);
    if (!m) return;
    const seen = new Set(m.matchedIds);
    const extra = ids.filter((i) => !seen.has(i));
    if (extra.length) m.matchedIds = [...extra, ...m.matchedIds].slice(-MAX_IDS);
  }

  get(domain: string, host: string): MxFacts | undefined {
    return this.byMx.get(`${domain}|${host}`);
  }
}
