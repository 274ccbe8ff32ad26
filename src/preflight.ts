/**
 * Everything `serve` checks before it opens a socket, in one function that `dane-relay config check`
 * runs too (issue 13): a configuration that passes `config check` cannot fail at start for a reason
 * the check could have seen. Runtime conditions (a port in use, another relay holding the spool lock,
 * a full disk) are not configuration and are not checked here.
 *
 * Each problem names the key it comes from. Nothing is created or changed: directories are checked
 * for being creatable, keys are test-signed in memory, policy files are parsed and closed.
 */
import { accessSync, constants, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { dirname } from 'node:path';
import { ConfigError, configPath, configuredTlsrptDir, trustAnchorsProblem, type LoadedConfig } from './config/load.js';
import { trustAdProblem } from './dns/trust.js';
import { policyStoreFor } from './policy/config.js';
import { Users } from './ingress/users.js';
import { tlsrptSettings } from './reporting/tlsrpt/daily.js';
import { checkDkimKey } from './reporting/tlsrpt/mail.js';
import { currentIdentity, startupFileProblems, type Identity, type StartupPaths } from './files/checks.js';
import { privilegePlan } from './files/privileges.js';
import { controlSocketPath } from './control/server.js';
import { stsTrustAnchors } from './mtasts/settings.js';

export interface PreflightOptions {
  /**
   * DANE-2 resolver trust rules (default true). A caller that injects its own resolver (tests) turns
   * them off, as Relay.start always has.
   */
  trustCheck?: boolean;
  /**
   * The file checks of files/checks.ts (default true). `serve` runs them itself after dropping
   * privileges, tightening its own directories (`fix`); here they change nothing ('dry-run').
   */
  files?: boolean;
  /**
   * The ingress TLS pair and users file (default true). Started as root with `user:`, the relay reads
   * them before it drops privileges (they may stay root-only), so it checks them there, not after.
   */
  ingress?: boolean;
}

/** The files and directories the relay trusts (files/checks.ts), from the configuration. */
export function startupPaths(cfg: LoadedConfig, tlsrptDir: string | undefined, controlSocket: string): StartupPaths {
  const abs = (p: string) => configPath(cfg, p);
  const inlinePem = (v: string) => v.trimStart().startsWith('-----BEGIN');
  return {
    queueDir: cfg.queue_dir,
    tlsrptDir,
    controlSocket,
    configFile: cfg.file,
    secrets: [
      ...(cfg.ingress.tls && !inlinePem(cfg.ingress.tls.key) ? [abs(cfg.ingress.tls.key)] : []),
      ...(cfg.ingress.users_file ? [abs(cfg.ingress.users_file)] : []),
      ...(cfg.tlsrpt.dkim ? [abs(cfg.tlsrpt.dkim.key_file)] : []),
    ],
    configs: [
      ...(cfg.ingress.tls && !inlinePem(cfg.ingress.tls.cert) ? [abs(cfg.ingress.tls.cert)] : []),
      ...(cfg.policy.tls_policy ? [abs(cfg.policy.tls_policy)] : []),
      ...(cfg.policy.danefail ? [abs(cfg.policy.danefail)] : []),
      ...(cfg.dns.trust_anchors ? [abs(cfg.dns.trust_anchors)] : []),
      ...(cfg.mta_sts.ca_file ? [abs(cfg.mta_sts.ca_file)] : []),
    ],
  };
}

/**
 * The files the relay trusts, checked as `serve` would, changing nothing. As root with `user:` the
 * relay hands its state directories over to that user before checking them, so only the files it
 * reads are checked here (as that user); the state trees are checked at start.
 */
async function fileProblems(cfg: LoadedConfig): Promise<string[]> {
  let me: Identity = currentIdentity();
  let trees = true;
  try {
    const plan = privilegePlan(cfg, process.geteuid?.() ?? -1);
    if (plan.drop) {
      me = { uid: plan.drop.uid, name: plan.drop.name };
      trees = false;
    }
  } catch (e) {
    return [`user: ${(e as Error).message}`];
  }
  const tlsrptDir = configuredTlsrptDir(cfg);
  const found = await startupFileProblems(startupPaths(cfg, tlsrptDir, controlSocketPath(cfg)), me, { fix: 'dry-run', stateTrees: trees });
  return found.filter((p) => p.level === 'refuse').map((p) => `files: ${p.message}`);
}

/** Why `dir` could not be created or written by this process, or undefined. Creates nothing. */
export function dirProblem(dir: string): string | undefined {
  let d = dir;
  for (;;) {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') return `${d}: ${(e as Error).message}`;
      const up = dirname(d);
      if (up === d) return `${dir}: no existing parent directory`;
      d = up;
      continue;
    }
    if (!st.isDirectory()) return d === dir ? `${dir} is not a directory` : `${dir} cannot be created: ${d} is not a directory`;
    try {
      accessSync(d, constants.W_OK | constants.X_OK);
    } catch {
      return d === dir ? `${dir} is not writable by this process` : `${dir} cannot be created: ${d} is not writable by this process`;
    }
    return undefined;
  }
}

async function pem(v: string): Promise<string> {
  return v.trimStart().startsWith('-----BEGIN') ? v : readFile(v, 'utf8');
}

/** Every start-up problem of `cfg`, each as "key: what is wrong". Empty: `serve` can start. */
export async function startupProblems(cfg: LoadedConfig, opts: PreflightOptions = {}): Promise<string[]> {
  const problems: string[] = [];
  const trustCheck = opts.trustCheck ?? true;

  // DANE-2: whose AD bit may be believed (incl. systemd-resolved's stub, issue 13).
  const trust = trustCheck ? trustAdProblem(cfg) : undefined;
  if (trust) problems.push(`dns.resolvers: ${trust}`);

  // Issue 23: the files the relay trusts (ownership, modes, links) and who it runs as.
  if (opts.files ?? true) problems.push(...(await fileProblems(cfg)));

  // dns.mode validate: the trust anchors the validator will start from.
  if (cfg.dns.mode === 'validate' && cfg.dns.trust_anchors) {
    const p = trustAnchorsProblem(configPath(cfg, cfg.dns.trust_anchors));
    if (p) problems.push(`dns.trust_anchors: ${p}`);
  }

  // The policy files parse, and a DANE entry in them passes the same resolver trust rules.
  try {
    policyStoreFor(cfg, undefined, undefined, trustCheck).close();
  } catch (e) {
    problems.push(`policy: ${e instanceof ConfigError ? e.problems.join('; ') : (e as Error).message}`);
  }

  // MTA-STS: the trust anchors policy hosts are checked against.
  try {
    stsTrustAnchors(cfg);
  } catch (e) {
    problems.push((e as Error).message);
  }

  // The spool (and TLSRPT's directory): created at start if missing.
  const q = dirProblem(cfg.queue_dir);
  if (q) problems.push(`queue_dir: ${q}`);

  if (cfg.tlsrpt.enabled) {
    try {
      const settings = tlsrptSettings(cfg); // reads the DKIM key file
      const t = dirProblem(settings.dir);
      if (t) problems.push(`tlsrpt.dir: ${t}`);
      if (settings.dkim) await checkDkimKey(settings.dkim);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }

  // STARTTLS on ingress: both files readable and the key matching the certificate.
  const ingress = opts.ingress ?? true;
  if (ingress && cfg.ingress.tls) {
    try {
      const [cert, key] = await Promise.all([pem(cfg.ingress.tls.cert), pem(cfg.ingress.tls.key)]);
      createSecureContext({ cert, key });
    } catch (e) {
      problems.push(`ingress.tls: ${(e as Error).message}`);
    }
  }
  if (ingress && cfg.ingress.users_file) {
    try {
      await Users.load(cfg.ingress.users_file);
    } catch (e) {
      problems.push(`ingress.users_file: ${(e as Error).message}`);
    }
  }
  // One line each: multi-line errors (a policy or users file's per-line list) are joined.
  return problems.map((p) => p.replace(/\s*\n\s*(- )?/g, '; '));
}

/** `serve`: refuse to start on any start-up problem (ConfigError: the CLI exits 2 with each one). */
export async function assertStartable(cfg: LoadedConfig, opts: PreflightOptions = {}, source = 'configuration'): Promise<void> {
  const problems = await startupProblems(cfg, opts);
  if (problems.length) throw new ConfigError(source, problems);
}
