// Stage-II configuration as the trainer takes it: the ARTraining CRD's spec.model (MERGEVQ_MODEL_CONFIG) and the
// trainer-side training config (the CRD's spec.training maps onto it in the AR command). Schemas first (zod),
// types derived, errors name every offending field. The model architecture itself (widths, heads, bit split)
// is resolved from the model spec and the tokenizer in ar/config.ts.
import { z } from "zod";
import { ARConfigError } from "../ar/config.ts";
import { describeZodError } from "../util/configErrors.ts";
import { AR_ADAMW_DEFAULTS } from "./adamw.ts";

export { ARConfigError };

/** The ARTraining CRD's spec.model (MERGEVQ_MODEL_CONFIG), same fields and defaults; strict. */
export const ARModelSpecSchema = z
  .object({
    size: z.enum(["tiny", "B", "L", "XL"]).default("B"),
    numClasses: z.number().int().min(1).max(100_000).default(1000),
    classDropout: z.number().min(0).max(1).default(0.1),
    mergeAR: z
      .object({
        enabled: z.boolean().default(false),
        window: z.number().int().min(0).max(64).default(2),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .refine((m) => !m.mergeAR.enabled || m.mergeAR.window >= 1, {
    message: "must be at least 1 when MergeAR is enabled",
    path: ["mergeAR", "window"],
  });
export type ParsedARModelSpec = z.infer<typeof ARModelSpecSchema>;

/** Trainer-side training config (the CRD's spec.training maps onto it in commands/ar.ts); strict. */
export const ARTrainConfigSchema = z
  .object({
    steps: z.number().int().min(1),
    /** Sequences per rank per micro-batch. */
    batchSize: z.number().int().min(1).default(8),
    /** Micro-batches per optimiser step. */
    accum: z.number().int().min(1).default(1),
    /** Peak AdamW lr. */
    lr: z.number().gt(0).max(1).default(3e-4),
    warmupSteps: z.number().int().min(0).default(0),
    weightDecay: z.number().min(0).max(1).default(0.05),
    /** Global gradient-norm clip (null = none). */
    gradClip: z.number().gt(0).nullable().default(1),
    beta1: z.number().min(0).max(1).default(AR_ADAMW_DEFAULTS.beta1),
    beta2: z.number().min(0).max(1).default(AR_ADAMW_DEFAULTS.beta2),
    eps: z.number().positive().default(AR_ADAMW_DEFAULTS.eps),
    seed: z.number().int().min(0).max(2147483647).default(0),
    logEvery: z.number().int().min(1).default(10),
    /** Optimiser steps between checkpoints (0 = only at the end). */
    checkpointInterval: z.number().int().min(0).default(1000),
    keepLast: z.number().int().min(0).default(3),
    /** Minimum seconds between progress.json writes. */
    progressIntervalSeconds: z.number().min(0).default(5),
    /**
     * NOT an ARTraining CRD field (the operator never sets it; `commands/ar.ts` maps only CRD fields): overrides of
     * the model's dropout rates, which resolveARConfig fixes at 0.1 (docs/model.md §5.2, LlamaGen token_dropout_p
     * and resid_dropout_p = ffn_dropout_p). An absent rate keeps 0.1. Recorded in the checkpoint's arConfig
     * and trainConfig; not part of the architecture check on resume. Use: { token: 0, resid: 0 } for exact
     * data-parallel equivalence tests (the masks depend on how the batch is split across ranks).
     */
    dropout: z
      .object({
        /** Dropout on the input embeddings (ARConfig.tokenDropout). */
        token: z.number().min(0).lt(1).optional(),
        /** Dropout after the attention output projection and after the FFN (ARConfig.residDropout). */
        resid: z.number().min(0).lt(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((t) => t.warmupSteps <= t.steps, { message: "must not exceed steps", path: ["warmupSteps"] });
export type ARTrainConfig = z.infer<typeof ARTrainConfigSchema>;

export function parseARModelSpec(input: unknown, source = "model config"): ParsedARModelSpec {
  const r = ARModelSpecSchema.safeParse(input ?? {});
  if (!r.success) throw new ARConfigError(describeZodError(source, r.error));
  return r.data;
}

export function parseARTrainConfig(input: unknown, source = "training config"): ARTrainConfig {
  const r = ARTrainConfigSchema.safeParse(input ?? {});
  if (!r.success) throw new ARConfigError(describeZodError(source, r.error));
  return r.data;
}
