// MergeVQ docs/model.md §2.3 "Encoder transformer with token merging (ToMe)" and its output head: prepend a
// learned CLS (N(0, 1e-6²)), no positional embedding, `numAttBlocks` pre-norm ViT blocks patched as in
// ToMe's timm patch (trace_source, prop_attn): attention with +log(size) over keys → residual →
// bipartite matching on the head-mean of the keys → size-weighted merge → MLP residual. No final norm.
// Head: tokens 1..K → [B, √K, √K, D] → GN32 → SiLU → 1×1 conv (D→zChannels, bias).
import * as tf from "@tensorflow/tfjs";
import { groupNormSilu } from "../nn/groupNorm.ts";
import { convSpecs, layerNorm, layerScale, linear, normSpecs } from "../nn/layers.ts";
import type { ParamSpec, Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import { attention, mlp, vitBlockSpecs } from "./blocks.ts";
import { bipartitePlan, capR, MergeTracker, matchingScores, mergeTokens } from "./tome.ts";

export function encoderTransformerSpecs(cfg: ArchConfig): ParamSpec[] {
  const D = cfg.derived.encDim;
  const g = "encoder" as const;
  const out: ParamSpec[] = [
    { name: "encoder.cls_token", shape: [1, 1, D], init: { kind: "normal", std: 1e-6 }, group: g },
  ];
  for (let i = 0; i < cfg.numAttBlocks; i++) out.push(...vitBlockSpecs(`encoder.blocks.${i}`, D, g));
  out.push(...normSpecs("encoder.norm_out", D, g));
  out.push(...convSpecs("encoder.quant_conv", 1, 1, D, cfg.zChannels, { bias: true, init: "torch", group: g }));
  return out;
}

export interface EncoderTransformerOut {
  /** Final-block CLS token [B, D]. */
  cls: tf.Tensor2D;
  /** Kept tokens in ToMe order, CLS dropped [B, K, D]. */
  tokens: tf.Tensor3D;
  /** Sizes / groups bookkeeping (source matrix on demand). */
  tracker: MergeTracker;
}

/**
 * tokens [B, L, D] (raster) with per-block merge counts r (capped per layer at ⌊(t−1)/2⌋).
 * Returns the CLS token, the K kept tokens and the merge bookkeeping.
 */
export function encoderTransformer(
  P: Params,
  cfg: ArchConfig,
  tokens: tf.Tensor3D,
  r: readonly number[],
): EncoderTransformerOut {
  const [B, L, D] = tokens.shape;
  const heads = cfg.derived.encHeads;
  if (r.length !== cfg.numAttBlocks) throw new Error(`r list has ${r.length} entries for ${cfg.numAttBlocks} blocks`);
  const cls0 = tf.tile(P.get("encoder.cls_token"), [B, 1, 1]); // [B, 1, D]
  let x = tf.concat([cls0, tokens], 1) as tf.Tensor3D; // [B, 1+L, D]
  const tracker = new MergeTracker(B, 1 + L);
  for (let i = 0; i < cfg.numAttBlocks; i++) {
    const n = `encoder.blocks.${i}`;
    const t = x.shape[1];
    // Proportional attention once sizes exist (before the first merge all sizes are 1 and log 1 = 0).
    const logSizes = tracker.merged ? tf.log(tf.tensor2d(tracker.sizes, [B, t])) : undefined;
    const { out, keys } = attention(P, `${n}.attn`, layerNorm(P, `${n}.norm1`, x), heads, logSizes as tf.Tensor2D);
    x = tf.add(x, layerScale(P, `${n}.ls1`, out)) as tf.Tensor3D;
    const rl = capR(r[i], t);
    if (rl > 0) {
      const metric = tf.mean(keys, 1) as tf.Tensor3D; // head-mean of keys: [B, h, t, d_h] → [B, t, d_h]
      const plan = bipartitePlan(matchingScores(metric), B, t, rl);
      const before = tracker.merged ? tracker.sizes : null;
      const after = tracker.apply(plan);
      x = mergeTokens(x, before, after, plan); // [B, t, D] → [B, t−r, D]
    }
    x = tf.add(x, layerScale(P, `${n}.ls2`, mlp(P, `${n}.mlp`, layerNorm(P, `${n}.norm2`, x)))) as tf.Tensor3D;
  }
  const t = x.shape[1];
  const cls = tf.reshape(tf.slice(x, [0, 0, 0], [B, 1, D]), [B, D]) as tf.Tensor2D; // [B, 1, D] → [B, D]
  return { cls, tokens: tf.slice(x, [0, 1, 0], [B, t - 1, D]) as tf.Tensor3D, tracker };
}

/** Encoder output head: tokens [B, K, D] → [B, √K, √K, D] → GN32 → SiLU → 1×1 conv → z [B, K, zc]. */
export function encoderHead(P: Params, cfg: ArchConfig, tokens: tf.Tensor3D): tf.Tensor3D {
  const [B, K, D] = tokens.shape;
  const side = Math.round(Math.sqrt(K));
  if (side * side !== K) throw new Error(`encoder head: K = ${K} is not a perfect square`);
  const grid = tf.reshape(tokens, [B, side, side, D]) as tf.Tensor4D; // [B, K, D] → [B, √K, √K, D] (ToMe order)
  const h = groupNormSilu(P, "encoder.norm_out", grid);
  return tf.reshape(linear(P, "encoder.quant_conv", h), [B, K, cfg.zChannels]) as tf.Tensor3D; // → [B, K, zc]
}
