/**
 * `dane-relay mta-sts show|refresh|purge DOMAIN` (issue 15): the durable policy cache (the files under queue_dir,
 * or the queue database's rows with spool.backend postgres), inspected and changed by hand. It works beside a running relay: the relay stats a domain's file at every lookup,
 * so a refresh or purge here counts from its next delivery to that domain.
 * Exit codes: 0 done, 1 nothing cached (`show`) or the fetch failed (`refresh`), 2 usage.
 */
import { domainToASCII } from 'node:url';
import { loadConfig } from '../config/load.js';
import { resolverFor } from '../config/resolver.js';
import { dropForCli } from '../files/privileges.js';
import { printableJson } from '../text/printable.js';
import { stsPoliciesFor, stsStoreFor } from '../mtasts/settings.js';
import { fileNameOf, type CachedPolicy, type StsPolicyStore } from '../mtasts/store.js';
import { openPool } from '../spool/postgres/connect.js';
import { flag, stringOpt, UsageError, type ParsedArgs } from './args.js';

const iso = (ms: number) => new Date(ms).toISOString();

/** The human form of one cached policy. */
export function describePolicy(e: CachedPolicy, now: number): string {
  const lines = [
    `${e.domain}: MTA-STS policy${e.id ? ` id ${e.id}` : ' (fetched without a TXT record)'}`,
    `  mode ${e.policy.mode}, max_age ${e.policy.maxAge}`,
    ...e.policy.mx.map((m) => `  mx ${m}`),
    `  fetched ${iso(e.fetchedAt)}, ${e.expiresAt > now ? 'expires' : 'EXPIRED'} ${iso(e.expiresAt)}, last used ${iso(e.lastUsed)}`,
  ];
  if (e.refreshFailure)
    lines.push(
      `  last refresh FAILED ${iso(e.refreshFailure.at)}: ${e.refreshFailure.resultType}: ${e.refreshFailure.reason} (the policy above stays in force until it expires)`,
    );
  return `${lines.join('\n')}\n`;
}

export async function mtastsCli(sub: 'show' | 'refresh' | 'purge', p: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const raw = p.operands[0]!;
  const domain = domainToASCII(raw.replace(/\.$/, '')).toLowerCase();
  if (!domain || !fileNameOf(domain)) throw new UsageError(`not a domain name: ${raw}`);
  const json = flag(p, 'json');
  const config = loadConfig(stringOpt(p, 'config') ?? 'config.example.yml');
  dropForCli(config); // root with `user:`: the cache files stay the relay's
  // spool.backend postgres: the cluster's cache in the queue database (every node sees a refresh or purge at its next lookup)
  const pool = config.spool.backend === 'postgres' ? openPool({ ...config.spool.postgres!, pool: 1 }, { application: 'dane-relay cli' }) : undefined;
  try {
    return await mtastsOn(sub, domain, json, config, stsStoreFor(config, pool), out, err);
  } finally {
    await pool?.end().catch(() => undefined);
  }
}

async function mtastsOn(
  sub: 'show' | 'refresh' | 'purge',
  domain: string,
  json: boolean,
  config: ReturnType<typeof loadConfig>,
  store: StsPolicyStore,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<number> {
  if (sub === 'show') {
    const r = await store.read(domain);
    if (!r) {
      if (json) out.write('null\n');
      else out.write(`${domain}: no cached MTA-STS policy\n`);
      return 1;
    }
    out.write(json ? `${printableJson(r.entry, 2)}\n` : describePolicy(r.entry, Date.now()));
    return 0;
  }
  if (sub === 'purge') {
    const gone = await store.remove(domain);
    out.write(gone ? `${domain}: cached MTA-STS policy removed\n` : `${domain}: nothing cached\n`);
    return 0;
  }
  const resolver = resolverFor(config);
  try {
    const warn = (o: object, m: string) => err.write(`${m} ${printableJson(o)}\n`);
    const policies = stsPoliciesFor(config, resolver, { info: () => undefined, warn }, undefined, undefined, store);
    const r = await policies.refresh(domain);
    if (json) out.write(`${printableJson(r, 2)}\n`);
    else if (r.ok) out.write(describePolicy(r.entry, Date.now()));
    else
      out.write(
        `${domain}: fetch failed: ${r.failure.resultType}: ${r.failure.reason}\n${r.kept ? `the cached policy stays in force:\n${describePolicy(r.kept, Date.now())}` : 'no cached policy: delivery goes on as without MTA-STS\n'}`,
      );
    return r.ok ? 0 : 1;
  } finally {
    await resolver.close();
  }
}
