/**
 * mulberry32: a small seeded generator, so a fuzz or fault run can be replayed from the seed it
 * prints (`FAULTS_SEED=<seed>`). Not for anything secret.
 */
export type Rand = () => number;

export function rng(seed: number): Rand {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The run's seed: FAULTS_SEED to replay, else from the clock. */
export const SEED = Number(process.env.FAULTS_SEED ?? Date.now() % 1e9);
