/**
 * "Is this next hop myself?" by address (RFC 5321 §5.1: when the SMTP client finds itself among
 * the MX hosts it MUST NOT deliver to itself; Postfix's smtp_find_self by interface address).
 * The MX-name check (route/mx.ts, selfNames) misses a domain whose MX, under any name, resolves
 * to one of our own addresses, and an address literal `x@[our address]`: without this the relay
 * would deliver to itself for ever.
 *
 * "Own" is an (address, port) pair the relay's ingress listens on, compared with the pair a
 * delivery would connect to (delivery.port). The address alone would be wrong: tests and sidecar
 * deployments run a receiving MTA on the same host — on loopback or on our own interface address
 * — at another port (e.g. Postfix on 127.0.0.1:25 beside the relay on 127.0.0.1:2525); delivering
 * there is no loop. Only a connection that would reach our own listener is one.
 *
 * A wildcard listener (0.0.0.0, ::) accepts on every local address: it stands for every address
 * of every local interface (os.networkInterfaces) and all of loopback (127.0.0.0/8 and ::1, which
 * Linux routes to the host). `::` without IPV6_V6ONLY (Node's default) takes IPv4 too. The
 * unspecified address as a destination (0.0.0.0, ::) reaches the host over loopback.
 * IPv4-mapped IPv6 addresses match their IPv4 form (net.BlockList does that).
 */
import net from 'node:net';
import os from 'node:os';

export interface Endpoint {
  address: string;
  port: number;
}

type Interfaces = ReturnType<typeof os.networkInterfaces>;

const familyOf = (a: string): 'ipv4' | 'ipv6' => (net.isIPv4(a) ? 'ipv4' : 'ipv6');

/** 0.0.0.0 or :: (the unspecified address) → its family, else undefined. */
function unspecified(a: string): 'ipv4' | 'ipv6' | undefined {
  if (a === '0.0.0.0') return 'ipv4';
  return net.isIPv6(a) && /^[0:]+$/.test(a) ? 'ipv6' : undefined;
}

/**
 * The set of our own (address, port) endpoints: `has(address, port)` for a delivery target.
 * `interfaces` is injectable for tests; by default the host's, read when the set is built.
 */
export class OwnEndpoints {
  private readonly byPort = new Map<number, net.BlockList>();

  constructor(listen: readonly Endpoint[], interfaces: Interfaces = os.networkInterfaces()) {
    for (const { address, port } of listen) {
      if (!net.isIP(address) || port <= 0) continue;
      let list = this.byPort.get(port);
      if (!list) this.byPort.set(port, (list = new net.BlockList()));
      const wild = unspecified(address);
      if (!wild) {
        list.addAddress(address, familyOf(address));
        continue;
      }
      list.addSubnet('127.0.0.0', 8, 'ipv4');
      if (wild === 'ipv6') list.addAddress('::1', 'ipv6');
      for (const addrs of Object.values(interfaces)) {
        for (const i of addrs ?? []) {
          const fam = i.family === 'IPv4' || (i.family as unknown) === 4 ? 'ipv4' : 'ipv6';
          if (fam === 'ipv6' && wild === 'ipv4') continue;
          list.addAddress(i.address.replace(/%.*$/, ''), fam);
        }
      }
    }
  }

  /** True when connecting to `address`:`port` would reach one of our own listeners. */
  has(address: string, port: number): boolean {
    const list = this.byPort.get(port);
    if (!list || !net.isIP(address)) return false;
    // The unspecified address as a destination reaches the local host over loopback (Linux).
    const u = unspecified(address);
    if (u) return list.check(u === 'ipv4' ? '127.0.0.1' : '::1', u);
    return list.check(address, familyOf(address));
  }
}
