// Test fixtures for the Stage II generator: the docs/model.md §10 tiny configs ("Stage-II tiny", "MergeAR tiny"),
// random (non-trained, clearly synthetic) weights that make every logit depend on its inputs, and
// token sequences with MergeAR-style duplicates.
import * as tf from "@tensorflow/tfjs";
import { Rng } from "../util/rng.ts";
import { type ARConfig, resolveARConfig } from "./config.ts";
import type { GPT } from "./gpt.ts";

/** docs/model.md §10: dim 64, 4 heads, 2 + 1 layers, bits [4, 6], 8×8 grid, 10 classes (+ M table of 4 with MergeAR). */
export function tinyConfig(opts: { mergeAR?: boolean; window?: number; L?: number; seed?: number } = {}): ARConfig {
  return resolveARConfig(
    {
      size: "tiny",
      numClasses: 10,
      classDropout: 0.1,
      mergeAR: { enabled: opts.mergeAR ?? false, window: opts.window ?? 2 },
    },
    { zChannels: 10, L: opts.L ?? 64, numCandidates: 4 },
    opts.seed ?? 0,
  );
}

/**
 * Overwrite every weight with seeded random values (matrices N(0, std²), norm weights 1 + N(0, 0.1²)) so that
 * the zero-initialised heads do not make all logits trivially equal.
 */
export function randomizeWeights(model: GPT, seed: number, std = 0.2): void {
  const rng = new Rng(seed);
  const m = new Map<string, tf.Tensor>();
  for (const [name, v] of model.getWeights()) {
    const n = v.size;
    const data = v.rank === 1 ? rng.normalArray(n, 1, 0.1) : rng.normalArray(n, 0, name.includes("emb") ? 1 : std);
    m.set(name, tf.tensor(data, v.shape));
  }
  model.setWeights(m);
  for (const t of m.values()) t.dispose();
}

/**
 * B raster sequences of length L with duplicates: each position joins one of K groups (a few contiguous runs
 * plus random picks, like ToMe merges), each group has its own distinct code in [0, 2^bits).
 */
export function sequencesWithDuplicates(B: number, L: number, K: number, bits: number, seed: number) {
  const rng = new Rng(seed);
  const groups = new Int32Array(B * L);
  const codes = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    const perm = rng.permutation(2 ** bits).slice(0, K); // distinct code per group
    for (let j = 0; j < L; j++) {
      const g = j < K ? j : rng.uniform() < 0.5 ? groups[b * L + j - 1] : rng.int(K);
      groups[b * L + j] = g;
      codes[b * L + j] = perm[g];
    }
  }
  return { groups, codes };
}
