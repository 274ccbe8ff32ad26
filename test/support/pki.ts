/**
 * A throw-away test PKI on @peculiar/x509 + webcrypto.
 *
 * Everything here is real: real key pairs, real signatures, DER that node:crypto
 * and OpenSSL (node:tls) accept. Tests build the exact chains they need
 * (roots, intermediates, leaves, self-signed leaves, expired or misnamed ones)
 * instead of shipping fixture files that silently expire.
 *
 * Conventions:
 * - `dnsNames` undefined or empty → no subjectAltName extension at all (so a
 *   test can exercise the CN fallback of RFC 7672 §3.2.3 on purpose).
 * - Default validity is now-1h .. now+30d.
 * - Subject/issuer names are copied as encoded `Name` objects so issuer/subject
 *   byte comparison (node `checkIssued`, OpenSSL) works.
 */
import 'reflect-metadata';
import { webcrypto, createHash, randomBytes } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// tsconfig has no DOM lib: take the WebCrypto types from node:crypto.
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;

// @peculiar/x509 needs a WebCrypto provider; node's is the real thing.
const crypto = webcrypto;
x509.cryptoProvider.set(crypto);

export interface Issued {
  certPem: string;
  keyPem: string; // PEM cert, PKCS#8 PEM private key (usable directly in node:tls key/cert)
  der: Buffer;
  spki: Buffer; // certificate DER, SubjectPublicKeyInfo DER
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

export interface CertOptions {
  cn?: string;
  dnsNames?: string[]; // SAN dNSNames
  notBefore?: Date;
  notAfter?: Date; // default: now-1h .. now+30d
  keyAlg?: 'ec' | 'rsa'; // default 'ec' (P-256); rsa = RSA-2048 PKCS#1 v1.5 SHA-256
  pathLen?: number; // for CAs
  serial?: string;
}

type KeyAlg = 'ec' | 'rsa';

const EC_GEN: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
const RSA_GEN: webcrypto.RsaHashedKeyGenParams = {
  name: 'RSASSA-PKCS1-v1_5',
  modulusLength: 2048,
  publicExponent: new Uint8Array([1, 0, 1]),
  hash: 'SHA-256',
};

async function generateKeys(alg: KeyAlg): Promise<CryptoKeyPair> {
  return (await crypto.subtle.generateKey(alg === 'rsa' ? RSA_GEN : EC_GEN, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** The signature algorithm is chosen by the *signer's* key, not the subject's. */
function signingAlgorithm(signer: CryptoKeyPair): Algorithm | EcdsaParams {
  return signer.privateKey.algorithm.name === 'ECDSA' ? ({ name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams) : { name: 'RSASSA-PKCS1-v1_5' };
}

function randomSerial(): string {
  // Positive INTEGER: keep the top bit of the first octet clear.
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString('hex');
}

function escapeDnValue(v: string): string {
  // RFC 4514 §2.4 escaping, enough for test names.
  return v
    .replace(/([,+"\\<>;=])/g, '\\$1')
    .replace(/^([ #])/, '\\$1')
    .replace(/ $/, '\\ ');
}

function pem(label: string, der: ArrayBuffer | Buffer): string {
  const b64 = Buffer.from(der as ArrayBuffer)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

async function finish(cert: x509.X509Certificate, keys: CryptoKeyPair): Promise<Issued> {
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  const der = Buffer.from(cert.rawData);
  return {
    certPem: pem('CERTIFICATE', der),
    keyPem: pem('PRIVATE KEY', pkcs8),
    der,
    spki: Buffer.from(cert.publicKey.rawData),
    cert,
    keys,
  };
}

interface BuildParams {
  opts: CertOptions;
  ca: boolean;
  defaultCn: string;
  issuer?: Issued; // undefined → self-signed
}

async function build({ opts, ca, defaultCn, issuer }: BuildParams): Promise<Issued> {
  const keys = await generateKeys(opts.keyAlg ?? 'ec');
  const signer = issuer?.keys ?? keys;
  const now = Date.now();
  const subject = `CN=${escapeDnValue(opts.cn ?? defaultCn)}`;

  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(ca, ca ? opts.pathLen : undefined, true),
    new x509.KeyUsagesExtension(
      ca
        ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature
        : keys.publicKey.algorithm.name === 'ECDSA'
          ? x509.KeyUsageFlags.digitalSignature
          : x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
      true,
    ),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    await x509.AuthorityKeyIdentifierExtension.create(signer.publicKey, false, crypto),
  ];
  if (!ca) extensions.push(new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false));
  if (opts.dnsNames && opts.dnsNames.length > 0) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        opts.dnsNames.map((value) => ({ type: 'dns' as const, value })),
        false,
      ),
    );
  }

  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: opts.serial ?? randomSerial(),
      subject,
      // Copy the issuer's encoded subject so name chaining is byte-exact.
      issuer: issuer ? issuer.cert.subjectName : subject,
      notBefore: opts.notBefore ?? new Date(now - 3600_000),
      notAfter: opts.notAfter ?? new Date(now + 30 * 86400_000),
      publicKey: keys.publicKey,
      signingKey: signer.privateKey,
      signingAlgorithm: signingAlgorithm(signer),
      extensions,
    },
    crypto,
  );
  return finish(cert, keys);
}

let caCounter = 0;
function uniqueCaName(prefix: string): string {
  caCounter += 1;
  return `${prefix} ${caCounter} ${randomBytes(3).toString('hex')}`;
}

/** Self-signed root, basicConstraints CA:true (critical). */
export function makeCa(opts: CertOptions = {}): Promise<Issued> {
  return build({ opts, ca: true, defaultCn: uniqueCaName('dane-relay test root') });
}

/** Intermediate CA signed by `issuer`. */
export function makeIntermediate(issuer: Issued, opts: CertOptions = {}): Promise<Issued> {
  return build({ opts, ca: true, defaultCn: uniqueCaName('dane-relay test intermediate'), issuer });
}

/** End-entity certificate signed by `issuer`: CA:false, serverAuth EKU. */
export function makeLeaf(issuer: Issued, opts: CertOptions = {}): Promise<Issued> {
  return build({ opts, ca: false, defaultCn: 'dane-relay test leaf', issuer });
}

/** End-entity certificate signed by its own key (CA:false), the usual DANE-EE server cert. */
export function makeSelfSigned(opts: CertOptions = {}): Promise<Issued> {
  return build({ opts, ca: false, defaultCn: 'dane-relay self-signed leaf' });
}

/** Concatenated PEM, leaf first (the order node:tls `cert` expects). */
export function chainPem(...certs: Issued[]): string {
  return certs.map((c) => c.certPem).join('');
}

/**
 * TLSA certificate association data (RFC 6698 §2.1.2–2.1.3): selector 0 = the
 * whole certificate DER, 1 = SubjectPublicKeyInfo DER; matching type 0 = the
 * bytes themselves, 1 = SHA-256, 2 = SHA-512.
 */
export function tlsaData(cert: Issued, selector: 0 | 1, matchingType: 0 | 1 | 2): Buffer {
  const bytes = selector === 0 ? cert.der : cert.spki;
  if (matchingType === 0) return Buffer.from(bytes);
  return createHash(matchingType === 1 ? 'sha256' : 'sha512')
    .update(bytes)
    .digest();
}
