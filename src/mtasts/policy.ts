/**
 * MTA-STS policy (RFC 8461 §3.2, digest STS-20…24) and MX host matching (§4.1, STS-40). Pure.
 *
 * The body is `key: value` lines ended by LF or CRLF (the ABNF accepts both, errata 6253), the last
 * line end optional; keys and the fixed values are case-sensitive (`Mode: Enforce` is an extension
 * `Mode`, so `mode` is missing and the policy invalid).
 */

export type StsMode = 'enforce' | 'testing' | 'none';

export interface StsPolicy {
  mode: StsMode;
  /** seconds, 0…31557600 (larger values capped, STS-24) */
  maxAge: number;
  /** lower-case patterns without trailing dot: `mail.example.com` or `*.example.com` */
  mx: string[];
  /**
   * The policy's own lines as fetched, unknown keys left out (TLSRPT `policy-string`, STS-61),
   * trailing whitespace and line ends removed.
   */
  lines: string[];
}

export type ParsedPolicy = { ok: true; policy: StsPolicy; notes: string[] } | { ok: false; why: string };

/** STS-24: RFC 8461 §3.2, the largest max_age (about one year). */
export const MAX_MAX_AGE = 31_557_600;

/** `sts-policy-ext-name` */
const EXT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
/** `sts-policy-ext-value`: VCHAR or UTF-8 non-ASCII, inner spaces allowed (no control characters) */
const EXT_VALUE = /^[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$/u;
/** RFC 5321 `sub-domain` in A-label form (STS-23: U-labels are not allowed) */
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * One `mx` value → its pattern, lower case without a trailing dot, or undefined when it is not
 * `["*."] Domain` (STS-23): the wildcard only as the whole leftmost label, never `*example.com`,
 * `a.*.b` or a bare `*`; A-labels only.
 */
export function parseMxPattern(value: string): string | undefined {
  let v = value.toLowerCase();
  if (v.endsWith('.')) v = v.slice(0, -1); // derived: drop a trailing dot (STS-23)
  const wild = v.startsWith('*.');
  const rest = wild ? v.slice(2) : v;
  if (rest.length === 0 || rest.length > 253) return undefined;
  const labels = rest.split('.');
  if (!labels.every((l) => LABEL.test(l))) return undefined;
  return wild ? `*.${rest}` : rest;
}

/**
 * RFC 8461 §3.2 body → policy (STS-20…24). A policy that fails any rule is invalid as a whole, which
 * the fetch treats as a failed fetch (`sts-policy-invalid`, STS-21). `notes` say what was accepted but
 * changed (a capped `max_age`) or ignored (a repeated key).
 */
export function parsePolicy(body: string): ParsedPolicy {
  const raw = body.split('\n');
  // The last line end is optional: a body ending in a line end leaves one empty piece, not a line.
  if (raw.length > 1 && raw[raw.length - 1] === '') raw.pop();
  const seen = new Map<string, string>();
  const mx: string[] = [];
  const lines: string[] = [];
  const notes: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const line = raw[i]!.endsWith('\r') ? raw[i]!.slice(0, -1) : raw[i]!;
    const n = i + 1;
    // The ABNF has no blank lines; (derived) one is skipped rather than failing a policy over layout.
    if (/^[ \t]*$/.test(line)) continue;
    const m = /^([^:\s]+):[ \t]*(.*?)[ \t]*$/u.exec(line);
    if (!m) return { ok: false, why: `line ${n}: not "key: value": ${JSON.stringify(line)}` };
    const [, key, value] = m as unknown as [string, string, string];
    switch (key) {
      case 'version':
      case 'mode':
      case 'max_age':
        if (seen.has(key)) {
          notes.push(`line ${n}: ${key} repeated; the first one counts`);
          continue;
        }
        seen.set(key, value);
        lines.push(`${key}: ${value}`);
        break;
      case 'mx': {
        const p = parseMxPattern(value);
        if (p === undefined) return { ok: false, why: `line ${n}: mx ${JSON.stringify(value)} is not a domain name or "*." and one` };
        mx.push(p);
        lines.push(`mx: ${value}`);
        break;
      }
      default:
        // Extensions are ignored (STS-22), but must have the extension syntax.
        if (!EXT_NAME.test(key) || !EXT_VALUE.test(value)) return { ok: false, why: `line ${n}: malformed field ${JSON.stringify(line)}` };
    }
  }
  const version = seen.get('version');
  if (version === undefined) return { ok: false, why: 'no version field' };
  if (version !== 'STSv1') return { ok: false, why: `version ${JSON.stringify(version)} is not STSv1` };
  const mode = seen.get('mode');
  if (mode === undefined) return { ok: false, why: 'no mode field' };
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') return { ok: false, why: `mode ${JSON.stringify(mode)} is not enforce, testing or none` };
  const ageText = seen.get('max_age');
  if (ageText === undefined) return { ok: false, why: 'no max_age field' };
  if (!/^[0-9]{1,10}$/.test(ageText)) return { ok: false, why: `max_age ${JSON.stringify(ageText)} is not 1 to 10 digits` };
  let maxAge = Number(ageText);
  if (maxAge > MAX_MAX_AGE) {
    notes.push(`max_age ${maxAge} is over ${MAX_MAX_AGE}; capped`);
    maxAge = MAX_MAX_AGE;
  }
  if (mx.length === 0 && mode !== 'none') return { ok: false, why: `mode ${mode} without any mx field` };
  return { ok: true, policy: { mode, maxAge, mx, lines }, notes };
}

/**
 * STS-40 (§4.1): does the MX host name from DNS (never a certificate name) match a pattern? Exact,
 * case-insensitive; `*.example.net` matches exactly one more label: `mail.example.net`, not
 * `example.net`, not `a.b.example.net`.
 */
export function mxMatches(pattern: string, mxHost: string): boolean {
  const host = mxHost.toLowerCase().replace(/\.$/, '');
  if (!pattern.startsWith('*.')) return host === pattern;
  const dot = host.indexOf('.');
  return dot > 0 && host.slice(dot + 1) === pattern.slice(2);
}

/** The first pattern of `policy` the MX host matches, or undefined (STS-40). */
export function matchingPattern(policy: Pick<StsPolicy, 'mx'>, mxHost: string): string | undefined {
  return policy.mx.find((p) => mxMatches(p, mxHost));
}
