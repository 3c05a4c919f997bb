// Llama building blocks of the Stage II generator (docs/model.md §5.2; LlamaGen `RMSNorm`, `Attention`,
// `FeedForward`, `TransformerBlock`): pre-RMSNorm (eps 1e-5) → attention (fused qkv, no biases, 2-D RoPE)
// → residual dropout → pre-RMSNorm → SwiGLU w2(silu(w1 x) ⊙ w3 x) → dropout. Sequences are [N, T, D].
// Attention takes an optional past (K/V cache rows, post-RoPE) and an additive bias, so the same code runs
// the masked full-sequence training forward and the incremental KV-cached decoder (generate.ts).
import * as tf from "@tensorflow/tfjs";
import { type DropoutCtx, dropout, linear, rmsNorm, rmsNormSpecs, silu } from "../nn/layers.ts";
import type { ParamSpec, Params } from "../nn/params.ts";
import { applyRope } from "./rope.ts";

/** N(0, 0.02²) for every Linear / Embedding except the zero-initialised heads (docs/model.md §5.2). */
export const AR_INIT = { kind: "normal", std: 0.02 } as const;

/** Masked attention logits: exp(−1e9 − max) is exactly 0 in float32, and a row always sees itself. */
export const MASK_VALUE = -1e9;

export const linearNoBias = (name: string, cin: number, cout: number): ParamSpec[] => [
  { name: `${name}.weight`, shape: [cin, cout], init: AR_INIT, group: "ar" },
];

export const blockSpecs = (name: string, D: number, F: number): ParamSpec[] => [
  ...rmsNormSpecs(`${name}.attention_norm`, D, "ar"),
  ...linearNoBias(`${name}.attention.wqkv`, D, 3 * D),
  ...linearNoBias(`${name}.attention.wo`, D, D),
  ...rmsNormSpecs(`${name}.ffn_norm`, D, "ar"),
  ...linearNoBias(`${name}.feed_forward.w1`, D, F),
  ...linearNoBias(`${name}.feed_forward.w3`, D, F),
  ...linearNoBias(`${name}.feed_forward.w2`, F, D),
];

/** Rotated keys / values of the new positions, [N, T_new, D] each (what a KV cache stores). */
export interface KV {
  k: tf.Tensor3D;
  v: tf.Tensor3D;
}

/**
 * Multi-head attention (n_kv_head = n_head, scale 1/√head_dim, no attention dropout).
 * x [N, T, D] (new positions), rope rows for the new positions [T, d_h/2], bias broadcastable to
 * [N, 1, T, Tp + T] over (query, key = [past; new]) or null (all visible).
 */
export function attention(
  P: Params,
  name: string,
  x: tf.Tensor3D,
  heads: number,
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D },
  bias: tf.Tensor | null,
  past?: KV,
): { out: tf.Tensor3D; kv: KV } {
  const [N, T, D] = x.shape;
  const dh = D / heads;
  const qkv = linear(P, `${name}.wqkv`, x, false) as tf.Tensor3D; // [N, T, 3D] = [q | k | v]
  const [q0, k0, v] = tf.split(qkv, 3, 2) as tf.Tensor3D[];
  const q = applyRope(q0, heads, rope.cos, rope.sin);
  const k = applyRope(k0, heads, rope.cos, rope.sin);
  const kAll = past ? (tf.concat([past.k, k], 1) as tf.Tensor3D) : k; // [N, Tk, D]
  const vAll = past ? (tf.concat([past.v, v], 1) as tf.Tensor3D) : v;
  const Tk = kAll.shape[1];
  const toHeads = (t: tf.Tensor3D, len: number) => tf.transpose(tf.reshape(t, [N, len, heads, dh]), [0, 2, 1, 3]); // [N, h, len, d_h]
  let logits = tf.matMul(toHeads(tf.mul(q, dh ** -0.5) as tf.Tensor3D, T), toHeads(kAll, Tk), false, true); // [N, h, T, Tk]
  if (bias) logits = tf.add(logits, bias);
  const o = tf.matMul(tf.softmax(logits), toHeads(vAll, Tk)); // [N, h, T, d_h]
  const merged = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [N, T, D]) as tf.Tensor3D;
  return { out: linear(P, `${name}.wo`, merged, false) as tf.Tensor3D, kv: { k, v } };
}

/** SwiGLU: w2(silu(w1 x) ⊙ w3 x), no biases. */
export const feedForward = (P: Params, name: string, x: tf.Tensor3D): tf.Tensor3D =>
  linear(
    P,
    `${name}.w2`,
    tf.mul(silu(linear(P, `${name}.w1`, x, false)), linear(P, `${name}.w3`, x, false)),
    false,
  ) as tf.Tensor3D;

/** One pre-norm Llama block; returns the block output and the new positions' K/V. */
export function llamaBlock(
  P: Params,
  name: string,
  x: tf.Tensor3D,
  heads: number,
  rope: { cos: tf.Tensor2D; sin: tf.Tensor2D },
  bias: tf.Tensor | null,
  drop: { rate: number; ctx: DropoutCtx },
  past?: KV,
): { out: tf.Tensor3D; kv: KV } {
  const a = attention(P, `${name}.attention`, rmsNorm(P, `${name}.attention_norm`, x), heads, rope, bias, past);
  const h = tf.add(x, dropout(a.out, drop.rate, drop.ctx, `${name}.resid`)) as tf.Tensor3D;
  const f = feedForward(P, `${name}.feed_forward`, rmsNorm(P, `${name}.ffn_norm`, h));
  return { out: tf.add(h, dropout(f, drop.rate, drop.ctx, `${name}.ffn`)) as tf.Tensor3D, kv: a.kv };
}
