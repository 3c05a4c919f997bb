// MergeVQ docs/model.md §2.7 "Representation (CLS) head": applied to the final-block CLS token (no norm).
// "layer3" (GR, R): Linear(D→4D)–GELU–Linear(4D→4D)–GELU–Linear(4D→C);
// "mlp2" (G, upstream `dist_head True`): Linear(D→4D)–GELU–LayerNorm(4D)–Linear(4D→C). PyTorch default init.
import type * as tf from "@tensorflow/tfjs";
import { gelu, LayerNorm, Linear } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";

export class ClsHead extends Module {
  readonly fc1: Linear;
  readonly fc2: Linear;
  /** "layer3" only. */
  readonly fc3: Linear | null;
  /** "mlp2" only. */
  readonly norm: LayerNorm | null;

  constructor(cfg: ArchConfig) {
    super("cls_head");
    const D = cfg.derived.encDim;
    const opts = { init: "torch", group: "clsHead" } as const;
    this.fc1 = this.add(new Linear(this.path("fc1"), D, 4 * D, opts));
    if (cfg.distHead === "layer3") {
      this.norm = null;
      this.fc2 = this.add(new Linear(this.path("fc2"), 4 * D, 4 * D, opts));
      this.fc3 = this.add(new Linear(this.path("fc3"), 4 * D, cfg.numClasses, opts));
    } else {
      this.norm = this.add(new LayerNorm(this.path("norm"), 4 * D, "clsHead"));
      this.fc2 = this.add(new Linear(this.path("fc2"), 4 * D, cfg.numClasses, opts));
      this.fc3 = null;
    }
  }

  /** cls [B, D] → representation [B, numClasses]. */
  forward(P: Params, cls: tf.Tensor2D): tf.Tensor2D {
    const h = gelu(this.fc1.forward(P, cls));
    if (this.fc3) return this.fc3.forward(P, gelu(this.fc2.forward(P, h))) as tf.Tensor2D; // layer3
    return this.fc2.forward(P, this.norm ? this.norm.forward(P, h) : h) as tf.Tensor2D; // mlp2 (always has the norm)
  }
}
