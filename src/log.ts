/** One pino logger for the process: JSON lines on stdout (or a destination given by tests). */
import { pino, type Logger, type DestinationStream } from 'pino';

export function makeLogger(level: string, dest?: DestinationStream): Logger {
  return pino({ level, base: { svc: 'dane-relay' }, timestamp: pino.stdTimeFunctions.isoTime }, dest ?? pino.destination({ dest: 1, sync: false }));
}
export type { Logger };
