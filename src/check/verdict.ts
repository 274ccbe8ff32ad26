/**
 * What `dane-relay check` concludes for scripts (issue 21 item 10), pure: one verdict and one reason per
 * MX host, the mechanism that governs the destination (RFC 8461 §2: DANE where usable TLSA exist, else
 * an MTA-STS policy, else none), and one status with its exit code.
 *
 * Exit codes (README, `--help`): 0 ok — deliverable over authenticated TLS (DANE or MTA-STS enforce),
 * every MX host usable, no warning; 1 would defer or fail; 2 usage or configuration error (the command);
 * 3 deliverable without authentication (opportunistic TLS or cleartext), nothing else wrong;
 * 4 degraded — deliverable, but some MX host would be skipped or fail, or the owner has a warning.
 * A degraded destination is 4 whether or not its delivery is authenticated.
 */
import type { Advice } from './advice.js';
import type { HostReport, InspectReport } from './inspect.js';

export type HostVerdict = 'ok' | 'degraded' | 'failed' | 'skipped';
export type CheckStatus = 'ok' | 'unauthenticated' | 'degraded' | 'defer';
export type Mechanism = 'dane' | 'sts' | 'none' | 'mixed';

export const EXIT_CODE: Record<CheckStatus, number> = { ok: 0, defer: 1, unauthenticated: 3, degraded: 4 };

/** One host's verdict and its single reason (the first failure, else the note that makes it degraded). */
export function hostVerdict(h: HostReport): { verdict: HostVerdict; reason?: string } {
  if (h.skip) return { verdict: 'skipped', reason: h.skip.reason };
  const failed = h.connections.filter((c) => !c.ok);
  const opened = h.connections.some((c) => c.ok);
  if (!opened) {
    const f = failed[0];
    if (!f) return { verdict: 'failed', reason: h.addresses.length ? 'not connected' : 'no address' };
    return { verdict: 'failed', reason: `${f.address}: ${f.error ?? `failed at ${f.stage}`}` };
  }
  if (failed.length) {
    const f = failed[0]!;
    const after = h.connections.find((c) => c.ok);
    const how = after?.auditRetry
      ? 'delivered over TLS without authentication after it (audit-only)'
      : after?.cleartextRetry
        ? 'delivered in cleartext after it'
        : 'another address worked';
    return { verdict: 'degraded', reason: `${f.address}: ${f.error ?? `failed at ${f.stage}`}; ${how}` };
  }
  if (h.sts?.mismatch && h.mechanism === 'sts-testing') return { verdict: 'degraded', reason: `${h.sts.mismatch} (testing: delivered anyway, reported)` };
  return { verdict: 'ok' };
}

const ONE: Record<NonNullable<HostReport['mechanism']>, Exclude<Mechanism, 'mixed'>> = {
  dane: 'dane',
  'sts-enforce': 'sts',
  'sts-testing': 'sts',
  none: 'none',
};

/** Which mechanism governs the destination, and why (the host delivery would use, else every host's). */
export function mechanismOf(r: InspectReport): { kind: Mechanism; why: string } {
  const stsWhy = r.sts ? `MTA-STS: ${r.sts.gate.why}` : 'MTA-STS not inspected';
  const used = r.verdict.host ? r.hosts.find((h) => h.host === r.verdict.host) : undefined;
  const kinds = new Set((used ? [used] : r.hosts).map((h) => ONE[h.mechanism ?? 'none']));
  if (kinds.size === 0) return { kind: 'none', why: `no MX host to judge; ${stsWhy}` };
  if (kinds.size > 1) {
    const per = r.hosts.map((h) => `${h.host}: ${h.mechanism ?? 'none'}`).join(', ');
    return { kind: 'mixed', why: `per host (${per}): DANE where usable TLSA records exist, which an MTA-STS policy never overrides (RFC 8461 §2); ${stsWhy}` };
  }
  const kind = [...kinds][0]!;
  const subject = used ? used.host : 'every MX host';
  switch (kind) {
    case 'dane':
      return {
        kind,
        why: `${subject}: usable TLSA records (or a TLSA lookup that must succeed): DANE governs (RFC 7672); an MTA-STS policy never overrides it (RFC 8461 §2)`,
      };
    case 'sts':
      return { kind, why: `${subject}: no usable TLSA records; ${stsWhy}` };
    default:
      return { kind, why: `${subject}: no usable TLSA records (${r.policy.level}, ${r.policy.rule}); ${stsWhy}` };
  }
}

export interface Summary {
  status: CheckStatus;
  exitCode: number;
  mechanism: { kind: Mechanism; why: string };
  hosts: { host: string; verdict: HostVerdict; reason?: string; mechanism: NonNullable<HostReport['mechanism']> }[];
}

export function summarize(r: InspectReport, advice: readonly Advice[]): Summary {
  const hosts = r.hosts.map((h) => ({ host: h.host, ...hostVerdict(h), mechanism: h.mechanism ?? 'none' }));
  const notAllOk = hosts.some((h) => h.verdict !== 'ok') || !!r.budget;
  const warned = advice.some((a) => a.severity === 'warning');
  const status: CheckStatus =
    r.verdict.kind === 'defer' || r.verdict.kind === 'fail'
      ? 'defer'
      : notAllOk || warned
        ? 'degraded'
        : r.verdict.kind === 'dane' || r.verdict.kind === 'sts'
          ? 'ok'
          : 'unauthenticated';
  return { status, exitCode: EXIT_CODE[status], mechanism: mechanismOf(r), hosts };
}
