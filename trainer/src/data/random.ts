// Seeded randomness for the data plane. Every random decision (shard/file order, shuffle buffer, crops,
// flips) is a pure function of (seed, epoch, rank or sample key), so a loader's output does not depend on
// timing, concurrency, retries or resumed reads.

/** 32-bit FNV-1a over the parts' string forms, then finalised with a murmur3 mix. */
export function hashSeed(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  const s = parts.join("\u0000");
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export type Rand = () => number;

/** mulberry32: uniform floats in [0, 1). */
export function mulberry32(seed: number): Rand {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const seededRandom = (...parts: (string | number)[]): Rand => mulberry32(hashSeed(...parts));

/** Integer uniform in [lo, hi] (inclusive), like Python's randint / torch.randint(lo, hi + 1). */
export const randInt = (rnd: Rand, lo: number, hi: number): number => lo + Math.floor(rnd() * (hi - lo + 1));

/** In-place Fisher–Yates shuffle. */
export function shuffleInPlace<T>(xs: T[], rnd: Rand): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [xs[i], xs[j]] = [xs[j], xs[i]];
  }
  return xs;
}
