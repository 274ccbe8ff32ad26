/**
 * Command line: `dane-relay serve --config FILE`, `dane-relay config check FILE`, …
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
 */
import { loadConfig, ConfigError } from './config/load.js';
import { printableText } from './text/printable.js';

const USAGE = `usage:
  dane-relay serve --config FILE        run the relay
  dane-relay config check FILE          validate a configuration file
  dane-relay hash-password              read a password on stdin, print a users-file hash
  dane-relay queue list [--config FILE] [--json]   show queued messages and why they wait
  dane-relay queue show ID | flush [DOMAIN] | hold ID | release ID | delete ID | requeue ID [--config FILE] [--json]
                                        queue control: via the running relay's control socket, or on the spool when it is stopped
  dane-relay check DOMAIN [--config FILE] [--json] what delivery to DOMAIN would do, without mail (exit 0 DANE, 1 defer/fail, 2 usage, 3 no DANE)
  dane-relay tlsa --cert FILE [--host H]          TLSA records to publish for a certificate or PEM chain
  dane-relay tlsrpt show [--config FILE] [--day YYYY-MM-DD] [--domain D] [--json]   what would be reported (RFC 8460)
  dane-relay tlsrpt send --day YYYY-MM-DD [--config FILE] [--domain D] [--dry-run] [--out DIR]   send a day's reports now
  dane-relay dkim keygen [--selector S] [--domain D] [--out FILE]   DKIM key for TLSRPT reports and its DNS record
  dane-relay dns lookup NAME TYPE [--config FILE] [--json]   resolve and validate, explaining the DNSSEC verdict
  dane-relay mta-sts show|refresh|purge DOMAIN [--config FILE] [--json]   the cached MTA-STS policy (RFC 8461)`;

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(`${name}=`));
  return eq?.slice(name.length + 1);
}

/**
 * The terminal sink: everything a command writes passes through printableText (LF stays a line
 * break), so outside text a command prints — a stored SMTP reply, a certificate subject, a DNS
 * name, a TXT string — cannot drive the operator's terminal, whatever path it took to get here.
 */
export function terminalSafe(s: NodeJS.WritableStream): NodeJS.WritableStream {
  const write = (chunk: unknown, ...rest: unknown[]): boolean =>
    (s.write as (...a: unknown[]) => boolean)(typeof chunk === 'string' || Buffer.isBuffer(chunk) ? printableText(chunk) : chunk, ...rest);
  return new Proxy(s, {
    get(target, prop) {
      if (prop === 'write') return write;
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

export async function main(argv: string[], rawOut: NodeJS.WritableStream = process.stdout, rawErr: NodeJS.WritableStream = process.stderr): Promise<number> {
  const [cmd, sub] = argv;
  const out = terminalSafe(rawOut);
  const err = terminalSafe(rawErr);
  try {
    if (cmd === 'serve') {
      const file = argValue(argv, '--config') ?? 'config.example.yml';
      const config = loadConfig(file);
      // SIGHUP's default action terminates: take it over before the (possibly slow) start and
      // act on one that arrives meanwhile once the relay runs.
      let hupDuringStart = false;
      const hupEarly = () => { hupDuringStart = true; };
      process.on('SIGHUP', hupEarly);
      const { Relay } = await import('./relay.js');
      const relay = await Relay.start({ config });
      let stopping = false;
      const stop = (sig: string) => {
        if (stopping) return;
        stopping = true;
        relay.log.info({ signal: sig }, 'signal received');
        relay.stop(Number(process.env.DANE_RELAY_STOP_GRACE_MS ?? 10_000)).then(
          () => process.exit(0),
          (e) => { err.write(`dane-relay: stop failed: ${(e as Error).message}\n`); process.exit(1); },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGHUP', () => { relay.log.info({ signal: 'SIGHUP' }, 'signal received'); relay.reload(); });
      process.off('SIGHUP', hupEarly);
      if (hupDuringStart) { relay.log.info({ signal: 'SIGHUP', during: 'start-up' }, 'signal received'); relay.reload(); }
      await new Promise(() => undefined); // run until a signal
    }
    if (cmd === 'config' && sub === 'check') {
      const file = argv[2];
      if (!file) { err.write(`${USAGE}\n`); return 2; }
      const config = loadConfig(file);
      // Every check `serve` makes before it listens (config/preflight.ts): what passes here starts.
      const { startupProblems } = await import('./config/preflight.js');
      const problems = await startupProblems(config);
      if (problems.length) {
        err.write(`${file}: would not start\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
        return 2;
      }
      out.write(`${file}: ok\n`);
      return 0;
    }
    if (cmd === 'queue' && sub) {
      const { queueCli } = await import('./control/cli.js');
      return await queueCli(argv.slice(1), out, err);
    }
    if (cmd === 'check') {
      const { runCheck } = await import('./check/cli.js');
      return await runCheck(argv, out, err);
    }
    if (cmd === 'tlsa') {
      const { runTlsa } = await import('./check/cli.js');
      return await runTlsa(argv, out, err);
    }
    if (cmd === 'tlsrpt' || (cmd === 'dkim' && sub === 'keygen')) {
      const { tlsrptCli } = await import('./reporting/tlsrpt/cli.js');
      return await tlsrptCli(argv, out, err);
    }
    if (cmd === 'mta-sts') {
      const { mtastsCli } = await import('./mtasts/cli.js');
      return await mtastsCli(argv.slice(1), out, err);
    }
    if (cmd === 'dns' && sub === 'lookup') {
      const rest = argv.slice(2);
      const [name, type] = rest.filter((a, i) => !a.startsWith('--') && rest[i - 1] !== '--config');
      if (!name || !type) { err.write(`${USAGE}\n`); return 2; }
      const { dnsLookupCommand } = await import('./dnssec/cli.js');
      return await dnsLookupCommand({ name, type, configFile: argValue(argv, '--config'), json: argv.includes('--json'), out, err });
    }
    if (cmd === 'hash-password') {
      const { hashPassword } = await import('./ingress/users.js');
      const chunks: Buffer[] = [];
      for await (const c of process.stdin) chunks.push(c as Buffer);
      const pw = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
      if (!pw) { err.write('no password on stdin\n'); return 2; }
      out.write(`${await hashPassword(pw)}\n`);
      return 0;
    }
    err.write(`${USAGE}\n`);
    return 2;
  } catch (e) {
    if (e instanceof ConfigError) { err.write(`${e.message}\n`); return 2; }
    err.write(`dane-relay: ${(e as Error).message}\n`);
    return 1;
  }
}
