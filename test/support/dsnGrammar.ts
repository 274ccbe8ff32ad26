/**
 * An RFC 3464 / RFC 6522 checker for every DSN the test suite sees (issue 21 item 6). Written from the
 * RFCs, independent of src/dsn/compose.ts and of nodemailer: a report that this accepts is one a
 * conforming parser reads.
 *
 * - RFC 6522 §3: `multipart/report` with a `report-type` parameter naming the second part's subtype;
 *   the first part human-readable, the second `message/delivery-status`, an optional third the returned
 *   message (`message/rfc822` or `text/rfc822-headers`, RFC 6522 §4), nothing after it.
 * - RFC 3464 §2.1: the delivery-status content is a per-message group, then one or more per-recipient
 *   groups, separated by blank lines; each group is header fields (RFC 822 syntax, folding allowed),
 *   7-bit (RFC 3464 §2.1.1: UTF-8 only in RFC 6533's message/global-delivery-status), names
 *   case-insensitive, no field twice in a group.
 * - RFC 3464 §2.2: per-message — `Reporting-MTA` required (`mta-name-type ; mta-name`), `Original-Envelope-Id`,
 *   `DSN-Gateway`, `Received-From-MTA`, `Arrival-Date` (RFC 5322 date-time) optional; `X-` extension fields.
 * - RFC 3464 §2.3: per-recipient — `Final-Recipient` (`address-type ; generic-address`), `Action` (failed /
 *   delayed / delivered / relayed / expanded) and `Status` (RFC 3463 `class.subject.detail`, class 2/4/5) required;
 *   `Original-Recipient`, `Remote-MTA`, `Diagnostic-Code` (`diagnostic-type ; *text`), `Last-Attempt-Date`,
 *   `Final-Log-ID`, `Will-Retry-Until` (only with Action delayed, §2.3.9) optional. The Status class agrees with
 *   the Action (RFC 3464 §2.3.3/§2.3.4 with RFC 3463 §3.1: failed 5, delayed 4, delivered/relayed/expanded 2).
 */

const PER_MESSAGE = new Set(['original-envelope-id', 'reporting-mta', 'dsn-gateway', 'received-from-mta', 'arrival-date']);
const PER_RECIPIENT = new Set([
  'original-recipient',
  'final-recipient',
  'action',
  'status',
  'remote-mta',
  'diagnostic-code',
  'last-attempt-date',
  'final-log-id',
  'will-retry-until',
]);
const ACTIONS = new Set(['failed', 'delayed', 'delivered', 'relayed', 'expanded']);
const CLASS_OF_ACTION: Record<string, string> = { failed: '5', delayed: '4', delivered: '2', relayed: '2', expanded: '2' };

/** RFC 5322 §3.2.3 atom (what `address-type`, `mta-name-type` and `diagnostic-type` are, RFC 3464 §2.1.2) */
const ATOM = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$/;
/** RFC 5322 §3.3 date-time, as mail systems write it (day name optional, numeric zone) */
const DATE_TIME = /^(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}(?::\d{2})? [+-]\d{4}$/;
/** RFC 3463 §2 / RFC 3464 §2.3.4: status-code = DIGIT "." 1*3DIGIT "." 1*3DIGIT, class 2, 4 or 5 */
const STATUS = /^[245]\.\d{1,3}\.\d{1,3}$/;

export interface Field {
  name: string;
  value: string;
}
export interface DeliveryStatus {
  perMessage: Field[];
  perRecipient: Field[][];
}

/** Header block → fields (unfolded); problems for lines that are neither a field nor a continuation. */
function fieldsOf(block: string, problems: string[], where: string): Field[] {
  const out: Field[] = [];
  for (const line of block.split('\r\n')) {
    if (/^[ \t]/.test(line) && out.length) out[out.length - 1]!.value += ` ${line.trim()}`;
    else {
      const m = /^([\x21-\x39\x3b-\x7e]+):[ \t]*(.*)$/.exec(line);
      if (!m) problems.push(`${where}: not a header field: ${JSON.stringify(line)}`);
      else out.push({ name: m[1]!, value: m[2]!.trim() });
    }
  }
  return out;
}

/** `type ; value` with an atom type (address-type, mta-name-type, diagnostic-type) */
function typed(v: string, what: string, problems: string[], where: string, needValue = true): { type: string; rest: string } | undefined {
  const i = v.indexOf(';');
  if (i < 0) {
    problems.push(`${where}: ${what} "${v}" lacks its type (RFC 3464 §2.1.2: type ";" value)`);
    return undefined;
  }
  const type = v.slice(0, i).trim();
  const rest = v.slice(i + 1).trim();
  if (!ATOM.test(type)) problems.push(`${where}: ${what} type "${type}" is not an atom`);
  if (needValue && !rest) problems.push(`${where}: ${what} has no value after its type`);
  return { type, rest };
}

function checkGroup(fields: Field[], allowed: Set<string>, problems: string[], where: string): Map<string, string> {
  const seen = new Map<string, string>();
  for (const f of fields) {
    const n = f.name.toLowerCase();
    if (seen.has(n)) problems.push(`${where}: ${f.name} appears twice`);
    if (!allowed.has(n) && !n.startsWith('x-'))
      problems.push(
        `${where}: ${f.name} is not a ${where.startsWith('per-message') ? 'per-message' : 'per-recipient'} field (RFC 3464 §2.2/§2.3) nor an X- extension`,
      );
    seen.set(n, f.value);
  }
  return seen;
}

/** RFC 3464 §2.1-§2.3 on the content of a message/delivery-status part (CRLF line ends). */
export function checkDeliveryStatus(content: string): { problems: string[]; status?: DeliveryStatus } {
  const problems: string[] = [];
  if (/[^\x00-\x7f]/.test(content)) problems.push('delivery-status: not 7-bit (RFC 3464 §2.1.1; UTF-8 needs message/global-delivery-status, RFC 6533)');
  if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(content)) problems.push('delivery-status: control characters');
  if (/\r(?!\n)|(?<!\r)\n/.test(content)) problems.push('delivery-status: a bare CR or LF');
  const groups = content
    .replace(/(\r\n)+$/, '')
    .split(/\r\n\r\n+/)
    .filter((g) => g.length > 0);
  if (groups.length < 2) {
    problems.push(`delivery-status: ${groups.length} group(s); a per-message group and at least one per-recipient group are required (RFC 3464 §2.1)`);
    return { problems };
  }
  const perMessage = fieldsOf(groups[0]!, problems, 'per-message');
  const pm = checkGroup(perMessage, PER_MESSAGE, problems, 'per-message');
  const rmta = pm.get('reporting-mta');
  if (rmta === undefined) problems.push('per-message: Reporting-MTA is required (RFC 3464 §2.2.2)');
  else typed(rmta, 'Reporting-MTA', problems, 'per-message');
  for (const k of ['dsn-gateway', 'received-from-mta']) if (pm.has(k)) typed(pm.get(k)!, k, problems, 'per-message');
  if (pm.has('arrival-date') && !DATE_TIME.test(pm.get('arrival-date')!))
    problems.push(`per-message: Arrival-Date "${pm.get('arrival-date')}" is not a date-time`);
  if (pm.has('original-envelope-id') && !/^[\x21-\x7e]+$/.test(pm.get('original-envelope-id')!))
    problems.push('per-message: Original-Envelope-Id is not printable US-ASCII without spaces (RFC 3461 §4.4)');

  const perRecipient: Field[][] = [];
  groups.slice(1).forEach((g, i) => {
    const where = `per-recipient group ${i + 1}`;
    const fields = fieldsOf(g, problems, where);
    perRecipient.push(fields);
    const pr = checkGroup(fields, PER_RECIPIENT, problems, where);
    for (const k of ['final-recipient', 'action', 'status']) if (!pr.has(k)) problems.push(`${where}: ${k} is required (RFC 3464 §2.3)`);
    for (const k of ['final-recipient', 'original-recipient']) {
      const t = pr.has(k) ? typed(pr.get(k)!, k, problems, where) : undefined;
      // RFC 6533 §3: in message/delivery-status a utf-8 address is utf-8-addr-xtext (QCHAR or \x{HEX})
      if (t?.type.toLowerCase() === 'utf-8' && !/^(?:[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]|\\x\{[0-9A-F]{2,6}\})+$/.test(t.rest))
        problems.push(`${where}: ${k} utf-8 address "${t.rest}" is not utf-8-addr-xtext (RFC 6533 §3)`);
    }
    if (pr.has('remote-mta')) typed(pr.get('remote-mta')!, 'Remote-MTA', problems, where);
    if (pr.has('diagnostic-code')) typed(pr.get('diagnostic-code')!, 'Diagnostic-Code', problems, where, false);
    const action = pr.get('action')?.toLowerCase();
    const status = pr.get('status');
    if (action !== undefined && !ACTIONS.has(action)) problems.push(`${where}: Action "${action}" is not one of ${[...ACTIONS].join(', ')} (RFC 3464 §2.3.3)`);
    if (status !== undefined) {
      const code = status.split(/\s/)[0]!; // a comment may follow the code (RFC 3464 §2.3.4)
      if (!STATUS.test(code)) problems.push(`${where}: Status "${status}" is not class.subject.detail (RFC 3463)`);
      else if (action && CLASS_OF_ACTION[action] && code[0] !== CLASS_OF_ACTION[action])
        problems.push(`${where}: Status ${code} does not agree with Action ${action} (class ${CLASS_OF_ACTION[action]})`);
    }
    for (const k of ['last-attempt-date', 'will-retry-until'])
      if (pr.has(k) && !DATE_TIME.test(pr.get(k)!)) problems.push(`${where}: ${k} "${pr.get(k)}" is not a date-time`);
    if (pr.has('will-retry-until') && action !== 'delayed') problems.push(`${where}: Will-Retry-Until only with Action delayed (RFC 3464 §2.3.9)`);
  });
  return { problems, status: { perMessage, perRecipient } };
}

interface Part {
  headers: Map<string, string>;
  body: string;
}

function contentType(v: string | undefined): { type: string; params: Map<string, string> } {
  const [t, ...ps] = (v ?? 'text/plain').split(';');
  const params = new Map<string, string>();
  for (const p of ps) {
    const m = /^\s*([^=\s]+)\s*=\s*(?:"([^"]*)"|(\S*))\s*$/.exec(p);
    if (m) params.set(m[1]!.toLowerCase(), m[2] ?? m[3]!);
  }
  return { type: t!.trim().toLowerCase(), params };
}

function splitEntity(raw: string): Part {
  const i = raw.indexOf('\r\n\r\n');
  const head = i < 0 ? raw : raw.slice(0, i);
  const headers = new Map<string, string>();
  for (const f of fieldsOf(head, [], 'header')) headers.set(f.name.toLowerCase(), f.value);
  return { headers, body: i < 0 ? '' : raw.slice(i + 4) };
}

function decodeBody(p: Part): string {
  const cte = (p.headers.get('content-transfer-encoding') ?? '7bit').toLowerCase();
  if (cte === 'base64') return Buffer.from(p.body.replace(/\s+/g, ''), 'base64').toString('latin1');
  if (cte === 'quoted-printable') return p.body.replace(/=\r\n/g, '').replace(/=([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
  return p.body;
}

/** Is this message a delivery status notification (RFC 6522 multipart/report; report-type=delivery-status)? */
export function isDsn(message: Buffer | string): boolean {
  const raw = typeof message === 'string' ? message : message.toString('latin1');
  const ct = contentType(splitEntity(raw.replace(/(?<!\r)\n/g, '\r\n')).headers.get('content-type'));
  return ct.type === 'multipart/report' && ct.params.get('report-type')?.toLowerCase() === 'delivery-status';
}

/** Every RFC 6522 / RFC 3464 problem of a DSN message; empty when it conforms. */
export function dsnProblems(message: Buffer | string): { problems: string[]; status?: DeliveryStatus } {
  const raw = typeof message === 'string' ? message : message.toString('latin1');
  const problems: string[] = [];
  if (/(?<!\r)\n/.test(raw)) problems.push('message: a bare LF (RFC 5322 §2.3: lines end in CRLF)');
  const top = splitEntity(raw);
  const ct = contentType(top.headers.get('content-type'));
  if (ct.type !== 'multipart/report') return { problems: [...problems, `Content-Type is ${ct.type}, not multipart/report (RFC 6522 §3)`] };
  const reportType = ct.params.get('report-type');
  if (!reportType) problems.push('multipart/report without its required report-type parameter (RFC 6522 §3)');
  const boundary = ct.params.get('boundary');
  if (!boundary) return { problems: [...problems, 'multipart/report without a boundary (RFC 2046 §5.1.1)'] };
  const delim = `\r\n--${boundary}`;
  const body = `\r\n${top.body}`;
  const close = body.indexOf(`${delim}--`);
  if (close < 0) problems.push('no closing boundary (RFC 2046 §5.1.1)');
  const parts = body
    .slice(0, close < 0 ? undefined : close)
    .split(delim)
    .slice(1)
    .map((p) => splitEntity(p.replace(/^[ \t]*\r\n/, '')));
  if (parts.length < 2 || parts.length > 3) problems.push(`multipart/report has ${parts.length} parts; RFC 6522 §3 wants 2 or 3`);
  const types = parts.map((p) => contentType(p.headers.get('content-type')).type);
  if (types[0] !== undefined && !types[0].startsWith('text/') && types[0] !== 'multipart/alternative')
    problems.push(`first part is ${types[0]}, not human-readable text (RFC 6522 §3)`);
  if (types[1] !== 'message/delivery-status') problems.push(`second part is ${types[1]}, not message/delivery-status (RFC 3464 §2.1)`);
  else if (reportType && reportType.toLowerCase() !== 'delivery-status')
    problems.push(`report-type ${reportType} does not name the second part's subtype (RFC 6522 §3)`);
  if (types[2] !== undefined && types[2] !== 'message/rfc822' && types[2] !== 'text/rfc822-headers')
    problems.push(`third part is ${types[2]}, not message/rfc822 or text/rfc822-headers (RFC 6522 §4)`);
  if (types[1] !== 'message/delivery-status') return { problems };
  const ds = checkDeliveryStatus(decodeBody(parts[1]!));
  return { problems: [...problems, ...ds.problems], status: ds.status };
}

/** Throws with every problem when `message` is not a conforming DSN. Returns the parsed groups. */
export function assertValidDsn(message: Buffer | string): DeliveryStatus {
  const { problems, status } = dsnProblems(message);
  if (problems.length) throw new Error(`DSN breaks RFC 3464 / RFC 6522:\n- ${problems.join('\n- ')}`);
  return status!;
}

/**
 * The DSNs checked in this test process, and the problems found: every receiver (test/support/receiver.ts)
 * and every World's queue at close (test/support/world.ts) record here; test/support/dsnCheck.setup.ts
 * fails the test in which a bad one appeared.
 */
export const dsnLedger: { checked: number; bad: string[] } = { checked: 0, bad: [] };

/** Checks `message` if it is a DSN, records the outcome in the ledger; returns its problems. */
export function recordDsn(message: Buffer | string, where: string): string[] {
  if (!isDsn(message)) return [];
  dsnLedger.checked++;
  const { problems } = dsnProblems(message);
  if (problems.length) dsnLedger.bad.push(`${where}: ${problems.join('; ')}`);
  return problems;
}
