// MergeAR (docs/model.md §5.5, implemented per its [decision]): duplicate flags from the tokenizer's groups, the
// K-sparse → L-length expansion of merged codes, the duplicate-masking causal attention bias of training,
// and the eviction rule its incremental decoder applies (generate.ts). One rule drives both:
//
//   query token i may attend key token j ≤ i  ⟺  j ≥ i − w  or  dup_j = 0      (prefix [C, M] always)
//
// so a duplicate key is visible while it is in the recent window and "evicted" from then on. Token i here
// is the token at raster position i fed as input (it predicts position i + 1).
import * as tf from "@tensorflow/tfjs";
import { MASK_VALUE } from "./blocks.ts";

/** Recent-window rule shared by the training mask and the decoder's eviction (token positions). */
export const visible = (query: number, key: number, keyDup: boolean, window: number): boolean =>
  key <= query && (key >= query - window || !keyDup);

/**
 * dup [B, L] from groups [B, L] (kept-token index of each raster position, tokenizer `encode().groups`):
 * dup_j = 1 iff raster position j is not the first raster position of its group.
 */
export function dupFromGroups(groups: Int32Array, B: number, L: number): Float32Array {
  const dup = new Float32Array(B * L);
  for (let b = 0; b < B; b++) {
    const seen = new Set<number>();
    for (let j = 0; j < L; j++) {
      const g = groups[b * L + j];
      if (seen.has(g)) dup[b * L + j] = 1;
      else seen.add(g);
    }
  }
  return dup;
}

/**
 * dup [B, L] from codes [B, L]: dup_j = 1 iff the code at j occurred at an earlier raster position. This is
 * exactly what the decoder's global duplicate search over its cache finds (first occurrences are never
 * evicted), so masked training with these flags ≡ KV-evicting generation.
 */
export function dupFromCodes(codes: Int32Array, B: number, L: number): Float32Array {
  const dup = new Float32Array(B * L);
  for (let b = 0; b < B; b++) {
    const seen = new Set<number>();
    for (let j = 0; j < L; j++) {
      const c = codes[b * L + j];
      if (seen.has(c)) dup[b * L + j] = 1;
      else seen.add(c);
    }
  }
  return dup;
}

/** Unmerge codes: indices [B, K] of the kept tokens → [B, L] raster codes (idx_j = indices[groups_j]). */
export function expandByGroups(indices: Int32Array, groups: Int32Array, B: number, K: number, L: number): Int32Array {
  const out = new Int32Array(B * L);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < L; j++) {
      const g = groups[b * L + j];
      if (g < 0 || g >= K) throw new Error(`expandByGroups: group ${g} out of range [0, ${K})`);
      out[b * L + j] = indices[b * K + g];
    }
  }
  return out;
}

/**
 * Additive attention bias of the spatial blocks over the training sequence [prefix (P slots), tok_0..tok_{n−1}]
 * (T = P + n): causal, plus MergeAR duplicate masking when `dup` [B, ≥n] is given.
 * Returns [1, 1, T, T] (no dup) or [B, 1, T, T] (0 = visible, MASK_VALUE = hidden).
 */
export function spatialBias(P: number, n: number, opts?: { dup: tf.Tensor2D; window: number }): tf.Tensor4D {
  const T = P + n;
  return tf.tidy(() => {
    const causal = new Float32Array(T * T);
    const recent = new Float32Array(T * T); // visible whatever the key's dup flag
    for (let q = 0; q < T; q++) {
      for (let k = 0; k <= q; k++) {
        causal[q * T + k] = 1;
        const always = k < P || q < P || k - P >= q - P - (opts?.window ?? 0);
        recent[q * T + k] = always ? 1 : 0;
      }
    }
    const causalT = tf.tensor4d(causal, [1, 1, T, T]);
    if (!opts) return tf.mul(tf.sub(1, causalT), MASK_VALUE) as tf.Tensor4D;
    const B = opts.dup.shape[0];
    const keyDup = tf.slice(opts.dup, [0, 0], [B, n]); // [B, n] flags of tok_0..tok_{n−1}
    const keyKeep = tf.reshape(
      tf.pad(tf.sub(1, keyDup), [
        [0, 0],
        [P, 0],
      ]),
      [B, 1, 1, T],
    ); // prefix keys: 0 here, covered by `recent`
    const allowed = tf.mul(causalT, tf.maximum(tf.tensor4d(recent, [1, 1, T, T]), keyKeep)); // [B, 1, T, T]
    return tf.mul(tf.sub(1, allowed), MASK_VALUE) as tf.Tensor4D;
  });
}
