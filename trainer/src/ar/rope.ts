// 2-D rotary position embedding (docs/model.md §5.2, pitfall 15; LlamaGen `precompute_freqs_cis_2d` +
// `apply_rotary_emb`). Per head, head_dim/4 frequencies f_k = 10000^(−4k/head_dim); adjacent channel pairs
// (2j, 2j+1) are rotated, the first head_dim/4 pairs by row·f_k and the last head_dim/4 pairs by col·f_k.
// Prefix slots (class token, MergeAR's M token) get cos = sin = 0, i.e. their q and k are ZEROED (LlamaGen
// quirk, replicated). A token at raster position n = row·side + col uses grid entry n whatever its index in
// the sequence (MergeAR keeps true raster positions).
import * as tf from "@tensorflow/tfjs";

export interface RopeTable {
  /** [T, head_dim/2] */
  cos: Float32Array;
  /** [T, head_dim/2] */
  sin: Float32Array;
  /** Rows T. */
  length: number;
  /** head_dim/2 pairs per row. */
  pairs: number;
}

/** Angles of one raster position: [head_dim/2] = [row·f_0..row·f_{q−1}, col·f_0..col·f_{q−1}], q = head_dim/4. */
export function ropeAngles(headDim: number, row: number, col: number, base = 10000): Float64Array {
  if (headDim % 4 !== 0) throw new Error(`rope: head_dim ${headDim} must be divisible by 4`);
  const q = headDim / 4;
  const out = new Float64Array(2 * q);
  for (let k = 0; k < q; k++) {
    const f = base ** ((-4 * k) / headDim);
    out[k] = row * f;
    out[q + k] = col * f;
  }
  return out;
}

/**
 * Table for a sequence of slots: `positions[t]` = raster position of slot t, or −1 for a zeroed slot
 * (class / Merge-Instruction prefix, factorised slot 0).
 */
export function ropeTable(headDim: number, gridSide: number, positions: readonly number[]): RopeTable {
  const pairs = headDim / 2;
  const cos = new Float32Array(positions.length * pairs);
  const sin = new Float32Array(positions.length * pairs);
  positions.forEach((p, t) => {
    if (p < 0) return; // zero-RoPE slot: cos = sin = 0
    const a = ropeAngles(headDim, Math.floor(p / gridSide), p % gridSide);
    for (let j = 0; j < pairs; j++) {
      cos[t * pairs + j] = Math.cos(a[j]);
      sin[t * pairs + j] = Math.sin(a[j]);
    }
  });
  return { cos, sin, length: positions.length, pairs };
}

/** Training layout: P zeroed prefix slots, then raster positions 0..n−1. */
export const spatialPositions = (prefix: number, n: number): number[] => [
  ...Array<number>(prefix).fill(-1),
  ...Array.from({ length: n }, (_, i) => i),
];

/** Factorised intra-token sequence: slot 0 zeroed (table entry 0), slot 1 identity (grid position 0). */
export const FACTORIZED_POSITIONS: readonly number[] = [-1, 0];

/** Table rows as tensors [T, head_dim/2] (caller disposes). */
export function ropeTensors(t: RopeTable): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  return { cos: tf.tensor2d(t.cos, [t.length, t.pairs]), sin: tf.tensor2d(t.sin, [t.length, t.pairs]) };
}

/**
 * Rotate x [N, T, heads·head_dim] (heads contiguous, channels of a head contiguous) with a table of T rows:
 * (x_{2j}, x_{2j+1}) → (x_{2j}·cos − x_{2j+1}·sin, x_{2j+1}·cos + x_{2j}·sin).
 */
export function applyRope(x: tf.Tensor3D, heads: number, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor3D {
  const [N, T, D] = x.shape;
  const pairs = D / heads / 2;
  const xs = tf.reshape(x, [N, T, heads, pairs, 2]); // [N, T, h, d_h/2, 2]
  const [x0, x1] = tf.split(xs, 2, 4); // 2 × [N, T, h, d_h/2, 1]
  const c = tf.reshape(cos, [1, T, 1, pairs, 1]);
  const s = tf.reshape(sin, [1, T, 1, pairs, 1]);
  const r0 = tf.sub(tf.mul(x0, c), tf.mul(x1, s));
  const r1 = tf.add(tf.mul(x1, c), tf.mul(x0, s));
  return tf.reshape(tf.concat([r0, r1], 4), [N, T, D]) as tf.Tensor3D; // → [N, T, D]
}
