/**
 * The DeliveryDeps (src/delivery/deliver.ts) most delivery and scheduler tests run with, built in one
 * place: TLS level `may`, HELO and self names `relay.test`, every SMTP stage timeout the same value,
 * digests SHA-512 then SHA-256, ten messages a connection, the wall clock, no subscribers, and a
 * resolver that is never asked (the destinations are address literals, DANE-10) unless one is given.
 * A test states what it depends on through `over`; anything it gives wins.
 */
import type { DeliveryDeps } from '../../src/delivery/deliver.js';
import { StubResolver } from '../../src/dns/stub.js';

/** Every SMTP client stage (smtpClient.ts timeouts) given the same `ms`. */
export function stageTimeouts(ms: number): DeliveryDeps['timeouts'] {
  return { connect: ms, greeting: ms, ehlo: ms, starttls: ms, mail: ms, rcpt: ms, data: ms, data_block: ms, data_done: ms };
}

/**
 * Delivery deps for a test: `port` is always the test's; `timeout` (default 3000 ms) sets every stage
 * unless `timeouts` is given. The default resolver points at a port nothing answers on and holds no
 * socket until asked, so it needs no closing.
 */
export function deliveryDeps(over: Partial<DeliveryDeps> & { port: number; timeout?: number }): DeliveryDeps {
  const { timeout = 3000, ...rest } = over;
  return {
    resolver: rest.resolver ?? new StubResolver({ servers: ['127.0.0.1:9'], timeoutMs: 100, attempts: 1 }),
    heloName: 'relay.test',
    selfNames: ['relay.test'],
    tlsLevel: () => ({ level: 'may', rule: 'test' }),
    timeouts: stageTimeouts(timeout),
    digestPreference: ['sha512', 'sha256'],
    maxMessagesPerConnection: 10,
    now: Date.now,
    subscribers: [],
    ...rest,
  };
}
