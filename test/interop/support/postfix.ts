/**
 * Private Postfix instances on loopback: receivers (one smtpd listener per case on its own
 * 127.x address, port 25, each with its own certificate chain or none) and Postfix 3.7 as a DANE
 * relay for the differential.
 *
 * Each instance has its own config_directory, queue_directory and data_directory under a temp dir,
 * `chroot = n` everywhere, and runs in the foreground (`postfix start-fg`) inside a private MOUNT
 * namespace (`unshare --mount`) in which /etc/resolv.conf is bind-mounted to a file naming only our
 * Unbound: Postfix resolves with the libc resolver (port 53, from resolv.conf), and this is the one
 * way to point it at the private world without touching the system's resolv.conf. The bind mount
 * vanishes with the namespace when the master exits. Receivers deliver with the `virtual` agent into
 * one Maildir we read back; the listener that took a message is in its Received header.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { recordDsn } from '../../support/dsnGrammar.js';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { own } from './reaper.js';
import { reachableTmpdir } from '../../support/reachable.js';

const POSTFIX = '/usr/sbin/postfix';
const POSTQUEUE = '/usr/sbin/postqueue';
const MASTER = '/usr/lib/postfix/sbin/master';

export interface Listener {
  /** a unique name; also this listener's myhostname, so it appears as "by <name>" in Received */
  name: string;
  address: string;
  port?: number;
  /** PEM: private key, then leaf, then chain (Postfix smtpd_tls_chain_files); none = no STARTTLS */
  tls?: { keyPem: string; chainPem: string };
  /** per-SNI chains (tls_server_sni_maps): a client sending one of these names gets that chain,
   * any other name (or none) gets `tls`. Lets a case prove which SNI a relay sent by its outcome. */
  sni?: Record<string, { keyPem: string; chainPem: string }>;
  /** further smtpd -o overrides for this listener, e.g. { smtpd_discard_ehlo_keywords: '8bitmime,dsn' } */
  options?: Record<string, string>;
}

export interface ReceivedMessage {
  file: string;
  raw: string;
  /** envelope recipient (Delivered-To) */
  to: string;
  /** the receiving listener (myhostname in the topmost Received header) */
  by: string;
  /** received with STARTTLS (Postfix writes "with ESMTPS" / "(using TLSv1.3 ...)") */
  tls: boolean;
  header(name: string): string | undefined;
}

interface Instance {
  dir: string;
  etc: string;
  proc: ChildProcess;
  log: () => string;
  stop: () => Promise<void>;
}

function postfixIds(): { uid: number; gid: number } {
  const uid = Number(execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postfix'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

/**
 * Where Postfix's directories go. Its daemons run as the postfix user, who must traverse every
 * directory above the queue, data and mailbox directories, and its config lists split on
 * whitespace: TMPDIR may be neither (a private 0700 directory, a path with spaces: issue 20).
 */
export function postfixTmpdir(): string {
  return reachableTmpdir(postfixIds(), { plain: true });
}

async function assertFree(host: string, port: number): Promise<void> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          `postfix: ${host}:${port} is not available (${e.code}); a system MTA listening on it? ` +
            'The interop harness never stops system services: stop it or free the address.',
        ),
      ),
    );
    s.listen({ host, port, exclusive: true }, () => resolve());
  });
  await new Promise((r) => s.close(r));
}

/** Services a working instance needs (all chroot n); listeners are appended by the caller. */
const MASTER_BASE = `
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

async function startInstance(name: string, resolver: string, main: Record<string, string>, listeners: string[], baseDir = postfixTmpdir()): Promise<Instance> {
  const dir = mkdtempSync(join(baseDir, `dane-relay-postfix-${name}-`));
  const etc = join(dir, 'etc');
  const spool = join(dir, 'spool');
  const data = join(dir, 'data');
  // Modes set explicitly, whatever the umask (a 077 one leaves all of these to root alone): the
  // postfix user traverses dir to data_directory and the queue, and its libc reads resolv.conf.
  chmodSync(dir, 0o755);
  for (const d of [etc, spool, data]) {
    mkdirSync(d);
    chmodSync(d, 0o755);
  }
  const { uid, gid } = postfixIds();
  chownSync(data, uid, gid);
  const resolvConf = join(dir, 'resolv.conf');
  writeFileSync(resolvConf, `# private to the ${name} Postfix namespace\nnameserver ${resolver.replace(/:53$/, '')}\noptions edns0 trust-ad\n`);
  chmodSync(resolvConf, 0o644);
  const maillog = join(dir, 'maillog');
  const base: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: spool,
    data_directory: data,
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    inet_protocols: 'ipv4',
    maillog_file: maillog,
    maillog_file_prefixes: dir,
    alias_maps: '',
    alias_database: '',
    local_recipient_maps: '',
    mydestination: '',
    relayhost: '',
    mynetworks: '127.0.0.0/8',
    biff: 'no',
    smtputf8_enable: 'no',
    smtpd_peername_lookup: 'no',
    append_dot_mydomain: 'no',
    // keep each case's verdict stable during a run: no automatic retry of deferred mail
    queue_run_delay: '3600s',
    minimal_backoff_time: '3600s',
    maximal_backoff_time: '7200s',
    ...main,
  };
  writeFileSync(
    join(etc, 'main.cf'),
    Object.entries(base)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n') + '\n',
  );
  writeFileSync(join(etc, 'master.cf'), MASTER_BASE + listeners.join('\n') + '\n');
  for (const f of ['main.cf', 'master.cf']) chmodSync(join(etc, f), 0o644);

  // Validate first: a config error is clearer from postfix check than from a dead master.
  try {
    execFileSync(POSTFIX, ['-c', etc, 'check'], { stdio: 'pipe', encoding: 'utf8' });
  } catch (e) {
    const log = existsSync(maillog) ? readFileSync(maillog, 'utf8') : '';
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`postfix -c ${etc} check: ${(e as { stderr?: string }).stderr ?? ''}${log || (e as Error).message}`);
  }
  // master itself in the foreground (-d), so this child IS the master: SIGTERM stops the instance.
  // (`postfix start-fg` forks master unless it is PID 1.)
  const script = `mount --bind "${resolvConf}" /etc/resolv.conf && exec ${MASTER} -c "${etc}" -d`;
  const proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  own(proc);
  let out = '';
  proc.stdout!.on('data', (d) => {
    out += d;
  });
  proc.stderr!.on('data', (d) => {
    out += d;
  });
  const log = () => out + (existsSync(maillog) ? readFileSync(maillog, 'utf8') : '');
  const stop = async () => {
    await new Promise<void>((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      proc.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      // master (exec'd in place of sh) stops its children on SIGTERM
      proc.kill('SIGTERM');
    });
    rmSync(dir, { recursive: true, force: true });
  };
  return { dir, etc, proc, log, stop };
}

async function waitListening(inst: Instance, addrs: { host: string; port: number }[], ms = 20_000): Promise<void> {
  const { connect } = await import('node:net');
  const deadline = Date.now() + ms;
  const up = (a: { host: string; port: number }) =>
    new Promise<boolean>((resolve) => {
      const s = connect(a.port, a.host);
      s.once('data', () => {
        s.destroy();
        resolve(true);
      }); // the 220 greeting
      s.once('error', () => resolve(false));
      s.setTimeout(2000, () => {
        s.destroy();
        resolve(false);
      });
    });
  for (const a of addrs) {
    for (;;) {
      if (inst.proc.exitCode !== null || inst.proc.signalCode !== null) throw new Error(`postfix exited: ${inst.log()}`);
      if (await up(a)) break;
      if (Date.now() > deadline) throw new Error(`postfix not listening on ${a.host}:${a.port}: ${inst.log()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export interface PostfixReceivers {
  dir: string;
  listeners: Listener[];
  /** every message delivered so far */
  messages(): ReceivedMessage[];
  /** the Maildir's new/ directory (the benchmark counts files there) */
  newDir: string;
  /** the master's pid (the benchmark reads /proc for it and its children) */
  pid: number;
  log(): string;
  stop(): Promise<void>;
}

/** One Postfix instance with one smtpd per listener; all mail lands in one Maildir. */
export async function startPostfixReceivers(opts: {
  listeners: Listener[];
  resolver: string;
  /** where the receiver's queue and Maildir live (default postfixTmpdir()). The benchmark puts them
   * on tmpfs (/dev/shm) so that the receiver's own fsyncs do not cap what the relays can show. */
  baseDir?: string;
}): Promise<PostfixReceivers> {
  for (const l of opts.listeners) await assertFree(l.address, l.port ?? 25);
  const lines: string[] = [];
  let inst: Instance | undefined;
  const certDir = mkdtempSync(join(postfixTmpdir(), 'dane-relay-postfix-certs-'));
  const mailBase = mkdtempSync(join(opts.baseDir ?? postfixTmpdir(), 'dane-relay-postfix-mail-'));
  const { uid, gid } = postfixIds();
  chownSync(mailBase, uid, gid);
  for (const l of opts.listeners) {
    const o = [`-o myhostname=${l.name}`, '-o syslog_name=postfix/rx'];
    if (l.tls) {
      const f = join(certDir, `${l.name}.pem`);
      writeFileSync(f, l.tls.keyPem + l.tls.chainPem, { mode: 0o600 });
      o.push('-o smtpd_tls_security_level=may', `-o smtpd_tls_chain_files=${f}`);
      if (l.sni) {
        const map = join(certDir, `${l.name}.sni`);
        writeFileSync(
          map,
          Object.entries(l.sni)
            .map(([name, c]) => {
              const cf = join(certDir, `${l.name}.sni.${name}.pem`);
              writeFileSync(cf, c.keyPem + c.chainPem, { mode: 0o600 });
              return `${name} ${cf}`;
            })
            .join('\n') + '\n',
        );
        o.push(`-o tls_server_sni_maps=texthash:${map}`);
      }
    } else {
      o.push('-o smtpd_tls_security_level=none');
    }
    for (const [k, v] of Object.entries(l.options ?? {})) o.push(`-o ${k}=${v}`);
    lines.push(`${l.address}:${l.port ?? 25} inet n - n - - smtpd ${o.join(' ')}`);
  }
  try {
    inst = await startInstance(
      'rx',
      opts.resolver,
      {
        myhostname: 'receivers.interop.invalid',
        inet_interfaces: 'loopback-only',
        smtpd_tls_received_header: 'yes',
        smtpd_tls_loglevel: '1',
        virtual_mailbox_domains: 'static:all',
        virtual_mailbox_base: mailBase,
        virtual_mailbox_maps: 'static:inbox/',
        virtual_uid_maps: `static:${uid}`,
        virtual_gid_maps: `static:${gid}`,
        smtpd_relay_restrictions: 'permit_mynetworks, reject',
        message_size_limit: '104857600',
        virtual_mailbox_limit: '0',
        // throughput for the benchmark: deliver as soon as the queue file is in
        default_process_limit: '200',
        virtual_destination_concurrency_limit: '50',
      },
      lines,
      opts.baseDir,
    );
    await waitListening(
      inst,
      opts.listeners.map((l) => ({ host: l.address, port: l.port ?? 25 })),
    );
  } catch (e) {
    await inst?.stop();
    rmSync(certDir, { recursive: true, force: true });
    rmSync(mailBase, { recursive: true, force: true });
    throw e;
  }
  const started = inst;
  const cache = new Map<string, ReceivedMessage>();
  return {
    dir: started.dir,
    listeners: opts.listeners,
    newDir: join(mailBase, 'inbox', 'new'),
    pid: started.proc.pid!,
    messages: () => {
      const d = join(mailBase, 'inbox', 'new');
      if (!existsSync(d)) return [];
      for (const f of readdirSync(d)) if (!cache.has(f)) cache.set(f, parseMessage(join(d, f)));
      return [...cache.values()];
    },
    log: started.log,
    stop: async () => {
      await started.stop();
      rmSync(certDir, { recursive: true, force: true });
      rmSync(mailBase, { recursive: true, force: true });
    },
  };
}

/**
 * Read a delivered message; only the header part is parsed. A DSN our relay made (issue 21 item 6)
 * is checked against RFC 3464 / RFC 6522 on the way (dsnCheck.setup.ts fails the test that saw a bad
 * one): Maildir stores lines with LF, so they are given back their CRLF first; Postfix's own DSNs
 * (X-Postfix-Queue-ID in the report) are not ours to judge.
 */
export function parseMessage(file: string): ReceivedMessage {
  const raw = readFileSync(file, 'utf8');
  if (!/^X-Postfix-Queue-ID:/im.test(raw)) recordDsn(raw.replace(/\r?\n/g, '\r\n'), `interop Maildir ${file}`);
  const head = raw.split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]+/g, ' ');
  const headers = head.split(/\r?\n/).map((l) => {
    const i = l.indexOf(':');
    return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()] as const;
  });
  const header = (n: string) => headers.find(([k]) => k === n.toLowerCase())?.[1];
  const received = header('received') ?? '';
  const by = /\bby (\S+) \(Postfix\)/.exec(received)?.[1] ?? '';
  const tls = /\bwith ESMTPS/.test(received) || /\(using TLS/.test(received);
  return { file, raw, to: (header('delivered-to') ?? '').toLowerCase(), by, tls, header };
}

export interface PostfixQueueEntry {
  queue_id: string;
  queue_name: string;
  sender: string;
  recipients: { address: string; delay_reason?: string }[];
}

export interface PostfixRelay {
  address: string;
  port: number;
  /** the master's pid */
  pid: number;
  /** `postqueue -j`: what is still queued, with Postfix's own reason */
  queue(): PostfixQueueEntry[];
  log(): string;
  stop(): Promise<void>;
}

/**
 * Postfix as a DANE relay (RFC 7672 as Postfix implements it): smtp_dns_support_level = dnssec,
 * smtp_tls_security_level = dane, resolving through our Unbound (AD trusted: resolv.conf trust-ad).
 */
export async function startPostfixRelay(opts: {
  address: string;
  port?: number;
  resolver: string;
  hostname?: string;
  extra?: Record<string, string>;
}): Promise<PostfixRelay> {
  const port = opts.port ?? 25;
  await assertFree(opts.address, port);
  const inst = await startInstance(
    'relay',
    opts.resolver,
    {
      myhostname: opts.hostname ?? 'postfix-relay.tst',
      // inet_interfaces must name configured interface addresses; lo has only 127.0.0.1 itself
      inet_interfaces: 'loopback-only',
      smtp_bind_address: opts.address,
      smtp_dns_support_level: 'dnssec',
      smtp_tls_security_level: 'dane',
      smtp_host_lookup: 'dns',
      smtp_tls_loglevel: '1',
      smtpd_relay_restrictions: 'permit_mynetworks, reject',
      message_size_limit: '104857600',
      default_destination_concurrency_limit: '20',
      // the same per-stage limits our relay is given, so a stalled peer defers in both within a run
      smtp_connect_timeout: '10s',
      ...opts.extra,
    },
    [`${opts.address}:${port} inet n - n - - smtpd -o syslog_name=postfix/relay-in`],
  );
  try {
    await waitListening(inst, [{ host: opts.address, port }]);
  } catch (e) {
    await inst.stop();
    throw e;
  }
  return {
    address: opts.address,
    port,
    pid: inst.proc.pid!,
    queue: () =>
      execFileSync(POSTQUEUE, ['-c', inst.etc, '-j'], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as PostfixQueueEntry),
    log: inst.log,
    stop: inst.stop,
  };
}
