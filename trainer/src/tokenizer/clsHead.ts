// MergeVQ docs/model.md §2.7 "Representation (CLS) head": applied to the final-block CLS token (no norm).
// "layer3" (GR, R): Linear(D→4D)–GELU–Linear(4D→4D)–GELU–Linear(4D→C);
// "mlp2" (G, upstream `dist_head True`): Linear(D→4D)–GELU–LayerNorm(4D)–Linear(4D→C). PyTorch default init.
import type * as tf from "@tensorflow/tfjs";
import { gelu, layerNorm, linear, linearSpecs, normSpecs } from "../nn/layers.ts";
import type { ParamSpec, Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";

export function clsHeadSpecs(cfg: ArchConfig): ParamSpec[] {
  const D = cfg.derived.encDim;
  const g = "clsHead" as const;
  if (cfg.distHead === "layer3") {
    return [
      ...linearSpecs("cls_head.fc1", D, 4 * D, "torch", g),
      ...linearSpecs("cls_head.fc2", 4 * D, 4 * D, "torch", g),
      ...linearSpecs("cls_head.fc3", 4 * D, cfg.numClasses, "torch", g),
    ];
  }
  return [
    ...linearSpecs("cls_head.fc1", D, 4 * D, "torch", g),
    ...normSpecs("cls_head.norm", 4 * D, g),
    ...linearSpecs("cls_head.fc2", 4 * D, cfg.numClasses, "torch", g),
  ];
}

/** cls [B, D] → representation [B, numClasses]. */
export function clsHead(P: Params, cfg: ArchConfig, cls: tf.Tensor2D): tf.Tensor2D {
  if (cfg.distHead === "layer3") {
    const h = gelu(linear(P, "cls_head.fc2", gelu(linear(P, "cls_head.fc1", cls))));
    return linear(P, "cls_head.fc3", h) as tf.Tensor2D;
  }
  const h = layerNorm(P, "cls_head.norm", gelu(linear(P, "cls_head.fc1", cls)));
  return linear(P, "cls_head.fc2", h) as tf.Tensor2D;
}
