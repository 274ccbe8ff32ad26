import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/**
 * The path of an installed program, looked up in PATH and then in the sbin directories, which an ordinary
 * user's PATH on Debian does not contain (unbound, nsd, postconf live in /usr/sbin): the suite must find the
 * same tools whoever runs it (issue 20). Undefined when it is not installed.
 */
export function findTool(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin'];
  return dirs.map((d) => join(d, name)).find(existsSync);
}
