/**
 * RFC 8689 §4.1 (digest RT-12, RT-13): the REQUIRETLS tag is stored with the message in spool format 3,
 * survives a restart, and every recipient (copy) of the message carries it; format 2 and 1 files are
 * still read; a file whose version and tag disagree is quarantined, not delivered without the tag.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeHeader, sizeField, SIZE_OFFSET } from '../../src/spool/format.js';
import { SEVEN_BIT_FACTS } from '../../src/mime/scan.js';
import { envelope, quiet, spoolFixtures } from './support.js';
import { composeDsn, headerBlock } from '../../src/dsn/compose.js';

const fx = spoolFixtures();

describe('REQUIRETLS in the spool', () => {
  it('RT-12 RT-13 a tagged message is written as format 3 and read back tagged after a restart, for every recipient', async () => {
    const dir = fx.tmp();
    const s1 = await fx.open(dir, { log: quiet });
    await s1.recover();
    const tagged = await s1.enqueue(
      envelope({ requireTls: true, recipients: ['a@one.example', 'b@two.example'] }),
      Buffer.from('Subject: x\r\n\r\nsecret\r\n'),
    );
    const plain = await s1.enqueue(envelope(), Buffer.from('plain\r\n'));
    await s1.close();
    expect(readFileSync(join(dir, 'msg', tagged.id), 'latin1')).toMatch(/^\{"v":3,"size":/);
    expect(readFileSync(join(dir, 'msg', plain.id), 'latin1')).toMatch(/^\{"v":2,"size":/); // untagged mail stays v2
    const s2 = await fx.open(dir, { log: quiet });
    const back = new Map((await s2.recover()).map((m) => [m.id, m]));
    expect(back.get(tagged.id)!.envelope.requireTls).toBe(true);
    expect(back.get(tagged.id)!.recipients.map((r) => r.address)).toEqual(['a@one.example', 'b@two.example']);
    expect(back.get(plain.id)!.envelope.requireTls).toBeUndefined();
    await s2.close();
  });

  it('RT-50 RT-51 RT-53 a DSN about a REQUIRETLS message is queued tagged (format 3, read back tagged) with the header only, whatever RET asked; one about an untagged message is not', async () => {
    const dir = fx.tmp();
    const s1 = await fx.open(dir, { log: quiet });
    await s1.recover();
    const msg = Buffer.from('Subject: secret\r\nFrom: app@sender.test\r\n\r\nthe secret body\r\n');
    const ids: string[] = [];
    for (const [tag, action] of [
      [true, 'failed'],
      [true, 'delayed'],
      [false, 'failed'],
    ] as const) {
      const dsn = await composeDsn({
        reportingMta: 'relay.test',
        queueId: 'Q1',
        original: { ...envelope({ from: 'app@sender.test', dsn: { ret: 'FULL' } }), ...(tag ? { requireTls: true as const } : {}) },
        originalHeaders: headerBlock(msg),
        originalFull: msg,
        recipients: [{ address: 'user@dest.test', action, status: action === 'failed' ? '5.7.30' : '4.7.30' }],
        now: Date.now(),
      });
      expect(dsn.envelope.requireTls, `${tag} ${action}`).toBe(tag ? true : undefined);
      expect(dsn.envelope).toMatchObject({ from: '', kind: 'dsn', recipients: ['app@sender.test'] });
      const text = dsn.message.toString();
      expect(text).toContain('Subject: secret');
      if (tag) expect(text, action).not.toContain('the secret body');
      ids.push((await s1.enqueue(dsn.envelope, dsn.message)).id);
    }
    await s1.close();
    expect(ids.map((id) => readFileSync(join(dir, 'msg', id), 'latin1').slice(0, 6))).toEqual(['{"v":3', '{"v":3', '{"v":2']);
    const s2 = await fx.open(dir, { log: quiet });
    const back = new Map((await s2.recover()).map((m) => [m.id, m]));
    expect(ids.map((id) => back.get(id)!.envelope.requireTls)).toEqual([true, true, undefined]);
    await s2.close();
  });

  it('RT-12 a file whose version and tag disagree is quarantined (never delivered without the tag)', async () => {
    const dir = fx.tmp();
    const s1 = await fx.open(dir, { log: quiet });
    await s1.recover();
    await s1.close();
    const forge = (env: ReturnType<typeof envelope>, v: string) => {
      const h = encodeHeader(env);
      sizeField(3, SEVEN_BIT_FACTS).copy(h, SIZE_OFFSET);
      const text = h.toString('utf8').replace(/^\{"v":\d/, `{"v":${v}`);
      return Buffer.concat([Buffer.from(text), Buffer.from('abc')]);
    };
    writeFileSync(join(dir, 'msg', '01m8000000000001'), forge(envelope({ requireTls: true }), '2'), { mode: 0o600 });
    writeFileSync(join(dir, 'msg', '01m8000000000002'), forge(envelope(), '3'), { mode: 0o600 });
    const warnings: string[] = [];
    const s2 = await fx.open(dir, {
      log: {
        warn: (o: object, m: string) => {
          warnings.push(`${m} ${JSON.stringify(o)}`);
        },
      },
    });
    expect(await s2.recover()).toEqual([]);
    expect(readdirSync(join(dir, 'corrupt')).sort()).toEqual(['01m8000000000001', '01m8000000000002']);
    expect(warnings.join('\n')).toMatch(/format 2 with requireTls/);
    expect(warnings.join('\n')).toMatch(/format 3 without requireTls/);
    await s2.close();
  });
});
