/**
 * The error every spool operation rejects with. Callers (ingress) map it to a
 * temporary SMTP reply, so `code` keeps the errno (ENOSPC, EIO, ...) that made
 * the operation fail: "452 4.3.1 insufficient storage" needs to know it was ENOSPC.
 */
import type { SpoolError as SpoolErrorShape } from './types.js';

export class SpoolError extends Error implements SpoolErrorShape {
  override readonly name = 'SpoolError';
  readonly code: string;

  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** Wraps a failed fs call, keeping its errno; unknown failures count as EIO (temporary). */
  static from(step: string, err: unknown): SpoolError {
    if (err instanceof SpoolError) return err;
    const code = typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : 'EIO';
    const msg = (err as Error)?.message ?? String(err);
    return new SpoolError(`spool ${step} failed: ${msg}`, code, { cause: err });
  }
}

export function errno(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}
