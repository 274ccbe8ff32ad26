/**
 * One pino logger for the process: JSON lines on stdout (or a destination given by tests).
 *
 * Every line passes through `printableLogLine` on its way out (pino's streamWrite hook), so no
 * value in it — an SMTP reply, an EHLO or AUTH user name, a certificate subject inside an error
 * message — reaches an operator's terminal raw, not even after `jq -r` decodes the JSON
 * (src/text/printable.ts has the rule). Most lines are plain ASCII and pass untouched.
 */
import { pino, type Logger, type DestinationStream } from 'pino';
import { printableDeep, printableText } from './text/printable.js';

/** A JSON escape (\b \f \n \r \t \uXXXX: JSON.stringify writes controls so) or a character beyond ASCII: worth a look. */
const SUSPECT = /\\[bfnrtu]|[\x7f-\uffff]/;

/** One serialised log line with every string in it made printable; lines without a suspect character are returned as they are. */
export function printableLogLine(line: string): string {
  if (!SUSPECT.test(line)) return line;
  try {
    return `${JSON.stringify(printableDeep(JSON.parse(line)))}\n`;
  } catch {
    return `${printableText(line.replace(/\n$/, '')).replace(/\n/g, '\\n')}\n`;
  }
}

/**
 * Issue 21 item 5: a message is one line. A `msg` with line breaks (an error text that quotes a
 * multi-line reply, a list of problems) keeps its first line as `msg`; the rest go into `msg_lines`,
 * a structured field, so a line-oriented reader (grep, journald) never sees half a log entry.
 */
export function oneLineMessage(args: unknown[]): unknown[] {
  const i = typeof args[0] === 'string' ? 0 : 1;
  const m = args[i];
  if (typeof m !== 'string' || !/[\r\n]/.test(m)) return args;
  const [first, ...rest] = m.split(/\r?\n|\r/);
  const extra = { msg_lines: rest.filter((l) => l.trim() !== '') };
  const head = args[0];
  const obj = i === 0 ? extra : head instanceof Error ? { err: head, ...extra } : { ...(head as object), ...extra };
  return [obj, first, ...args.slice(i + 1)];
}

export function makeLogger(level: string, dest?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'dane-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // "level":"info", not 30: what operators grep and what log shippers map without a table
      formatters: { level: (label) => ({ level: label }) },
      hooks: {
        streamWrite: printableLogLine,
        logMethod(args, method) {
          return method.apply(this, oneLineMessage(args) as Parameters<typeof method>);
        },
      },
    },
    dest ?? pino.destination({ dest: 1, sync: false }),
  );
}
export type { Logger };
