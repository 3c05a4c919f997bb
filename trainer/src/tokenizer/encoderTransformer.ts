// MergeVQ docs/model.md §2.3 "Encoder transformer with token merging (ToMe)" and its output head: prepend a
// learned CLS (N(0, 1e-6²)), no positional embedding, `numAttBlocks` pre-norm ViT blocks patched as in
// ToMe's timm patch (trace_source, prop_attn): attention with +log(size) over keys → residual →
// bipartite matching on the head-mean of the keys → size-weighted merge → MLP residual. No final norm.
// Head: tokens 1..K → [B, √K, √K, D] → GN32 → SiLU → 1×1 conv (D→zChannels, bias).
import * as tf from "@tensorflow/tfjs";
import { Conv2d, GroupNorm } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import { VitBlock } from "./blocks.ts";
import { bipartitePlan, capR, MergeTracker, matchingScores, mergeTokens } from "./tome.ts";

export interface EncoderTransformerOut {
  /** Final-block CLS token [B, D]. */
  cls: tf.Tensor2D;
  /** Kept tokens in ToMe order, CLS dropped [B, K, D]. */
  tokens: tf.Tensor3D;
  /** Sizes / groups bookkeeping (source matrix on demand). */
  tracker: MergeTracker;
}

export class EncoderTransformer extends Module {
  readonly clsToken: string;
  readonly blocks: VitBlock[] = [];
  /** Output head: GN32 → SiLU → 1×1 conv (D → zChannels, bias). */
  readonly normOut: GroupNorm;
  readonly quantConv: Conv2d;
  readonly zChannels: number;

  constructor(cfg: ArchConfig) {
    super("encoder");
    const D = cfg.derived.encDim;
    const g = "encoder" as const;
    this.zChannels = cfg.zChannels;
    this.clsToken = this.param("cls_token", [1, 1, D], { kind: "normal", std: 1e-6 }, g);
    for (let i = 0; i < cfg.numAttBlocks; i++) {
      this.blocks.push(this.add(new VitBlock(this.path(`blocks.${i}`), D, cfg.derived.encHeads, g)));
    }
    this.normOut = this.add(new GroupNorm(this.path("norm_out"), D, g));
    this.quantConv = this.add(
      new Conv2d(this.path("quant_conv"), 1, 1, D, cfg.zChannels, { bias: true, init: "torch", group: g }),
    );
  }

  /**
   * tokens [B, L, D] (raster) with per-block merge counts r (capped per layer at ⌊(t−1)/2⌋).
   * Returns the CLS token, the K kept tokens and the merge bookkeeping.
   */
  forward(P: Params, tokens: tf.Tensor3D, r: readonly number[]): EncoderTransformerOut {
    const [B, L, D] = tokens.shape;
    if (r.length !== this.blocks.length)
      throw new Error(`r list has ${r.length} entries for ${this.blocks.length} blocks`);
    const cls0 = tf.tile(P.get(this.clsToken), [B, 1, 1]); // [B, 1, D]
    let x = tf.concat([cls0, tokens], 1) as tf.Tensor3D; // [B, 1+L, D]
    const tracker = new MergeTracker(B, 1 + L);
    this.blocks.forEach((block, i) => {
      const t = x.shape[1];
      // Proportional attention once sizes exist (before the first merge all sizes are 1 and log 1 = 0).
      const logSizes = tracker.merged ? (tf.log(tf.tensor2d(tracker.sizes, [B, t])) as tf.Tensor2D) : undefined;
      const attn = block.attentionResidual(P, x, logSizes);
      x = attn.x;
      const rl = capR(r[i], t);
      if (rl > 0) {
        const metric = tf.mean(attn.keys(), 1) as tf.Tensor3D; // head-mean of keys: [B, h, t, d_h] → [B, t, d_h]
        const plan = bipartitePlan(matchingScores(metric), B, t, rl);
        const before = tracker.merged ? tracker.sizes : null;
        const after = tracker.apply(plan);
        x = mergeTokens(x, before, after, plan); // [B, t, D] → [B, t−r, D]
      }
      x = block.mlpResidual(P, x);
    });
    const t = x.shape[1];
    const cls = tf.reshape(tf.slice(x, [0, 0, 0], [B, 1, D]), [B, D]) as tf.Tensor2D; // [B, 1, D] → [B, D]
    return { cls, tokens: tf.slice(x, [0, 1, 0], [B, t - 1, D]) as tf.Tensor3D, tracker };
  }

  /** Output head: tokens [B, K, D] → [B, √K, √K, D] → GN32 → SiLU → 1×1 conv → z [B, K, zc]. */
  head(P: Params, tokens: tf.Tensor3D): tf.Tensor3D {
    const [B, K, D] = tokens.shape;
    const side = Math.round(Math.sqrt(K));
    if (side * side !== K) throw new Error(`encoder head: K = ${K} is not a perfect square`);
    const grid = tf.reshape(tokens, [B, side, side, D]) as tf.Tensor4D; // [B, K, D] → [B, √K, √K, D] (ToMe order)
    const h = this.normOut.silu(P, grid);
    return tf.reshape(this.quantConv.forward(P, h), [B, K, this.zChannels]) as tf.Tensor3D; // → [B, K, zc]
  }
}
