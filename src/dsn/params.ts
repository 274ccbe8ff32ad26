/**
 * The DSN extension's parameters (RFC 3461 §4): syntax, what is kept with the message, how they
 * are passed on, and which notifications they ask for. Pure; table-tested in test/dsn/params.test.ts.
 *
 * Kept xtext-decoded (the spool's JSON needs no second encoding) and encoded again, canonically,
 * when relayed: "+41" and "A" are the same value.
 */

/** RFC 3461 §4.1 */
export type NotifyCondition = 'SUCCESS' | 'FAILURE' | 'DELAY';
export type Notify = 'NEVER' | NotifyCondition;

/** MAIL FROM parameters (RFC 3461 §4.3, §4.4). */
export interface MailDsn {
  ret?: 'FULL' | 'HDRS';
  /** ENVID, xtext-decoded */
  envid?: string;
}

/** RCPT TO parameters (RFC 3461 §4.1, §4.2). */
export interface RcptDsn {
  /** ['NEVER'] or a set of conditions */
  notify?: Notify[];
  /** ORCPT: addr-type (as given) and the address, xtext-decoded */
  orcpt?: { type: string; address: string };
}

/** RFC 3461 §4.4: an ENVID of up to 100 characters; §4.2: an ORCPT of up to 500. Longer is refused. */
export const MAX_ENVID = 100;
export const MAX_ORCPT = 500;

export type ParamResult<T> = { ok: true; value: T } | { ok: false; text: string };

/**
 * RFC 3461 §4: xtext = *( xchar / hexchar ); xchar = "!"…"~" except "+" and "="; hexchar = "+" and
 * two hex digits (upper case in the RFC; lower case accepted, as Postfix does). With `utf8`
 * (RFC 6533 §3 utf-8-addr-unitext, SMTPUTF8 sessions only) non-ASCII characters stand for
 * themselves. undefined = not xtext.
 */
export function decodeXtext(s: string, utf8 = false): string | undefined {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2b) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
      out += String.fromCharCode(parseInt(hex, 16));
      i += 2;
    } else if ((c >= 0x21 && c <= 0x7e && c !== 0x3d) || (utf8 && c >= 0x80 && s[i] !== '\uFFFD')) {
      out += s[i];
    } else {
      return undefined;
    }
  }
  return out;
}

/**
 * The canonical xtext of a value: "+", "=", controls and space become "+XX"; non-ASCII characters
 * stay as they are with `utf8` (an SMTPUTF8 transaction), else their UTF-8 octets become "+XX".
 */
export function encodeXtext(s: string, utf8 = false): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if ((c >= 0x21 && c <= 0x7e && c !== 0x2b && c !== 0x3d) || (utf8 && c >= 0x80)) out += ch;
    else for (const b of Buffer.from(ch, 'utf8')) out += `+${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** RFC 3461 §4.2/§4.4: "printable (graphic and white space) characters from the US-ASCII repertoire". */
const PRINTABLE = /^[\x20-\x7e\t]*$/;
/** RFC 3461 §4.2: addr-type = atom (RFC 5322 atext) */
const ADDR_TYPE = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$/;

/** RET (RFC 3461 §4.3) */
export function parseRet(value: string): ParamResult<'FULL' | 'HDRS'> {
  const v = value.toUpperCase();
  return v === 'FULL' || v === 'HDRS' ? { ok: true, value: v } : { ok: false, text: 'Bad RET parameter syntax (RFC 3461 §4.3: FULL or HDRS)' };
}

/** ENVID (RFC 3461 §4.4) */
export function parseEnvid(value: string): ParamResult<string> {
  if (value.length > MAX_ENVID) return { ok: false, text: `ENVID longer than ${MAX_ENVID} characters (RFC 3461 §4.4)` };
  const d = decodeXtext(value);
  if (d === undefined || d.length === 0 || !PRINTABLE.test(d))
    return { ok: false, text: 'Bad ENVID parameter syntax (RFC 3461 §4.4: xtext of printable US-ASCII)' };
  return { ok: true, value: d };
}

/** NOTIFY (RFC 3461 §4.1): NEVER alone, or a comma list of SUCCESS, FAILURE, DELAY. */
export function parseNotify(value: string): ParamResult<Notify[]> {
  const words = value.toUpperCase().split(',');
  const known = new Set<string>(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY']);
  if (words.some((w) => !known.has(w))) return { ok: false, text: 'Bad NOTIFY parameter syntax (RFC 3461 §4.1: NEVER, or SUCCESS,FAILURE,DELAY)' };
  const set = [...new Set(words)] as Notify[];
  if (set.includes('NEVER') && set.length > 1) return { ok: false, text: 'NOTIFY=NEVER cannot be combined with other values (RFC 3461 §4.1)' };
  return { ok: true, value: set };
}

/**
 * ORCPT (RFC 3461 §4.2): addr-type ";" xtext. The decoded address must be printable US-ASCII,
 * except for the "utf-8" type (RFC 6533 §3) of a message sent with SMTPUTF8, which may carry UTF-8.
 */
export function parseOrcpt(value: string, smtputf8: boolean): ParamResult<{ type: string; address: string }> {
  if (value.length > MAX_ORCPT) return { ok: false, text: `ORCPT longer than ${MAX_ORCPT} characters (RFC 3461 §4.2)` };
  const semi = value.indexOf(';');
  const type = value.slice(0, Math.max(0, semi));
  const address = semi > 0 && ADDR_TYPE.test(type) ? decodeXtext(value.slice(semi + 1), smtputf8 && type.toLowerCase() === 'utf-8') : undefined;
  if (!address || !PRINTABLE.test(address.replace(/[^\x00-\x7f]/gu, '')))
    return { ok: false, text: 'Bad ORCPT parameter syntax (RFC 3461 §4.2: addr-type;xtext)' };
  return { ok: true, value: { type, address } };
}

/** What to append to MAIL FROM for a server that advertises DSN (RFC 3461 §5.2.1 (a), (b): only what was received). */
export function mailDsnParams(d: MailDsn | undefined): string {
  let s = '';
  if (d?.ret) s += ` RET=${d.ret}`;
  if (d?.envid !== undefined) s += ` ENVID=${encodeXtext(d.envid)}`;
  return s;
}

/** What to append to RCPT TO for a server that advertises DSN (RFC 3461 §5.2.1 (c), (d)). */
export function rcptDsnParams(d: RcptDsn | undefined): string {
  let s = '';
  if (d?.notify?.length) s += ` NOTIFY=${d.notify.join(',')}`;
  if (d?.orcpt) s += ` ORCPT=${d.orcpt.type};${encodeXtext(d.orcpt.address, d.orcpt.type.toLowerCase() === 'utf-8')}`;
  return s;
}

/**
 * Whether a notification of this kind may be sent for a recipient (RFC 3461 §5.2.2 (b), §5.2.5 (c),
 * §5.2.6 (b)). Without NOTIFY, failures and delays are reported (our default, "FAILURE,DELAY",
 * §4.1) and success is not.
 */
export function notifyAllows(d: RcptDsn | undefined, what: 'success' | 'failure' | 'delay'): boolean {
  const n = d?.notify;
  if (!n || n.length === 0) return what !== 'success';
  return n.includes(what.toUpperCase() as NotifyCondition);
}

/** Spool validation: undefined when `v` is a well-formed MailDsn, else why not. */
export function mailDsnProblem(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) return 'envelope.dsn is not an object';
  if (v.ret !== undefined && v.ret !== 'FULL' && v.ret !== 'HDRS') return 'envelope.dsn.ret is not FULL/HDRS';
  if (v.envid !== undefined && typeof v.envid !== 'string') return 'envelope.dsn.envid is not a string';
  return undefined;
}

/** Spool validation of the per-recipient map. */
export function rcptDsnProblem(v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) return 'envelope.rcptDsn is not an object';
  for (const [addr, d] of Object.entries(v)) {
    if (!isObj(d)) return `envelope.rcptDsn[${addr}] is not an object`;
    const n = d.notify;
    if (n !== undefined && (!Array.isArray(n) || !n.every((x) => ['NEVER', 'SUCCESS', 'FAILURE', 'DELAY'].includes(x as string))))
      return `envelope.rcptDsn[${addr}].notify is malformed`;
    const o = d.orcpt;
    if (o !== undefined && (!isObj(o) || typeof o.type !== 'string' || !ADDR_TYPE.test(o.type) || typeof o.address !== 'string'))
      return `envelope.rcptDsn[${addr}].orcpt is malformed`;
  }
  return undefined;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** one ESMTP parameter: keyword (upper case) and raw value */
export type CommandParam = [string, string | undefined];
const NO_PARAMS: readonly CommandParam[] = Object.freeze([]);
/** the answer for a command without DSN parameters */
const NO_DSN: ParamResult<undefined> = Object.freeze({ ok: true, value: undefined });

/**
 * The ESMTP parameters of a MAIL or RCPT command line as the client sent it (after the path),
 * keyword upper-cased, value still xtext. smtp-server decodes values before the relay sees them,
 * so the DSN parameters are checked on the raw line (ingress/server.ts).
 */
export function commandParams(line: string): readonly CommandParam[] {
  const close = line.indexOf('>');
  if (close < 0) return NO_PARAMS;
  const rest = line.slice(close + 1).trim();
  // the usual command, without parameters: nothing to split (one shared, frozen answer)
  if (rest === '') return NO_PARAMS;
  return rest
    .split(/\s+/)
    .filter(Boolean)
    .map((p) => {
      const eq = p.indexOf('=');
      return eq < 0 ? [p.toUpperCase(), undefined] : [p.slice(0, eq).toUpperCase(), p.slice(eq + 1)];
    });
}

/** The given parameters among `keys` (raw values); each at most once (RFC 3461 §4). */
function pick(params: readonly CommandParam[], keys: string[]): ParamResult<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [k, v] of params) {
    if (!keys.includes(k)) continue;
    if (out.has(k)) return { ok: false, text: `${k} given more than once (RFC 3461 §4)` };
    out.set(k, v ?? '');
  }
  return { ok: true, value: out };
}

/** RET and ENVID of a MAIL command; undefined value = the client gave neither. */
export function mailDsnOf(params: readonly CommandParam[]): ParamResult<MailDsn | undefined> {
  if (params.length === 0) return NO_DSN;
  const p = pick(params, ['RET', 'ENVID']);
  if (!p.ok) return p;
  const out: MailDsn = {};
  const ret = p.value.get('RET');
  const envid = p.value.get('ENVID');
  if (ret !== undefined) {
    const r = parseRet(ret);
    if (!r.ok) return r;
    out.ret = r.value;
  }
  if (envid !== undefined) {
    const r = parseEnvid(envid);
    if (!r.ok) return r;
    out.envid = r.value;
  }
  return { ok: true, value: p.value.size ? out : undefined };
}

/** NOTIFY and ORCPT of a RCPT command. */
export function rcptDsnOf(params: readonly CommandParam[], smtputf8: boolean): ParamResult<RcptDsn | undefined> {
  if (params.length === 0) return NO_DSN;
  const p = pick(params, ['NOTIFY', 'ORCPT']);
  if (!p.ok) return p;
  const out: RcptDsn = {};
  const notify = p.value.get('NOTIFY');
  const orcpt = p.value.get('ORCPT');
  if (notify !== undefined) {
    const r = parseNotify(notify);
    if (!r.ok) return r;
    out.notify = r.value;
  }
  if (orcpt !== undefined) {
    const r = parseOrcpt(orcpt, smtputf8);
    if (!r.ok) return r;
    out.orcpt = r.value;
  }
  return { ok: true, value: p.value.size ? out : undefined };
}
