/**
 * The configuration contract. The keys named in the issues (listen, relay_clients,
 * queue_dir, hostname, dns.resolvers, delivery.port, dns.mode, delivery.tls_level)
 * are fixed: outside tools write configs with them. Everything else is added around them.
 */
import { z } from 'zod';
import { isIP } from 'node:net';
import { parseDuration } from './duration.js';
import { tlsrptConfigIssues } from './tlsrpt.js';
import { tlsLevels } from '../dane/levels.js';
import { DEFAULT_BOGUS_PROBE, DEFAULT_SECURE_PROBE, parseProbe } from '../dns/selftest.js';

/** a DNSSEC self-test probe, `[type:]name` (Postfix `dnssec_probe` syntax), checked by the parser the self-test uses */
const probe = z.string().superRefine((s, ctx) => {
  try {
    parseProbe(s);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});

/** listen addresses may use port 0 (the OS picks one; tests and ephemeral setups) */
const listenAddr = z.string().superRefine((s, ctx) => {
  const why = hostPortProblem(s, true);
  if (why) ctx.addIssue({ code: 'custom', message: why });
});

const hostPort = z.string().superRefine((s, ctx) => {
  const why = hostPortProblem(s);
  if (why) ctx.addIssue({ code: 'custom', message: why });
});

/**
 * A list key written as one scalar (`listen: 127.0.0.1:10040`) is that list of one: YAML makes the
 * brackets easy to forget, and the meaning is not in doubt (issue 21 item 9). Anything else that is not
 * a list is reported as "expected a list" by loadConfig.
 */
export function listOf<T extends z.ZodType>(item: T, min = 0) {
  return z.preprocess(
    (v) => (typeof v === 'string' || typeof v === 'number' ? [v] : v),
    z.array(item).min(min, { message: `expected at least ${min} entr${min === 1 ? 'y' : 'ies'}` }),
  );
}

const cidr = z.string().refine((s) => parseCidr(s) !== undefined, { message: 'expected an address or CIDR prefix, e.g. "127.0.0.0/8"' });

/** a duration key (exported so the effective-config printer, config/show.ts, can print it back in units) */
export const duration = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({ code: 'custom', message: 'expected a duration such as 300, "90s", "30m", "4h" or "5d"' });
    return z.NEVER;
  }
  return ms;
});

const hostname = z
  .string()
  .regex(/^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/, 'expected a DNS host name');

export const configSchema = z
  .strictObject({
    listen: listOf(listenAddr, 1).default(['127.0.0.1:2525']),
    relay_clients: listOf(cidr).default(['127.0.0.0/8', '::1/128']),
    queue_dir: z.string().min(1).default('queue'),
    hostname: hostname.default('localhost'),
    /** started as root: bind the listeners, then drop to this (unprivileged) user for good; src/files/privileges.ts */
    user: z
      .string()
      .regex(/^(?:[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|\d+)$/, 'expected a user name or number')
      .optional(),
    /** false: refuse to run as root without `user:` (default: run, with a loud warning at every start) */
    allow_root: z.boolean().default(true),
    dns: z
      .strictObject({
        /**
         * validate: check DNSSEC in-process from the trust anchors (resolvers are only transport);
         * trust-ad: believe the AD bit of a trusted (loopback) validating resolver.
         */
        mode: z.enum(['trust-ad', 'validate']).default('validate'),
        /** default: nameservers of /etc/resolv.conf */
        resolvers: listOf(hostPort, 1).optional(),
        /** non-loopback resolvers whose AD bit the operator vouches for (secure channel), DANE-2 */
        trusted_resolvers: listOf(hostPort).default([]),
        timeout: duration.prefault(2000 / 1000),
        attempts: z.number().int().min(1).max(10).default(2),
        /** validate mode: DS/DNSKEY trust anchors in presentation format (Unbound root.key); default the IANA root KSKs */
        trust_anchors: z.string().optional(),
        /** DNSSEC self-test (DANE-4, issue 21 item 3): a name that must validate secure with records, `[type:]name` */
        dnssec_probe: probe.default(DEFAULT_SECURE_PROBE),
        /** a name that must fail validation; "" or false: that half of the self-test is off */
        dnssec_bogus_probe: z.union([z.literal(''), z.literal(false), probe]).default(DEFAULT_BOGUS_PROBE),
      })
      .prefault({}),
    delivery: z
      .strictObject({
        port: z.number().int().min(1).max(65535).default(25),
        tls_level: z.enum(tlsLevels).default('dane'),
        /** outbound connections, all destinations */
        concurrency: z.number().int().min(1).max(10000).default(50),
        /** outbound connections to one destination domain */
        per_destination: z.number().int().min(1).max(1000).default(10),
        /** messages sent over one connection before it is closed */
        max_messages_per_connection: z.number().int().min(1).default(100),
        /**
         * EHLO keywords of every next hop treated as not advertised (Postfix's smtp_discard_ehlo_keywords), for a
         * peer whose extension is broken. Only extensions whose absence costs no protection: never STARTTLS or
         * REQUIRETLS. Without 8BITMIME a body is converted (mime_conversion), without SIZE none is declared.
         */
        discard_ehlo_keywords: listOf(z.enum(['chunking', 'pipelining', '8bitmime', 'dsn', 'size'])).default([]),
        /**
         * How long a destination's idle session stays open for its next message (Postfix's
         * smtp_connection_cache_time_limit, 2s); 0: closed as soon as the queue has nothing more for it.
         */
        connection_cache_time: duration.prefault(2),
        /**
         * MX hosts planned and tried per message, in MX order (preference, random within one); the rest are
         * not looked up (Postfix smtp_mx_address_limit, Exim hosts_max_try). 0: no limit.
         */
        mx_host_limit: z.number().int().min(0).max(1000).default(5),
        /** RFC 5321 §4.5.3.2 stage timeouts */
        timeouts: z
          .strictObject({
            connect: duration.prefault(30),
            greeting: duration.prefault(300),
            ehlo: duration.prefault(300),
            starttls: duration.prefault(120),
            mail: duration.prefault(300),
            rcpt: duration.prefault(300),
            data: duration.prefault(120),
            data_block: duration.prefault(180),
            data_done: duration.prefault(600),
          })
          .prefault({}),
        /** digest preference for RFC 7671 §9 agility: first is strongest */
        digest_preference: listOf(z.enum(['sha512', 'sha256'])).default(['sha512', 'sha256']),
        /**
         * A body the next hop did not agree to (8-bit octets without 8BITMIME, RFC 6152 §3; a line over
         * 998 octets, RFC 5321 §4.5.3.1.6): `convert` re-encodes the MIME parts that need it
         * (quoted-printable / base64, src/mime/), `refuse` bounces with 5.6.3 (Postfix's
         * disable_mime_output_conversion). Either way such bytes never go out.
         */
        mime_conversion: z.enum(['convert', 'refuse']).default('convert'),
      })
      .prefault({}),
    ingress: z
      .strictObject({
        max_message_size: z
          .number()
          .int()
          .min(1024)
          .default(50 * 1024 * 1024),
        max_recipients: z.number().int().min(1).default(1000),
        max_connections: z.number().int().min(1).default(200),
        /** messages accepted per client address per minute; 0 = unlimited */
        rate_per_minute: z.number().int().min(0).default(0),
        /** open connections per client (an IPv4 address or IPv6 /client_ipv6_prefix); 0 = no limit beyond max_connections */
        max_connections_per_client: z.number().int().min(0).default(0),
        /** AUTH exchanges in progress at once per client (each is a scrypt run); more get 454 4.7.0 */
        max_auth_per_client: z.number().int().min(1).max(1000).default(3),
        /** per-client limits count IPv6 clients per network of this prefix length (one host usually holds a /64) */
        client_ipv6_prefix: z.number().int().min(1).max(128).default(64),
        tls: z.strictObject({ cert: z.string(), key: z.string() }).optional(),
        /** users file: "user:$scrypt$N=16384,r=8,p=1$<salt>$<hash>" per line; enables AUTH PLAIN/LOGIN over TLS */
        users_file: z.string().optional(),
        /**
         * RFC 5321 §6.3 loop detection: a message that arrives with more Received: header fields than this is
         * refused with 554 5.4.6 at the end of DATA (the relay's own Received line is not counted). Postfix: hopcount_limit.
         */
        max_hops: z.number().int().min(1).default(50),
        banner: z.string().default('dane-relay ESMTP'),
        timeout: duration.prefault(300),
        /**
         * RFC 5321 §4.5.1: where mail to the reserved mailbox goes — `RCPT TO:<Postmaster>` (no domain,
         * §4.1.1.3) and postmaster@<hostname>, accepted from any client. Unset: such RCPTs get 550 naming this key.
         */
        postmaster: z
          .string()
          .regex(/^[^\s@<>]+@[^\s@<>]+$/, 'expected an address such as ops@example.org')
          .optional(),
        /**
         * A message with a line over 998 octets (RFC 5322 §2.1.1): `encode` accepts it and the part is
         * sent quoted-printable/base64 (delivery.mime_conversion); `refuse` answers 550 5.6.0 at the end of DATA.
         */
        long_lines: z.enum(['encode', 'refuse']).default('encode'),
      })
      .prefault({}),
    queue: z
      .strictObject({
        /** RFC 5321 §4.5.4.1: retry interval SHOULD be at least 30 minutes */
        min_backoff: duration.prefault('30m'),
        max_backoff: duration.prefault('4h'),
        /** how often the scheduler looks at the queue when idle */
        run_interval: duration.prefault('10s'),
        lifetime: duration.prefault('5d'),
        /** send a "delayed" DSN after this long; 0 disables */
        delay_warning: duration.prefault('4h'),
      })
      .prefault({}),
    /**
     * Where the queue lives (issue 16): `file` is the embedded spool under queue_dir (the default, nothing
     * else needed); `postgres` shares one queue between several relay nodes on a PostgreSQL database.
     */
    spool: z
      .strictObject({
        backend: z.enum(['file', 'postgres']).default('file'),
        postgres: z
          .strictObject({
            /** libpq connection URL, e.g. "postgresql://relay@db.internal/relay" or "postgresql://relay@/relay?host=/run/postgresql"; no password in it */
            url: z
              .string()
              .min(1)
              .refine((u) => /^postgres(?:ql)?:\/\//.test(u), { message: 'expected a postgresql:// URL' })
              .refine((u) => !/^postgres(?:ql)?:\/\/[^/@]*:[^/@]*@/.test(u), {
                message: 'put the password in password_file or the environment (password_env), not in the URL: URLs end up in logs and ps',
              }),
            /** file holding the password (first line), relative to the config file; must not be readable by others */
            password_file: z.string().min(1).optional(),
            /** name of the environment variable holding the password (default PGPASSWORD, as libpq) */
            password_env: z
              .string()
              .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name')
              .default('PGPASSWORD'),
            /** this node's name in leases and `dane-relay nodes`; default hostname:pid */
            node: z
              .string()
              .regex(/^[\x21-\x7e]{1,100}$/, 'expected up to 100 printable characters without spaces')
              .optional(),
            /** a claimed message is this node's for this long (database time) unless renewed; a dead node's work waits at most this */
            lease: duration.prefault('30s'),
            /** connections per node */
            pool: z.number().int().min(2).max(200).default(10),
          })
          .optional(),
      })
      .prefault({})
      .refine((s) => s.backend !== 'postgres' || s.postgres !== undefined, {
        message: 'spool.backend is postgres: spool.postgres.url is required',
        path: ['postgres'],
      }),
    /** queue control socket (issue 7): `dane-relay queue …` talks to the running relay here */
    control: z
      .strictObject({
        /** Unix socket path, relative to the config file; default <queue_dir>/control.sock */
        socket: z.string().min(1).optional(),
      })
      .prefault({}),
    /** Prometheus /metrics, /healthz, /readyz (issue 7); off when absent */
    metrics: z
      .strictObject({
        listen: listenAddr,
        /** a non-loopback listen address is refused unless this is true */
        allow_remote: z.boolean().default(false),
        /** seconds /readyz caches its spool write probe */
        ready_cache: duration.prefault('5s'),
        /** how often /readyz repeats the DNSSEC self-test (DANE-4) */
        selftest_interval: duration.prefault('60s'),
      })
      // only an address that parses can be judged for loopback: a bad port is reported as that, not as "not loopback"
      .refine((m) => m.allow_remote || parseHostPort(m.listen, true) === undefined || isLoopbackHostPort(m.listen), {
        message: 'metrics.listen must be a loopback address (127.0.0.0/8 or ::1) unless metrics.allow_remote is true',
        path: ['listen'],
      })
      .optional(),
    /** SMTP TLS Reporting, RFC 8460 (issue 6); see src/reporting/tlsrpt/ */
    tlsrpt: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** report `organization-name`; default: hostname */
        organization_name: z.string().min(1).optional(),
        /** report `contact-info` (an addr-spec); default: postmaster@hostname */
        contact_info: z
          .string()
          .regex(/^[^\s@<>]+@[A-Za-z0-9.-]+$/, 'expected an address such as tlsrpt@relay.example.net')
          .optional(),
        /** TLS-Report-Submitter and the filename's sender; default: the domain of contact_info */
        submitter: hostname.optional(),
        /** default: <queue_dir>/tlsrpt */
        dir: z.string().min(1).optional(),
        retention_days: z.number().int().min(2).max(3650).default(30),
        /** random delay before a day's reports go out (RFC 8460 §4.1) */
        max_delay: duration.prefault('4h'),
        /**
         * rua targets in the operator's own network: https to IP literals or to names resolving to loopback,
         * private, link-local, CGNAT or other special-purpose addresses, mailto to address literals (issue 13)
         */
        allow_private_targets: z.boolean().default(false),
        /** DKIM key for mailed reports (RFC 8460 §3: MUST be signed); `dane-relay dkim keygen` makes one */
        dkim: z
          .strictObject({
            domain: hostname,
            selector: z
              .string()
              .regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, 'expected a DKIM selector')
              .default('tlsrpt'),
            key_file: z.string().min(1),
          })
          .optional(),
      })
      .prefault({}),
    /** MTA-STS, RFC 8461 (issue 15); see src/mtasts/ */
    mta_sts: z
      .strictObject({
        /** enforce and cache MTA-STS policies where no DANE applies (RFC 8461) */
        enabled: z.boolean().default(true),
        /** PEM trust anchors for policy hosts (and MX certificates under a policy) instead of the system store */
        ca_file: z.string().min(1).optional(),
        /** the whole policy fetch: DNS, connect, TLS, body (RFC 8461 §3.3 suggests a minute) */
        fetch_timeout: duration.prefault('60s'),
        /** the policy hosts' https port: 443 (RFC 8461 §3.3); another only for test worlds on loopback */
        port: z.number().int().min(1).max(65535).default(443),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .prefault({}),
    /** per-destination TLS policy (issue 7): files relative to the config file; a missing key = no table */
    policy: z
      .strictObject({
        /** lines "DOMAIN|.PARENT LEVEL [trust-insecure-mx]" (Postfix level names) */
        tls_policy: z.string().min(1).optional(),
        /** danefail exception list (DANE-70): one domain per line */
        danefail: z.string().min(1).optional(),
        /** level for a listed destination; never a DANE level */
        exception_level: z.enum(['may', 'encrypt']).default('may'), // DANE-70: opportunistic TLS; `none` would strip TLS
        /** how often listed destinations are probed for working DANE; 0 disables */
        probe_interval: duration.prefault('6h'),
        /** rollover warning: a pinned certificate expiring within this window */
        rollover_warn: duration.prefault('14d'),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    // tlsrpt: submitter = contact-info's domain, DKIM from the reporting domain (RFC 8460 §3, §5.3)
    for (const i of tlsrptConfigIssues(c.hostname, c.tlsrpt)) ctx.addIssue({ code: 'custom', path: i.path, message: i.message });
  });

export type Config = z.output<typeof configSchema>;

/** Why `s` is not "address:port" (the precise reason: the port, the address, the brackets), or undefined when it is. */
export function hostPortProblem(s: string, allowZero = false): string | undefined {
  if (parseHostPort(s, allowZero) !== undefined) return undefined;
  const m = /^\[([^\]]*)\](?::(.*))?$/.exec(s) ?? /^([^[\]]*?)(?::([^:]*))?$/.exec(s);
  if (!m) {
    if (isIP(s) === 6) return `IPv6 address without brackets and port: write "[${s}]:PORT"`;
    return 'expected "address:port" (IPv6 as "[::1]:2525")';
  }
  const [, host = '', port] = m;
  if (!s.startsWith('[') && isIP(host) === 6) return `an IPv6 address needs brackets: "[${host}]:${port ?? 'PORT'}"`;
  if (port === undefined || port === '') return `no port: expected "${host.includes(':') ? `[${host}]` : host || 'address'}:PORT"`;
  if (isIP(host) === 0) return `"${host}" is not an IP address (expected "address:port", IPv6 as "[::1]:2525"; names are not resolved here)`;
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535 || Number(port) < (allowZero ? 0 : 1))
    return `port "${port}" is not a port number (${allowZero ? 0 : 1}-65535)`;
  return 'expected "address:port" (IPv6 as "[::1]:2525")';
}

export function parseHostPort(s: string, allowZero = false): { host: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:[\]]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < (allowZero ? 0 : 1) || port > 65535) return undefined;
  if (isIP(m[1]!) === 0) return undefined;
  return { host: m[1]!, port };
}

export function parseCidr(s: string): { address: string; prefix: number; family: 4 | 6 } | undefined {
  const [addr, p] = s.split('/');
  const fam = isIP(addr ?? '');
  if (fam === 0) return undefined;
  const max = fam === 4 ? 32 : 128;
  const prefix = p === undefined ? max : Number(p);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (p !== undefined && !/^\d+$/.test(p))) return undefined;
  return { address: addr!, prefix, family: fam as 4 | 6 };
}

/** True for "127.x.y.z:port" and "[::1]:port": the only addresses metrics may listen on by default. */
export function isLoopbackHostPort(s: string): boolean {
  const hp = parseHostPort(s, true);
  if (!hp) return false;
  return isIP(hp.host) === 4 ? hp.host.startsWith('127.') : hp.host === '::1' || hp.host === '0:0:0:0:0:0:0:1';
}

/**
 * Where the metrics listener binds: `metrics.listen`, refused off loopback unless `metrics.allow_remote`
 * (the series name destinations and the queue's state). The schema refuses such a file already; this is
 * the check at the listener, for a configuration built in code.
 */
export function metricsEndpoint(m: { listen: string; allow_remote: boolean }): { host: string; port: number } {
  const hp = parseHostPort(m.listen, true);
  if (!hp) throw new Error(`metrics.listen ${m.listen}: expected "address:port"`);
  if (!m.allow_remote && !isLoopbackHostPort(m.listen)) {
    throw new Error(`metrics.listen ${m.listen} is not a loopback address; set metrics.allow_remote: true to expose metrics beyond this host`);
  }
  return hp;
}
