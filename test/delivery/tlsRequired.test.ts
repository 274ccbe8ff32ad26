/** RFC 8689 §4.2.2 (RT-31, RT-33): what `TLS-Required: No` does to a destination's level — only the recipient's DANE goes. */
import { describe, expect, it } from 'vitest';
import { tlsRequiredNoLevel } from '../../src/delivery/deliver.js';

describe('tlsRequiredNoLevel', () => {
  const cases = [
    [{ level: 'dane', rule: 'delivery.tls_level=dane' }, 'may'],
    [{ level: 'dane', rule: 'tls_policy:1 d.test dane trust-insecure-mx audit', explicit: true, trustInsecureMx: true, audit: true }, 'may'],
    [{ level: 'dane-only', rule: 'tls_policy:2 d.test dane-only', explicit: true }, 'dane-only'],
    [{ level: 'dane-only', rule: 'delivery.tls_level=dane-only' }, 'dane-only'],
    [{ level: 'encrypt', rule: 'tls_policy:3 d.test encrypt', explicit: true }, 'encrypt'],
    [{ level: 'encrypt', rule: 'delivery.tls_level=encrypt' }, 'encrypt'],
    [{ level: 'none', rule: 'delivery.tls_level=none' }, 'none'],
    [{ level: 'may', rule: 'danefail:1 d.test exception dane→may', exception: { underlying: 'dane' } }, 'may'],
  ] as const;
  it.each(cases)('RT-31 RT-33 %j → %s (the recipient DANE is waived; what the operator made mandatory stands)', (p, level) => {
    const out = tlsRequiredNoLevel(p);
    expect(out.level).toBe(level);
    if (p.level === 'dane') {
      // no DANE option survives into the opportunistic level, and the log says why
      expect(out).toEqual({ level: 'may', rule: `TLS-Required: No (RFC 8689 section 4.2.2): recipient DANE/MTA-STS not enforced, instead of ${p.rule}` });
    } else expect(out).toBe(p);
  });
});
