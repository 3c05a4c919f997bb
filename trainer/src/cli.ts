#!/usr/bin/env -S node --import tsx
// mergevq-trainer CLI (Stage I):
//   tokenizer train       --config <preset|file.json> --data <dir> --out <dir|uri> [--steps N] [--batch B]
//                         [--backend X] [--train-config <file.json>] [--resume <uri>] [--seed N]
//   tokenizer eval        --config … --data … --out … --checkpoint <uri> [--K k] [--images N] [--backend X]
//   tokenizer reconstruct --config … --data … --out … --checkpoint <uri> [--K k] [--images N] [--backend X]
// Operator env contract (common/src/contract.ts), used when the corresponding flag is absent:
//   MERGEVQ_MODEL_CONFIG (JSON, may contain "preset"), MERGEVQ_TRAIN_CONFIG (JSON), DATASET_URI,
//   CHECKPOINT_DIR, CHECKPOINT_INTERVAL, CHECKPOINT_KEEP_LAST, RESUME_FROM, MERGEVQ_STATUS_URI,
//   MERGEVQ_TEACHER_URI, TERMINATION_MESSAGE_PATH, WORLD_SIZE/NODE_RANK/NPROC_PER_NODE, TFJS_BACKEND.
//   Not (yet) in the contract: MERGEVQ_PERCEPTUAL_URI (LPIPS weights), same role as MERGEVQ_TEACHER_URI.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { z } from "zod";
import { ENV, type FinalReport, terminationMessage } from "../../common/src/contract.ts";
import { envInt, envUri, parseEnv } from "../../common/src/env.ts";
import { createLogger, type Logger } from "../../common/src/logger.ts";
import { selectBackend } from "./backend.ts";
import { resolveConfig } from "./config/tokenizer.ts";
import { rankFromEnv } from "./data/rank.ts";
import { latestCheckpoint } from "./train/checkpoint.ts";
import { disposeBatch } from "./train/localFolder.ts";
import { buildTrainer } from "./train/setup.ts";
import { joinUri, registerS3FromDataPlane, storageFor, toLocalPath, uriScheme } from "./train/storage.ts";
import { NonFiniteLossError } from "./train/tokenizerTrainer.ts";

export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

const USAGE = `usage: mergevq-trainer tokenizer <train|eval|reconstruct> --config <preset|file.json> --data <dir> --out <dir|uri>
  [--steps N] [--batch B] [--backend tensorflow-gpu|tensorflow|wasm|cpu] [--train-config file.json]
  [--resume uri] [--seed N] [--checkpoint uri] [--K k] [--images N]`;

const OPTIONS = {
  config: { type: "string" },
  data: { type: "string" },
  out: { type: "string" },
  steps: { type: "string" },
  batch: { type: "string" },
  backend: { type: "string" },
  "train-config": { type: "string" },
  resume: { type: "string" },
  seed: { type: "string" },
  checkpoint: { type: "string" },
  K: { type: "string" },
  images: { type: "string" },
  help: { type: "boolean" },
} as const;

const ContractEnv = z.object({
  [ENV.MODEL_CONFIG]: z.string().optional(),
  [ENV.TRAIN_CONFIG]: z.string().optional(),
  [ENV.DATASET_URI]: envUri().optional(),
  [ENV.CHECKPOINT_DIR]: envUri().optional(),
  [ENV.CHECKPOINT_INTERVAL]: envInt({ min: 0 }).optional(),
  [ENV.CHECKPOINT_KEEP_LAST]: envInt({ min: 0 }).optional(),
  [ENV.RESUME_FROM]: envUri().optional(),
  [ENV.STATUS_URI]: envUri().optional(),
  [ENV.TEACHER_URI]: envUri().optional(),
  MERGEVQ_PERCEPTUAL_URI: envUri().optional(),
  [ENV.TERMINATION_MESSAGE_PATH]: z.string().optional(),
  [ENV.RUN]: z.string().optional(),
});

function intFlag(name: string, v: string | undefined, min = 0): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new CliError(`--${name}: expected an integer ≥ ${min}, got "${v}"`);
  return Number(v);
}

function parseJson(what: string, text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new CliError(`${what}: invalid JSON (${(e as Error).message})`);
  }
}

/** `--config`: a preset name, or a JSON file with a (partial) model config (optionally `"preset"`). */
function modelConfigInput(flag: string | undefined, env: string | undefined): string | Record<string, unknown> {
  if (flag !== undefined) {
    if (flag.endsWith(".json") || existsSync(flag)) {
      if (!existsSync(flag)) throw new CliError(`--config: file ${flag} does not exist`);
      return parseJson(`--config ${flag}`, readFileSync(flag, "utf8"));
    }
    return flag;
  }
  if (env !== undefined) return parseJson(ENV.MODEL_CONFIG, env);
  throw new CliError(`--config is required (or set ${ENV.MODEL_CONFIG})`);
}

/** Turn zod/config errors into one line naming the field. */
function configError(source: string, e: unknown): CliError {
  if (e instanceof z.ZodError) {
    return new CliError(
      `${source}: ${e.issues.map((i) => `${i.path.join(".") || "<root>"}: ${i.message}`).join("; ")}`,
    );
  }
  return new CliError(`${source}: ${(e as Error).message}`);
}

export interface CliResult {
  report: FinalReport;
}

export async function main(argv: string[], log?: Logger): Promise<CliResult> {
  const [group, command, ...rest] = argv;
  if (group !== "tokenizer" || !["train", "eval", "reconstruct"].includes(command ?? "")) {
    throw new CliError(`unknown command "${[group, command].filter(Boolean).join(" ")}"\n${USAGE}`);
  }
  let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; args: string[]; strict: true }>>["values"];
  try {
    ({ values } = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new CliError(`${(e as Error).message}\n${USAGE}`);
  }
  const env = parseEnv(ContractEnv);
  const { rank, worldSize } = rankFromEnv();
  if (worldSize > 1) {
    throw new CliError(
      `WORLD_SIZE: ${worldSize} ranks requested, but data-parallel gradient synchronisation is not implemented yet (issue 9); run with WORLD_SIZE=1`,
    );
  }
  const logger = log ?? createLogger({ component: "trainer", run: env[ENV.RUN], rank });
  if (
    uriScheme(values.out ?? "") === "s3" ||
    [env[ENV.CHECKPOINT_DIR], env[ENV.STATUS_URI], env[ENV.RESUME_FROM]].some((u) => u?.startsWith("s3://"))
  ) {
    await registerS3FromDataPlane();
  }

  const modelInput = modelConfigInput(values.config, env[ENV.MODEL_CONFIG]);
  const trainInput: Record<string, unknown> = values["train-config"]
    ? parseJson(`--train-config ${values["train-config"]}`, readFileSync(values["train-config"], "utf8"))
    : env[ENV.TRAIN_CONFIG] !== undefined
      ? parseJson(ENV.TRAIN_CONFIG, env[ENV.TRAIN_CONFIG] as string)
      : {};
  const steps = intFlag("steps", values.steps);
  const batchSize = intFlag("batch", values.batch, 1);
  const seed = intFlag("seed", values.seed);
  if (steps !== undefined) trainInput.steps = steps;
  if (batchSize !== undefined) trainInput.batchSize = batchSize;
  if (seed !== undefined) trainInput.seed = seed;
  if (env[ENV.CHECKPOINT_INTERVAL] !== undefined) trainInput.checkpointInterval = env[ENV.CHECKPOINT_INTERVAL];
  if (env[ENV.CHECKPOINT_KEEP_LAST] !== undefined) trainInput.keepLast = env[ENV.CHECKPOINT_KEEP_LAST];
  if (env[ENV.TEACHER_URI] && trainInput.teacher === undefined) trainInput.teacher = env[ENV.TEACHER_URI];
  if (env.MERGEVQ_PERCEPTUAL_URI && trainInput.perceptual === undefined)
    trainInput.perceptual = env.MERGEVQ_PERCEPTUAL_URI;

  const data = values.data ?? env[ENV.DATASET_URI];
  if (!data) throw new CliError(`--data is required (or set ${ENV.DATASET_URI})`);
  if (uriScheme(data) !== "file") {
    throw new CliError(
      `--data ${data}: only local folders are read by this trainer so far (the S3 loader is trainer/src/data)`,
    );
  }
  const out = values.out;
  if (!out) throw new CliError("--out is required");
  const checkpointDir = env[ENV.CHECKPOINT_DIR] ?? joinUri(out, "checkpoints");
  const statusUri = env[ENV.STATUS_URI] ?? out;

  const configSource = values.config ? `--config ${values.config}` : ENV.MODEL_CONFIG;
  let resolvedModel: ReturnType<typeof resolveConfig>;
  try {
    resolvedModel = typeof modelInput === "string" ? resolveConfig(modelInput) : resolveConfig(modelInput as never);
  } catch (e) {
    throw configError(configSource, e);
  }
  if (typeof modelInput === "object") {
    // The model schema strips unknown keys silently; a typo in a config file must be an error.
    const unknown = unknownKeys(modelInput, resolvedModel as unknown as Record<string, unknown>, ["preset"]);
    if (unknown.length) {
      throw new CliError(
        `${values.config ? `--config ${values.config}` : ENV.MODEL_CONFIG}: unknown field(s): ${unknown.join(", ")}`,
      );
    }
  }
  const backend = await selectBackend({ requested: values.backend, log: logger });
  let built: Awaited<ReturnType<typeof buildTrainer>>;
  try {
    built = await buildTrainer({
      model: modelInput,
      train: trainInput,
      data: uriScheme(data) === "file" ? toLocalPath(data) : data,
      out,
      log: logger,
      rank,
      worldSize,
      checkpointDir,
      statusUri,
      backend: backend.name,
    });
  } catch (e) {
    if (e instanceof z.ZodError) throw configError(values.config ? `--config ${values.config}` : ENV.MODEL_CONFIG, e);
    if (/training config|--train-config|MERGEVQ_TRAIN_CONFIG/.test((e as Error).message))
      throw new CliError((e as Error).message);
    throw e;
  }
  const { trainer, notes } = built;
  const K = intFlag("K", values.K, 1);
  const images = intFlag("images", values.images, 1);

  if (command === "train") {
    const resume = values.resume ?? env[ENV.RESUME_FROM] ?? (await latestCheckpoint(checkpointDir));
    if (resume) await trainer.resume(resume);
    try {
      const last = await trainer.run();
      const metrics: Record<string, number> = {};
      for (const [k, v] of Object.entries(last)) if (Number.isFinite(v)) metrics[`train/${k}`] = v;
      if (trainer.cfg.evalImages > 0) {
        const ev = await trainer.evaluate(await built.openEval(), { images: trainer.cfg.evalImages, K });
        metrics[`l1@K=${ev.K}`] = ev.l1;
        if (ev.perceptual !== undefined) metrics[`perceptual@K=${ev.K}`] = ev.perceptual;
        metrics[`codebookUsage@K=${ev.K}`] = ev.codebookUsage;
      }
      const report: FinalReport = {
        metrics,
        artifacts: trainer.lastCheckpoint ? { checkpointUri: trainer.lastCheckpoint } : undefined,
        notes: notes.length ? notes : undefined,
        step: trainer.step,
        updatedAt: new Date().toISOString(),
      };
      await trainer.writeMetrics({ metrics, notes });
      writeTermination(env[ENV.TERMINATION_MESSAGE_PATH], report);
      return { report };
    } catch (e) {
      if (e instanceof NonFiniteLossError) {
        const report: FinalReport = {
          metrics: {},
          artifacts: e.lastCheckpoint ? { checkpointUri: e.lastCheckpoint } : undefined,
          notes: [e.message],
          step: e.step,
        };
        writeTermination(env[ENV.TERMINATION_MESSAGE_PATH], report);
      }
      throw e;
    }
  }

  const ckpt = values.checkpoint ?? env[ENV.RESUME_FROM] ?? (await latestCheckpoint(checkpointDir));
  if (!ckpt)
    throw new CliError(`--checkpoint is required for "${command}" (no checkpoint found under ${checkpointDir})`);
  await trainer.resume(ckpt);
  const evalSrc = await built.openEval();

  if (command === "eval") {
    const Ks = K ? [K] : built.modelConfig.derived.candidates.map((c) => c.K);
    const metrics: Record<string, number> = {};
    for (const k of Ks) {
      const ev = await trainer.evaluate(await built.openEval(), {
        images: images ?? trainer.cfg.evalImages ?? 64,
        K: k,
      });
      metrics[`l1@K=${k}`] = ev.l1;
      if (ev.perceptual !== undefined) metrics[`perceptual@K=${k}`] = ev.perceptual;
      metrics[`codebookUsage@K=${k}`] = ev.codebookUsage;
      logger.info({ ...ev }, "eval (EMA weights)");
    }
    const report: FinalReport = {
      metrics,
      artifacts: { checkpointUri: ckpt },
      notes: notes.length ? notes : undefined,
      step: trainer.step,
    };
    const uri = joinUri(statusUri, "metrics.json");
    await storageFor(uri).put(
      uri,
      new TextEncoder().encode(JSON.stringify({ ...report, updatedAt: new Date().toISOString() })),
    );
    writeTermination(env[ENV.TERMINATION_MESSAGE_PATH], report);
    return { report };
  }

  // reconstruct: grid PNG, each row = originals | reconstructions (EMA weights, clamped), at K.
  const k = K ?? built.modelConfig.derived.K;
  const n = images ?? 8;
  const batch = await evalSrc.next(n);
  const png = await trainer.withEmaWeights(async () => {
    const grid = tf.tidy(() => {
      const out = built.model.forward(batch.image, { K: k, training: false });
      const rec = tf.clipByValue(out.recon, -1, 1);
      const pairs = tf.concat([batch.image, rec], 2); // [n, H, 2W, 3]
      const rows = tf.reshape(pairs, [n * pairs.shape[1], pairs.shape[2], 3]);
      return tf.cast(tf.round(tf.mul(tf.add(rows, 1), 127.5)), "int32");
    });
    const [h, w] = grid.shape;
    const px = Uint8Array.from(grid.dataSync());
    grid.dispose();
    return sharp(px, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toBuffer();
  });
  disposeBatch(batch);
  const uri = joinUri(out, `reconstructions-K${k}.png`);
  await storageFor(uri).put(uri, png);
  logger.info({ uri, K: k, images: n }, "reconstruction grid written (rows: original | reconstruction)");
  return {
    report: {
      metrics: {},
      artifacts: { checkpointUri: ckpt, imageUris: [uri] },
      notes: notes.length ? notes : undefined,
    },
  };
}

/** Keys of `input` (recursively through plain objects) that the resolved config does not have. */
export function unknownKeys(
  input: Record<string, unknown>,
  resolved: Record<string, unknown>,
  allow: string[] = [],
  prefix = "",
): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(input)) {
    if (!prefix && allow.includes(k)) continue;
    const name = prefix ? `${prefix}.${k}` : k;
    if (!Object.hasOwn(resolved, k)) out.push(name);
    else if (v && typeof v === "object" && !Array.isArray(v) && resolved[k] && typeof resolved[k] === "object") {
      out.push(...unknownKeys(v as Record<string, unknown>, resolved[k] as Record<string, unknown>, [], name));
    }
  }
  return out;
}

function writeTermination(pathFromEnv: string | undefined, report: FinalReport): void {
  // Only inside Kubernetes (or when asked explicitly): never create /dev/termination-log on a workstation.
  const p = pathFromEnv ?? (process.env.KUBERNETES_SERVICE_HOST ? "/dev/termination-log" : undefined);
  if (!p) return;
  try {
    writeFileSync(p, terminationMessage(report));
  } catch {
    // The termination message is best effort; metrics.json carries the same report.
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith("/trainer/src/cli.ts")) {
  main(process.argv.slice(2)).then(
    ({ report }) => {
      process.stdout.write(`${JSON.stringify(report)}\n`);
      process.exit(0);
    },
    (e: Error) => {
      process.stderr.write(`error: ${e.message}\n`);
      process.exit(e instanceof CliError ? 2 : 1);
    },
  );
}
