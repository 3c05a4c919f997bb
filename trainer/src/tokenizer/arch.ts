// The tokenizer's configuration schema and the architecture facts every module derives from it (token grid,
// widths, heads). No model code here, so the modules (encoder, decoder, heads) and the config resolver
// (config.ts: presets, merge schedules, candidates, parameter counts) can both depend on it.
import { z } from "zod";

export const TokenizerTrainConfig = z.object({
  lr: z.number().positive().default(1e-4),
  betas: z.tuple([z.number(), z.number()]).default([0.5, 0.9]),
  emaDecay: z.number().min(0).max(1).default(0.999),
  epochs: z.number().int().positive().default(200),
  /** Multiply both learning rates by 0.1 at the end of these (0-based e with e+1 in the list) epochs. */
  lrDropEpochs: z.array(z.number().int().positive()).default([170, 190]),
  /** Per-device micro-batch. */
  batchSize: z.number().int().positive().default(16),
  gradAccum: z.number().int().positive().default(2),
  /** Global L2 gradient-norm clip; null = none. */
  gradClip: z.number().positive().nullable().default(null),
  lossWeights: z
    .object({
      reconstruction: z.number().default(1),
      perceptual: z.number().default(1),
      gan: z.number().default(0.1),
      entropy: z.number().default(0.1),
      commitment: z.number().default(0.25),
      cls: z.number().default(1),
      lecam: z.number().default(0.01),
    })
    .prefault({}),
  /** LFQ entropy: weight of the per-sample entropy (minimised) and of the codebook entropy (maximised). */
  sampleMinimizationWeight: z.number().default(1),
  batchMaximizationWeight: z.number().default(1),
  /** KL distillation temperature of the CLS alignment (docs/model.md §3). */
  clsTemperature: z.number().positive().default(4),
});
export type TokenizerTrainConfig = z.infer<typeof TokenizerTrainConfig>;

export const ConfigObject = z.object({
  name: z.string().default("custom"),
  /** G = generation (CNN /8), GR = generation+representation (CNN /16), R = ViT-B encoder. */
  variant: z.enum(["G", "GR", "R"]).default("GR"),
  encoder: z.enum(["cnn", "vit"]).default("cnn"),
  /** Training image side (reconstruction view). */
  resolution: z.number().int().positive().default(256),
  /** Base CNN width (encoder and decoder; decoder only for R). */
  ch: z.number().int().positive().default(64),
  chMult: z.array(z.number().int().positive()).min(1).default([1, 1, 2, 4, 8]),
  numResBlocks: z.number().int().positive().default(4),
  /** Extra decoder ResBlocks on levels ≥ 1. */
  numResExtra: z.number().int().min(0).default(1),
  /** R only: ViT width and patch size of the patch-embedding conv. */
  vitDim: z.number().int().positive().default(768),
  patchSize: z.number().int().positive().default(16),
  /** Encoder attention heads; decoder heads default to these. */
  heads: z.number().int().positive().default(8),
  decoderHeads: z.number().int().positive().optional(),
  numAttBlocks: z.number().int().min(2).default(12),
  numDecBlocks: z.number().int().min(1).default(12),
  /** Nominal L − K. */
  mergeNum: z.number().int().min(0).default(112),
  /** `"gaussian-<n>"` / `"exponential-<n>"` keep-count candidates, or null for a fixed K. */
  candDistribution: z
    .string()
    .regex(/^(gaussian|exponential)(-\d+)?$/)
    .nullable()
    .default("gaussian-6"),
  /** LFQ bits (= z_channels = embed_dim); codebook 2^zChannels. */
  zChannels: z.number().int().min(1).max(24).default(18),
  entropyTemperature: z.number().positive().default(0.01),
  /** CLS head: "layer3" (GR, R) or "mlp2" (G: Linear–GELU–LayerNorm–Linear). */
  distHead: z.enum(["layer3", "mlp2"]).default("layer3"),
  /** CLS head output width (teacher feature size: 768 for DINOv2-B). */
  numClasses: z.number().int().positive().default(768),
  /** Side of the student (CLS) view. */
  clsViewSize: z.number().int().positive().default(224),
  seed: z.number().int().min(0).default(0),
  train: TokenizerTrainConfig.prefault({}),
});

/** Architecture facts every module needs; pure functions of the config. */
export interface TokenizerArch {
  /** Total encoder downsampling factor. */
  downsample: number;
  /** Token grid side at `resolution` and number of tokens L. */
  grid: number;
  L: number;
  encDim: number;
  encHeads: number;
  decDim: number;
  decHeads: number;
  /** CNN widths per level, ch·chMult[l]. */
  widths: number[];
  /** Token grid side / tokens of the CLS view. */
  clsGrid: number;
  clsTokens: number;
}

export function tokenizerArch(c: z.infer<typeof ConfigObject>): TokenizerArch {
  const widths = c.chMult.map((m) => c.ch * m);
  const downsample = c.encoder === "vit" ? c.patchSize : 2 ** (c.chMult.length - 1);
  const grid = Math.floor(c.resolution / downsample);
  const clsGrid = Math.floor(c.clsViewSize / downsample);
  return {
    downsample,
    grid,
    L: grid * grid,
    encDim: c.encoder === "vit" ? c.vitDim : widths[widths.length - 1],
    encHeads: c.heads,
    decDim: widths[widths.length - 1],
    decHeads: c.decoderHeads ?? c.heads,
    widths,
    clsGrid,
    clsTokens: clsGrid * clsGrid,
  };
}

/** What the model modules read: the parsed config plus its architecture facts. */
export type ArchConfig = z.infer<typeof ConfigObject> & { derived: TokenizerArch };
