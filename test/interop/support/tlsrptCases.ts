/**
 * The TLSRPT digest's cases that are about what reaches receivers (docs/spec/tlsrpt.md,
 * cases 1, 7 and 9, and 3, 4, 10 checked on the reports as received), in the interop world: policy domains whose DANE fails (sessions counted as
 * failures), `_smtp._tls` TXT records served by nsd and validated by Unbound, rua mailboxes that
 * are Postfix listeners — one with good DANE, one whose DANE is broken (the loop guard) — and a
 * DKIM key published in a signed zone.
 *
 * Only used when the relay's config has a `tlsrpt` section (RFC 8460 reporting, issue 6).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeSelfSigned, tlsaData, type Issued } from '../../support/pki.js';
import type { ZoneSpec } from './dnsworld.js';
import type { Listener } from './postfix.js';
import { CLI } from './relay.js';

export interface TlsrptWorld {
  zones: ZoneSpec[];
  listeners: Listener[];
  /** YAML for the relay's tlsrpt section */
  yaml: string;
  dkimDomain: string;
  /** policy domains whose report goes to the good rua (TXT variants of case 1) */
  reportedToGood: string[];
  /** policy domain whose rua's MX fails DANE (case 9) */
  loopDomain: string;
  /** policy domain with two v=TLSRPTv1 records: no report (case 1) */
  ambiguousDomain: string;
  goodRuaListener: string;
  brokenRuaListener: string;
  submitter: string;
  /** holds the DKIM key; remove after the run */
  dir: string;
}

const hex = (c: Issued) => tlsaData(c, 1, 1).toString('hex').toUpperCase();

export async function buildTlsrptWorld(): Promise<TlsrptWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'dane-relay-interop-dkim-'));
  const dkimDomain = 'reports.tst';
  const keyFile = join(dir, 'dkim.pem');
  // the relay's own key generator; its zone line goes into the signed zone as printed
  const printed = execFileSync(process.execPath, [CLI, 'dkim', 'keygen', '--domain', dkimDomain, '--selector', 'tlsrpt', '--out', keyFile], {
    encoding: 'utf8',
  });
  const zoneLine = printed.split('\n').find((l) => l.includes('_domainkey'))!;
  readFileSync(keyFile); // written, or keygen failed loudly above
  const served = await makeSelfSigned({ dnsNames: ['mx1'] });
  const other = await makeSelfSigned({ dnsNames: ['mx1'] });
  const zones: ZoneSpec[] = [];
  const listeners: Listener[] = [];
  let k = 0;
  const host = (domain: string, matching: boolean, txt: string[] = []) => {
    const ip = `127.0.90.${++k}`;
    zones.push({
      name: domain,
      records: [`@ MX 10 mx1`, `mx1 A ${ip}`, `_25._tcp.mx1 TLSA 3 1 1 ${hex(matching ? served : other)}`, ...txt.map((t) => `_smtp._tls TXT ${t}`)],
    });
    listeners.push({ name: `mx1.${domain}`, address: ip, tls: { keyPem: served.keyPem, chainPem: served.certPem } });
    return `mx1.${domain}`;
  };
  const goodRuaListener = host('rua-ok.tst', true);
  const brokenRuaListener = host('rua-broken.tst', false);
  host('rpt-plain.tst', false, ['"v=TLSRPTv1; rua=mailto:tlsrpt@rua-ok.tst"', '"v=spf1 -all"', '"site-verification=abc123"']);
  host('rpt-multi.tst', false, ['"v=TLSRPTv1; rua=mai" "lto:tlsrpt@rua-ok.tst; x-future-ext=1"']);
  host('rpt-two.tst', false, ['"v=TLSRPTv1; rua=mailto:tlsrpt@rua-ok.tst"', '"v=TLSRPTv1; rua=mailto:other@rua-ok.tst"']);
  host('rpt-loop.tst', false, ['"v=TLSRPTv1; rua=mailto:reports@rua-broken.tst"']);
  zones.push({ name: dkimDomain, records: [zoneLine] });
  const yaml = [
    'tlsrpt:',
    `  contact_info: tlsrpt@${dkimDomain}`,
    `  submitter: ${dkimDomain}`,
    '  max_delay: 1s',
    `  dkim: { domain: ${dkimDomain}, selector: tlsrpt, key_file: ${keyFile} }`,
  ].join('\n');
  return {
    zones,
    listeners,
    yaml,
    dkimDomain,
    submitter: dkimDomain,
    dir,
    reportedToGood: ['rpt-plain.tst', 'rpt-multi.tst'],
    loopDomain: 'rpt-loop.tst',
    ambiguousDomain: 'rpt-two.tst',
    goodRuaListener,
    brokenRuaListener,
  };
}
