/**
 * The AUTH users file and its password hashes.
 *
 * One user per line, `#` starts a comment line:
 *
 *   alice:$scrypt$N=16384,r=8,p=1$<salt base64>$<hash base64>
 *
 * scrypt (RFC 7914) through node:crypto, compared with timingSafeEqual. `hashPassword`
 * produces the part after "user:" (the `dane-relay hash-password` CLI prints it).
 *
 * Passwords are NFC-normalised before hashing and verifying, the normalisation of the
 * PRECIS OpaqueString profile (RFC 8265 §4.2), which replaced the SASLprep that RFC 4616
 * PLAIN refers to: the same password typed on two systems that compose accents
 * differently still verifies.
 */
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { checkReadFile, currentIdentity } from '../files/checks.js';

export const SCRYPT_DEFAULTS = { N: 16384, r: 8, p: 1 } as const;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

// Bounds on the parameters read from the file: a typo such as N=1073741824 must not
// make every AUTH attempt allocate gigabytes (scrypt needs 128·N·r bytes).
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;

const HASH_RE = /^\$scrypt\$N=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;
/** user names: no colon (field separator), no whitespace or control characters (they end up in logs) */
const USER_RE = /^[^\s:\x00-\x1f\x7f]{1,256}$/u;

interface ScryptHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

function scrypt(password: string, salt: Buffer, keylen: number, o: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password.normalize('NFC'), salt, keylen, o, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function scryptOptions(N: number, r: number, p: number): ScryptOptions {
  // node's default maxmem (32 MiB) is exactly what N=16384,r=8 needs plus a little; allow
  // what the (bounded) parameters require instead of failing on legitimate stronger hashes.
  return { N, r, p, maxmem: 128 * N * r * 2 + 1024 * 1024 };
}

export function parseHash(encoded: string): ScryptHash | undefined {
  const m = HASH_RE.exec(encoded.trim());
  if (!m) return undefined;
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // RFC 7914 §2: N must be a power of two greater than 1.
  if (N < 2 || N > MAX_N || (N & (N - 1)) !== 0) return undefined;
  if (r < 1 || r > MAX_R || p < 1 || p > MAX_P) return undefined;
  const salt = Buffer.from(m[4]!, 'base64');
  const hash = Buffer.from(m[5]!, 'base64');
  if (salt.length < 8 || hash.length < 16 || hash.length > 64) return undefined;
  return { N, r, p, salt, hash };
}

/** `$scrypt$N=16384,r=8,p=1$<salt b64>$<hash b64>` for a users file line. */
export async function hashPassword(password: string, params: { N: number; r: number; p: number } = SCRYPT_DEFAULTS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scrypt(password, salt, KEY_BYTES, scryptOptions(params.N, params.r, params.p));
  return `$scrypt$N=${params.N},r=${params.r},p=${params.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Constant-time check of a password against an encoded hash; false for a malformed hash. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const h = parseHash(encoded);
  if (!h) return false;
  const key = await scrypt(password, h.salt, h.hash.length, scryptOptions(h.N, h.r, h.p));
  return timingSafeEqual(key, h.hash);
}

export class UsersFileError extends Error {
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source}: invalid users file\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'UsersFileError';
  }
}

export class Users {
  // Hash checked for unknown users, so that "no such user" costs the same scrypt
  // run as "wrong password" and the reply time does not reveal which user exists.
  private static readonly decoy =
    `$scrypt$N=${SCRYPT_DEFAULTS.N},r=${SCRYPT_DEFAULTS.r},p=${SCRYPT_DEFAULTS.p}$${Buffer.alloc(SALT_BYTES, 0x5a).toString('base64')}$${Buffer.alloc(KEY_BYTES).toString('base64')}`;

  private constructor(private readonly byName: ReadonlyMap<string, string>) {}

  get size(): number {
    return this.byName.size;
  }

  /** Parses a users file; every malformed line is reported with its line number. */
  static parse(text: string, source = '<users>'): Users {
    const map = new Map<string, string>();
    const problems: string[] = [];
    text.split(/\r?\n/).forEach((raw, i) => {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      const user = colon < 0 ? '' : line.slice(0, colon);
      const hash = colon < 0 ? '' : line.slice(colon + 1);
      if (!USER_RE.test(user)) problems.push(`line ${i + 1}: expected "user:$scrypt$N=..,r=..,p=..$salt$hash"`);
      else if (!parseHash(hash)) problems.push(`line ${i + 1}: user ${user}: unrecognised or out-of-range password hash`);
      else if (map.has(user)) problems.push(`line ${i + 1}: user ${user} appears twice`);
      else map.set(user, hash);
    });
    if (problems.length) throw new UsersFileError(source, problems);
    return new Users(map);
  }

  /** Reads and parses; a file others can write (or owned by a third user) is refused (files/checks.ts), at start and on SIGHUP. */
  static async load(path: string): Promise<Users> {
    const unsafe = (await checkReadFile(path, 'secret', currentIdentity())).filter((p) => p.level === 'refuse');
    if (unsafe.length)
      throw new UsersFileError(
        path,
        unsafe.map((p) => p.message),
      );
    return Users.parse(await readFile(path, 'utf8'), path);
  }

  async verify(user: string, password: string): Promise<boolean> {
    const hash = this.byName.get(user);
    const ok = await verifyPassword(password, hash ?? Users.decoy);
    return ok && hash !== undefined;
  }
}
