/**
 * mulberry32: a small seeded generator, so a fuzz or fault run can be replayed from the seed it
 * prints (`FAULTS_SEED=<seed>`). Not for anything secret.
 */
import { SCALE } from './report.js';

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

/**
 * The run's seed: FAULTS_SEED to replay one. CI (scale 1) uses a fixed seed, so a red build is
 * reproducible and never random; the soak (`npm run soak`, scale > 1) explores a new seed each run.
 */
export const CI_SEED = 20261124;
export const SEED = Number(process.env.FAULTS_SEED ?? (SCALE > 1 ? Date.now() % 1e9 : CI_SEED));
