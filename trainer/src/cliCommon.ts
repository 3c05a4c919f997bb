// Pieces shared by the trainer's command-line entry points (trainer/src/cli.ts dispatches; the tokenizer,
// AR and sampling commands live in cli.ts, ar/cli.ts, sample/cli.ts): the usage-error class (exit code 2),
// the result type, small flag/JSON parsers whose errors name the flag or variable, and the env contract and
// run plumbing the two training commands (`train-tokenizer`, `train-ar`) share.
import { parseArgs } from "node:util";
import { z } from "zod";
import { ENV, type FinalReport } from "../../common/src/contract.ts";
import { envInt, envUri } from "../../common/src/env.ts";
import type { Logger } from "../../common/src/logger.ts";
import { configHash, initProcessGroup, type ProcessGroup } from "./dist/processGroup.ts";
import { latestCheckpoint } from "./train/checkpoint.ts";
import { stopSignal } from "./train/stopSignal.ts";
import { joinUri, registerS3FromDataPlane, uriScheme } from "./train/storage.ts";

export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

export interface CliResult {
  report: FinalReport;
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

/**
 * Stage II and sampling commands, loaded on demand (dynamic imports live here and not in cli.ts: tsx's lexer
 * cannot parse a dynamic import in a file that starts with a shebang). Undefined when argv is none of them.
 *   train-ar | ar …                          → ar/cli.ts arMain
 *   sample | reduce | eval reference-stats   → sample/cli.ts samplingCli
 */
export async function dispatchStage2(argv: string[], log?: Logger): Promise<CliResult | undefined> {
  if (argv[0] === "train-ar" || argv[0] === "ar") return (await import("./ar/cli.ts")).arMain(argv, log);
  if (argv[0] === "backend") return (await import("./backendCheck.ts")).backendMain(argv.slice(1));
  if (argv[0] === "sample" || argv[0] === "reduce" || (argv[0] === "eval" && argv[1] === "reference-stats"))
    return (await import("./sample/cli.ts")).samplingCli(argv, log);
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Training commands (tokenizer: cli.ts; AR: ar/cli.ts)

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
  help: { type: "boolean" },
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

/** Configure the S3 storage from the data-plane env (AWS_*) when any of `uris` is s3://. */
export async function registerS3For(uris: (string | undefined)[]): Promise<void> {
  if (uris.some((u) => u !== undefined && uriScheme(u) === "s3")) await registerS3FromDataPlane();
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

/**
 * WORLD_SIZE > 1: rendezvous (`hashed` = everything that must match across ranks), attach the group to the
 * trainer and make every rank hold rank 0's state. Returns the group (close it after training).
 */
export async function joinProcessGroup(
  trainer: { step: number; attachProcessGroup(pg: ProcessGroup): void; syncFromRank0(): Promise<void> },
  hashed: unknown,
  log: Logger,
): Promise<ProcessGroup> {
  // With the SIGTERM checkpoint handler installed, the group must not tear itself down on SIGTERM: the loop
  // stops every rank at one step boundary instead (train/stopSignal.ts).
  const pg = await initProcessGroup({
    configHash: configHash(hashed),
    step: trainer.step,
    log,
    handleSignals: !stopSignal.installed,
  });
  log.info({ rank: pg.rank, worldSize: pg.worldSize, neighbours: pg.neighbours }, "process group ready");
  trainer.attachProcessGroup(pg);
  await trainer.syncFromRank0();
  return pg;
}
