// ARTraining: Stage II — train the LlamaGen-style AR generator (factorised heads, 2D RoPE) on the codes of a
// frozen tokenizer produced by a TokenizerTraining, optionally with MergeAR (docs/model.md §5).
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
  RunRef,
  RunStatus,
  S3Config,
  Trainer,
} from "./common.ts";
import { API_VERSION } from "./group.ts";
import { immutable, withRules } from "./rules.ts";

export const ARModel = withRules(
  z
    .object({
      size: z
        .enum(["tiny", "B", "L", "XL"])
        .default("B")
        .describe(
          "tiny: dim 64 CPU test model (docs/model.md §10). B 343.6M, L 804.4M, XL 1.49B (docs/model.md §5.2).",
        ),
      numClasses: z
        .number()
        .int()
        .min(1)
        .max(100_000)
        .default(1000)
        .describe("Class-conditional labels (+1 null class for CFG)."),
      classDropout: z
        .number()
        .min(0)
        .max(1)
        .default(0.1)
        .describe("Probability a label is replaced by the null class."),
      mergeAR: z
        .object({
          enabled: z
            .boolean()
            .default(false)
            .describe("Train with duplicate-token masking and Merge-Instruction tokens."),
          window: z.number().int().min(0).max(64).default(2).describe("Recent-token window w that is always visible."),
        })
        .default({ enabled: false, window: 2 })
        .describe("MergeAR (paper; implemented as decided in docs/model.md §5.5); off = released-code behaviour."),
    })
    .meta({ "x-kubernetes-validations": [immutable("model")] })
    .describe("AR generator architecture."),
  [
    {
      cel: "!self.mergeAR.enabled || self.mergeAR.window >= 1",
      message: "model.mergeAR.window must be at least 1 when MergeAR is enabled",
      path: ["mergeAR", "window"],
      check: (m) => !m.mergeAR.enabled || m.mergeAR.window >= 1,
    },
  ],
);

export const ARTrainingParams = withRules(
  z
    .object({
      steps: z.number().int().min(1).max(100_000_000).describe("Optimiser steps."),
      batchSize: z.number().int().min(1).max(4096).default(8).describe("Sequences per process per micro-batch."),
      gradAccumulation: z.number().int().min(1).max(256).default(1).describe("Micro-batches per optimiser step."),
      learningRate: z.number().gt(0).max(1).default(3e-4).describe("Peak AdamW learning rate (β = 0.9, 0.95)."),
      warmupSteps: z
        .number()
        .int()
        .min(0)
        .default(0)
        .describe("Linear warm-up steps (true optimiser steps, docs/model.md §5.3 [decision])."),
      weightDecay: z.number().min(0).max(1).default(0.05).describe("Decoupled weight decay."),
      gradClip: z.number().gt(0).default(1).describe("Global gradient-norm clip."),
      seed: z.number().int().min(0).max(2147483647).default(0).describe("Global seed."),
      logEverySteps: z.number().int().min(1).default(10).describe("Progress every N steps."),
    })
    .describe("Optimisation."),
  [
    {
      cel: "self.warmupSteps <= self.steps",
      message: "training.warmupSteps must not exceed training.steps",
      path: ["warmupSteps"],
      check: (t) => t.warmupSteps <= t.steps,
    },
  ],
);

export const ARTrainingSpec = withRules(
  z
    .object({
      tokenizerRef: RunRef.meta({ "x-kubernetes-validations": [immutable("tokenizerRef")] }).describe(
        "TokenizerTraining whose status.artifacts.checkpointUri provides the frozen tokenizer; the run waits until it Succeeded.",
      ),
      model: ARModel,
      dataset: Dataset,
      training: ARTrainingParams,
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
    .describe("Desired state of a MergeVQ Stage II (AR) training run."),
  [checkpointS3Rule, datasetS3Rule],
);

/** spec.names of the ARTraining CRD; the schema's `kind` literal and every plural lookup derive from them. */
const arTrainingNames = {
  kind: "ARTraining",
  plural: "artrainings",
  singular: "artraining",
  shortNames: ["art"],
} as const;

export const ARTraining = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(arTrainingNames.kind),
  metadata: ObjectMeta,
  spec: ARTrainingSpec,
  status: RunStatus.optional(),
});
export type ARTraining = z.infer<typeof ARTraining>;
export type ARTrainingSpec = z.infer<typeof ARTrainingSpec>;

export const arTrainingCrd = {
  ...arTrainingNames,
  schema: ARTraining,
  printerColumns: [
    ...commonPrinterColumns,
    { name: "Loss", type: "number", jsonPath: ".status.metrics.loss", description: "Training loss" },
    ageColumn,
  ],
} as const;
