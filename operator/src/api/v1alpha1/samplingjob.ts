// SamplingJob: generate images with a trained ARTraining model (+ its tokenizer), fanned out into shards with
// per-shard retry and idempotent outputs, then a reduce step computes gFID / IS (docs/model.md §5.4, §6.2).
import { z } from "zod";
import {
  ageColumn,
  Checkpoint,
  checkpointS3Rule,
  ObjectMeta,
  Resources,
  RunPolicy,
  RunRef,
  RunStatus,
  S3Config,
  storageUri,
  Trainer,
} from "./common.ts";
import { API_VERSION } from "./group.ts";
import { immutable, withCel, withRules } from "./rules.ts";

export const SamplingParams = withRules(
  z
    .object({
      numSamples: z
        .number()
        .int()
        .min(1)
        .max(10_000_000)
        .describe("Images to generate in total (50 000 for paper gFID)."),
      shards: z
        .number()
        .int()
        .min(1)
        .max(4096)
        .default(1)
        .describe("Independent shard pods; shard i generates its slice."),
      batchSize: z.number().int().min(1).max(4096).default(32).describe("Images per forward pass."),
      cfgScale: z
        .number()
        .min(1)
        .max(100)
        .default(1.5)
        .describe("Classifier-free guidance scale (both sub-token heads)."),
      temperature: z.number().gt(0).max(10).default(1).describe("Softmax temperature."),
      topK: z.number().int().min(0).default(0).describe("Keep the k most likely tokens; 0 disables."),
      topP: z.number().gt(0).max(1).default(1).describe("Nucleus sampling mass; 1 disables."),
      seed: z.number().int().min(0).max(2147483647).default(0).describe("Shard i uses seed·shards + i."),
      classLabels: z
        .array(z.number().int().min(0))
        .max(100_000)
        .optional()
        .describe("Labels to sample (cycled); default: numSamples spread evenly over all classes."),
    })
    .describe("Sampling parameters."),
  [
    {
      cel: "self.numSamples >= self.shards",
      message: "sampling.numSamples must be at least sampling.shards",
      path: ["numSamples"],
      check: (s) => s.numSamples >= s.shards,
    },
  ],
);

export const SamplingEvaluation = z
  .object({
    enabled: z.boolean().default(true).describe("Run the reduce step (gFID, IS) after all shards succeeded."),
    referenceStatsUri: storageUri("evaluation.referenceStatsUri")
      .optional()
      .describe("Reference Inception statistics (npz: mu, sigma — ADM/pytorch-fid format). Required for gFID."),
    inceptionUri: z
      .string()
      .max(1024)
      .optional()
      .describe("FID Inception ONNX; unset → generated random-weight network, metrics labelled as NOT real FID/IS."),
    computeIS: z.boolean().default(true).describe("Also compute Inception Score (10 splits)."),
  })
  .describe("gFID / IS reduce step.");

export const SamplingJobSpec = withRules(
  z
    .object({
      modelRef: RunRef.meta({ "x-kubernetes-validations": [immutable("modelRef")] }).describe(
        "ARTraining whose status.artifacts.checkpointUri is sampled; the job waits until it Succeeded.",
      ),
      tokenizerRef: RunRef.optional().describe(
        "TokenizerTraining used to decode codes; default: the tokenizerRef of the referenced ARTraining.",
      ),
      sampling: withCel(SamplingParams, immutable("sampling")),
      evaluation: SamplingEvaluation.default({ enabled: true, computeIS: true }),
      checkpoint: Checkpoint.describe(
        "Output prefix: shard i writes <uri>/shards/<i>.npz (skipped when present), status to <uri>/status/.",
      ),
      resources: Resources.default({ nodes: 1, accelerator: { vendor: "cpu" } }).describe(
        "Resources of each shard pod (resources.nodes must stay 1: shards are independent pods).",
      ),
      trainer: Trainer.default({ terminationGracePeriodSeconds: 60 }),
      s3: S3Config.optional(),
      runPolicy: RunPolicy.default({
        backoffLimit: 3,
        suspend: false,
        cleanPodPolicy: "Running",
        stallTimeoutSeconds: 1800,
      }),
    })
    .describe("Desired state of a sampling + gFID run."),
  [
    checkpointS3Rule,
    {
      cel: "self.resources.nodes == 1",
      message: "resources.nodes must be 1 for a SamplingJob (use sampling.shards to fan out)",
      path: ["resources", "nodes"],
      check: (s) => s.resources.nodes === 1,
    },
  ],
);

/** spec.names of the SamplingJob CRD; the schema's `kind` literal and every plural lookup derive from them. */
const samplingJobNames = {
  kind: "SamplingJob",
  plural: "samplingjobs",
  singular: "samplingjob",
  shortNames: ["sj"],
} as const;

export const SamplingJob = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal(samplingJobNames.kind),
  metadata: ObjectMeta,
  spec: SamplingJobSpec,
  status: RunStatus.extend({
    shards: z
      .array(
        z.object({
          index: z.number().int().min(0).describe("Shard index."),
          phase: z.enum(["Pending", "Running", "Succeeded", "Failed"]).describe("Shard phase."),
          attempts: z.number().int().min(0).describe("Pods started for this shard."),
          outputUri: z.string().max(1024).optional().describe("Idempotent output of the shard."),
          message: z.string().max(4096).optional().describe("Last failure message."),
        }),
      )
      .max(4096)
      .optional()
      .meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["index"] })
      .describe("Per-shard state."),
  })
    .describe("Observed state of the sampling job, written by the operator.")
    .optional(),
});
export type SamplingJob = z.infer<typeof SamplingJob>;
export type SamplingJobSpec = z.infer<typeof SamplingJobSpec>;

export const samplingJobCrd = {
  ...samplingJobNames,
  schema: SamplingJob,
  printerColumns: [
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Run phase" },
    { name: "Progress", type: "string", jsonPath: ".status.progress.percent", description: "Shards done" },
    { name: "gFID", type: "number", jsonPath: ".status.metrics.gFID", description: "Generation FID" },
    { name: "IS", type: "number", jsonPath: ".status.metrics.IS", description: "Inception Score" },
    ageColumn,
  ],
} as const;
