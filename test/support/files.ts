/**
 * Files as an operator's tooling writes them: a temp file, fsync, rename — so a reader (the
 * policy watcher) sees the old version or the new one, never a half-written file.
 */
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';

export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  writeSync(fd, text);
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
}
