/**
 * Command line: `dane-relay serve --config FILE`, `dane-relay config check FILE`, …
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error (`check` adds 3: unauthenticated, 4: degraded).
 * Every command and subcommand takes `--help`/`-h` (usage on stdout, exit 0); its options are read
 * by `util.parseArgs` (src/commands/args.ts), so an unknown option is a usage error naming it.
 */
import { loadConfig, ConfigError } from './config/load.js';
import { printableText } from './text/printable.js';
import { COMMANDS as QUEUE_COMMANDS } from './control/commands.js';
import { flag, parseCommand, stringOpt, UsageError, wantsHelp, type CommandSpec, type ParsedArgs } from './commands/args.js';
import { configFileFor, packageVersion } from './config/path.js';
import { readFileSync } from 'node:fs';

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

type Out = NodeJS.WritableStream;

interface Command extends CommandSpec {
  run(p: ParsedArgs, out: Out, err: Out): Promise<number>;
}

const CONFIG = { config: 'string' } as const;
const QUEUE_OPERAND: Record<string, string> = { list: '', show: ' ID', flush: ' [DOMAIN]', hold: ' ID', release: ' ID', delete: ' ID', requeue: ' ID' };
const QUEUE_EXTRA: Record<string, string> = { list: ' [--domain D] [--state S]', show: ' [--body]' };
const QUEUE_OPTIONS: Record<string, Record<string, 'string' | 'boolean'>> = { list: { domain: 'string', state: 'string' }, show: { body: 'boolean' } };

/** Every command, in the order `--help` lists them. The words, options and exit codes are a contract (README, examples/). */
export const COMMAND_TABLE: readonly Command[] = [
  {
    words: ['serve'],
    usage: 'dane-relay serve --config FILE        run the relay',
    options: CONFIG,
    operands: [0, 0],
    run: (p, _out, err) => serve(configFileFor(stringOpt(p, 'config'), err), err),
  },
  {
    words: ['config', 'check'],
    usage: 'dane-relay config check FILE [--all]  validate a configuration file and print the settings it makes (--all: every key, defaults filled in)',
    options: { all: 'boolean' },
    operands: [1, 1],
    run: (p, out, err) => configCheck(p.operands[0]!, flag(p, 'all'), out, err),
  },
  {
    words: ['hash-password'],
    usage: 'dane-relay hash-password              read a password on stdin, print a users-file hash',
    options: {},
    operands: [0, 0],
    run: (_p, out, err) => hashPasswordCommand(out, err),
  },
  ...QUEUE_COMMANDS.map(
    (sub): Command => ({
      words: ['queue', sub],
      usage: `dane-relay queue ${sub}${QUEUE_OPERAND[sub] ?? ' [ID|DOMAIN]'}${QUEUE_EXTRA[sub] ?? ''} [--config FILE] [--json]${sub === 'list' ? '   show queued messages and why they wait (like mailq)' : sub === 'show' ? '   one message; its header section (--body: the whole message, like postcat -q)' : ''}`,
      options: { ...CONFIG, json: 'boolean', ...QUEUE_OPTIONS[sub] },
      operands: [0, 1],
      run: async (p, out, err) => (await import('./commands/queue.js')).queueCli(sub, p, out, err),
    }),
  ),
  {
    words: ['queue', 'shape'],
    usage: 'dane-relay queue shape [--domain D] [--state S] [--config FILE] [--json]   waiting recipients by destination domain and age (like qshape)',
    options: { ...CONFIG, json: 'boolean', domain: 'string', state: 'string' },
    operands: [0, 0],
    run: async (p, out, err) => (await import('./commands/queue.js')).queueShapeCli(p, out, err),
  },
  {
    words: ['check'],
    usage:
      'dane-relay check DOMAIN [--config FILE] [--json] what delivery to DOMAIN would do (DANE, MTA-STS), without mail (exit 0 ok: authenticated, 1 would defer/fail, 2 usage/config, 3 unauthenticated TLS/cleartext, 4 degraded: an MX host skipped/failing or a warning)',
    options: { ...CONFIG, json: 'boolean' },
    operands: [1, 1],
    run: async (p, out, err) => (await import('./commands/check.js')).runCheck(p, out, err),
  },
  {
    words: ['tlsa'],
    usage: 'dane-relay tlsa --cert FILE [--host MXHOST] [--port 25]   TLSA records to publish for a certificate or PEM chain',
    options: { cert: 'string', host: 'string', port: 'string' },
    operands: [0, 0],
    run: async (p, out, err) => (await import('./commands/check.js')).runTlsa(p, out, err),
  },
  {
    words: ['tlsrpt', 'show'],
    usage: 'dane-relay tlsrpt show [--config FILE] [--day YYYY-MM-DD] [--domain D] [--json]   what would be reported (RFC 8460)',
    options: { ...CONFIG, day: 'string', domain: 'string', json: 'boolean' },
    operands: [0, 0],
    run: async (p, out, err) => (await import('./commands/tlsrpt.js')).tlsrptCli('show', p, out, err),
  },
  {
    words: ['tlsrpt', 'send'],
    usage: "dane-relay tlsrpt send --day YYYY-MM-DD [--config FILE] [--domain D] [--dry-run] [--out DIR] [--force]   send a day's reports now",
    options: { ...CONFIG, day: 'string', domain: 'string', 'dry-run': 'boolean', out: 'string', force: 'boolean' },
    operands: [0, 0],
    run: async (p, out, err) => (await import('./commands/tlsrpt.js')).tlsrptCli('send', p, out, err),
  },
  {
    words: ['dkim', 'keygen'],
    usage: 'dane-relay dkim keygen [--selector S] [--domain D] [--out FILE]   DKIM key for TLSRPT reports and its DNS record',
    options: { selector: 'string', domain: 'string', out: 'string' },
    operands: [0, 0],
    run: async (p, out) => (await import('./commands/tlsrpt.js')).dkimKeygenCommand(p, out),
  },
  ...(['show', 'refresh', 'purge'] as const).map(
    (sub): Command => ({
      words: ['mta-sts', sub],
      usage: `dane-relay mta-sts ${sub} DOMAIN [--config FILE]${sub === 'purge' ? '' : ' [--json]'}   ${{ show: 'the cached MTA-STS policy (exit 1: none cached)', refresh: 'fetch the MTA-STS policy now (a failure keeps the cached one)', purge: 'forget the cached MTA-STS policy' }[sub]}`,
      options: sub === 'purge' ? CONFIG : { ...CONFIG, json: 'boolean' },
      operands: [1, 1],
      run: async (p, out, err) => (await import('./commands/mtasts.js')).mtastsCli(sub, p, out, err),
    }),
  ),
  {
    words: ['dns', 'lookup'],
    usage: 'dane-relay dns lookup NAME TYPE [--config FILE] [--json]   resolve and validate, explaining the DNSSEC verdict',
    options: { ...CONFIG, json: 'boolean' },
    operands: [2, 2],
    run: async (p, out, err) =>
      (await import('./commands/dns.js')).dnsLookupCommand({
        name: p.operands[0]!,
        type: p.operands[1]!,
        configFile: stringOpt(p, 'config'),
        json: flag(p, 'json'),
        out,
        err,
      }),
  },
  {
    words: ['db', 'migrate'],
    usage: "dane-relay db migrate [--config FILE]           create or update the shared queue's schema (spool.backend: postgres)",
    options: CONFIG,
    operands: [0, 0],
    run: async (p, out, err) => (await import('./commands/db.js')).dbCli(p, out, err),
  },
  {
    words: ['nodes'],
    usage: 'dane-relay nodes [--config FILE] [--json]       relay nodes on the shared queue and the leases they hold',
    options: { ...CONFIG, json: 'boolean' },
    operands: [0, 0],
    run: async (p, out, err) => (await import('./commands/db.js')).nodesCli(p, out, err),
  },
];

/** The usage of the commands whose words begin with `prefix` (all of them for an empty prefix). */
export function usageOf(prefix: string[]): string {
  const lines = COMMAND_TABLE.filter((c) => prefix.every((w, i) => c.words[i] === w)).map((c) => `  ${c.usage}`);
  return `usage:\n${lines.join('\n')}`;
}

export async function main(argv: string[], rawOut: Out = process.stdout, rawErr: Out = process.stderr): Promise<number> {
  const out = terminalSafe(rawOut);
  const err = terminalSafe(rawErr);
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    out.write(`dane-relay ${packageVersion()}\n`);
    return 0;
  }
  const command = COMMAND_TABLE.find((c) => c.words.every((w, i) => argv[i] === w));
  if (!command) {
    // `dane-relay --help`, `dane-relay queue --help`: the usage of what was named so far
    const known = argv[0] !== undefined && COMMAND_TABLE.some((c) => c.words[0] === argv[0]) ? [argv[0]] : [];
    if (wantsHelp(argv.slice(known.length)) && (known.length > 0 || argv[0]?.startsWith('-'))) {
      out.write(`${usageOf(known)}\n${known.length ? '' : '  dane-relay --version                  print the version\n'}`);
      return 0;
    }
    err.write(`${usageOf(known)}\n`);
    return 2;
  }
  const args = argv.slice(command.words.length);
  const name = `dane-relay ${command.words.join(' ')}`;
  if (wantsHelp(args)) {
    out.write(`usage:\n  ${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(parseCommand(command, args), out, err);
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`${name}: ${e.message}\nusage:\n  ${command.usage}\n`);
      return 2;
    }
    if (e instanceof ConfigError) {
      err.write(`${e.message}\n`);
      return 2;
    }
    err.write(`dane-relay: ${(e as Error).message}\n`);
    return 1;
  }
}

async function serve(file: string, err: Out): Promise<number> {
  const config = loadConfig(file);
  // SIGHUP's default action terminates: take it over before the (possibly slow) start and
  // act on one that arrives meanwhile once the relay runs.
  let hupDuringStart = false;
  const hupEarly = () => {
    hupDuringStart = true;
  };
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
      (e) => {
        err.write(`dane-relay: stop failed: ${(e as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    relay.log.info({ signal: 'SIGHUP' }, 'signal received');
    relay.reload();
  });
  process.off('SIGHUP', hupEarly);
  if (hupDuringStart) {
    relay.log.info({ signal: 'SIGHUP', during: 'start-up' }, 'signal received');
    relay.reload();
  }
  return await new Promise<number>(() => undefined); // run until a signal
}

async function configCheck(file: string, all: boolean, out: Out, err: Out): Promise<number> {
  const config = loadConfig(file);
  // Every check `serve` makes before it listens (src/preflight.ts): what passes here starts.
  const { startupProblems } = await import('./preflight.js');
  const problems = await startupProblems(config);
  if (problems.length) {
    err.write(`${file}: would not start\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
    return 2;
  }
  out.write(`${file}: ok\n`);
  // Like `postconf -n` (or `postconf` with --all): what the relay runs with, in the file's own forms.
  const { effectiveConfigLines } = await import('./config/show.js');
  const { parse } = await import('yaml');
  const effective = { ...config, dns: { ...config.dns, resolvers: config.dns.resolvers ?? config.resolvedResolvers } };
  const raw: unknown = parse(readFileSync(file, 'utf8')) ?? {};
  out.write(
    effectiveConfigLines(effective, all ? undefined : raw)
      .map((l) => `${l}\n`)
      .join(''),
  );
  return 0;
}

async function hashPasswordCommand(out: Out, err: Out): Promise<number> {
  const { hashPassword } = await import('./ingress/users.js');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const pw = Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
  if (!pw) {
    err.write('no password on stdin\n');
    return 2;
  }
  out.write(`${await hashPassword(pw)}\n`);
  return 0;
}
