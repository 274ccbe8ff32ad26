/**
 * `dane-relay dns lookup NAME TYPE [--config FILE] [--json]`: resolve with
 * the relay's own resolver settings and explain the verdict like
 * `delv +vtrace` — which DS matched which DNSKEY, which RRSIG validated,
 * which NSEC/NSEC3 proved an absence. Exit 0 for secure or insecure answers,
 * 1 for bogus/indeterminate, 2 for usage or configuration errors.
 */
import { loadConfig } from '../config/load.js';
import { resolverFor } from '../config/resolver.js';
import type { DnsAnswer, QueryType } from '../dns/types.js';
import { ValidatingResolver } from '../dnssec/resolver.js';
import { formatTrace, type TraceStep } from '../dnssec/trace.js';
import { printableJson } from '../text/printable.js';
import { configFileFor } from '../config/path.js';

const TYPES: QueryType[] = ['MX', 'A', 'AAAA', 'TLSA', 'TXT', 'CNAME'];

export interface DnsLookupArgs {
  name: string;
  type: string;
  configFile?: string;
  json: boolean;
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
}

export async function dnsLookupCommand(a: DnsLookupArgs): Promise<number> {
  const type = a.type.toUpperCase() as QueryType;
  if (!TYPES.includes(type)) {
    a.err.write(`dns lookup: TYPE must be one of ${TYPES.join(', ')}\n`);
    return 2;
  }
  const cfg = loadConfig(configFileFor(a.configFile, a.err));
  let answer: DnsAnswer;
  let trace: TraceStep[] = [];
  const r = resolverFor(cfg, { cache: false });
  try {
    if (r instanceof ValidatingResolver) {
      ({ answer, trace } = await r.lookupTrace(a.name, type));
    } else {
      answer = await r.lookup(a.name, type);
      trace = [
        {
          kind: 'trust-ad',
          name: answer.qname,
          result: answer.status,
          detail: `status from the AD bit of ${answer.server ?? cfg.resolvedResolvers.join(', ')} (dns.mode trust-ad)`,
        },
      ];
    }
  } finally {
    await r.close();
  }
  if (a.json) {
    a.out.write(`${printableJson({ mode: cfg.dns.mode, answer: jsonAnswer(answer), trace }, 2)}\n`);
  } else {
    a.out.write(`${formatTrace(trace)}\n`);
    a.out.write(
      `; ${answer.qname} ${answer.qtype}: ${answer.status}${answer.insecureReason ? ` (${answer.insecureReason})` : ''}${answer.error ? ` (${answer.error.kind}: ${answer.error.message})` : ''}, rcode ${answer.rcode || '-'}, first response ${answer.firstStatus}\n`,
    );
    for (const h of answer.chain) a.out.write(`; alias ${h.owner} -> ${h.target} (${h.status})\n`);
    // Space-separated (zone file syntax allows it): the terminal sink escapes every control character, tab included.
    for (const rec of answer.records) a.out.write(`${answer.canonicalName} ${answer.ttl} IN ${answer.qtype} ${showRecord(rec)}\n`);
  }
  return answer.error ? 1 : 0;
}

function showRecord(r: unknown): string {
  if (typeof r === 'string') return r;
  const o = r as Record<string, unknown>;
  if ('exchange' in o) return `${o.preference} ${o.exchange}.`;
  if ('usage' in o) return `${o.usage} ${o.selector} ${o.matchingType} ${(o.data as Buffer).toString('hex')}`;
  return JSON.stringify(r);
}

function jsonAnswer(a: DnsAnswer): unknown {
  return { ...a, records: a.records.map((r) => (r && typeof r === 'object' && 'data' in r ? { ...r, data: (r.data as Buffer).toString('hex') } : r)) };
}
