// Invalid specs shared by the unit tests (zod) and the integration test (real apiserver: OpenAPI + CEL).
// Each case mutates the valid demo TokenizerTraining/ARTraining/SamplingJob and names the field the error
// must mention.
import type { RunKind } from "./v1alpha1/index.ts";

/** A CR as plain JSON: fixtures poke arbitrary nested fields, so the type is deliberately loose. */
// biome-ignore lint/suspicious/noExplicitAny: fixtures mutate arbitrary nested fields of a plain object
export type Loose = Record<string, any>;

export interface InvalidCase {
  name: string;
  kind: RunKind;
  /** Mutates a deep copy of the valid example. */
  mutate: (o: Loose) => void;
  /** Substring every rejection (zod path or apiserver message) must contain. */
  field: string;
}

export const INVALID_CASES: InvalidCase[] = [
  { name: "no model", kind: "TokenizerTraining", mutate: (o) => delete o.spec.model, field: "model" },
  {
    name: "preset and variant",
    kind: "TokenizerTraining",
    mutate: (o) => Object.assign(o.spec.model, { variant: "GR", size: "d32" }),
    field: "model",
  },
  {
    name: "unknown preset",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.model.preset = "T9"),
    field: "model.preset",
  },
  {
    name: "variant without size",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.model = { variant: "GR" }),
    field: "size",
  },
  {
    name: "R at d32",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.model = { variant: "R", size: "d32" }),
    field: "size",
  },
  {
    name: "G at d96",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.model = { variant: "G", size: "d96" }),
    field: "size",
  },
  {
    name: "non-square K",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.model.keepTokens = 50),
    field: "keepTokens",
  },
  {
    name: "non-square eval K",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.model.evalKeepTokens = [36, 40]),
    field: "evalKeepTokens",
  },
  {
    name: "image size not /8",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.model.imageSize = 60),
    field: "imageSize",
  },
  {
    name: "bad dataset uri",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.dataset.uri = "http://x/y"),
    field: "dataset.uri",
  },
  {
    name: "bad dataset format",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.dataset.format = "zip"),
    field: "dataset.format",
  },
  {
    name: "zero steps",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.training.steps = 0),
    field: "training.steps",
  },
  {
    name: "negative batch",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.training.batchSize = -1),
    field: "training.batchSize",
  },
  {
    name: "lr zero",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.training.learningRate = 0),
    field: "training.learningRate",
  },
  {
    name: "lr drop after end",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.training.lrDropSteps = [5000]),
    field: "lrDropSteps",
  },
  {
    name: "ema decay 1",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.training.emaDecay = 1),
    field: "training.emaDecay",
  },
  {
    name: "checkpoint http",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.checkpoint.uri = "https://bucket/x"),
    field: "checkpoint.uri",
  },
  {
    name: "keepLast 0",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.checkpoint.keepLast = 0),
    field: "checkpoint.keepLast",
  },
  { name: "s3 uri without s3 config", kind: "TokenizerTraining", mutate: (o) => delete o.spec.s3, field: "s3" },
  {
    name: "zero nodes",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.resources.nodes = 0),
    field: "resources.nodes",
  },
  {
    name: "nvidia with 0 per node",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.resources.accelerator = { vendor: "nvidia", perNode: 0 }),
    field: "perNode",
  },
  {
    name: "cpu with resource name",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.resources.accelerator = { vendor: "cpu", resourceName: "nvidia.com/gpu" }),
    field: "resourceName",
  },
  {
    name: "unknown vendor",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.resources.accelerator = { vendor: "tpu" }),
    field: "accelerator.vendor",
  },
  {
    name: "accelerator with neither profile nor vendor",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.resources.accelerator = { perNode: 1 }),
    field: "accelerator",
  },
  {
    name: "bad memory quantity",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.resources.memory = "lots"),
    field: "memory",
  },
  {
    name: "bad env name",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.trainer = { env: [{ name: "1BAD", value: "x" }] }),
    field: "trainer.env",
  },
  {
    name: "rendezvous port too low",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.rendezvous = { port: 80 }),
    field: "rendezvous.port",
  },
  {
    name: "bad cleanPodPolicy",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.runPolicy.cleanPodPolicy = "Some"),
    field: "runPolicy.cleanPodPolicy",
  },
  {
    name: "negative backoffLimit",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.runPolicy.backoffLimit = -1),
    field: "runPolicy.backoffLimit",
  },
  {
    name: "stall timeout too small",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.runPolicy.stallTimeoutSeconds = 1),
    field: "runPolicy.stallTimeoutSeconds",
  },
  {
    name: "bad secret name",
    kind: "TokenizerTraining",
    mutate: (o) => (o.spec.s3.secretRef.name = "Not_A_Name"),
    field: "s3.secretRef.name",
  },
  {
    name: "AR without tokenizerRef",
    kind: "ARTraining",
    mutate: (o) => delete o.spec.tokenizerRef,
    field: "tokenizerRef",
  },
  { name: "AR unknown size", kind: "ARTraining", mutate: (o) => (o.spec.model.size = "XXL"), field: "model.size" },
  {
    name: "AR mergeAR window 0",
    kind: "ARTraining",
    mutate: (o) => (o.spec.model.mergeAR = { enabled: true, window: 0 }),
    field: "window",
  },
  {
    name: "AR warmup beyond steps",
    kind: "ARTraining",
    mutate: (o) => (o.spec.training.warmupSteps = 10_000),
    field: "warmupSteps",
  },
  { name: "sampling without modelRef", kind: "SamplingJob", mutate: (o) => delete o.spec.modelRef, field: "modelRef" },
  {
    name: "fewer samples than shards",
    kind: "SamplingJob",
    mutate: (o) => (o.spec.sampling.shards = 1000),
    field: "numSamples",
  },
  {
    name: "cfg scale below 1",
    kind: "SamplingJob",
    mutate: (o) => (o.spec.sampling.cfgScale = 0.5),
    field: "sampling.cfgScale",
  },
  { name: "topP zero", kind: "SamplingJob", mutate: (o) => (o.spec.sampling.topP = 0), field: "sampling.topP" },
  {
    name: "temperature zero",
    kind: "SamplingJob",
    mutate: (o) => (o.spec.sampling.temperature = 0),
    field: "sampling.temperature",
  },
  { name: "negative topK", kind: "SamplingJob", mutate: (o) => (o.spec.sampling.topK = -1), field: "sampling.topK" },
  {
    name: "sampling with 2 nodes",
    kind: "SamplingJob",
    mutate: (o) => (o.spec.resources = { nodes: 2 }),
    field: "resources.nodes",
  },
];
