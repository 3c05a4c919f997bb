// Test helpers for Stage II (not used by production code): a small T0 tokenizer checkpoint made with the
// real Stage-I trainer on real photos, so the AR tests run on genuine tokenizer codes.
import type { Logger } from "../../../common/src/logger.ts";
import { latestCheckpoint } from "../io/checkpoint.ts";
import { buildTrainer } from "./setup.ts";

/**
 * Train the T0 tokenizer for `steps` optimiser steps (batch 4, no perceptual net / teacher, no evaluation)
 * on `data` and return the URI of its final `tokenizer-train` checkpoint under `dir`.
 */
export async function makeT0TokenizerCheckpoint(o: {
  data: string;
  dir: string;
  log: Logger;
  steps?: number;
  model?: string | Record<string, unknown>;
}): Promise<string> {
  const built = await buildTrainer({
    model: o.model ?? "T0",
    train: {
      steps: o.steps ?? 1,
      batchSize: 4,
      accum: 1,
      perceptual: "none",
      teacher: "none",
      evalImages: 0,
      checkpointInterval: 0,
      progressIntervalSeconds: 0,
      logEvery: 100,
      lr: 2e-4,
    },
    data: o.data,
    out: o.dir,
    log: o.log,
    checkpointDir: o.dir,
    dataLimit: 64,
  });
  await built.trainer.run();
  built.trainer.dispose();
  built.data.close?.();
  const uri = await latestCheckpoint(o.dir);
  if (!uri) throw new Error(`no tokenizer checkpoint under ${o.dir}`);
  return uri;
}
