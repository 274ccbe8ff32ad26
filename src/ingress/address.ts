/**
 * Envelope address syntax (RFC 5321 §4.1.2 Mailbox, extended by RFC 6531 §3.3 when the
 * client asked for SMTPUTF8).
 *
 * smtp-server has already taken the path apart (angle brackets, source route, a
 * permissive sanity check) and turned A-label domains into U-labels; this is the strict
 * check a relay needs before it accepts responsibility for an address it will have to
 * route: a dot-string or quoted-string local part and an LDH domain or address literal.
 *
 * The domain is returned in A-label form (RFC 5890 §2.3.2.1): DNS, MX and TLSA lookups
 * need it, it is the same domain whichever form the client used, and a message without
 * SMTPUTF8 then never carries a U-label onward. The local part is kept byte for byte:
 * only the destination may interpret it (RFC 5321 §2.4).
 */
import { domainToASCII } from 'node:url';
import { isIPv4, isIPv6 } from 'node:net';

export type MailboxResult = { ok: true; address: string } | { ok: false; code: 501 | 553; enhanced: string; text: string };

// RFC 5322 §3.2.3 atext, as RFC 5321 §4.1.2 uses it for Atom.
const ATEXT = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~";
const DOT_STRING_ASCII = new RegExp(`^[${ATEXT}]+(?:\\.[${ATEXT}]+)*$`);
// RFC 6531 §3.3: atext and qtextSMTP also admit UTF8-non-ascii.
const DOT_STRING_UTF8 = new RegExp(`^[${ATEXT}\\u0080-\\u{10FFFF}]+(?:\\.[${ATEXT}\\u0080-\\u{10FFFF}]+)*$`, 'u');
// quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP = %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP = "\" %d32-126
const QUOTED_ASCII = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"$/;
const QUOTED_UTF8 = /^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\u{10FFFF}]|\\[\x20-\x7e])*"$/u;
// RFC 5321 §4.1.2 sub-domain = Let-dig [Ldh-str], RFC 1035 §2.3.4 label length.
const LDH_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
// eslint-disable-next-line no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;

/** RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the angle brackets. */
const MAX_MAILBOX_OCTETS = 254;
/** RFC 5321 §4.5.3.1.2 */
const MAX_DOMAIN_OCTETS = 255;

export function isLdhDomain(domain: string): boolean {
  if (domain.length === 0 || domain.length > 253) return false;
  return domain.split('.').every((l) => LDH_LABEL.test(l));
}

/** RFC 5321 §4.1.3 address literal, IPv4 or "IPv6:"; general-address-literals are refused. */
function isAddressLiteral(domain: string): boolean {
  const m = /^\[(.*)\]$/.exec(domain);
  if (!m) return false;
  const inner = m[1]!;
  if (/^IPv6:/i.test(inner)) return isIPv6(inner.slice(5));
  return isIPv4(inner);
}

/**
 * Checks one envelope address. `role` selects the enhanced status code of a syntax
 * error (RFC 3463 §3.2: 5.1.7 bad sender mailbox syntax, 5.1.3 bad destination syntax).
 * The null sender "" is valid for MAIL only (RFC 5321 §4.5.5).
 */
export function checkMailbox(address: string, opts: { role: 'sender' | 'recipient'; smtputf8: boolean }): MailboxResult {
  const bad: MailboxResult =
    opts.role === 'sender'
      ? { ok: false, code: 501, enhanced: '5.1.7', text: 'Bad sender address syntax' }
      : { ok: false, code: 501, enhanced: '5.1.3', text: 'Bad recipient address syntax' };
  if (address === '') return opts.role === 'sender' ? { ok: true, address: '' } : bad;
  const at = address.lastIndexOf('@');
  // A recipient must be local@domain: a bare "postmaster" (RFC 5321 §4.1.1.3) names a
  // mailbox on this host; the ingress maps it to ingress.postmaster before this check.
  if (at <= 0 || at === address.length - 1) return bad;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);

  if (NON_ASCII.test(local) && !opts.smtputf8) {
    // RFC 6531 §3.5: a non-ASCII address without SMTPUTF8 on MAIL.
    return { ok: false, code: 553, enhanced: '5.6.7', text: 'Non-ASCII address requires SMTPUTF8' };
  }
  // U+FFFD is what undecodable bytes became: RFC 6531 §3.3 requires well-formed UTF-8.
  if (local.includes('\uFFFD')) return bad;
  // The UTF8-non-ascii range would admit the C1 controls U+0080–U+009F (U+009B is a one-byte CSI
  // that drives terminals); RFC 5198 §2 keeps them out of network text. Other outside text in an
  // address (bidi controls …) is escaped wherever it is shown (src/text/printable.ts).
  if (/\p{Cc}/u.test(local)) return bad;
  const utf8 = opts.smtputf8;
  const localOk = local.startsWith('"') ? (utf8 ? QUOTED_UTF8 : QUOTED_ASCII).test(local) : (utf8 ? DOT_STRING_UTF8 : DOT_STRING_ASCII).test(local);
  if (!localOk) return bad;

  let asciiDomain: string;
  if (domain.startsWith('[')) {
    if (!isAddressLiteral(domain)) return bad;
    asciiDomain = domain;
  } else {
    if (Buffer.byteLength(domain) > MAX_DOMAIN_OCTETS) return bad;
    // U-label → A-label (UTS #46 processing via WHATWG URL); '' means not a valid IDN.
    asciiDomain = domainToASCII(domain);
    if (!isLdhDomain(asciiDomain)) return bad;
  }
  const normalized = `${local}@${asciiDomain}`;
  if (Buffer.byteLength(normalized) > MAX_MAILBOX_OCTETS) return bad;
  return { ok: true, address: normalized };
}
