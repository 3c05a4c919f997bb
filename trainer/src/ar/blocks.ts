// Llama building blocks of the Stage II generator (docs/model.md §5.2; LlamaGen `RMSNorm`, `Attention`,
// `FeedForward`, `TransformerBlock`): pre-RMSNorm (eps 1e-5) → attention (fused qkv, no biases, 2-D RoPE)
// → residual dropout → pre-RMSNorm → SwiGLU w2(silu(w1 x) ⊙ w3 x) → dropout. Sequences are [N, T, D].
// Attention takes an optional past (K/V cache rows, post-RoPE) and an additive bias, so the same code runs
// the masked full-sequence training forward and the incremental KV-cached decoder (generate.ts).
import * as tf from "@tensorflow/tfjs";
import { type DropoutCtx, dropout, Linear, RMSNorm, silu } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { Init, Params } from "../nn/params.ts";
import { applyRope } from "./rope.ts";

/** N(0, 0.02²) for every Linear / Embedding except the zero-initialised heads (docs/model.md §5.2). */
export const AR_INIT = { kind: "normal", std: 0.02 } as const;

/** Masked attention logits: exp(−1e9 − max) is exactly 0 in float32, and a row always sees itself. */
export const MASK_VALUE = -1e9;

/** Bias-free Linear of the generator, N(0, 0.02²) unless told otherwise. */
export const arLinear = (name: string, cin: number, cout: number, init: Init = AR_INIT) =>
  new Linear(name, cin, cout, { init, bias: false, group: "ar" });

/** Rotated keys / values of the new positions, [N, T_new, D] each (what a KV cache stores). */
export interface KV {
  k: tf.Tensor3D;
  v: tf.Tensor3D;
}

/** 2-D RoPE rows of the new positions, [T, d_h/2] each. */
export interface RopeRows {
  cos: tf.Tensor2D;
  sin: tf.Tensor2D;
}

/** Multi-head attention (n_kv_head = n_head, scale 1/√head_dim, no attention dropout), fused qkv, no biases. */
export class Attention extends Module {
  readonly wqkv: Linear;
  readonly wo: Linear;
  readonly heads: number;

  constructor(name: string, D: number, heads: number) {
    super(name);
    this.heads = heads;
    this.wqkv = this.add(arLinear(this.path("wqkv"), D, 3 * D));
    this.wo = this.add(arLinear(this.path("wo"), D, D));
  }

  /**
   * x [N, T, D] (new positions), rope rows for the new positions, bias broadcastable to [N, 1, T, Tp + T] over
   * (query, key = [past; new]) or null (all visible).
   */
  forward(P: Params, x: tf.Tensor3D, rope: RopeRows, bias: tf.Tensor | null, past?: KV): { out: tf.Tensor3D; kv: KV } {
    const [N, T, D] = x.shape;
    const { heads } = this;
    const dh = D / heads;
    const qkv = this.wqkv.forward(P, x) as tf.Tensor3D; // [N, T, 3D] = [q | k | v]
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
    return { out: this.wo.forward(P, merged) as tf.Tensor3D, kv: { k, v } };
  }
}

/** SwiGLU: w2(silu(w1 x) ⊙ w3 x), no biases. */
export class FeedForward extends Module {
  readonly w1: Linear;
  readonly w3: Linear;
  readonly w2: Linear;

  constructor(name: string, D: number, F: number) {
    super(name);
    this.w1 = this.add(arLinear(this.path("w1"), D, F));
    this.w3 = this.add(arLinear(this.path("w3"), D, F));
    this.w2 = this.add(arLinear(this.path("w2"), F, D));
  }

  forward(P: Params, x: tf.Tensor3D): tf.Tensor3D {
    return this.w2.forward(P, tf.mul(silu(this.w1.forward(P, x)), this.w3.forward(P, x))) as tf.Tensor3D;
  }
}

/** One pre-norm Llama block; returns the block output and the new positions' K/V. */
export class LlamaBlock extends Module {
  readonly attentionNorm: RMSNorm;
  readonly attention: Attention;
  readonly ffnNorm: RMSNorm;
  readonly feedForward: FeedForward;

  constructor(name: string, D: number, F: number, heads: number) {
    super(name);
    this.attentionNorm = this.add(new RMSNorm(this.path("attention_norm"), D, "ar"));
    this.attention = this.add(new Attention(this.path("attention"), D, heads));
    this.ffnNorm = this.add(new RMSNorm(this.path("ffn_norm"), D, "ar"));
    this.feedForward = this.add(new FeedForward(this.path("feed_forward"), D, F));
  }

  forward(
    P: Params,
    x: tf.Tensor3D,
    rope: RopeRows,
    bias: tf.Tensor | null,
    drop: { rate: number; ctx: DropoutCtx },
    past?: KV,
  ): { out: tf.Tensor3D; kv: KV } {
    const a = this.attention.forward(P, this.attentionNorm.forward(P, x), rope, bias, past);
    const h = tf.add(x, dropout(a.out, drop.rate, drop.ctx, `${this.name}.resid`)) as tf.Tensor3D;
    const f = this.feedForward.forward(P, this.ffnNorm.forward(P, h));
    return { out: tf.add(h, dropout(f, drop.rate, drop.ctx, `${this.name}.ffn`)) as tf.Tensor3D, kv: a.kv };
  }
}
