/**
 * `dane-relay check DOMAIN [--config FILE] [--json]` and `dane-relay tlsa --cert FILE [--host H] [--port N]`.
 *
 * check exit codes (check/verdict.ts, README): 0 ok (authenticated: DANE or MTA-STS, every MX host usable,
 * no warning); 1 would defer or fail; 2 usage or configuration error; 3 deliverable without authentication
 * (opportunistic TLS or cleartext); 4 degraded (deliverable, but an MX host would be skipped or fail, or a warning).
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { loadConfig, type LoadedConfig } from '../config/load.js';
import { trustAdProblem } from '../dns/trust.js';
import { resolverFor } from '../config/resolver.js';
import { policyStoreFor } from '../policy/config.js';
import { inspectDomain, type InspectDeps, type InspectReport } from '../check/inspect.js';
import { adviceFor, type Advice } from '../check/advice.js';
import { formatReport } from '../check/format.js';
import { summarize, type Summary } from '../check/verdict.js';
import type { StsInspectDeps } from '../check/sts.js';
import { certificatesFrom, formatSuggestions, suggestTlsa } from '../check/tlsaCert.js';
import { stsFetchFor, stsTrustAnchors } from '../mtasts/settings.js';
import type { Resolver } from '../dns/types.js';
import { normalizeDomain } from '../policy/tables.js';
import { addressLiteral } from '../route/mx.js';
import { printableJson } from '../text/printable.js';
import { flag, stringOpt, type ParsedArgs } from './args.js';
import { configFileFor } from '../config/path.js';

/** The first line of `check`'s report: the configuration file it judges by, which a running relay may not be using yet. */
export function configJudgedBy(file: string | undefined): string {
  return `config: ${file ?? '(built in)'} (this file as it is now; a running relay uses its changes after a SIGHUP reload, some only after a restart)`;
}

/** MTA-STS as the relay would apply it: `mta_sts.ca_file` (or the system store), the fetch settings, the cache under queue_dir. */
function stsDeps(config: LoadedConfig, resolver: Resolver): StsInspectDeps {
  const ca = stsTrustAnchors(config);
  return { enabled: config.mta_sts.enabled, queueDir: config.queue_dir, fetch: stsFetchFor(config, resolver, ca), roots: ca ? [ca] : tls.rootCertificates };
}

/**
 * The `--json` object (documented in README; `format` changes only when a field changes meaning): the
 * inspection (`domain`, `checkedAt`, `policy`, `mx`, `sts`, `hosts` — each with its `verdict` and `reason` —,
 * `budget`, `verdict`), then `mechanism`, `status`, `exitCode`, `advice`, and `withoutException`.
 */
export function checkJson(
  config: string | undefined,
  r: InspectReport,
  advice: Advice[],
  s: Summary,
  without?: { report: InspectReport; advice: Advice[]; summary: Summary },
): object {
  const withHosts = (x: InspectReport, y: Summary) => ({
    ...x,
    hosts: x.hosts.map((h, i) => ({ ...h, verdict: y.hosts[i]!.verdict, ...(y.hosts[i]!.reason ? { reason: y.hosts[i]!.reason } : {}) })),
  });
  return {
    format: 1,
    config,
    ...withHosts(r, s),
    mechanism: s.mechanism,
    status: s.status,
    exitCode: s.exitCode,
    advice,
    ...(without
      ? {
          withoutException: {
            ...withHosts(without.report, without.summary),
            mechanism: without.summary.mechanism,
            status: without.summary.status,
            advice: without.advice,
          },
        }
      : {}),
  };
}

export async function runCheck(p: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const raw = p.operands[0];
  const domain = raw && (addressLiteral(raw) ? raw : normalizeDomain(raw));
  if (!domain) {
    err.write('usage: dane-relay check DOMAIN [--config FILE] [--json]\n');
    return 2;
  }
  const config = loadConfig(configFileFor(stringOpt(p, 'config'), err));
  const problem = trustAdProblem(config);
  if (problem) {
    err.write(`dane-relay check: ${problem}\n`);
    return 2;
  }
  const store = policyStoreFor(config);
  // The relay's own resolver (validate: in-process DNSSEC; trust-ad: the trusted resolver's AD bit).
  const resolver = resolverFor(config);
  try {
    let sts: StsInspectDeps;
    try {
      sts = stsDeps(config, resolver);
    } catch (e) {
      err.write(`dane-relay check: ${(e as Error).message}\n`);
      return 2;
    }
    const now = Date.now;
    const deps: InspectDeps = {
      resolver,
      selfNames: [config.hostname],
      mxHostLimit: config.delivery.mx_host_limit,
      heloName: config.hostname,
      port: config.delivery.port,
      timeouts: config.delivery.timeouts,
      digestPreference: config.delivery.digest_preference,
      now,
      sts,
    };
    const report = await inspectDomain(domain, store.resolve(domain), deps);
    const advice = adviceFor(report, now(), config.policy.rollover_warn);
    const summary = summarize(report, advice);
    // A listed destination: also show what the exception hides (the probe's view), so the operator can remove it.
    let without: { report: InspectReport; advice: Advice[]; summary: Summary } | undefined;
    if (report.policy.exception) {
      const w = await inspectDomain(domain, store.resolveWithoutException(domain), { ...deps, sts: undefined });
      const a = adviceFor(w, now(), config.policy.rollover_warn);
      without = { report: w, advice: a, summary: summarize(w, a) };
    }
    if (flag(p, 'json')) {
      out.write(`${printableJson(checkJson(config.file, report, advice, summary, without), 2)}\n`);
    } else {
      // Issue 21: the file judged by, which a running relay may not be using yet.
      out.write(`${configJudgedBy(config.file)}\n`);
      out.write(formatReport(report, advice, summary, without));
    }
    return summary.exitCode;
  } finally {
    store.close();
    await resolver.close();
  }
}

export async function runTlsa(p: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const file = stringOpt(p, 'cert');
  if (!file) {
    err.write('usage: dane-relay tlsa --cert FILE [--host MXHOST] [--port 25]\n');
    return 2;
  }
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    err.write(`dane-relay tlsa: cannot read ${file}: ${(e as Error).message}\n`);
    return 2;
  }
  const ders = certificatesFrom(bytes);
  if (ders.length === 0) {
    err.write(`dane-relay tlsa: ${file}: no certificate found (PEM or DER expected)\n`);
    return 2;
  }
  let s: ReturnType<typeof suggestTlsa>;
  try {
    s = suggestTlsa(ders);
  } catch (e) {
    err.write(`dane-relay tlsa: ${file}: ${(e as Error).message}\n`);
    return 2;
  }
  const host = stringOpt(p, 'host');
  const port = Number(stringOpt(p, 'port') ?? 25);
  out.write(formatSuggestions(s, host ? `_${port}._tcp.${host.replace(/\.$/, '')}` : undefined));
  return 0;
}
