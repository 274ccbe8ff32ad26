/**
 * How every command reads its arguments: Node's `util.parseArgs` (strict), `--help`/`-h` on every
 * command and subcommand, one error shape for what does not parse. The dispatcher (src/cli.ts) holds
 * the table of commands; each names its options and how many operands it takes.
 *
 * Exit codes stay the CLI's: `--help` prints the usage to stdout and exits 0; an unknown option, an
 * option without its value, or a wrong number of operands is a usage error, exit 2.
 */
import { parseArgs } from 'node:util';

export type OptionKind = 'string' | 'boolean';

export interface CommandSpec {
  /** the words that name the command, e.g. ['queue', 'list'] */
  words: string[];
  /** its usage line(s), printed by --help (stdout) and after a usage error (stderr) */
  usage: string;
  /** long options, without the dashes */
  options: Record<string, OptionKind>;
  /** operands after the words: [fewest, most] */
  operands: [number, number];
}

export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  operands: string[];
}

/** A command line that does not parse: exit 2 with this message and the command's usage. */
export class UsageError extends Error {}

/** `--help` or `-h` anywhere before a `--` terminator asks for the usage, whatever else is there. */
export function wantsHelp(args: string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

/** The arguments after the command's words, checked against its spec. */
export function parseCommand(spec: CommandSpec, args: string[]): ParsedArgs {
  const options: Record<string, { type: OptionKind }> = {};
  for (const [name, type] of Object.entries(spec.options)) options[name] = { type };
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true }) as typeof parsed;
  } catch (e) {
    throw new UsageError(usageMessage(e as Error & { code?: string }, args));
  }
  const [fewest, most] = spec.operands;
  if (parsed.positionals.length < fewest)
    throw new UsageError(fewest === most && fewest > 0 ? `expected ${fewest} operand${fewest > 1 ? 's' : ''}` : 'missing operand');
  if (parsed.positionals.length > most) throw new UsageError(`unexpected operand ${parsed.positionals[most]}`);
  return { values: parsed.values, operands: parsed.positionals };
}

/** parseArgs' errors in the CLI's words: name the option. */
function usageMessage(e: Error & { code?: string }, args: string[]): string {
  if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const opt = /'([^']+)'/.exec(e.message)?.[1] ?? args.find((a) => a.startsWith('-')) ?? '?';
    return `unknown option ${opt}`;
  }
  if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
    const opt = /'(--?[^' <]+)/.exec(e.message)?.[1] ?? '?';
    if (/argument missing/.test(e.message)) return `option ${opt} needs a value`;
    if (/does not take an argument/.test(e.message)) return `option ${opt} takes no value`;
    if (/ambiguous/.test(e.message)) return `option ${opt}: its value starts with "-" (write ${opt}=VALUE)`;
    return `option ${opt}: ${e.message.split('\n')[0]}`;
  }
  return e.message.split('\n')[0]!;
}

export function stringOpt(p: ParsedArgs, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === 'string' ? v : undefined;
}

export function flag(p: ParsedArgs, name: string): boolean {
  return p.values[name] === true;
}
