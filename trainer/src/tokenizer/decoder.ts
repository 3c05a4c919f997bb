// MergeVQ docs/model.md §2.6 "Decoder": conv_in 3×3 (zc→D_dec, bias) on the unmerged quantized map → conditional
// positional term x ← x + DWConv3×3(x) → `numDecBlocks` ViT blocks with MixMLP (depthwise conv inside the
// MLP, no CLS) → back to the grid → CNN up-path, levels l = last…0: AdaGN(zc, C) conditioned on the
// unmerged quantized map (σ unbiased, μ; not detached) → ResBlocks (numResBlocks + numResExtra for l ≥ 1)
// → Upsampler (conv ×4 channels + DCR depth-to-space, except level 0) → GN32 → SiLU → conv 3×3 → RGB.
// No tanh: training uses the raw output (evaluation clamps to [−1, 1]).
import * as tf from "@tensorflow/tfjs";
import { groupNormSilu } from "../nn/groupNorm.ts";
import { depthwiseConv3x3 } from "../nn/kernels.ts";
import { conv3x3, convSpecs, depthwiseSpecs, layerNorm, layerScale, normSpecs } from "../nn/layers.ts";
import type { ParamSpec, Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import {
  adaGN,
  adaGNSpecs,
  adaGNStats,
  attention,
  mixMlp,
  resBlock,
  resBlockSpecs,
  upsample,
  upsamplerSpecs,
  vitBlockSpecs,
} from "./blocks.ts";

const resBlocksAt = (cfg: ArchConfig, l: number): number => cfg.numResBlocks + (l >= 1 ? cfg.numResExtra : 0);

export function decoderSpecs(cfg: ArchConfig): ParamSpec[] {
  const g = "decoder" as const;
  const { decDim: D, widths } = cfg.derived;
  const zc = cfg.zChannels;
  // Transformer part: Linear & conv weights trunc-normal .02, biases 0 (docs/model.md §2.7); conv_in is PyTorch default.
  const out: ParamSpec[] = [
    ...convSpecs("decoder.conv_in", 3, 3, zc, D, { bias: true, init: "torch", group: g }),
    ...depthwiseSpecs("decoder.pos_conv", D, "vit", g),
  ];
  for (let i = 0; i < cfg.numDecBlocks; i++) out.push(...vitBlockSpecs(`decoder.blocks.${i}`, D, g, true));
  let C = D;
  for (let l = widths.length - 1; l >= 0; l--) {
    out.push(...adaGNSpecs(`decoder.up.${l}.adanorm`, zc, C, g));
    for (let i = 0; i < resBlocksAt(cfg, l); i++) {
      out.push(...resBlockSpecs(`decoder.up.${l}.block.${i}`, i === 0 ? C : widths[l], widths[l], g));
    }
    C = widths[l];
    if (l > 0) out.push(...upsamplerSpecs(`decoder.up.${l}.upsample`, C, g));
  }
  out.push(...normSpecs("decoder.norm_out", C, g));
  out.push(...convSpecs("decoder.conv_out", 3, 3, C, 3, { bias: true, init: "torch", group: g }));
  return out;
}

/** zmap [B, S, S, zc] (unmerged quantized map) → reconstruction [B, S·f, S·f, 3] (unclamped). */
export function decoder(P: Params, cfg: ArchConfig, zmap: tf.Tensor4D): tf.Tensor4D {
  const [B, S, ,] = zmap.shape;
  const { decDim: D, decHeads, widths } = cfg.derived;
  const cond = adaGNStats(zmap); // σ, μ of the decoder input, [B, zc] each
  let h = conv3x3(P, "decoder.conv_in", zmap); // [B, S, S, D]
  h = tf.add(h, depthwiseConv3x3(h, P.get("decoder.pos_conv.weight"), P.get("decoder.pos_conv.bias"))) as tf.Tensor4D;
  let x = tf.reshape(h, [B, S * S, D]) as tf.Tensor3D; // [B, S, S, D] → [B, L, D] raster
  for (let i = 0; i < cfg.numDecBlocks; i++) {
    const n = `decoder.blocks.${i}`;
    x = tf.add(
      x,
      layerScale(P, `${n}.ls1`, attention(P, `${n}.attn`, layerNorm(P, `${n}.norm1`, x), decHeads).out),
    ) as tf.Tensor3D;
    x = tf.add(x, layerScale(P, `${n}.ls2`, mixMlp(P, `${n}.mlp`, layerNorm(P, `${n}.norm2`, x), S))) as tf.Tensor3D;
  }
  h = tf.reshape(x, [B, S, S, D]) as tf.Tensor4D; // [B, L, D] → [B, S, S, D]
  for (let l = widths.length - 1; l >= 0; l--) {
    h = adaGN(P, `decoder.up.${l}.adanorm`, h, cond);
    for (let i = 0; i < resBlocksAt(cfg, l); i++) h = resBlock(P, `decoder.up.${l}.block.${i}`, h);
    if (l > 0) h = upsample(P, `decoder.up.${l}.upsample`, h); // [B, s, s, C] → [B, 2s, 2s, C]
  }
  return conv3x3(P, "decoder.conv_out", groupNormSilu(P, "decoder.norm_out", h)); // [B, H, W, 3]
}
