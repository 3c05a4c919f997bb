// MergeVQ docs/model.md §2.6 "Decoder": conv_in 3×3 (zc→D_dec, bias) on the unmerged quantized map → conditional
// positional term x ← x + DWConv3×3(x) → `numDecBlocks` ViT blocks with MixMLP (depthwise conv inside the
// MLP, no CLS) → back to the grid → CNN up-path, levels l = last…0: AdaGN(zc, C) conditioned on the
// unmerged quantized map (σ unbiased, μ; not detached) → ResBlocks (numResBlocks + numResExtra for l ≥ 1)
// → Upsampler (conv ×4 channels + DCR depth-to-space, except level 0) → GN32 → SiLU → conv 3×3 → RGB.
// No tanh: training uses the raw output (evaluation clamps to [−1, 1]).
import * as tf from "@tensorflow/tfjs";
import { Conv2d, DepthwiseConv3x3, GroupNorm } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import { AdaGN, adaGNStats, ResBlock, Upsampler, VitBlock } from "./blocks.ts";

/** One up-path level: AdaGN, ResBlocks (numResBlocks + numResExtra for l ≥ 1), Upsampler unless l = 0. */
interface UpLevel {
  adanorm: AdaGN;
  blocks: ResBlock[];
  upsample: Upsampler | null;
}

export class Decoder extends Module {
  readonly convIn: Conv2d;
  readonly posConv: DepthwiseConv3x3;
  readonly blocks: VitBlock[] = [];
  /** Levels in execution order, l = last … 0. */
  readonly up: UpLevel[] = [];
  readonly normOut: GroupNorm;
  readonly convOut: Conv2d;

  constructor(cfg: ArchConfig) {
    super("decoder");
    const g = "decoder" as const;
    const { decDim: D, decHeads, widths } = cfg.derived;
    const zc = cfg.zChannels;
    const torchConv = { bias: true, init: "torch", group: g } as const;
    // Transformer part: Linear & conv weights trunc-normal .02, biases 0 (docs/model.md §2.7); conv_in is PyTorch default.
    this.convIn = this.add(new Conv2d(this.path("conv_in"), 3, 3, zc, D, torchConv));
    this.posConv = this.add(new DepthwiseConv3x3(this.path("pos_conv"), D, "vit", g));
    for (let i = 0; i < cfg.numDecBlocks; i++) {
      this.blocks.push(this.add(new VitBlock(this.path(`blocks.${i}`), D, decHeads, g, true)));
    }
    let C = D;
    for (let l = widths.length - 1; l >= 0; l--) {
      const level = this.path(`up.${l}`);
      const adanorm = this.add(new AdaGN(`${level}.adanorm`, zc, C, g));
      const blocks: ResBlock[] = [];
      const n = cfg.numResBlocks + (l >= 1 ? cfg.numResExtra : 0);
      for (let i = 0; i < n; i++)
        blocks.push(this.add(new ResBlock(`${level}.block.${i}`, i === 0 ? C : widths[l], widths[l], g)));
      C = widths[l];
      const upsample = l > 0 ? this.add(new Upsampler(`${level}.upsample`, C, g)) : null;
      this.up.push({ adanorm, blocks, upsample });
    }
    this.normOut = this.add(new GroupNorm(this.path("norm_out"), C, g));
    this.convOut = this.add(new Conv2d(this.path("conv_out"), 3, 3, C, 3, torchConv));
  }

  /** zmap [B, S, S, zc] (unmerged quantized map) → reconstruction [B, S·f, S·f, 3] (unclamped). */
  forward(P: Params, zmap: tf.Tensor4D): tf.Tensor4D {
    const [B, S, ,] = zmap.shape;
    const cond = adaGNStats(zmap); // σ, μ of the decoder input, [B, zc] each
    let h = this.convIn.forward(P, zmap); // [B, S, S, D]
    const D = h.shape[3];
    h = tf.add(h, this.posConv.forward(P, h)) as tf.Tensor4D;
    let x = tf.reshape(h, [B, S * S, D]) as tf.Tensor3D; // [B, S, S, D] → [B, L, D] raster
    for (const block of this.blocks) x = block.mlpResidual(P, block.attentionResidual(P, x).x, S);
    h = tf.reshape(x, [B, S, S, D]) as tf.Tensor4D; // [B, L, D] → [B, S, S, D]
    for (const { adanorm, blocks, upsample } of this.up) {
      h = adanorm.forward(P, h, cond);
      for (const block of blocks) h = block.forward(P, h);
      if (upsample) h = upsample.forward(P, h); // [B, s, s, C] → [B, 2s, 2s, C]
    }
    return this.convOut.forward(P, this.normOut.silu(P, h)); // [B, H, W, 3]
  }
}
