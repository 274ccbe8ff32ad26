/**
 * Users file and scrypt hashes (RFC 7914) as the AUTH check uses them.
 * N is lowered in a few tests to keep the suite fast; the format is the same.
 */
import { describe, expect, it } from 'vitest';
import { scryptSync } from 'node:crypto';
import { hashPassword, parseHash, Users, UsersFileError, verifyPassword } from '../../src/ingress/users.js';

const FAST = { N: 1024, r: 8, p: 1 };

describe('hashPassword / verifyPassword', () => {
  it('produces the documented format with the default parameters', async () => {
    const h = await hashPassword('correct horse');
    expect(h).toMatch(/^\$scrypt\$N=16384,r=8,p=1\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$/);
    const p = parseHash(h)!;
    expect(p.salt.length).toBe(16);
    expect(p.hash.length).toBe(32);
    expect(await verifyPassword('correct horse', h)).toBe(true);
    expect(await verifyPassword('correct horsE', h)).toBe(false);
  });

  it('salts: the same password hashes differently each time', async () => {
    const [a, b] = await Promise.all([hashPassword('pw', FAST), hashPassword('pw', FAST)]);
    expect(a).not.toBe(b);
    expect(await verifyPassword('pw', a)).toBe(true);
    expect(await verifyPassword('pw', b)).toBe(true);
  });

  it('is plain RFC 7914 scrypt: a hash made independently verifies', async () => {
    const salt = Buffer.from('0123456789abcdef');
    const key = scryptSync('s3cret', salt, 64, { N: 2048, r: 4, p: 2 });
    const line = `$scrypt$N=2048,r=4,p=2$${salt.toString('base64')}$${key.toString('base64')}`;
    expect(await verifyPassword('s3cret', line)).toBe(true);
    expect(await verifyPassword('s3cret ', line)).toBe(false);
  });

  it('NFC-normalises, so composed and decomposed accents are the same password (RFC 8265 §4.2)', async () => {
    const h = await hashPassword('caf\u00e9', FAST);
    expect(await verifyPassword('cafe\u0301', h)).toBe(true);
  });

  it.each([
    ['not a hash', 'plaintext'],
    ['N not a power of two', '$scrypt$N=1000,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$' + Buffer.alloc(32).toString('base64')],
    ['N absurdly large', '$scrypt$N=1073741824,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$' + Buffer.alloc(32).toString('base64')],
    ['r zero', '$scrypt$N=16384,r=0,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$' + Buffer.alloc(32).toString('base64')],
    ['short salt', '$scrypt$N=16384,r=8,p=1$AAAA$' + Buffer.alloc(32).toString('base64')],
    ['short hash', '$scrypt$N=16384,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg==$AAAA'],
    ['other scheme', '$2b$10$abcdefghijklmnopqrstuv'],
  ])('refuses a malformed hash: %s', async (_n, h) => {
    expect(parseHash(h)).toBeUndefined();
    expect(await verifyPassword('anything', h)).toBe(false);
  });
});

describe('Users', () => {
  it('parses the file: comments, blank lines, CRLF', async () => {
    const alice = await hashPassword('wonderland', FAST);
    const bob = await hashPassword('builder', FAST);
    const u = Users.parse(`# relay users\r\n\r\nalice:${alice}\r\n  # indented comment\nbob:${bob}\n`);
    expect(u.size).toBe(2);
    expect(await u.verify('alice', 'wonderland')).toBe(true);
    expect(await u.verify('bob', 'builder')).toBe(true);
    expect(await u.verify('alice', 'builder')).toBe(false);
    expect(await u.verify('Alice', 'wonderland')).toBe(false);
    expect(await u.verify('mallory', 'wonderland')).toBe(false);
  });

  it('an unknown user costs a full scrypt run, like a wrong password', async () => {
    const u = Users.parse(`alice:${await hashPassword('x')}`);
    // CPU time of the process (scrypt runs on libuv's pool threads, which it includes), not the wall
    // clock: on a busy machine either call's wall time can stretch several times over.
    const cpu = async (f: () => Promise<boolean>): Promise<number> => {
      const c0 = process.cpuUsage();
      expect(await f()).toBe(false);
      const d = process.cpuUsage(c0);
      return d.user + d.system;
    };
    const unknown = await cpu(() => u.verify('nobody', 'x'));
    const wrong = await cpu(() => u.verify('alice', 'y'));
    // Both run scrypt with N=16384 (tens of ms); without the decoy "unknown" would cost ~0.
    expect(unknown).toBeGreaterThan(wrong / 4);
  });

  it('reports every bad line with its number', async () => {
    const good = await hashPassword('pw', FAST);
    const text = [`alice:${good}`, 'no-colon-here', `alice:${good}`, 'bob:$scrypt$N=3,r=8,p=1$AAAA$AAAA', `: ${good}`, `ca rol:${good}`].join('\n');
    let err: unknown;
    try {
      Users.parse(text, 'users.txt');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UsersFileError);
    const problems = (err as UsersFileError).problems;
    expect(problems).toHaveLength(5);
    expect(problems[0]).toMatch(/^line 2: /);
    expect(problems[1]).toMatch(/^line 3: user alice appears twice/);
    expect(problems[2]).toMatch(/^line 4: user bob: unrecognised/);
    expect(problems[3]).toMatch(/^line 5: /);
    expect(problems[4]).toMatch(/^line 6: /);
    expect((err as Error).message).toContain('users.txt');
  });
});
