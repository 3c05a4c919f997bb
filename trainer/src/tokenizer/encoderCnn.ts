// MergeVQ docs/model.md §2.2 "Encoder CNN" (G and GR variants; Open-MAGVIT2 / taming `Encoder` without mid-block
// or attention): conv_in 3×3 (no bias) → levels of `numResBlocks` ResBlocks, a stride-2 Down conv after
// every level but the last. NHWC: [B, H, W, 3] → [B, H/2^(n−1), W/2^(n−1), ch·chMult[-1]].
import type * as tf from "@tensorflow/tfjs";
import { Conv2d } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import { Downsample, ResBlock } from "./blocks.ts";

/** One resolution level: ResBlocks, then (all but the last level) the stride-2 Down conv. */
interface Level {
  blocks: ResBlock[];
  downsample: Downsample | null;
}

export class EncoderCnn extends Module {
  readonly convIn: Conv2d;
  readonly levels: Level[] = [];

  constructor(cfg: ArchConfig) {
    super("encoder");
    const g = "encoder" as const;
    const { widths } = cfg.derived;
    this.convIn = this.add(new Conv2d(this.path("conv_in"), 3, 3, 3, cfg.ch, { bias: false, init: "torch", group: g }));
    let cin = cfg.ch; // in_mult = (1,) + ch_mult
    widths.forEach((w, l) => {
      const level = this.path(`down.${l}`);
      const blocks: ResBlock[] = [];
      for (let i = 0; i < cfg.numResBlocks; i++) {
        blocks.push(this.add(new ResBlock(`${level}.block.${i}`, i === 0 ? cin : w, w, g)));
      }
      const last = l === widths.length - 1;
      this.levels.push({ blocks, downsample: last ? null : this.add(new Downsample(`${level}.downsample`, w, g)) });
      cin = w;
    });
  }

  /** x [B, H, W, 3] in [−1, 1] → feature map [B, H/f, W/f, D]. */
  forward(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    let h = this.convIn.forward(P, x); // [B, H, W, ch]
    for (const { blocks, downsample } of this.levels) {
      for (const block of blocks) h = block.forward(P, h);
      if (downsample) h = downsample.forward(P, h); // [B, H/2, W/2, C]
    }
    return h;
  }
}
