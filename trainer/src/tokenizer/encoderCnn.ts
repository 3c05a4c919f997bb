// MergeVQ docs/model.md §2.2 "Encoder CNN" (G and GR variants; Open-MAGVIT2 / taming `Encoder` without mid-block
// or attention): conv_in 3×3 (no bias) → levels of `numResBlocks` ResBlocks, a stride-2 Down conv after
// every level but the last. NHWC: [B, H, W, 3] → [B, H/2^(n−1), W/2^(n−1), ch·chMult[-1]].
import type * as tf from "@tensorflow/tfjs";
import { conv3x3, convSpecs } from "../nn/layers.ts";
import type { ParamSpec, Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import { downSpecs, downsample, resBlock, resBlockSpecs } from "./blocks.ts";

export function encoderCnnSpecs(cfg: ArchConfig): ParamSpec[] {
  const g = "encoder" as const;
  const { widths } = cfg.derived;
  const out = convSpecs("encoder.conv_in", 3, 3, 3, cfg.ch, { bias: false, init: "torch", group: g });
  let cin = cfg.ch; // in_mult = (1,) + ch_mult
  widths.forEach((w, l) => {
    for (let i = 0; i < cfg.numResBlocks; i++) {
      out.push(...resBlockSpecs(`encoder.down.${l}.block.${i}`, i === 0 ? cin : w, w, g));
    }
    if (l < widths.length - 1) out.push(...downSpecs(`encoder.down.${l}.downsample`, w, g));
    cin = w;
  });
  return out;
}

/** x [B, H, W, 3] in [−1, 1] → feature map [B, H/f, W/f, D]. */
export function encoderCnn(P: Params, cfg: ArchConfig, x: tf.Tensor4D): tf.Tensor4D {
  const n = cfg.derived.widths.length;
  let h = conv3x3(P, "encoder.conv_in", x, 1, false); // [B, H, W, ch]
  for (let l = 0; l < n; l++) {
    for (let i = 0; i < cfg.numResBlocks; i++) h = resBlock(P, `encoder.down.${l}.block.${i}`, h);
    if (l < n - 1) h = downsample(P, `encoder.down.${l}.downsample`, h); // [B, H/2, W/2, C]
  }
  return h;
}
