// mergevq-trainer Stage II (AR generator) commands, dispatched from trainer/src/cli.ts:
//   train-ar   the operator's default argument for an ARTraining: everything from the env contract
//   ar train   --tokenizer <ckpt uri> --data <dir|uri> --out <dir|uri> [--size tiny|B|L|XL] [--steps N]
//              [--batch B] [--accum A] [--lr X] [--warmup N] [--weight-decay X] [--grad-clip X]
//              [--num-classes N] [--class-dropout p] [--merge-ar] [--window w] [--seed N] [--backend X]
//              [--resume uri] [--model-config spec.model.json] [--train-config spec.training.json]
//              [--checkpoint-interval N] [--keep-last N] [--log-every N] [--data-limit N]
// Both accept every flag; flags override the environment. Operator env contract (common/src/contract.ts,
// operator/src/reconcile/desired.ts runEnv):
//   MERGEVQ_MODEL_CONFIG          JSON of ARTraining spec.model {size, numClasses, classDropout, mergeAR{enabled, window}}
//   MERGEVQ_TRAIN_CONFIG          JSON of spec.training {steps, batchSize, gradAccumulation, learningRate, warmupSteps,
//                                 weightDecay, gradClip, seed, logEverySteps}
//   MERGEVQ_TOKENIZER_CHECKPOINT  the frozen tokenizer (a tokenizer-train checkpoint: EMA weights are used)
//   DATASET_URI, DATASET_FORMAT   images + labels (local folder / file:// / s3:// tar shards)
//   CHECKPOINT_DIR, CHECKPOINT_INTERVAL, CHECKPOINT_KEEP_LAST, RESUME_FROM, MERGEVQ_STATUS_URI,
//   TERMINATION_MESSAGE_PATH, MERGEVQ_ATTEMPT, TFJS_BACKEND, and the rendezvous variables (WORLD_SIZE > 1:
//   data parallel over trainer/src/dist, as the tokenizer trainer).
// `ar train` without a model config: size tiny, numClasses = the class folders of a local --data folder
// (else 1000), classDropout 0.1, MergeAR off. Output: <out>/checkpoints/step-*.ckpt (kind "ar-train"),
// <out>/progress.json, <out>/metrics.json (FinalReport: metrics loss, loss_pre, loss_post, tokensPerSecond,
// sequencesPerSecond; artifacts.checkpointUri = final checkpoint; notes name the tokenizer and the backend).
import { existsSync, readFileSync } from "node:fs";
import { z } from "zod";
import { ENV } from "../../../common/src/contract.ts";
import type { Logger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { isShardDataset } from "../data/dataset.ts";
import { listImageFolder } from "../data/localFolder.ts";
import { toLocalPath, uriScheme } from "../io/uri.ts";
import {
  ARConfigError,
  type ARTrainConfig,
  type ParsedARModelSpec,
  parseARModelSpec,
  parseARTrainConfig,
} from "../train/arConfig.ts";
import { buildARTrainer } from "../train/arSetup.ts";
import { reportedLosses } from "../train/arTrainer.ts";
import {
  CliError,
  type CliResult,
  intFlag,
  type JobContext,
  numberFlag,
  parseJson,
  registerS3For,
  runTrainingJob,
  startTrainingCommand,
  TRAINING_ENV,
  TRAINING_FLAGS,
  trainingPaths,
} from "./common.ts";

export const AR_USAGE = `usage: mergevq-trainer ar train --tokenizer <ckpt uri> --data <dir|uri> --out <dir|uri>
  [--size tiny|B|L|XL] [--steps N] [--batch B] [--accum A] [--lr X] [--warmup N] [--weight-decay X]
  [--grad-clip X] [--num-classes N] [--class-dropout p] [--merge-ar] [--window w] [--seed N]
  [--backend tensorflow-gpu|tensorflow|wasm|cpu] [--resume uri] [--model-config file.json]
  [--train-config file.json] [--checkpoint-interval N] [--keep-last N] [--log-every N] [--data-limit N]
       mergevq-trainer train-ar [same flags]   (operator default: everything from the env contract)`;

const OPTIONS = {
  ...TRAINING_FLAGS,
  tokenizer: { type: "string" },
  size: { type: "string" },
  accum: { type: "string" },
  lr: { type: "string" },
  warmup: { type: "string" },
  "weight-decay": { type: "string" },
  "grad-clip": { type: "string" },
  "num-classes": { type: "string" },
  "class-dropout": { type: "string" },
  "merge-ar": { type: "boolean" },
  window: { type: "string" },
  "model-config": { type: "string" },
  "checkpoint-interval": { type: "string" },
  "keep-last": { type: "string" },
  "log-every": { type: "string" },
  "data-limit": { type: "string" },
} as const;

const ContractEnv = z.object({
  ...TRAINING_ENV,
  [ENV.TOKENIZER_CHECKPOINT]: z.string().min(1).optional(),
});

/** ARTraining spec.training field → trainer field (ARTrainConfigSchema). */
const TRAINING_FIELDS: Record<string, keyof ARTrainConfig> = {
  steps: "steps",
  batchSize: "batchSize",
  gradAccumulation: "accum",
  learningRate: "lr",
  warmupSteps: "warmupSteps",
  weightDecay: "weightDecay",
  gradClip: "gradClip",
  seed: "seed",
  logEverySteps: "logEvery",
};

/** spec.training (CRD shape) → trainer training fields; unknown fields are errors naming `source`. */
export function arTrainFromContract(training: Record<string, unknown>, source: string): Partial<ARTrainConfig> {
  const unknown = Object.keys(training).filter((k) => !(k in TRAINING_FIELDS));
  if (unknown.length) {
    throw new CliError(
      `${source}: unknown field(s): ${unknown.join(", ")} (expected ${Object.keys(TRAINING_FIELDS).join(", ")})`,
    );
  }
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(training)) out[TRAINING_FIELDS[k]] = v;
  return out as Partial<ARTrainConfig>;
}

function readJsonFile(flag: string, file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new CliError(`--${flag}: file ${file} does not exist`);
  return parseJson(`--${flag} ${file}`, readFileSync(file, "utf8"));
}

/** `train-ar …` / `ar train …` (see the header). */
export async function arMain(argv: string[], log?: Logger): Promise<CliResult> {
  let rest: string[];
  let local: boolean;
  if (argv[0] === "train-ar") {
    rest = argv.slice(1);
    local = false;
  } else if (argv[0] === "ar" && argv[1] === "train") {
    rest = argv.slice(2);
    local = true;
  } else {
    throw new CliError(`unknown command "${argv.slice(0, 2).join(" ")}"\n${AR_USAGE}`);
  }
  const { values, env, rank, worldSize, logger } = startTrainingCommand(rest, {
    options: OPTIONS,
    usage: AR_USAGE,
    env: ContractEnv,
    component: "ar-trainer",
    log,
  });

  const tokenizerUri = values.tokenizer ?? env[ENV.TOKENIZER_CHECKPOINT];
  const tokenizerSource = values.tokenizer ? "--tokenizer" : ENV.TOKENIZER_CHECKPOINT;
  if (!tokenizerUri)
    throw new CliError(`--tokenizer is required (or set ${ENV.TOKENIZER_CHECKPOINT} to a tokenizer-train checkpoint)`);
  const { data, out, checkpointDir, statusUri } = trainingPaths(values, env);
  await registerS3For([tokenizerUri, data, out, checkpointDir, statusUri, values.resume, env[ENV.RESUME_FROM]]);
  const localData = uriScheme(data) === "file" ? toLocalPath(data) : data;

  // Model: --model-config file or MERGEVQ_MODEL_CONFIG (spec.model), then flags.
  let modelInput: Record<string, unknown>;
  let modelSource: string;
  if (values["model-config"]) {
    modelInput = readJsonFile("model-config", values["model-config"]);
    modelSource = `--model-config ${values["model-config"]}`;
  } else if (env[ENV.MODEL_CONFIG] !== undefined) {
    modelInput = parseJson(ENV.MODEL_CONFIG, env[ENV.MODEL_CONFIG] as string);
    modelSource = ENV.MODEL_CONFIG;
  } else {
    modelInput = {};
    modelSource = "model flags";
    if (local) {
      modelInput.size = "tiny";
      if (values["num-classes"] === undefined && !(await isShardDataset(localData, env[ENV.DATASET_FORMAT]))) {
        try {
          modelInput.numClasses = Math.max(1, (await listImageFolder(localData, "train")).classes.length);
        } catch (e) {
          throw new CliError((e as Error).message);
        }
      }
    }
  }
  if (values.size !== undefined) modelInput.size = values.size;
  const numClasses = intFlag("num-classes", values["num-classes"], 1);
  if (numClasses !== undefined) modelInput.numClasses = numClasses;
  const classDropout = numberFlag("class-dropout", values["class-dropout"], 0, 1);
  if (classDropout !== undefined) modelInput.classDropout = classDropout;
  const window = intFlag("window", values.window, 1);
  if (values["merge-ar"] || window !== undefined) {
    const m = { ...((modelInput.mergeAR as Record<string, unknown> | undefined) ?? {}) };
    if (values["merge-ar"]) m.enabled = true;
    if (window !== undefined) m.window = window;
    modelInput.mergeAR = m;
  }
  let model: ParsedARModelSpec;
  try {
    model = parseARModelSpec(modelInput, modelSource);
  } catch (e) {
    if (e instanceof ARConfigError) throw new CliError(e.message);
    throw e;
  }

  // Training: --train-config file or MERGEVQ_TRAIN_CONFIG (spec.training, CRD field names), then flags/env.
  let trainInput: Record<string, unknown> = {};
  let trainSource = "training flags";
  if (values["train-config"]) {
    trainSource = `--train-config ${values["train-config"]}`;
    trainInput = arTrainFromContract(readJsonFile("train-config", values["train-config"]), trainSource);
  } else if (env[ENV.TRAIN_CONFIG] !== undefined) {
    trainSource = ENV.TRAIN_CONFIG;
    trainInput = arTrainFromContract(parseJson(ENV.TRAIN_CONFIG, env[ENV.TRAIN_CONFIG] as string), trainSource);
  }
  const flags: [keyof ARTrainConfig, number | undefined][] = [
    ["steps", intFlag("steps", values.steps, 1)],
    ["batchSize", intFlag("batch", values.batch, 1)],
    ["accum", intFlag("accum", values.accum, 1)],
    ["lr", numberFlag("lr", values.lr, Number.MIN_VALUE, 1)],
    ["warmupSteps", intFlag("warmup", values.warmup)],
    ["weightDecay", numberFlag("weight-decay", values["weight-decay"], 0, 1)],
    ["gradClip", numberFlag("grad-clip", values["grad-clip"], Number.MIN_VALUE)],
    ["seed", intFlag("seed", values.seed)],
    ["logEvery", intFlag("log-every", values["log-every"], 1)],
    [
      "checkpointInterval",
      intFlag("checkpoint-interval", values["checkpoint-interval"]) ?? env[ENV.CHECKPOINT_INTERVAL],
    ],
    ["keepLast", intFlag("keep-last", values["keep-last"]) ?? env[ENV.CHECKPOINT_KEEP_LAST]],
  ];
  for (const [k, v] of flags) if (v !== undefined) trainInput[k] = v;
  if (trainInput.steps === undefined)
    throw new CliError(`--steps is required (or training.steps in ${ENV.TRAIN_CONFIG} / --train-config)`);
  let train: ARTrainConfig;
  try {
    train = parseARTrainConfig(trainInput, trainSource);
  } catch (e) {
    if (e instanceof ARConfigError) throw new CliError(e.message);
    throw e;
  }

  const backend = await selectBackend({ requested: values.backend, log: logger });
  let built: Awaited<ReturnType<typeof buildARTrainer>>;
  try {
    built = await buildARTrainer({
      model,
      train,
      tokenizer: tokenizerUri,
      tokenizerSource,
      data: localData,
      dataFormat: env[ENV.DATASET_FORMAT],
      log: logger,
      rank,
      worldSize,
      checkpointDir,
      statusUri,
      backend: backend.name,
      dataLimit: intFlag("data-limit", values["data-limit"], 1),
    });
  } catch (e) {
    if (e instanceof ARConfigError) throw new CliError(e.message);
    throw e;
  }
  const { trainer } = built;
  const notes = [...built.notes];

  const ctx: JobContext = { env, resumeFlag: values.resume, checkpointDir, rank, worldSize, log: logger };
  return runTrainingJob(trainer, ctx, {
    hashed: { arConfig: built.arConfig, train, data, tokenizer: tokenizerUri, worldSize },
    notes,
    closeData: () => built.data.close(),
    finish: async (summary) => {
      const { loss: _l, loss_pre: _p, loss_post: _q, ...diagnostics } = summary.losses;
      const metrics: Record<string, number> = {};
      for (const [k, v] of Object.entries({ ...reportedLosses(summary.losses), ...diagnostics }))
        if (Number.isFinite(v)) metrics[k] = v;
      metrics.sequencesPerSecond = summary.sequencesPerSecond;
      metrics.tokensPerSecond = summary.tokensPerSecond;
      return { metrics };
    },
  });
}
