/**
 * `dane-relay check DOMAIN [--config FILE] [--json]` and `dane-relay tlsa --cert FILE [--host H] [--port N]`.
 *
 * check exit codes: 0 deliverable with DANE; 1 delivery would defer or fail; 2 usage or
 * configuration error; 3 deliverable without DANE (opportunistic TLS or cleartext).
 */
import { readFileSync } from 'node:fs';
import { loadConfig } from '../config/load.js';
import { trustAdProblem } from '../dns/trust.js';
import { resolverFor } from '../config/resolver.js';
import { policyStoreFor } from '../policy/config.js';
import { inspectDomain, exitCodeOf, type InspectReport } from '../check/inspect.js';
import { adviceFor } from '../check/advice.js';
import { formatReport } from '../check/format.js';
import { certificatesFrom, formatSuggestions, suggestTlsa } from '../check/tlsaCert.js';
import { normalizeDomain } from '../policy/tables.js';
import { addressLiteral } from '../route/mx.js';
import { printableJson } from '../text/printable.js';
import { flag, stringOpt, type ParsedArgs } from './args.js';
import { configFileFor } from '../config/path.js';

/** The first line of `check`'s report: the configuration file it judges by, which a running relay may not be using yet. */
export function configJudgedBy(file: string | undefined): string {
  return `config: ${file ?? '(built in)'} (this file as it is now; a running relay uses its changes after a SIGHUP reload, some only after a restart)`;
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
    const now = Date.now;
    const report = await inspectDomain(domain, store.resolve(domain), {
      resolver,
      selfNames: [config.hostname],
      mxHostLimit: config.delivery.mx_host_limit,
      heloName: config.hostname,
      port: config.delivery.port,
      timeouts: config.delivery.timeouts,
      digestPreference: config.delivery.digest_preference,
      now,
    });
    const advice = adviceFor(report, now(), config.policy.rollover_warn);
    const code = exitCodeOf(report.verdict.kind);
    // A listed destination: also show what the exception hides (the probe's view), so the operator can remove it.
    let without: InspectReport | undefined;
    if (report.policy.exception) {
      without = await inspectDomain(domain, store.resolveWithoutException(domain), {
        resolver,
        selfNames: [config.hostname],
        mxHostLimit: config.delivery.mx_host_limit,
        heloName: config.hostname,
        port: config.delivery.port,
        timeouts: config.delivery.timeouts,
        digestPreference: config.delivery.digest_preference,
        now,
      });
    }
    if (flag(p, 'json')) {
      out.write(
        `${printableJson({ config: config.file, ...report, advice, exitCode: code, ...(without ? { withoutException: { ...without, advice: adviceFor(without, now(), config.policy.rollover_warn) } } : {}) }, 2)}\n`,
      );
    } else {
      // Issue 21: the file judged by, which a running relay may not be using yet.
      out.write(`${configJudgedBy(config.file)}\n`);
      out.write(formatReport(report, advice));
      if (without)
        out.write(
          `\n--- without the danefail exception (what the recovery probe checks) ---\n${formatReport(without, adviceFor(without, now(), config.policy.rollover_warn))}`,
        );
    }
    return code;
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
