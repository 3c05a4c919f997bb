// The operator's env contract in the CRD's shape → the trainer's own configs.
//
//   MERGEVQ_MODEL_CONFIG = JSON of TokenizerTraining `spec.model` (operator/src/api/v1alpha1/tokenizertraining.ts
//     `TokenizerModel`): preset | variant+size, imageSize, keepTokens, evalKeepTokens, codebookBits, teacherUri,
//     perceptualUri, overrides. Mapped onto resolveConfig (trainer/src/tokenizer/config.ts):
//       preset T0/T1/T2           → that preset
//       variant+size              → preset `<variant>_<size>` (R d64 → R_vitb_d64)
//       imageSize                 → resolution
//       keepTokens K              → mergeNum = L − K (L = tokens of the grid at the resolved resolution)
//       codebookBits              → zChannels (LFQ bits)
//       overrides                 → raw config fields, camelCase or snake_case (ch_mult → chMult), applied last
//                                   but before keepTokens/codebookBits/imageSize
//       evalKeepTokens            → K values for the final rFID (each must be ≤ L and a perfect square)
//       teacherUri, perceptualUri → training config `teacher` / `perceptual`
//   MERGEVQ_TRAIN_CONFIG = JSON of `{...spec.training, evaluation: spec.evaluation}` (operator desired.ts):
//       steps → steps, batchSize → batchSize, gradAccumulation → accum, learningRate → lr,
//       lrDropSteps → lrDropSteps, seed → seed, emaDecay → emaDecay, logEverySteps → logEvery,
//       evaluation.enabled/numImages → evalImages (0 when disabled), evaluation.inceptionUri → Inception model,
//       evaluation.referenceStatsUri → accepted, not used by rFID (the originals' own statistics are the
//       reference; reported as a note).
// Unknown keys are errors naming the field (the CRD schema prunes unknown fields, so one here is a bug).
import { z } from "zod";
import { ENV } from "../../../common/src/contract.ts";
import { type ResolvedTokenizerConfig, resolveConfig } from "../tokenizer/config.ts";
import { describeZodError, unknownKeys } from "../util/configErrors.ts";

export class ContractConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ContractConfigError";
  }
}

const CrdModel = z
  .object({
    preset: z.enum(["T0", "T1", "T2"]).optional(),
    variant: z.enum(["G", "GR", "R"]).optional(),
    size: z.enum(["d32", "d64", "d96"]).optional(),
    imageSize: z.number().int().min(16).optional(),
    keepTokens: z.number().int().min(1).optional(),
    evalKeepTokens: z.array(z.number().int().min(1)).optional(),
    codebookBits: z.number().int().min(1).max(24).optional(),
    teacherUri: z.string().min(1).optional(),
    perceptualUri: z.string().min(1).optional(),
    overrides: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();
export type CrdModel = z.infer<typeof CrdModel>;

const CrdTrain = z
  .object({
    steps: z.number().int().min(0).optional(),
    batchSize: z.number().int().min(1).optional(),
    gradAccumulation: z.number().int().min(1).optional(),
    learningRate: z.number().positive().optional(),
    lrDropSteps: z.array(z.number().int().min(1)).optional(),
    seed: z.number().int().min(0).optional(),
    emaDecay: z.number().min(0).max(1).optional(),
    logEverySteps: z.number().int().min(1).optional(),
    evaluation: z
      .object({
        enabled: z.boolean().optional(),
        numImages: z.number().int().min(0).optional(),
        inceptionUri: z.string().min(1).optional(),
        referenceStatsUri: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type CrdTrain = z.infer<typeof CrdTrain>;

const snakeToCamel = (s: string) => s.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function camelise(v: unknown): unknown {
  if (Array.isArray(v)) return v;
  if (v && typeof v === "object")
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>).map(([k, x]) => [snakeToCamel(k), camelise(x)]),
    );
  return v;
}

/** Keys of `input` (recursively through plain objects) that `resolved` does not have. */

export interface ModelFromContract {
  /** Input for resolveConfig / buildTrainer (`{preset, ...fields}`). */
  input: Record<string, unknown>;
  resolved: ResolvedTokenizerConfig;
  /** K values for the final evaluation (default: the nominal K). */
  evalKs: number[];
  /** Training-config fields derived from the model spec (teacher/perceptual URIs). */
  train: Record<string, unknown>;
}

function tryResolve(source: string, input: Record<string, unknown>, rename: Record<string, string>) {
  try {
    return resolveConfig(input as never);
  } catch (e) {
    if (e instanceof z.ZodError) {
      throw new ContractConfigError(describeZodError(source, e, { rename }));
    }
    throw new ContractConfigError(`${source}: ${(e as Error).message}`);
  }
}

/** MERGEVQ_MODEL_CONFIG (CRD `spec.model`) → resolved tokenizer config + eval Ks. */
export function modelFromContract(json: unknown, source: string = ENV.MODEL_CONFIG): ModelFromContract {
  const r = CrdModel.safeParse(json);
  if (!r.success) throw new ContractConfigError(describeZodError(source, r.error, { unknownKeys: "inline" }));
  const m = r.data;
  if ((m.preset === undefined) === (m.variant === undefined))
    throw new ContractConfigError(`${source}: exactly one of preset or variant is required`);
  if ((m.variant === undefined) !== (m.size === undefined))
    throw new ContractConfigError(`${source}: size is required with variant (and only with it)`);
  let preset = m.preset as string | undefined;
  if (m.variant) {
    preset = m.variant === "R" ? (m.size === "d64" ? "R_vitb_d64" : undefined) : `${m.variant}_${m.size}`;
    if (!preset || (m.variant === "G" && m.size === "d96"))
      throw new ContractConfigError(`${source}: size: variant ${m.variant} has no ${m.size} config`);
  }
  const overrides = m.overrides ? (camelise(m.overrides) as Record<string, unknown>) : {};
  if ("preset" in overrides) throw new ContractConfigError(`${source}: overrides.preset: use model.preset`);
  const input: Record<string, unknown> = { preset, ...overrides };
  if (m.imageSize !== undefined) input.resolution = m.imageSize;
  if (m.codebookBits !== undefined) input.zChannels = m.codebookBits;
  const rename: Record<string, string> = {
    resolution: "imageSize",
    zChannels: "codebookBits",
    mergeNum: m.keepTokens !== undefined ? "keepTokens" : "overrides.mergeNum",
  };
  let resolved = tryResolve(source, input, rename);
  const unknown = unknownKeys(overrides, resolved as unknown as Record<string, unknown>, [], "overrides");
  if (unknown.length) throw new ContractConfigError(`${source}: unknown field(s): ${unknown.join(", ")}`);
  const L = resolved.derived.L;
  if (m.keepTokens !== undefined) {
    if (m.keepTokens > L)
      throw new ContractConfigError(`${source}: keepTokens: ${m.keepTokens} exceeds the ${L} tokens of the grid`);
    if (!Number.isInteger(Math.sqrt(m.keepTokens)))
      throw new ContractConfigError(`${source}: keepTokens: ${m.keepTokens} is not a perfect square`);
    input.mergeNum = L - m.keepTokens;
    try {
      resolved = tryResolve(source, input, rename);
    } catch (e) {
      throw new ContractConfigError(
        `${source}: keepTokens: ${m.keepTokens} does not fit this config (${(e as Error).message.replace(`${source}: `, "")})`,
      );
    }
  }
  const evalKs = m.evalKeepTokens?.length ? [...m.evalKeepTokens] : [resolved.derived.K];
  for (const k of evalKs) {
    if (k > L || !Number.isInteger(Math.sqrt(k)))
      throw new ContractConfigError(
        `${source}: evalKeepTokens: ${k} must be a perfect square ≤ ${L} (tokens of the ${resolved.derived.grid}×${resolved.derived.grid} grid)`,
      );
  }
  const train: Record<string, unknown> = {};
  if (m.teacherUri) train.teacher = m.teacherUri;
  if (m.perceptualUri) train.perceptual = m.perceptualUri;
  return { input, resolved, evalKs, train };
}

export interface TrainFromContract {
  /** Partial training config (trainer/src/train/config.ts field names). */
  train: Record<string, unknown>;
  evaluation: { enabled: boolean; numImages?: number; inceptionUri?: string; referenceStatsUri?: string };
}

/** MERGEVQ_TRAIN_CONFIG (CRD `spec.training` + `evaluation`) → partial training config + evaluation. */
export function trainFromContract(json: unknown, source: string = ENV.TRAIN_CONFIG): TrainFromContract {
  const r = CrdTrain.safeParse(json);
  if (!r.success) throw new ContractConfigError(describeZodError(source, r.error, { unknownKeys: "inline" }));
  const t = r.data;
  const train: Record<string, unknown> = {};
  const map: [keyof CrdTrain, string][] = [
    ["steps", "steps"],
    ["batchSize", "batchSize"],
    ["gradAccumulation", "accum"],
    ["learningRate", "lr"],
    ["lrDropSteps", "lrDropSteps"],
    ["seed", "seed"],
    ["emaDecay", "emaDecay"],
    ["logEverySteps", "logEvery"],
  ];
  for (const [from, to] of map) if (t[from] !== undefined) train[to] = t[from];
  // lr drops are given in steps by the CRD: the model config's epoch-based defaults do not apply.
  if (t.lrDropSteps !== undefined) train.lrDropEpochs = [];
  const ev = t.evaluation ?? {};
  const enabled = ev.enabled ?? true;
  if (!enabled) train.evalImages = 0;
  else if (ev.numImages !== undefined) train.evalImages = ev.numImages;
  return {
    train,
    evaluation: {
      enabled,
      numImages: ev.numImages,
      inceptionUri: ev.inceptionUri,
      referenceStatsUri: ev.referenceStatsUri,
    },
  };
}
