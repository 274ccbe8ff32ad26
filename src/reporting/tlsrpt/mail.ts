/**
 * A mailed TLSRPT report (RFC 8460 §5.3, digest TLSRPT-42…45): multipart/report; report-type=tlsrpt,
 * a human-readable part and the gzipped JSON, composed with nodemailer's MailComposer and
 * DKIM-signed with nodemailer's DKIM signer (no l=, h= covering both TLS-Report-* headers).
 */
import { generateKeyPairSync } from 'node:crypto';
import MailComposer from 'nodemailer/lib/mail-composer';
import DKIM from 'nodemailer/lib/dkim';
import type { Envelope } from '../../spool/types.js';
import { aLabel, reportSubject, type ReportJson } from './report.js';

export interface DkimKey {
  domain: string;
  selector: string;
  /** PEM */
  privateKey: string;
}

export interface ReportMailInput {
  report: ReportJson;
  /** gzip of the JSON */
  gz: Buffer;
  filename: string;
  /** the TLSRPT Policy Domain the report is for */
  policyDomain: string;
  submitter: string;
  /** mailto: addresses from rua */
  to: string[];
  dkim: DkimKey;
  now: number;
}

/** Signed header fields: the usual set plus both TLS-Report-* headers (TLSRPT-44). */
const SIGNED_HEADERS = [
  'From',
  'Sender',
  'Reply-To',
  'Subject',
  'Date',
  'Message-ID',
  'To',
  'Cc',
  'MIME-Version',
  'Content-Type',
  'Content-Transfer-Encoding',
  'Auto-Submitted',
  'TLS-Report-Domain',
  'TLS-Report-Submitter',
  'TLS-Required',
].join(':');

function humanText(r: ReportJson, policyDomain: string): string {
  const ok = r.policies.reduce((a, p) => a + p.summary['total-successful-session-count'], 0);
  const bad = r.policies.reduce((a, p) => a + p.summary['total-failure-session-count'], 0);
  return [
    `This is an aggregate TLS report (RFC 8460) from ${r['organization-name']}.`,
    '',
    `Policy domain: ${policyDomain}`,
    `Period: ${r['date-range']['start-datetime']} to ${r['date-range']['end-datetime']}`,
    `Report-ID: ${r['report-id']}`,
    `Sessions: ${ok} successful, ${bad} failed`,
    '',
    `Contact: ${r['contact-info']}`,
    'The attached JSON document is authoritative.',
    '',
  ].join('\r\n');
}

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c as string));
  return Buffer.concat(chunks);
}

/**
 * Signs a tiny message with the configured key, the way composeReportMail does, so a key nodemailer
 * cannot use (wrong type, damaged) is reported when the relay starts, not at the first report a day later.
 */
export async function checkDkimKey(dkim: DkimKey): Promise<void> {
  const msg = Buffer.from(
    `From: <t@${dkim.domain}>\r\nTLS-Report-Domain: example.org\r\nTLS-Report-Submitter: ${dkim.domain}\r\nSubject: key check\r\n\r\nkey check\r\n`,
  );
  let signed: Buffer;
  try {
    signed = await collect(
      new DKIM({ domainName: aLabel(dkim.domain), keySelector: dkim.selector, privateKey: dkim.privateKey, headerFieldNames: SIGNED_HEADERS }).sign(msg),
    );
  } catch (e) {
    throw new Error(`tlsrpt.dkim.key_file: the key cannot sign (${(e as Error).message}); make one with \`dane-relay dkim keygen\``);
  }
  if (!/^DKIM-Signature:/im.test(signed.toString('latin1')))
    throw new Error('tlsrpt.dkim.key_file: the key cannot sign (no DKIM-Signature was produced); make one with `dane-relay dkim keygen`');
}

/** The signed message and its envelope (kind 'tlsrpt': delivered opportunistically, never counted, no DSN). */
export async function composeReportMail(i: ReportMailInput): Promise<{ envelope: Envelope; message: Buffer }> {
  if (i.to.length === 0) throw new Error('no mailto: recipient');
  const submitter = aLabel(i.submitter);
  const policyDomain = aLabel(i.policyDomain);
  const reportId = i.report['report-id'];
  const mail = new MailComposer({
    from: { name: `${i.report['organization-name']} TLS reporting`, address: i.report['contact-info'] },
    to: i.to,
    subject: reportSubject(policyDomain, submitter, reportId),
    date: new Date(i.now),
    messageId: `<${reportId}@${submitter}>`,
    headers: {
      'TLS-Report-Domain': policyDomain,
      'TLS-Report-Submitter': submitter,
      // TLSRPT-45: mark as machine-generated so nothing auto-replies to it.
      'Auto-Submitted': 'auto-generated',
      // RT-35 (RFC 8689 §3, RFC 8460 §3): the report must reach a destination whose DANE or MTA-STS is broken,
      // also through relays after ours: ask them too not to enforce the recipient's policies.
      'TLS-Required': 'No',
    },
    text: humanText(i.report, policyDomain),
    attachments: [
      {
        filename: i.filename,
        content: i.gz,
        contentType: 'application/tlsrpt+gzip',
        contentDisposition: 'attachment',
        contentTransferEncoding: 'base64',
      },
    ],
  });
  const root = mail.compile();
  // RFC 6522 / RFC 8460 §5.3: the top level is multipart/report with report-type tlsrpt.
  root.setHeader('Content-Type', 'multipart/report; report-type="tlsrpt"');
  const built: Buffer = await root.build();
  // MimeNode writes "Tls-Report-Domain" (and "Tls-Required"); names are case-insensitive (RFC 5322 §1.2.2), but RFC 8460 §5.3 spells
  // them "TLS-Report-*" and simple consumers match literally. Fixed in the header block only, before signing.
  const end = built.indexOf('\r\n\r\n');
  const unsigned = Buffer.concat([
    Buffer.from(
      built
        .subarray(0, end)
        .toString('latin1')
        .replace(/^Tls-Report-/gim, 'TLS-Report-')
        .replace(/^Tls-Required:/gim, 'TLS-Required:'),
      'latin1',
    ),
    built.subarray(end),
  ]);
  const signer = new DKIM({
    domainName: aLabel(i.dkim.domain),
    keySelector: i.dkim.selector,
    privateKey: i.dkim.privateKey,
    headerFieldNames: SIGNED_HEADERS,
  });
  const message = await collect(signer.sign(unsigned));
  return {
    envelope: {
      // Null reverse-path: a bounce of a report goes nowhere, so it can never be re-reported (TLSRPT-45).
      from: '',
      recipients: [...i.to],
      smtputf8: false,
      eightBit: false,
      client: { address: '127.0.0.1', name: 'localhost' },
      received: i.now,
      kind: 'tlsrpt',
      messageId: `<${reportId}@${submitter}>`,
    },
    message,
  };
}

/**
 * `dane-relay dkim keygen`: an RSA-2048 key (RFC 8301) and its DNS record. `s=email:tlsrpt` declares the
 * key for TLSRPT (RFC 8460 §3 SHOULD list s=tlsrpt) while keeping it usable for ordinary email.
 */
export function dkimKeygen(opts: { selector?: string; domain?: string }): { privateKeyPem: string; name: string; txt: string; zoneLine: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const p = (publicKey.export({ type: 'spki', format: 'der' }) as Buffer).toString('base64');
  const selector = opts.selector ?? 'tlsrpt';
  const name = `${selector}._domainkey.${opts.domain ? aLabel(opts.domain) : '<domain>'}`;
  const txt = `v=DKIM1; k=rsa; s=email:tlsrpt; p=${p}`;
  // TXT strings are at most 255 bytes: split the record into quoted chunks (joined without spaces).
  const chunks = txt
    .match(/.{1,250}/g)!
    .map((c) => `"${c}"`)
    .join(' ');
  return { privateKeyPem: pem, name, txt, zoneLine: `${name}. IN TXT ( ${chunks} )` };
}
