// The module tree of a MergeVQ tokenizer and every parameter it declares (docs/model.md §2.8 checksum). The model
// builder runs these modules and the analytic parameter count reads their declarations, so both always agree
// and full-size counts can be checked without allocating the model.
import { Module } from "../nn/module.ts";
import type { ParamSpec } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";
import { ClsHead } from "./clsHead.ts";
import { Decoder } from "./decoder.ts";
import { EncoderCnn } from "./encoderCnn.ts";
import { EncoderTransformer } from "./encoderTransformer.ts";
import { VitEncoder } from "./vitEncoder.ts";

/** CNN (or ViT patch) encoder → encoder transformer with ToMe and output head → CLS head; decoder. */
export class TokenizerModules extends Module {
  readonly features: EncoderCnn | VitEncoder;
  readonly transformer: EncoderTransformer;
  readonly clsHead: ClsHead;
  readonly decoder: Decoder;

  constructor(cfg: ArchConfig) {
    super(""); // children carry their full names ("encoder.…", "cls_head.…", "decoder.…")
    this.features = this.add(cfg.encoder === "vit" ? new VitEncoder(cfg) : new EncoderCnn(cfg));
    this.transformer = this.add(new EncoderTransformer(cfg));
    this.clsHead = this.add(new ClsHead(cfg));
    this.decoder = this.add(new Decoder(cfg));
  }
}

export const paramShapes = (cfg: ArchConfig): ParamSpec[] => new TokenizerModules(cfg).specs();
