/**
 * RFC 8460 §5.5 (digest TLSRPT-48): a report is retried for up to 24 hours and then dropped, since
 * reports are optional. A mailed report (Envelope.kind 'tlsrpt') therefore gets this lifetime in the
 * queue instead of the ordinary `queue.lifetime` (never a longer one). Its reverse-path is null, so
 * expiry sends no DSN.
 */
export const REPORT_LIFETIME_MS = 24 * 3_600_000;

export function lifetimeFor<T extends { lifetime: number }>(kind: string | undefined, cfg: T): T {
  return kind === 'tlsrpt' ? { ...cfg, lifetime: Math.min(cfg.lifetime, REPORT_LIFETIME_MS) } : cfg;
}
