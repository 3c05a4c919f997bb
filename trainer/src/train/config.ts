// Stage-I training configuration (docs/model.md §4; upstream `configs/gpu_s1/*.yaml` loss/optimiser values as
// defaults). Strict: an unknown field is an error naming the field. This is the JSON accepted in
// MERGEVQ_TRAIN_CONFIG and in `--train-config`.
import { z } from "zod";
import { describeZodError } from "../util/configErrors.ts";

const uriOrMode = z.string().min(1);

export const TrainConfigSchema = z
  .object({
    /** Optimiser (G) steps to train for; the step counter counts G steps only (docs/model.md §1). When absent,
     *  buildTrainer uses the model config's `train.epochs` × optimiser steps per epoch. */
    steps: z.number().int().min(0).default(1000),
    /** Micro-batch size per rank. */
    batchSize: z.number().int().min(1).default(8),
    /** Gradient accumulation: micro-batches per optimiser step (upstream ×2). */
    accum: z.number().int().min(1).default(1),
    /** Adam lr for G and D (spec 1e-4; §10 suggests 2e-4 for tiny configs). */
    lr: z.number().positive().default(1e-4),
    /** Optimiser steps at which both lrs are multiplied by `lrDropFactor` (spec: at epoch ends). */
    lrDropSteps: z.array(z.number().int().min(1)).default([]),
    /** Same, in epochs (converted with the rank's steps per epoch). */
    lrDropEpochs: z.array(z.number().int().min(1)).default([]),
    lrDropFactor: z.number().positive().default(0.1),
    beta1: z.number().min(0).max(1).default(0.5),
    beta2: z.number().min(0).max(1).default(0.9),
    eps: z.number().positive().default(1e-8),
    /** Global L2 gradient clip (5.0 for GR_d96 and R; none otherwise). */
    gradClip: z.number().positive().nullable().default(null),
    emaDecay: z.number().min(0).max(1).default(0.999),
    weights: z
      .object({
        reconstruction: z.number().min(0).default(1),
        perceptual: z.number().min(0).default(1),
        generator: z.number().min(0).default(0.1),
        entropy: z.number().min(0).default(0.1),
        commitment: z.number().min(0).default(0.25),
        /** null → the model config's cls weight (1.0 GR/R, 0.1 G). */
        cls: z.number().min(0).nullable().default(null),
        lecam: z.number().min(0).default(0.01),
      })
      .strict()
      .prefault({}),
    /** GAN warm-up gate (adopt_weight threshold, in optimiser steps); 0 in every config. */
    discStart: z.number().int().min(0).default(0),
    discriminator: z
      .object({ ndf: z.number().int().min(1).default(64), nLayers: z.number().int().min(1).default(3) })
      .strict()
      .prefault({}),
    /** Perceptual network weights: path / file:// / s3:// URI, "generated" (random, labelled) or "none". */
    perceptual: uriOrMode.default("generated"),
    /** Alignment teacher ONNX: path / file:// / s3:// URI, "generated" (random tiny ViT, labelled) or "none". */
    teacher: uriOrMode.default("generated"),
    seed: z.number().int().min(0).default(0),
    /** Optimiser steps between checkpoints (0 = only at the end). */
    checkpointInterval: z.number().int().min(0).default(1000),
    keepLast: z.number().int().min(0).default(3),
    /** Optimiser steps between progress log lines. */
    logEvery: z.number().int().min(1).default(10),
    /** Minimum seconds between progress.json writes. */
    progressIntervalSeconds: z.number().min(0).default(5),
    /** K used for evaluation (null → nominal K of the model config). */
    evalK: z.number().int().min(1).nullable().default(null),
    /** Held-out images used by the final evaluation (0 = skip). */
    evalImages: z.number().int().min(0).default(64),
  })
  .strict();

export type TrainConfig = z.infer<typeof TrainConfigSchema>;

/** Parse a (partial) training config; errors name the offending field. */
export function parseTrainConfig(input: unknown, source = "training config"): TrainConfig {
  const r = TrainConfigSchema.safeParse(input ?? {});
  if (r.success) return r.data;
  throw new Error(describeZodError(source, r.error));
}

/** Learning rate at optimiser step `step` (0-based): lr · factor^(number of drops ≤ step). */
export function lrAt(cfg: TrainConfig, step: number, stepsPerEpoch: number): number {
  const drops = [...cfg.lrDropSteps, ...cfg.lrDropEpochs.map((e) => e * stepsPerEpoch)];
  const n = drops.filter((d) => step >= d).length;
  return cfg.lr * cfg.lrDropFactor ** n;
}
