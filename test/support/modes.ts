/**
 * A relay process for which file modes are binding, so a test can make its spool read-only.
 *
 * Root has CAP_DAC_OVERRIDE: a 0500 directory is writable for it, and "the spool became read-only"
 * would test nothing. Running the relay as another user (nobody) instead breaks as soon as the
 * checkout or TMPDIR sits below a directory that user cannot traverse (a `mktemp -d` clone, /root:
 * issue 20). So the relay keeps its uid and loses only CAP_DAC_OVERRIDE, from the bounding and
 * inheritable sets (util-linux `setpriv`): it still reads and traverses everything
 * (CAP_DAC_READ_SEARCH is kept), but writes only where the owner's mode bits allow. An ordinary
 * user needs no wrapper at all. A probe decides, with the same node binary the relay runs on.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ModesBind {
  /** argv prefix for spawning the relay (empty: spawn it as is) */
  prefix: string[];
  /** why modes cannot be made binding; '' when they are */
  skip: string;
}

export const DROP_DAC_OVERRIDE = ['setpriv', '--inh-caps=-dac_override', '--bounding-set=-dac_override', '--'];

/** What writing into a 0500 directory gives a node process started with `prefix`: 'EACCES', 'written', or an error. */
function probe(dir: string, prefix: string[], name: string): string {
  const script = `try { require('node:fs').writeFileSync(process.argv[1], 'x'); console.log('written') } catch (e) { console.log(e.code) }`;
  const argv = [...prefix, process.execPath, '-e', script, join(dir, name)];
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });
  if (r.error) return `${argv[0]}: ${r.error.message}`;
  return r.stdout.trim() || `exit ${r.status}: ${r.stderr.trim().split('\n')[0]}`;
}

export function modesBind(): ModesBind {
  const base = mkdtempSync(join(tmpdir(), 'dane-relay-modes-'));
  const ro = join(base, 'ro');
  mkdirSync(ro, { mode: 0o500 });
  chmodSync(ro, 0o500); // whatever the umask
  try {
    const plain = probe(ro, [], 'plain');
    if (plain === 'EACCES') return { prefix: [], skip: '' };
    const dropped = probe(ro, DROP_DAC_OVERRIDE, 'dropped'); // a new name: an existing file needs no directory write
    if (dropped === 'EACCES') return { prefix: DROP_DAC_OVERRIDE, skip: '' };
    return {
      prefix: [],
      skip: `a 0500 directory stays writable for the relay (as is: ${plain}; without CAP_DAC_OVERRIDE via setpriv: ${dropped}), so a read-only spool cannot be made`,
    };
  } finally {
    chmodSync(ro, 0o700);
    rmSync(base, { recursive: true, force: true });
  }
}
