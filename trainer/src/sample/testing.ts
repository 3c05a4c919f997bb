// Fixtures shared by the sampling tests (not used at run time): a T0 tokenizer-train checkpoint and a
// Stage-II tiny "ar-train" checkpoint, both RANDOM-init (step 0, labelled untrained by the sampler), a folder
// of real photos, and the trainer CLI as a child process.
import { execFile } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { GPT, gptCheckpointTensors } from "../ar/gpt.ts";
import { randomizeWeights, tinyConfig } from "../ar/testing.ts";
import { encodeCheckpoint, type TensorEntry } from "../io/checkpoint.ts";
import { MergeVQTokenizer } from "../tokenizer/mergevq.ts";
import { ensureTestPhotos } from "../util/testPhotos.ts";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** Encoded T0 tokenizer checkpoint (random init, raw weights under g/) and its resolution (32). */
export function tinyTokenizerCheckpoint(): { bytes: Uint8Array; resolution: number } {
  const tok = new MergeVQTokenizer("T0");
  const tensors = new Map<string, TensorEntry>();
  for (const [name, v] of tok.getWeights())
    tensors.set(`g/${name}`, { shape: [...v.shape], dtype: "float32", data: v.dataSync() as Float32Array });
  const bytes = encodeCheckpoint({ kind: "tokenizer-train", meta: { step: 0, modelConfig: tok.config }, tensors });
  const resolution = tok.config.resolution;
  tok.dispose();
  return { bytes, resolution };
}

/**
 * Encoded Stage-II tiny AR checkpoint (docs/model.md §10: 10 classes, bits [4,6], 8×8 grid), random weights with
 * std 0.2 so that logits depend on their inputs, step 0.
 */
export function tinyArCheckpoint(o: { tokenizerUri: string; mergeAR?: boolean; seed?: number }): Uint8Array {
  const cfg = tinyConfig({ seed: o.seed ?? 3, mergeAR: o.mergeAR });
  const gpt = new GPT(cfg);
  randomizeWeights(gpt, (o.seed ?? 3) + 8);
  const bytes = encodeCheckpoint({
    kind: "ar-train",
    meta: { step: 0, arConfig: cfg, tokenizer: { uri: o.tokenizerUri, step: 0 } },
    tensors: gptCheckpointTensors(gpt),
  });
  gpt.dispose();
  return bytes;
}

/** Copy `perClass` real photos of the first `classes` subjects into `<dst>/<subject>/` (flat class folders). */
export function photoFolder(dst: string, classes: number, perClass: number, offset = 0): string {
  const photos = ensureTestPhotos();
  const train = existsSync(path.join(photos.dir, "train")) ? path.join(photos.dir, "train") : photos.dir;
  const names = readdirSync(train, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort()
    .slice(offset, offset + classes);
  for (const c of names) {
    mkdirSync(path.join(dst, c), { recursive: true });
    for (const f of readdirSync(path.join(train, c)).sort().slice(0, perClass))
      cpSync(path.join(train, c, f), path.join(dst, c, f));
  }
  return dst;
}

/** `node --import tsx trainer/src/cli.ts …` with extra env; resolves with the exit code and output. */
export function runTrainerCli(
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", path.join(REPO_ROOT, "trainer/src/cli.ts"), ...args],
      { cwd: REPO_ROOT, env: { ...process.env, LOG_LEVEL: "info", ...env }, maxBuffer: 64 << 20, timeout: 5 * 60_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The JSON report a CLI run printed last on stdout. */
export function lastReport(stdout: string): Record<string, unknown> & { metrics: Record<string, number> } {
  return JSON.parse(stdout.trim().split("\n").pop() as string);
}
