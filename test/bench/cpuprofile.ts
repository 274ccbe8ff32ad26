/**
 * A V8 `.cpuprofile` (what `node --cpu-prof` writes) summarised for BENCHMARKS.md: the top functions by self
 * time, and the same time by where the code lives (a stage of src/, an npm package, Node's own modules,
 * native calls, GC, idle). Used by `npm run bench:postfix -- --profile`.
 *
 * The profiler samples the main thread on a wall-clock timer: when the process is descheduled (a 2-core
 * machine that is 100 % busy), the time lands on the frame it was in — most often the native call that
 * woke another process (a socket write, a thread-pool hand-off). Read the native rows as "what the main
 * thread was doing when it lost the CPU" as much as their own cost; the relay's CPU seconds are measured
 * separately from /proc.
 */

export interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileRow {
  name: string;
  ms: number;
  pct: number;
}

export interface ProfileSummary {
  totalMs: number;
  top: ProfileRow[];
  byPlace: ProfileRow[];
}

/** where a frame's code lives: `src/<stage>`, `npm:<package>`, `node:<module>`, or `(native)`/`(gc)`/`(idle)`/`(program)` */
export function placeOf(frame: CpuProfile['nodes'][number]['callFrame']): string {
  const u = frame.url;
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const rest = u.slice(nm + 'node_modules/'.length).split('/');
    return `npm:${rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const src = u.lastIndexOf('/src/');
  if (src >= 0) {
    const rest = u.slice(src + '/src/'.length).split('/');
    return rest.length > 1 ? `src/${rest[0]}` : 'src (composition)';
  }
  if (u.startsWith('node:')) return u.replace(/^node:internal\//, 'node:').split('/')[0]!;
  if (u === '') {
    const f = frame.functionName;
    if (f === '(garbage collector)') return '(gc)';
    if (f === '(idle)') return '(idle)';
    if (f === '(program)' || f === '(root)') return '(program)';
    return '(native)';
  }
  return u;
}

function rows(m: Map<string, number>, total: number, n: number): ProfileRow[] {
  return [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, us]) => ({ name, ms: us / 1000, pct: total ? (100 * us) / total : 0 }));
}

/** Self time per function (name, file, line) and per place; `n` rows of each. */
export function summariseProfile(p: CpuProfile, n = 20): ProfileSummary {
  const byId = new Map(p.nodes.map((x) => [x.id, x]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0));
  const fn = new Map<string, number>();
  const place = new Map<string, number>();
  let total = 0;
  for (const [id, us] of self) {
    const f = byId.get(id)?.callFrame;
    if (!f) continue;
    total += us;
    const file = f.url ? `${placeOf(f)} ${f.url.slice(f.url.lastIndexOf('/') + 1)}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'}${file ? ` — ${file}` : ''}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const pl = placeOf(f);
    place.set(pl, (place.get(pl) ?? 0) + us);
  }
  return { totalMs: total / 1000, top: rows(fn, total, n), byPlace: rows(place, total, n) };
}

/** Markdown: the two tables side by side in one section's text. */
export function profileMarkdown(s: ProfileSummary): string[] {
  const esc = (x: string) => x.replace(/\|/g, '\\|');
  const out = ['| # | function — where | self ms | % |', '| ---: | --- | ---: | ---: |'];
  s.top.forEach((r, i) => {
    out.push(`| ${i + 1} | ${esc(r.name)} | ${r.ms.toFixed(0)} | ${r.pct.toFixed(1)} |`);
  });
  out.push('', '| where | self ms | % |', '| --- | ---: | ---: |');
  for (const r of s.byPlace) out.push(`| ${esc(r.name)} | ${r.ms.toFixed(0)} | ${r.pct.toFixed(1)} |`);
  return out;
}
