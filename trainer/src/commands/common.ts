// Pieces shared by the trainer's commands (commands/index.ts dispatches to commands/<job>.ts): the usage-error
// class (exit code 2), the result type, small flag/JSON parsers whose errors name the flag or variable, and
// for the two training commands (`tokenizer train`, `ar train`) their common flags and env contract and the
// one "run a training job" sequence (runTrainingJob).
import { parseArgs } from "node:util";
import { z } from "zod";
import { ENV, type FinalReport } from "../../../common/src/contract.ts";
import { envInt, envUri, parseEnv } from "../../../common/src/env.ts";
import { createLogger, type Logger } from "../../../common/src/logger.ts";
import { rankFromEnv } from "../data/rank.ts";
import type { ProcessGroup } from "../dist/processGroup.ts";
import { CheckpointError, latestCheckpoint } from "../io/checkpoint.ts";
import { nonFiniteReport, writeTermination } from "../io/status.ts";
import { joinUri, uriScheme } from "../io/uri.ts";
import { joinProcessGroup, NonFiniteLossError } from "../train/loop.ts";
import { stopSignal } from "../train/stopSignal.ts";

export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/**
 * What a command returns: its final report, printed as one JSON line — or, for commands whose result is not a
 * run report (the data tools), `output` is printed instead.
 */
export interface CliResult {
  report: FinalReport;
  output?: unknown;
}

/** `--help` / `-h` was asked for: the entry prints `usage` on stdout and exits 0. */
export class UsageRequested extends Error {
  constructor(readonly usage: string) {
    super(usage);
    this.name = "UsageRequested";
  }
}

/** parseArgs (strict, no positionals) over `args`; a parse error is a CliError followed by `usage`. */
export function parseFlags<O extends Record<string, { type: "string" | "boolean" }>>(
  args: string[],
  options: O,
  usage: string,
) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new CliError(`${(e as Error).message}\n${usage}`);
  }
}

/** `--name` as a non-negative integer ≥ min (undefined when absent). */
export function intFlag(name: string, v: string | undefined, min = 0): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new CliError(`--${name}: expected an integer ≥ ${min}, got "${v}"`);
  return Number(v);
}

/** `--name` as a finite number in [min, max] (undefined when absent). */
export function numberFlag(name: string, v: string | undefined, min = -Infinity, max = Infinity): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x) || x < min || x > max)
    throw new CliError(`--${name}: expected a number in [${min}, ${max}], got "${v}"`);
  return x;
}

/** Parse a JSON object; errors name `what` (a flag, file or environment variable). */
export function parseJson(what: string, text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new CliError(`${what}: invalid JSON (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Training commands (commands/tokenizer.ts, commands/ar.ts)

/** Flags both training commands take (spread into their parseArgs options with their own). */
export const TRAINING_FLAGS = {
  data: { type: "string" },
  out: { type: "string" },
  steps: { type: "string" },
  batch: { type: "string" },
  seed: { type: "string" },
  backend: { type: "string" },
  resume: { type: "string" },
  "train-config": { type: "string" },
} as const;

/** Env contract variables both training commands read (spread into their zod object with their own extras). */
export const TRAINING_ENV = {
  [ENV.MODEL_CONFIG]: z.string().optional(),
  [ENV.TRAIN_CONFIG]: z.string().optional(),
  [ENV.DATASET_URI]: envUri().optional(),
  [ENV.DATASET_FORMAT]: z.enum(["folder", "tar-shards"]).optional(),
  [ENV.CHECKPOINT_DIR]: envUri().optional(),
  [ENV.CHECKPOINT_INTERVAL]: envInt({ min: 0 }).optional(),
  [ENV.CHECKPOINT_KEEP_LAST]: envInt({ min: 0 }).optional(),
  [ENV.CHECKPOINT_SAVE_ON_SIGTERM]: z.enum(["true", "false"]).optional(),
  [ENV.RESUME_FROM]: envUri().optional(),
  [ENV.STATUS_URI]: envUri().optional(),
  [ENV.TERMINATION_MESSAGE_PATH]: z.string().optional(),
  [ENV.RUN]: z.string().optional(),
  [ENV.ATTEMPT]: z.string().optional(),
};

/** Where a training run reads and writes. */
export interface TrainingPaths {
  data: string;
  out: string;
  /** CHECKPOINT_DIR, else <out>/checkpoints. */
  checkpointDir: string;
  /** MERGEVQ_STATUS_URI, else <out>. */
  statusUri: string;
}

/** --data / --out, else DATASET_URI / CHECKPOINT_DIR (required; data must be a folder, file:// or s3://). */
export function trainingPaths(
  flags: { data?: string; out?: string },
  env: { [ENV.DATASET_URI]?: string; [ENV.CHECKPOINT_DIR]?: string; [ENV.STATUS_URI]?: string },
): TrainingPaths {
  const data = flags.data ?? env[ENV.DATASET_URI];
  if (!data) throw new CliError(`--data is required (or set ${ENV.DATASET_URI})`);
  if (!["file", "s3"].includes(uriScheme(data)))
    throw new CliError(`--data ${data}: only folders, file:// and s3:// are read`);
  const checkpointDirEnv = env[ENV.CHECKPOINT_DIR];
  const out = flags.out ?? checkpointDirEnv;
  if (!out) throw new CliError(`--out is required (or set ${ENV.CHECKPOINT_DIR})`);
  const checkpointDir = checkpointDirEnv ?? joinUri(out, "checkpoints");
  const statusUri = env[ENV.STATUS_URI] ?? out;
  return { data, out, checkpointDir, statusUri };
}

/** Serve s3:// (configured from AWS_*) when any of `uris` is s3://; local-only runs never load the AWS SDK. */
export async function registerS3For(uris: (string | undefined)[]): Promise<void> {
  if (uris.some((u) => u !== undefined && uriScheme(u) === "s3")) (await import("../io/s3.ts")).useS3();
}

/**
 * The checkpoint a training run resumes from: --resume, else RESUME_FROM. Under the operator (MERGEVQ_ATTEMPT
 * set) only those resume: the operator sets RESUME_FROM on restarts, and a new run reusing a checkpoint.uri
 * must not silently continue an older run's checkpoint. By hand, the newest checkpoint under the dir.
 */
export async function resumeFrom(
  flag: string | undefined,
  env: { [ENV.RESUME_FROM]?: string; [ENV.ATTEMPT]?: string },
  checkpointDir: string,
): Promise<string | undefined> {
  return (
    flag ?? env[ENV.RESUME_FROM] ?? (env[ENV.ATTEMPT] === undefined ? await latestCheckpoint(checkpointDir) : undefined)
  );
}

/**
 * Checkpoint on SIGTERM (CHECKPOINT_SAVE_ON_SIGTERM, default "true"): install the handler before the process
 * group exists, so the group leaves SIGTERM to the training loop (train/stopSignal.ts).
 */
export function installSigtermCheckpoint(env: { [ENV.CHECKPOINT_SAVE_ON_SIGTERM]?: string }, log: Logger): void {
  if (env[ENV.CHECKPOINT_SAVE_ON_SIGTERM] === "false") return;
  stopSignal.install(() => {
    log.warn("SIGTERM outside the training loop: nothing to checkpoint, exiting 143");
    process.exit(143);
  });
}

/** What runTrainingJob needs from a built trainer (TokenizerTrainer, ARTrainer). */
export interface JobTrainer<S> {
  step: number;
  readonly lastCheckpoint: string | undefined;
  resume(uri: string): Promise<void>;
  attachProcessGroup(pg: ProcessGroup): void;
  syncFromRank0(): Promise<void>;
  run(): Promise<S>;
  writeMetrics(report: { metrics: Record<string, number>; notes?: string[]; imageUris?: string[] }): Promise<void>;
}

/**
 * The sequence every training command runs once its trainer is built: SIGTERM checkpoint handler → resume
 * (--resume, RESUME_FROM, or the newest checkpoint by hand) → process group (WORLD_SIZE > 1; `hashed` must match
 * on every rank) → train → leave the group → (rank 0) `finish` computes the final metrics → metrics.json and the
 * termination message. A NaN/Inf stop writes its own termination message before rethrowing.
 */
/**
 * The start of both training commands: flags (parse errors name the flag, then `usage`), the env contract
 * (errors name the variable), this process's rank, and the run/rank-tagged logger.
 */
export function startTrainingCommand<O extends Record<string, { type: "string" | "boolean" }>, S extends z.ZodObject>(
  args: string[],
  o: { options: O; usage: string; env: S; component: string; log?: Logger },
) {
  const values = parseFlags(args, o.options, o.usage);
  const env = parseEnv(o.env);
  const { rank, worldSize } = rankFromEnv();
  const run = (env as Record<string, unknown>)[ENV.RUN] as string | undefined;
  const logger = o.log ?? createLogger({ component: o.component, run, rank });
  return { values, env, rank, worldSize, logger };
}

/** Where and as which rank a training command runs (what runTrainingJob needs besides the trainer). */
export interface JobContext {
  env: { [ENV.RESUME_FROM]?: string; [ENV.ATTEMPT]?: string; [ENV.CHECKPOINT_SAVE_ON_SIGTERM]?: string } & {
    [ENV.TERMINATION_MESSAGE_PATH]?: string;
  };
  resumeFlag: string | undefined;
  checkpointDir: string;
  rank: number;
  worldSize: number;
  log: Logger;
}

export async function runTrainingJob<S>(
  trainer: JobTrainer<S>,
  ctx: JobContext,
  job: {
    /** Everything that must match across ranks (hashed at the rendezvous). */
    hashed: unknown;
    notes: string[];
    /** Release the data source (after the process group is left). */
    closeData(): void;
    /** Rank 0, after training: the final metrics (and any images written). */
    finish(summary: S): Promise<{ metrics: Record<string, number>; imageUris?: string[] }>;
  },
): Promise<CliResult> {
  const { env, log } = ctx;
  const { notes } = job;
  installSigtermCheckpoint(env, log);
  const resume = await resumeFrom(ctx.resumeFlag, env, ctx.checkpointDir);
  if (resume) {
    const src = ctx.resumeFlag
      ? "--resume"
      : env[ENV.RESUME_FROM]
        ? ENV.RESUME_FROM
        : `latest under ${ctx.checkpointDir}`;
    try {
      await trainer.resume(resume);
    } catch (e) {
      if (e instanceof CheckpointError) throw new CheckpointError(`${src} ${resume}: ${e.message}`);
      throw e;
    }
    notes.push(`resumed from ${resume} (step ${trainer.step})`);
  }
  const pg = ctx.worldSize > 1 ? await joinProcessGroup(trainer, job.hashed, log) : undefined;
  try {
    const summary = await trainer.run();
    // Leave the group before rank 0's (possibly long) evaluation: nobody waits in a collective meanwhile.
    await pg?.close();
    job.closeData();
    if (ctx.rank !== 0) {
      log.info({ step: trainer.step }, "training finished on this rank; rank 0 reports");
      return { report: { metrics: {}, step: trainer.step } };
    }
    const { metrics, imageUris = [] } = await job.finish(summary);
    const report: FinalReport = {
      metrics,
      artifacts:
        trainer.lastCheckpoint || imageUris.length
          ? { checkpointUri: trainer.lastCheckpoint, imageUris: imageUris.length ? imageUris : undefined }
          : undefined,
      notes: notes.length ? notes : undefined,
      step: trainer.step,
      updatedAt: new Date().toISOString(),
    };
    await trainer.writeMetrics({ metrics, notes, imageUris });
    writeTermination(env[ENV.TERMINATION_MESSAGE_PATH], report);
    log.info({ metrics, checkpoint: trainer.lastCheckpoint }, "training finished");
    return { report };
  } catch (e) {
    if (e instanceof NonFiniteLossError && ctx.rank === 0)
      writeTermination(env[ENV.TERMINATION_MESSAGE_PATH], nonFiniteReport(e));
    throw e;
  }
}
