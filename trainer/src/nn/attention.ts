// Scaled dot-product attention core, after the qkv linear and before the output projection (timm layout:
// qkv = [q | k | v], each heads × head_dim). On the native backend it is one fused kernel each way
// (hack/tfjs-native/ops: MergevqAttention / MergevqAttentionGrad), where the composed form is ~12 ops forward and
// ~20 backward per block (transposes, unstack, scale, two batched matmuls, bias add, softmax and their gradients).
// Elsewhere (wasm, cpu, MERGEVQ_FUSED_OPS=0) the composed form runs; trainer/src/backend/select.test.ts compares
// the two.
import * as tf from "@tensorflow/tfjs";
import { ATTENTION, ATTENTION_GRAD, fusedKernel } from "./fusedOps.ts";

tf.registerGradient({
  kernelName: ATTENTION,
  inputsToSave: ["qkv"],
  outputsToSave: [false, true],
  gradFunc: (dy, saved, attrs) => {
    const [qkv, probs] = saved;
    const a = attrs as unknown as { heads: number; scale: number; hasBias: boolean };
    // One kernel for both gradients, run here (not lazily in a closure: see groupNorm.ts).
    const [dqkv, dbias] = tf
      .engine()
      .runKernel(
        ATTENTION_GRAD,
        { dout: Array.isArray(dy) ? dy[0] : dy, qkv, probs },
        { heads: a.heads, scale: a.scale },
      ) as tf.Tensor[];
    const grads: Record<string, () => tf.Tensor> = { qkv: () => dqkv };
    if (a.hasBias) grads.bias = () => dbias;
    else dbias.dispose();
    return grads;
  },
});

/**
 * softmax(scale·Q·Kᵀ + bias_j)·V per head, heads merged back: qkv [B, N, 3·h·d_h], `bias` [B, N] over keys
 * (ToMe's log-size) → [B, N, h·d_h].
 */
export function attentionCore(qkv: tf.Tensor3D, heads: number, bias?: tf.Tensor2D): tf.Tensor3D {
  const [B, N, D3] = qkv.shape;
  const D = D3 / 3;
  const dh = D / heads;
  if (!Number.isInteger(dh)) throw new Error(`attention: qkv width ${D3} is not 3 × ${heads} heads × head_dim`);
  const scale = dh ** -0.5;
  if (fusedKernel(ATTENTION)) {
    const inputs: tf.NamedTensorMap = bias ? { qkv, bias } : { qkv };
    return tf.tidy(
      () => (tf.engine().runKernel(ATTENTION, inputs, { heads, scale, hasBias: bias !== undefined }) as tf.Tensor[])[0],
    ) as tf.Tensor3D;
  }
  const [q, k, v] = tf.unstack(tf.transpose(tf.reshape(qkv, [B, N, 3, heads, dh]), [2, 0, 3, 1, 4])); // 3 × [B, h, N, d_h]
  let logits = tf.matMul(tf.mul(q, scale), k, false, true); // [B, h, N, N]
  if (bias) logits = tf.add(logits, tf.reshape(bias, [B, 1, 1, N]));
  const o = tf.matMul(tf.softmax(logits), v); // [B, h, N, d_h]
  return tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B, N, D]) as tf.Tensor3D; // [B, N, h·d_h]
}

/** The keys per head of a qkv projection: [B, N, 3·h·d_h] → [B, h, N, d_h] (ToMe's merge metric). */
export function attentionKeys(qkv: tf.Tensor3D, heads: number): tf.Tensor4D {
  const [B, N, D3] = qkv.shape;
  const D = D3 / 3;
  const k = tf.slice(qkv, [0, 0, D], [B, N, D]); // [B, N, h·d_h]
  return tf.transpose(tf.reshape(k, [B, N, heads, D / heads]), [0, 2, 1, 3]) as tf.Tensor4D;
}
