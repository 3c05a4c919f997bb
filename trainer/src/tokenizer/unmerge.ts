// MergeVQ docs/model.md §2.5 "Unmerge / source recovery" (learn_source False, all released configs): every
// original position copies the quantized vector of its group, Z̃_L = Sᵀ·Z̃_K, reshaped raster to the
// S×S grid. Gradients from the decoder reach every kept token summed over its group.
import * as tf from "@tensorflow/tfjs";

/**
 * zq [B, K, d], source [B, K, L] (null when nothing merged: identity, raster order kept)
 * → [B, side, side, d] with side = √L.
 */
export function unmerge(zq: tf.Tensor3D, source: tf.Tensor3D | null): tf.Tensor4D {
  const [B, K, d] = zq.shape;
  const L = source ? source.shape[2] : K;
  const side = Math.round(Math.sqrt(L));
  if (side * side !== L) throw new Error(`unmerge: L = ${L} is not a square grid`);
  if (source && (source.shape[0] !== B || source.shape[1] !== K)) {
    throw new Error(`unmerge: source [${source.shape}] does not match tokens [${zq.shape}]`);
  }
  const full = source ? tf.matMul(source, zq, true, false) : zq; // Sᵀ [B, L, K] · Z̃ [B, K, d] → [B, L, d]
  return tf.reshape(full, [B, side, side, d]); // raster n = h·S + w
}

/**
 * Reference formulation for tests: gather each position's group row. groups [B, L] int32.
 * (Flattened gather with per-sample offsets: tfjs-backend-wasm 4.22 mis-handles `batchDims = 1`.)
 */
export function unmergeByGather(zq: tf.Tensor3D, groups: tf.Tensor2D): tf.Tensor4D {
  return tf.tidy(() => {
    const [B, K, d] = zq.shape;
    const L = groups.shape[1];
    const side = Math.round(Math.sqrt(L));
    const offsets = tf.mul(tf.reshape(tf.range(0, B, 1, "int32"), [B, 1]), tf.scalar(K, "int32")); // [B, 1]: b·K
    const flat = tf.reshape(tf.add(groups, offsets), [B * L]); // [B, L] → [B·L] rows of [B·K, d]
    return tf.reshape(tf.gather(tf.reshape(zq, [B * K, d]), flat), [B, side, side, d]); // → [B, S, S, d]
  });
}
