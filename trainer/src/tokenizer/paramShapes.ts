// Every parameter of a MergeVQ tokenizer as declared by its modules (docs/model.md §2.8 checksum). Used by the
// model builder and by the analytic parameter count, so both always agree and full-size counts can be
// checked without allocating the model.

import type { ParamSpec } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import { clsHeadSpecs } from "./clsHead.ts";
import { decoderSpecs } from "./decoder.ts";
import { encoderCnnSpecs } from "./encoderCnn.ts";
import { encoderTransformerSpecs } from "./encoderTransformer.ts";
import { vitEncoderSpecs } from "./vitEncoder.ts";

export function paramShapes(cfg: ArchConfig): ParamSpec[] {
  return [
    ...(cfg.encoder === "vit" ? vitEncoderSpecs(cfg) : encoderCnnSpecs(cfg)),
    ...encoderTransformerSpecs(cfg),
    ...clsHeadSpecs(cfg),
    ...decoderSpecs(cfg),
  ];
}
