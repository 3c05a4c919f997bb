// TokenizerTraining: Stage I of MergeVQ — train the token-merging LFQ tokenizer (docs/model.md §1–4), evaluate rFID.
import { z } from "zod";
import {
  ageColumn,
  Checkpoint,
  checkpointS3Rule,
  commonPrinterColumns,
  Dataset,
  datasetS3Rule,
  Gang,
  ObjectMeta,
  Rendezvous,
  Resources,
  RunPolicy,
  RunStatus,
  S3Config,
  storageUri,
  Trainer,
} from "./common.ts";
import { API_VERSION } from "./group.ts";
import { immutable, isPerfectSquare, PERFECT_SQUARES, withRules } from "./rules.ts";

const squares = `[${PERFECT_SQUARES.join(",")}]`;

export const TokenizerModel = withRules(
  z
    .object({
      preset: z
        .enum(["T0", "T1", "T2"])
        .optional()
        .describe(
          "Tiny CPU config (docs/model.md §10): T0 GR-tiny 32², T1 GR-small 64², T2 G-tiny 32². Excludes variant/size.",
        ),
      variant: z
        .enum(["G", "GR", "R"])
        .optional()
        .describe(
          "G: generation (CNN /8, K=256). GR: generation+representation (CNN /16, K=144). R: ViT-B encoder (K=64).",
        ),
      size: z
        .enum(["d32", "d64", "d96"])
        .optional()
        .describe("Base CNN width: d32, d64, d96 (GR all three; G d32/d64; R d64). Required with variant."),
      imageSize: z
        .number()
        .int()
        .min(16)
        .max(1024)
        .optional()
        .describe(
          "Training image size in pixels (multiple of 8). Default from the preset/variant (256 for full configs).",
        ),
      keepTokens: z
        .number()
        .int()
        .min(1)
        .max(4096)
        .optional()
        .describe(
          "Nominal number of kept (merged) tokens K; a perfect square. Default from the config (e.g. 144 for GR).",
        ),
      evalKeepTokens: z
        .array(z.number().int().min(1).max(4096))
        .max(16)
        .optional()
        .describe("K values to evaluate (one rFID per K, reported as rFID@K=<k>). Default: the nominal K."),
      codebookBits: z
        .number()
        .int()
        .min(4)
        .max(18)
        .optional()
        .describe("LFQ bits per token (codebook 2^bits). Default 18 for full configs, 10 for tiny ones."),
      teacherUri: z
        .string()
        .max(1024)
        .optional()
        .describe("ONNX teacher for global alignment (DINOv2-B in production): path, file:// or s3:// URI."),
      perceptualUri: z
        .string()
        .max(1024)
        .optional()
        .describe("Weights of the frozen perceptual (LPIPS/VGG) network: path, file:// or s3:// URI."),
      overrides: z
        .record(z.string(), z.unknown())
        .optional()
        .meta({ "x-kubernetes-preserve-unknown-fields": true })
        .describe(
          "Explicit config fields passed to the trainer verbatim (e.g. ch_mult, num_res_blocks); validated by the trainer.",
        ),
    })
    .meta({ "x-kubernetes-validations": [immutable("model")] })
    .describe("Tokenizer architecture."),
  [
    {
      cel: "has(self.preset) != has(self.variant)",
      message: "model needs exactly one of preset or variant",
      check: (m) => (m.preset !== undefined) !== (m.variant !== undefined),
    },
    {
      cel: "has(self.variant) == has(self.size)",
      message: "model.size is required with model.variant (and only with it)",
      path: ["size"],
      check: (m) => (m.variant !== undefined) === (m.size !== undefined),
    },
    {
      cel: "!has(self.variant) || self.variant != 'R' || self.size == 'd64'",
      message: "variant R exists only as d64 (R_vitb_d64)",
      path: ["size"],
      check: (m) => m.variant !== "R" || m.size === "d64",
    },
    {
      cel: "!has(self.variant) || self.variant != 'G' || self.size != 'd96'",
      message: "variant G exists as d32 and d64 only",
      path: ["size"],
      check: (m) => m.variant !== "G" || m.size !== "d96",
    },
    {
      cel: `!has(self.keepTokens) || self.keepTokens in ${squares}`,
      message: "model.keepTokens must be a perfect square (K tokens form a √K×√K grid)",
      path: ["keepTokens"],
      check: (m) => m.keepTokens === undefined || isPerfectSquare(m.keepTokens),
    },
    {
      cel: `!has(self.evalKeepTokens) || self.evalKeepTokens.all(k, k in ${squares})`,
      message: "every model.evalKeepTokens entry must be a perfect square",
      path: ["evalKeepTokens"],
      check: (m) => (m.evalKeepTokens ?? []).every(isPerfectSquare),
    },
    {
      cel: "!has(self.imageSize) || self.imageSize % 8 == 0",
      message: "model.imageSize must be a multiple of 8",
      path: ["imageSize"],
      check: (m) => m.imageSize === undefined || m.imageSize % 8 === 0,
    },
  ],
);

export const TokenizerTrainingParams = withRules(
  z
    .object({
      steps: z.number().int().min(1).max(100_000_000).describe("Generator optimiser steps to train."),
      batchSize: z.number().int().min(1).max(4096).default(8).describe("Images per process per micro-batch."),
      gradAccumulation: z.number().int().min(1).max(256).default(1).describe("Micro-batches per optimiser step."),
      learningRate: z.number().gt(0).max(1).default(1e-4).describe("Adam learning rate (β = 0.5, 0.9) for G and D."),
      lrDropSteps: z
        .array(z.number().int().min(1))
        .max(16)
        .optional()
        .describe("Steps at which the learning rate is divided by 10 (spec lr_drop_epoch, in steps)."),
      seed: z
        .number()
        .int()
        .min(0)
        .max(2147483647)
        .default(0)
        .describe("Global seed; rank r uses seed·WORLD_SIZE + r."),
      emaDecay: z
        .number()
        .min(0)
        .lt(1)
        .default(0.999)
        .describe("EMA decay of the generator weights (evaluation uses EMA)."),
      logEverySteps: z.number().int().min(1).default(10).describe("Progress line / progress.json every N steps."),
    })
    .describe("Optimisation."),
  [
    {
      cel: "!has(self.lrDropSteps) || self.lrDropSteps.all(s, s <= self.steps)",
      message: "training.lrDropSteps must not exceed training.steps",
      path: ["lrDropSteps"],
      check: (t) => (t.lrDropSteps ?? []).every((s) => s <= t.steps),
    },
  ],
);

export const Evaluation = z
  .object({
    enabled: z.boolean().default(true).describe("Compute rFID on held-out images at the end (EMA weights)."),
    numImages: z.number().int().min(2).max(100_000).default(256).describe("Held-out images used for rFID."),
    inceptionUri: z
      .string()
      .max(1024)
      .optional()
      .describe(
        "FID Inception ONNX (see hack/inception/). Unset: a generated random-weight Inception is used and metrics are labelled as NOT real FID.",
      ),
    referenceStatsUri: storageUri("evaluation.referenceStatsUri")
      .optional()
      .describe("Precomputed reference statistics (npz with mu/sigma); default: computed from the held-out originals."),
  })
  .describe("Evaluation (rFID).");

export const TokenizerTrainingSpec = withRules(
  z
    .object({
      model: TokenizerModel,
      dataset: Dataset,
      training: TokenizerTrainingParams,
      evaluation: Evaluation.default({ enabled: true, numImages: 256 }),
      checkpoint: Checkpoint,
      resources: Resources.default({ nodes: 1, accelerator: { vendor: "cpu" } }),
      trainer: Trainer.default({ terminationGracePeriodSeconds: 60 }),
      s3: S3Config.optional(),
      rendezvous: Rendezvous.default({ port: 29500, timeoutSeconds: 600, compat: "none" }),
      gang: Gang.default({ scheduler: "none", timeoutSeconds: 900 }),
      runPolicy: RunPolicy.default({
        backoffLimit: 3,
        suspend: false,
        cleanPodPolicy: "Running",
        stallTimeoutSeconds: 1800,
      }),
    })
    .describe("Desired state of a MergeVQ tokenizer training run."),
  [checkpointS3Rule, datasetS3Rule],
);

/** spec.names of the TokenizerTraining CRD; the schema's `kind` literal and every plural lookup derive from them. */
const tokenizerTrainingNames = {
  kind: "TokenizerTraining",
  plural: "tokenizertrainings",
  singular: "tokenizertraining",
  shortNames: ["tt", "tokt"],
} as const;

export const TokenizerTraining = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(tokenizerTrainingNames.kind),
  metadata: ObjectMeta,
  spec: TokenizerTrainingSpec,
  status: RunStatus.optional(),
});
export type TokenizerTraining = z.infer<typeof TokenizerTraining>;
export type TokenizerTrainingSpec = z.infer<typeof TokenizerTrainingSpec>;

export const tokenizerTrainingCrd = {
  ...tokenizerTrainingNames,
  schema: TokenizerTraining,
  printerColumns: [
    ...commonPrinterColumns,
    { name: "rFID", type: "number", jsonPath: ".status.metrics.rFID", description: "Reconstruction FID" },
    ageColumn,
  ],
} as const;
