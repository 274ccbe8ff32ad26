/**
 * `dane-relay tlsrpt show|send` and `dane-relay dkim keygen`.
 *
 * `tlsrpt send` works beside a running relay: it only reads the counts (what the relay flushed, at most
 * a second old), POSTs https reports itself (failures go to `pending/`, which the relay retries), and
 * writes mailed reports to `<tlsrpt.dir>/outbox/`, which the relay moves into its spool as
 * Envelope.kind 'tlsrpt' within a minute (or at its next start); with spool.backend postgres it queues them
 * in the shared queue itself (any node delivers them). It never touches the spool or its lock,
 * and never submits over SMTP (that would turn a report into an ordinary, DANE-enforced message).
 */
import { join, resolve } from 'node:path';
import { ensurePrivateDir, writePrivateFileAtomic, writePrivateFileNew } from '../files/private.js';
import { loadConfig } from '../config/load.js';
import { resolverFor } from '../config/resolver.js';
import { TlsrptService, tlsrptSettings, type Log } from '../reporting/tlsrpt/daily.js';
import { openSharedTlsrpt } from '../reporting/tlsrpt/pgStore.js';
import { hostname } from 'node:os';
import { dayOf, isDay, nextDay, type ReportJson } from '../reporting/tlsrpt/report.js';
import { dkimKeygen } from '../reporting/tlsrpt/mail.js';
import { dropForCli } from '../files/privileges.js';
import { printableJson } from '../text/printable.js';
import { flag, stringOpt, type ParsedArgs } from './args.js';
import { configFileFor } from '../config/path.js';
import type { LoadedConfig } from '../config/load.js';
import { openPool } from '../spool/postgres/connect.js';
import { migrate } from '../spool/postgres/migrate.js';
import { PgQueue } from '../spool/postgres/queue.js';
import type { Envelope } from '../spool/types.js';

/** The cluster's queue for `tlsrpt send` (a transient member: not a node, leases given back at close). */
async function openCliQueue(config: LoadedConfig): Promise<PgQueue> {
  const pgc = config.spool.postgres!;
  const pool = openPool({ ...pgc, pool: 1 }, { application: 'dane-relay cli' });
  const log = { warn: () => undefined };
  return PgQueue.open(pool, {
    node: `cli:${hostname()}:${process.pid}`,
    leaseMs: pgc.lease,
    log,
    transient: true,
    prepare: async () => void (await migrate(pool, { leaseMs: pgc.lease })),
  });
}

const USAGE = `usage:
  dane-relay tlsrpt show [--config FILE] [--day YYYY-MM-DD] [--domain D] [--json]
  dane-relay tlsrpt send --day YYYY-MM-DD [--config FILE] [--domain D] [--dry-run] [--out DIR] [--force]`;

const quiet = (err: NodeJS.WritableStream, verbose: boolean): Log => ({
  info: (o, m) => {
    if (verbose) err.write(`${m} ${printableJson(o)}\n`);
  },
  warn: (o, m) => err.write(`warning: ${m} ${printableJson(o)}\n`),
  debug: () => undefined,
});

function summary(r: ReportJson, domain: string): string {
  const lines = [`${domain}  (${r['date-range']['start-datetime']} – ${r['date-range']['end-datetime']})`];
  for (const p of r.policies) {
    const pol = p.policy;
    lines.push(`  ${pol['policy-type']} ${pol['policy-domain']}${pol['policy-string'].length ? ` [${pol['policy-string'].join(', ')}]` : ''}`);
    lines.push(`    successful ${p.summary['total-successful-session-count']}, failed ${p.summary['total-failure-session-count']}`);
    for (const d of p['failure-details'] ?? []) {
      lines.push(
        `    ${d['failed-session-count']} × ${d['result-type']}${d['failure-reason-code'] ? ` (${d['failure-reason-code']})` : ''} ${d['receiving-mx-hostname'] ?? ''}${d['receiving-ip'] ? `[${d['receiving-ip']}]` : ''}`,
      );
    }
  }
  return lines.join('\n') + '\n';
}

/** `dane-relay dkim keygen [--selector S] [--domain D] [--out FILE]` */
export async function dkimKeygenCommand(p: ParsedArgs, out: NodeJS.WritableStream): Promise<number> {
  const k = dkimKeygen({ selector: stringOpt(p, 'selector'), domain: stringOpt(p, 'domain') });
  const file = stringOpt(p, 'out');
  if (file) {
    // Never overwrite a key: a replaced key silently breaks the published DNS record. 0600 whatever
    // the umask, never through a link (files/private.ts).
    await writePrivateFileNew(resolve(file), k.privateKeyPem);
    out.write(`private key written to ${file}\n`);
  } else {
    out.write(k.privateKeyPem);
  }
  out.write(`publish this DNS record:\n${k.zoneLine}\n`);
  return 0;
}

export async function tlsrptCli(sub: 'show' | 'send', p: ParsedArgs, out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const config = loadConfig(configFileFor(stringOpt(p, 'config'), err));
  dropForCli(config); // root with `user:`: what `send` writes under tlsrpt.dir stays the relay's
  const day = stringOpt(p, 'day') ?? (sub === 'show' ? nextDay(dayOf(Date.now()), -1) : undefined);
  if (!day || !isDay(day)) {
    err.write(`--day YYYY-MM-DD is required and must be a date\n${USAGE}\n`);
    return 2;
  }
  // A report covers a closed UTC day (RFC 8460 §4.1, TLSRPT-31/34): sending today's or a future day would
  // send a partial report and mark it sent, so the daily job would skip the complete one.
  if (sub === 'send' && day >= dayOf(Date.now())) {
    err.write(`--day ${day} is not a closed UTC day (today is ${dayOf(Date.now())}): a report can only be sent for a day that has ended\n`);
    return 2;
  }
  const force = flag(p, 'force');
  const domain = stringOpt(p, 'domain');
  const settings = tlsrptSettings(config);
  const resolver = resolverFor(config);
  // spool.backend postgres (issue 16): the cluster's counts and send claims, in the database
  const shared = await openSharedTlsrpt(config, `cli:${hostname()}:${process.pid}`);
  const svc = await TlsrptService.open({ settings, resolver, log: quiet(err, sub === 'send'), now: Date.now, readOnly: sub === 'show', shared });
  let queue: PgQueue | undefined;
  try {
    const reports = await svc.build(day, domain ? [domain] : undefined);
    if (sub === 'show') {
      if (flag(p, 'json'))
        out.write(
          `${printableJson(
            reports.map((r) => r.json),
            2,
          )}\n`,
        );
      else
        out.write(
          reports.length
            ? reports.map((r) => summary(r.json, r.domain)).join('\n')
            : `no TLSRPT sessions counted for ${day}${domain ? ` and ${domain}` : ''}\n`,
        );
      return 0;
    }
    const outDir = stringOpt(p, 'out');
    if (outDir) {
      // Reports name the destinations the relay talks to: 0700 for a directory made here, 0600 files,
      // written to a new file and renamed into place (a link there is replaced, never written through).
      await ensurePrivateDir(outDir);
      for (const r of reports) {
        await writePrivateFileAtomic(join(outDir, r.filename), r.gz);
        out.write(`${join(outDir, r.filename)}\n`);
      }
      return 0;
    }
    if (flag(p, 'dry-run')) {
      for (const r of reports) {
        const d = await svc.discovery.lookup(r.domain, { fresh: true });
        const to = d.kind === 'ok' ? d.rua.map((u) => u.uri).join(', ') : `not sent (${d.kind}: ${d.why})`;
        out.write(`${r.domain}: ${r.filename} → ${to}${(await svc.wasSent(day, r.domain)) ? ' (already sent)' : ''}\n`);
      }
      return 0;
    }
    let failed = 0;
    // spool.backend postgres: a mailed report goes straight into the shared queue, where any node delivers it
    // (given back at close, claimable at once); the file backend's outbox is one node's, drained by that node
    const submit = async (env: Envelope, msg: Buffer): Promise<string> => {
      if (!shared) return svc.toOutbox(env, msg);
      queue ??= await openCliQueue(config);
      return (await queue.enqueue(env, msg)).id;
    };
    for (const r of reports) {
      // TLSRPT-32: a second send would be a duplicate under a new report-id; only --force sends again.
      if (!force && (await svc.wasSent(day, r.domain))) {
        out.write(`${r.domain}: skipped: already sent for ${day} (use --force to send again)\n`);
        continue;
      }
      // --force in a cluster sends again without touching the cluster's record of the first send
      const o = await svc.sendReport(day, r.domain, { submit: (env, msg) => submit(env, msg), ...(force && shared ? { mark: false } : {}) });
      out.write(`${r.domain}: ${o.result}: ${o.detail}\n`);
      if (o.result === 'retry-later') failed++;
    }
    if (reports.length === 0) out.write(`no TLSRPT sessions counted for ${day}\n`);
    return failed ? 1 : 0;
  } finally {
    await svc.stop();
    await queue?.close();
    await shared?.pool.end().catch(() => undefined);
    await resolver.close();
  }
}
