/**
 * The explanation of a verdict, step by step like `delv +vtrace`: which
 * anchor was used, which DS matched which DNSKEY, which RRSIG validated which
 * RRset, which NSEC/NSEC3 proved an absence, and where the chain ended.
 */
export type TraceResult = 'secure' | 'insecure' | 'bogus' | 'indeterminate' | 'ok' | 'info';

export interface TraceStep {
  /** the name the step is about */
  name: string;
  /** e.g. "anchor", "DS", "DNSKEY", "RRSIG", "NSEC", "NSEC3", "query", "alias", "answer" */
  kind: string;
  result: TraceResult;
  detail: string;
}

export class Trace {
  readonly steps: TraceStep[] = [];
  constructor(private readonly enabled = true) {}

  add(kind: string, name: string, result: TraceResult, detail: string): void {
    if (this.enabled) this.steps.push({ kind, name, result, detail });
  }
}

export function formatTrace(steps: TraceStep[]): string {
  return steps.map((s) => `;; ${s.kind.padEnd(7)} ${s.name.padEnd(28)} ${s.result.padEnd(8)} ${s.detail}`).join('\n');
}
