/**
 * A test world on loopback: a DNS server (AD per zone), SMTP receivers on 127.0.0.x,
 * and a relay started in-process with a controllable clock. Everything is real:
 * sockets, DNS messages, TLS, spool files with fsync.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { makeLogger } from '../../src/log.js';
import { parseConfigText, type LoadedConfig } from '../../src/config/load.js';
import { Relay, type RelayOptions } from '../../src/relay.js';
import { startDnsServer, type TestDns } from './dnsServer.js';
import { recordDsn } from './dsnGrammar.js';
import { startReceiver, type Receiver, type ReceiverOptions } from './receiver.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Patch = Record<string, any>;

function merge(a: Patch, b: Patch): Patch {
  const out: Patch = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && a[k] && typeof a[k] === 'object' ? merge(a[k], v) : v;
  }
  return out;
}

export class Clock {
  // Starts at the real time: certificates made by the tests are valid "now".
  constructor(public t = Date.now()) {}
  now = (): number => this.t;
  advance(ms: number): void {
    this.t += ms;
  }
}

export interface LogLine {
  /** the level's name ("info", "warn", …): the relay's own logger (src/log.ts) */
  level: string;
  msg: string;
  [k: string]: unknown;
}

export class World {
  dns!: TestDns;
  relay?: Relay;
  clock = new Clock();
  receivers: Receiver[] = [];
  logs: LogLine[] = [];
  dir = mkdtempSync(join(tmpdir(), 'dane-relay-world-'));
  /** destination port shared by all receivers (each on its own 127.0.0.x address) */
  port = 0;
  private nextHost = 10;

  static async create(): Promise<World> {
    const w = new World();
    w.dns = await startDnsServer();
    return w;
  }

  /** A receiver on a fresh 127.0.0.x address at the world's port. */
  async receiver(opts: ReceiverOptions = {}): Promise<Receiver> {
    const host = opts.host ?? `127.0.0.${this.nextHost++}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await startReceiver({ ...opts, host, port: this.port });
        if (this.port === 0) this.port = r.port;
        this.receivers.push(r);
        return r;
      } catch (e) {
        if (this.port !== 0 || attempt > 3) throw e;
      }
    }
  }

  /** A receiver that is `domain`'s MX (mx.<domain>). */
  async mx(domain: string, opts: ReceiverOptions = {}): Promise<Receiver> {
    const r = await this.receiver(opts);
    this.dns.add({ name: domain, type: 'MX', data: { preference: 10, exchange: `mx.${domain}` } }, { name: `mx.${domain}`, type: 'A', data: r.host });
    return r;
  }

  /** An unused 127.0.0.x address (nothing listens there: connections are refused). */
  deadHost(): string {
    return `127.0.0.${this.nextHost++}`;
  }

  config(patch: Patch = {}): LoadedConfig {
    const t = '3s';
    const base: Patch = {
      listen: ['127.0.0.1:0'],
      hostname: 'relay.test',
      queue_dir: join(this.dir, 'queue'),
      dns: { mode: 'trust-ad', resolvers: [this.dns.server], timeout: '1s', attempts: 1 },
      delivery: { port: this.port, timeouts: { connect: '2s', greeting: t, ehlo: t, starttls: t, mail: t, rcpt: t, data: t, data_block: t, data_done: t } },
    };
    const cfg = parseConfigText(JSON.stringify(merge(base, patch)));
    return { ...cfg, baseDir: this.dir, resolvedResolvers: cfg.dns.resolvers!, queue_dir: cfg.queue_dir };
  }

  /** `extra`: further RelayOptions (e.g. tlsrptHttps with the test CA) */
  async start(patch: Patch = {}, extra: Partial<RelayOptions> = {}): Promise<Relay> {
    const sink = new Writable({
      write: (chunk, _e, cb) => {
        for (const line of chunk.toString().split('\n')) if (line) this.logs.push(JSON.parse(line));
        cb();
      },
    });
    // the relay's own logger (level names, one-line messages, printable), writing into this.logs
    const log = makeLogger((patch.log?.level as string | undefined) ?? 'debug', sink);
    this.relay = await Relay.start({ config: this.config(patch), log, now: this.clock.now, rand: () => 0.5, ...extra });
    // issue 21 item 6: every DSN the relay queues is checked against RFC 3464 (observed, not changed; the
    // scheduler queues DSNs through this same spool object)
    const spool = this.relay.spool;
    const enqueue = spool.enqueue.bind(spool);
    spool.enqueue = (envelope, body) => {
      if (envelope.kind === 'dsn') recordDsn(body, `DSN queued by the relay (from <${envelope.from}> to ${envelope.recipients.join(',')})`);
      return enqueue(envelope, body);
    };
    return this.relay;
  }

  get ingressPort(): number {
    return this.relay!.ingress.addresses[0]!.port;
  }

  /** Wait until the scheduler has nothing running and nothing due. */
  async settle(): Promise<void> {
    this.relay!.scheduler.kick();
    await this.relay!.scheduler.whenIdle();
  }

  /** Advance the clock and run what became due. */
  async advance(ms: number): Promise<void> {
    this.clock.advance(ms);
    await this.settle();
  }

  deliveries(): LogLine[] {
    return this.logs.filter((l) => l.msg === 'delivery');
  }

  async close(): Promise<void> {
    await this.relay?.stop(1000).catch(() => undefined);
    await Promise.all(this.receivers.map((r) => r.close()));
    await this.dns.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
