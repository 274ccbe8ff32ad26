/**
 * Own endpoints (RFC 5321 §5.1, issue 13 defect 4b): a delivery target is this relay when it is one
 * of the (address, port) pairs the relay listens on; a wildcard listener is every local address.
 */
import { describe, expect, it } from 'vitest';
import type os from 'node:os';
import { OwnEndpoints } from '../../src/route/self.js';

type Ifaces = ReturnType<typeof os.networkInterfaces>;
const iface = (address: string, family: 'IPv4' | 'IPv6'): os.NetworkInterfaceInfo =>
  ({
    address,
    family,
    netmask: '',
    mac: '00:00:00:00:00:00',
    internal: false,
    cidr: null,
    ...(family === 'IPv6' ? { scopeid: 0 } : {}),
  }) as os.NetworkInterfaceInfo;
const host: Ifaces = {
  lo: [iface('127.0.0.1', 'IPv4'), iface('::1', 'IPv6')],
  eth0: [iface('192.0.2.7', 'IPv4'), iface('2001:db8::7', 'IPv6'), iface('fe80::7%eth0', 'IPv6')],
};

describe('OwnEndpoints (RFC 5321 §5.1)', () => {
  it('issue13-4 a specific listen address: that address at that port only — not another loopback address, not another port (a local MTA beside the relay)', () => {
    const own = new OwnEndpoints([{ address: '127.0.0.1', port: 2525 }], host);
    expect(own.has('127.0.0.1', 2525)).toBe(true);
    expect(own.has('::ffff:127.0.0.1', 2525)).toBe(true); // IPv4-mapped
    expect(own.has('127.0.0.2', 2525)).toBe(false);
    expect(own.has('127.0.0.1', 25)).toBe(false);
    expect(own.has('192.0.2.7', 2525)).toBe(false);
    expect(own.has('0.0.0.0', 2525)).toBe(true); // the unspecified address reaches 127.0.0.1
    expect(own.has('not an address', 2525)).toBe(false);
  });

  it('issue13-4 0.0.0.0 listens on every IPv4 address of the host and all of 127/8; :: on IPv6 as well', () => {
    const v4 = new OwnEndpoints([{ address: '0.0.0.0', port: 25 }], host);
    expect(['127.0.0.1', '127.9.9.9', '192.0.2.7', '0.0.0.0'].map((a) => v4.has(a, 25))).toEqual([true, true, true, true]);
    expect(['192.0.2.8', '2001:db8::7', '::1'].map((a) => v4.has(a, 25))).toEqual([false, false, false]);
    expect(v4.has('192.0.2.7', 587)).toBe(false);
    const v6 = new OwnEndpoints([{ address: '::', port: 25 }], host);
    expect(['127.0.0.5', '192.0.2.7', '2001:db8::7', '2001:DB8:0::7', '::1', 'fe80::7', '::'].map((a) => v6.has(a, 25))).toEqual([
      true,
      true,
      true,
      true,
      true,
      true,
      true,
    ]);
    expect(v6.has('2001:db8::8', 25)).toBe(false);
  });

  it('issue13-4 several listeners, port 0 (not bound yet) ignored', () => {
    const own = new OwnEndpoints(
      [
        { address: '127.0.0.1', port: 0 },
        { address: '192.0.2.7', port: 25 },
        { address: '::1', port: 2525 },
      ],
      host,
    );
    expect(own.has('127.0.0.1', 0)).toBe(false);
    expect(own.has('192.0.2.7', 25)).toBe(true);
    expect(own.has('0:0:0:0:0:0:0:1', 2525)).toBe(true);
    expect(own.has('::', 2525)).toBe(true);
  });
});
