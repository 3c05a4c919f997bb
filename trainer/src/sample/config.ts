// MERGEVQ_TRAIN_CONFIG of a SamplingJob = JSON of spec.sampling + {evaluation} (operator/src/reconcile/
// desired.ts runEnv). The operator has already validated and defaulted it against the CRD schema
// (operator/src/api/v1alpha1/samplingjob.ts); this schema repeats the fields and defaults so that a hand-run
// `sample` / `reduce` with a partial JSON behaves the same. Unknown keys are errors naming the field (the CRD
// schema prunes unknown fields, so one here is a bug or a typo).
import { z } from "zod";
import { describeZodError } from "../util/configErrors.ts";

export const SamplingEvaluationConfig = z
  .object({
    enabled: z.boolean().default(true),
    referenceStatsUri: z.string().min(1).optional(),
    inceptionUri: z.string().min(1).optional(),
    computeIS: z.boolean().default(true),
  })
  .strict();

export const SamplingConfig = z
  .object({
    numSamples: z.number().int().min(1).max(10_000_000),
    shards: z.number().int().min(1).max(4096).default(1),
    batchSize: z.number().int().min(1).max(4096).default(32),
    cfgScale: z.number().min(1).max(100).default(1.5),
    temperature: z.number().gt(0).max(10).default(1),
    topK: z.number().int().min(0).default(0),
    topP: z.number().gt(0).max(1).default(1),
    seed: z.number().int().min(0).max(2147483647).default(0),
    classLabels: z.array(z.number().int().min(0)).min(1).max(100_000).optional(),
    evaluation: SamplingEvaluationConfig.default({ enabled: true, computeIS: true }),
  })
  .strict()
  .refine((s) => s.numSamples >= s.shards, {
    message: "numSamples must be at least shards",
    path: ["numSamples"],
  });
export type SamplingConfig = z.infer<typeof SamplingConfig>;

export class SamplingConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SamplingConfigError";
  }
}

/** Parse the sampling JSON (text or value); errors name the source and every offending field. */
export function parseSamplingConfig(input: string | unknown, source = "MERGEVQ_TRAIN_CONFIG"): SamplingConfig {
  let json: unknown = input;
  if (typeof input === "string") {
    try {
      json = JSON.parse(input);
    } catch (e) {
      throw new SamplingConfigError(`${source}: invalid JSON (${(e as Error).message})`);
    }
  }
  const r = SamplingConfig.safeParse(json);
  if (!r.success) {
    throw new SamplingConfigError(describeZodError(source, r.error, { unknownKeys: "inline" }));
  }
  return r.data;
}
