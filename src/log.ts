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

export function makeLogger(level: string, dest?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { svc: 'dane-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      hooks: { streamWrite: printableLogLine },
    },
    dest ?? pino.destination({ dest: 1, sync: false }),
  );
}
export type { Logger };
