/**
 * The profile summary BENCHMARKS.md shows (bench:postfix --profile): self time is the sum of the samples'
 * time deltas per node, grouped by function and by where the code lives. Checked on a profile recorded
 * here by V8 itself (node:inspector), with a function that is known to burn the most time.
 */
import { Session } from 'node:inspector/promises';
import { describe, expect, it } from 'vitest';
import { placeOf, profileMarkdown, summariseProfile, type CpuProfile } from './cpuprofile.js';

/** pure arithmetic, no calls out: its samples are its own */
function burn(rounds: number): number {
  let x = 0;
  for (let i = 0; i < rounds; i++) x = (x * 31 + i) % 1000003;
  return x;
}

describe('cpuprofile summary (issue 17: the profile table of BENCHMARKS.md)', () => {
  it('issue 17: a real V8 profile: the busy function tops the table, self times add up to the profile, places are grouped', async () => {
    const s = new Session();
    s.connect();
    await s.post('Profiler.enable');
    await s.post('Profiler.setSamplingInterval', { interval: 200 });
    await s.post('Profiler.start');
    expect(burn(30_000_000)).toBeGreaterThanOrEqual(0);
    const { profile } = (await s.post('Profiler.stop')) as unknown as { profile: CpuProfile };
    s.disconnect();
    const sum = summariseProfile(profile, 5);
    const wall = profile.timeDeltas.reduce((a, b) => a + b, 0) / 1000;
    expect(sum.totalMs).toBeCloseTo(wall, 0);
    // of the functions with a source file, the one that burnt the CPU comes first
    const js = sum.top.filter((r) => r.name.includes(' — '));
    expect(js[0]!.name).toMatch(/^burn — .*cpuprofile\.test\.ts:\d+$/);
    expect(sum.top.length).toBeLessThanOrEqual(5);
    const pct = sum.byPlace.reduce((a, r) => a + r.pct, 0);
    expect(pct).toBeLessThanOrEqual(100.0001);
    const md = profileMarkdown(sum);
    expect(md.filter((l) => /^\| \d+ \| burn — /.test(l))).toHaveLength(1);
  });

  it('issue 17: places: a stage of src/, an npm package (scoped too), a Node module, GC, idle, native', () => {
    const f = (url: string, functionName = 'f') => placeOf({ url, functionName, lineNumber: 0 });
    expect(f('file:///work/main/dist/src/spool/spool.js')).toBe('src/spool');
    expect(f('file:///work/main/dist/src/relay.js')).toBe('src (composition)');
    expect(f('file:///work/main/node_modules/smtp-server/lib/smtp-connection.js')).toBe('npm:smtp-server');
    expect(f('file:///work/main/node_modules/@peculiar/x509/build/x509.cjs.js')).toBe('npm:@peculiar/x509');
    expect(f('node:internal/streams/readable')).toBe('node:streams');
    expect(f('node:net')).toBe('node:net');
    expect(f('', '(garbage collector)')).toBe('(gc)');
    expect(f('', '(idle)')).toBe('(idle)');
    expect(f('', 'writeUtf8String')).toBe('(native)');
  });
});
