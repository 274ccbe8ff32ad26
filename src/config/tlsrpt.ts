/**
 * Consistency rules of the `tlsrpt:` config section (pure; used by the config schema's refine).
 *
 * - RFC 8460 §5.3: TLS-Report-Submitter "MUST" match the domain of contact-info (digest TLSRPT-33/43),
 *   so `tlsrpt.submitter`, when given, must be that domain (the default is exactly that).
 * - RFC 8460 §3 / §5.3: a mailed report MUST carry a valid DKIM signature "from the reporting domain".
 *   The reporting domain is the submitter; we accept `dkim.domain` equal to it or a parent of it (an
 *   organisational-domain signature), and reject any other domain, whose signature would not be one of
 *   the reporting domain.
 */
import { lowerName } from '../dns/name.js';
export interface TlsrptConfigIssue {
  path: (string | number)[];
  message: string;
}

const norm = lowerName;

export function tlsrptConfigIssues(hostname: string, t: { contact_info?: string; submitter?: string; dkim?: { domain: string } }): TlsrptConfigIssue[] {
  const issues: TlsrptConfigIssue[] = [];
  const contact = t.contact_info ?? `postmaster@${hostname}`;
  const contactDomain = norm(contact.slice(contact.lastIndexOf('@') + 1));
  if (t.submitter !== undefined && norm(t.submitter) !== contactDomain) {
    issues.push({
      path: ['tlsrpt', 'submitter'],
      message: `tlsrpt.submitter (${t.submitter}) must be the domain of contact-info ${contact} (${contactDomain}): RFC 8460 §5.3 says TLS-Report-Submitter MUST match it; remove submitter or change contact_info`,
    });
  }
  const submitter = t.submitter !== undefined ? norm(t.submitter) : contactDomain;
  if (t.dkim) {
    const d = norm(t.dkim.domain);
    if (d !== submitter && !submitter.endsWith(`.${d}`)) {
      issues.push({
        path: ['tlsrpt', 'dkim', 'domain'],
        message: `tlsrpt.dkim.domain (${t.dkim.domain}) must be the report submitter ${submitter} or a parent of it: RFC 8460 §3 requires a DKIM signature from the reporting domain`,
      });
    }
  }
  return issues;
}
