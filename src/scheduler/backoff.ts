/**
 * Retry timing rules. Pure functions of (attempts, times, config).
 *
 * RFC 5321 §4.5.4.1: retry interval SHOULD be at least 30 minutes and giving up
 * SHOULD take at least 4–5 days (digest DANE-34). Postfix's defaults (300 s doubling
 * to 4000 s) retry faster than the RFC asks; we follow the RFC by default and let the
 * operator choose (`queue.min_backoff`, `queue.max_backoff`, `queue.lifetime`).
 */
export interface BackoffConfig {
  min_backoff: number;
  max_backoff: number;
  lifetime: number;
  delay_warning: number;
}

/** Delay before the next attempt after `attempts` failed attempts (attempts ≥ 1). ±10 % jitter spreads retries out. */
export function backoffDelay(attempts: number, cfg: Pick<BackoffConfig, 'min_backoff' | 'max_backoff'>, rand: () => number = Math.random): number {
  const n = Math.max(1, attempts);
  const base = Math.min(cfg.max_backoff, cfg.min_backoff * 2 ** Math.min(n - 1, 30));
  const jitter = 1 + (rand() * 0.2 - 0.1);
  return Math.max(cfg.min_backoff > 0 ? Math.min(cfg.min_backoff, base) : 0, Math.round(base * jitter));
}

/** The message has been queued longer than the lifetime: temporary failures become permanent. */
export function expired(received: number, now: number, cfg: Pick<BackoffConfig, 'lifetime'>): boolean {
  return now - received >= cfg.lifetime;
}

/** A "delayed" DSN is due once per recipient after delay_warning, if enabled and not yet sent. */
export function delayWarningDue(
  received: number,
  now: number,
  alreadyNotified: number | undefined,
  cfg: Pick<BackoffConfig, 'delay_warning' | 'lifetime'>,
): boolean {
  return cfg.delay_warning > 0 && cfg.delay_warning < cfg.lifetime && alreadyNotified === undefined && now - received >= cfg.delay_warning;
}

/** Convert a 4.x.x code into its permanent 5.x.x form when the queue lifetime ends (RFC 3463). */
export function permanentCode(code: string | undefined): string {
  if (!code) return '5.4.7'; // delivery time expired
  return code.startsWith('4.') ? `5.${code.slice(2)}` : code;
}
