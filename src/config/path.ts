/**
 * Which configuration file a command reads (issue 21 item 2): `--config FILE` if given, else
 * `$DANE_RELAY_CONFIG`, else /etc/dane-relay/config.yml if it exists, else the package's own
 * config.example.yml (found from the installed package, not the working directory, so
 * `dane-relay queue list` works from anywhere). A command that was not given `--config` says on
 * stderr which file it used and why.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SYSTEM_CONFIG = '/etc/dane-relay/config.yml';
export const CONFIG_ENV = 'DANE_RELAY_CONFIG';

export type ConfigSource = '--config' | '$DANE_RELAY_CONFIG' | typeof SYSTEM_CONFIG | 'package example';

export interface ConfigChoice {
  file: string;
  source: ConfigSource;
}

/** The precedence itself, pure: what exists is asked through `exists`. An empty flag or variable counts as unset. */
export function chooseConfig(i: { flag?: string; env?: string; exists: (file: string) => boolean; packageDir: string }): ConfigChoice {
  if (i.flag) return { file: i.flag, source: '--config' };
  if (i.env) return { file: i.env, source: '$DANE_RELAY_CONFIG' };
  if (i.exists(SYSTEM_CONFIG)) return { file: SYSTEM_CONFIG, source: SYSTEM_CONFIG };
  return { file: join(i.packageDir, 'config.example.yml'), source: 'package example' };
}

/** The package's root: the nearest directory above this module holding package.json (src/ under tests, dist/src/ installed). */
export function packageDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) return resolve('.');
    dir = up;
  }
  return dir;
}

/** The file a command reads (see chooseConfig); when `--config` was not given, one line on `err` names it and why. */
export function configFileFor(flag: string | undefined, err?: NodeJS.WritableStream): string {
  const c = chooseConfig({ flag, env: process.env[CONFIG_ENV], exists: existsSync, packageDir: packageDir() });
  if (c.source !== '--config')
    err?.write(
      `dane-relay: config ${c.file} (${c.source === 'package example' ? 'no --config, $DANE_RELAY_CONFIG or /etc/dane-relay/config.yml: the package example' : `from ${c.source}`})\n`,
    );
  return c.file;
}

let version: string | undefined;

/** The package's version (package.json), for `--version`, the start log line and `dane_relay_build_info`. */
export function packageVersion(): string {
  if (version === undefined) {
    try {
      const v = (JSON.parse(readFileSync(join(packageDir(), 'package.json'), 'utf8')) as { version?: unknown }).version;
      version = typeof v === 'string' ? v : 'unknown';
    } catch {
      version = 'unknown';
    }
  }
  return version;
}
