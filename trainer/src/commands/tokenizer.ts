// Stage I commands (the MergeVQ tokenizer), dispatched by trainer/src/commands/index.ts:
//   tokenizer train       --config <preset|file.json> --data <dir|uri> --out <dir|uri> [--steps N] [--batch B]
//                         [--backend X] [--train-config <file.json>] [--resume <uri>] [--seed N]
//   tokenizer eval        --config … --data … --out … --checkpoint <uri> [--K k] [--images N] [--backend X]
//   tokenizer reconstruct --config … --data … --out … --checkpoint <uri> [--K k] [--images N] [--backend X]
//   train-tokenizer       the operator's default argument: `tokenizer train` driven by the env contract alone
// Operator env contract (common/src/contract.ts, operator/src/README.md), used when the flag is absent:
//   MERGEVQ_MODEL_CONFIG  JSON of the CRD's spec.model (preset | variant+size, imageSize, keepTokens,
//                         evalKeepTokens, codebookBits, teacherUri, perceptualUri, overrides) — see
//                         train/crdConfig.ts. (`--config file.json` takes the trainer's own config fields.)
//   MERGEVQ_TRAIN_CONFIG  JSON of spec.training + {evaluation} (steps, batchSize, gradAccumulation, learningRate,
//                         lrDropSteps, seed, emaDecay, logEverySteps; evaluation.enabled/numImages/inceptionUri).
//                         (`--train-config file.json` takes train/config.ts fields.)
//   DATASET_URI (+ DATASET_FORMAT folder|tar-shards; s3:// = shards), CHECKPOINT_DIR, CHECKPOINT_INTERVAL,
//   CHECKPOINT_KEEP_LAST, RESUME_FROM, MERGEVQ_STATUS_URI, MERGEVQ_TEACHER_URI, MERGEVQ_PERCEPTUAL_URI,
//   MERGEVQ_INCEPTION_URI, TERMINATION_MESSAGE_PATH, TFJS_BACKEND, and the rendezvous variables
//   (MASTER_ADDR/PORT, NNODES, NODE_RANK, NPROC_PER_NODE, WORLD_SIZE, MERGEVQ_POD_IP).
// WORLD_SIZE > 1: data-parallel training over a process group (trainer/src/dist): initial state broadcast
// from rank 0, G and D gradients averaged every optimiser step; only rank 0 writes checkpoints, status and
// the final report. At the end of `train` rank 0 evaluates with EMA weights on held-out images: rFID per
// evaluation K (computeRfidPerK; `rFID` = the nominal K, labelled keys kept, notes say when the Inception
// weights are random), held-out L1 and codebook usage, and a reconstruction grid PNG (originals in the top
// row, one row of reconstructions per K below) uploaded to <CHECKPOINT_DIR>/artifacts/reconstruction.png.
import { existsSync, readFileSync } from "node:fs";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { z } from "zod";
import { ENV, type FinalReport } from "../../../common/src/contract.ts";
import { envUri } from "../../../common/src/env.ts";
import type { Logger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { type BatchSource, disposeBatch } from "../data/localFolder.ts";
import { InceptionExtractor } from "../eval/inception.ts";
import { computeRfidPerK, type ReconstructionBatch } from "../eval/rfid.ts";
import { latestCheckpoint } from "../io/checkpoint.ts";
import { writeMetricsJson, writeTermination } from "../io/status.ts";
import { storageFor } from "../io/storage.ts";
import { joinUri, toLocalPath, uriScheme } from "../io/uri.ts";
import { resolveConfig } from "../tokenizer/config.ts";
import { ContractConfigError, modelFromContract, trainFromContract } from "../train/crdConfig.ts";
import { buildTrainer } from "../train/setup.ts";
import type { TokenizerTrainer } from "../train/tokenizerTrainer.ts";
import { describeZodError, unknownKeys } from "../util/configErrors.ts";
import {
  CliError,
  type CliResult,
  intFlag,
  type JobContext,
  parseJson,
  registerS3For,
  runTrainingJob,
  startTrainingCommand,
  TRAINING_ENV,
  TRAINING_FLAGS,
  trainingPaths,
} from "./common.ts";

const COMMON_FLAGS = `  --config <preset|file.json>  model: a preset name (T0, T1, G, GR, R, …) or a JSON file of model fields
                               (default: MERGEVQ_MODEL_CONFIG, the CRD's spec.model)
  --data <dir|file://|s3://>   images: a class-folder tree or tar shards (default: DATASET_URI)
  --out <dir|uri>              output prefix (default: CHECKPOINT_DIR)
  --backend <name>             tensorflow-gpu | tensorflow | wasm | cpu (default: TFJS_BACKEND, else the fastest)`;

export const TOKENIZER_USAGE = {
  train: `usage: mergevq-trainer tokenizer train --config <preset|file.json> --data <dir|uri> --out <dir|uri> [flags]
Train the MergeVQ tokenizer, then evaluate rFID / L1 / codebook usage with EMA weights on held-out images.
${COMMON_FLAGS}
  --steps N --batch B --seed N  override the training config
  --train-config <file.json>   training fields (default: MERGEVQ_TRAIN_CONFIG, the CRD's spec.training)
  --resume <uri>               continue from this checkpoint (default: RESUME_FROM, else the newest under --out)
  --K k                        evaluate at this keep count only`,
  eval: `usage: mergevq-trainer tokenizer eval --config … --data … --out … [--checkpoint <uri>] [--K k] [--images N]
Held-out L1, LPIPS and codebook usage of a checkpoint (EMA weights) at every candidate K (or --K).
${COMMON_FLAGS}
  --checkpoint <uri>           the checkpoint (default: RESUME_FROM, else the newest under --out)
  --images N                   held-out images to use`,
  reconstruct: `usage: mergevq-trainer tokenizer reconstruct --config … --data … --out … [--checkpoint <uri>] [--K k] [--images N]
Write <out>/reconstructions-K<k>.png: each row an original and its reconstruction (EMA weights).
${COMMON_FLAGS}
  --checkpoint <uri>           the checkpoint (default: RESUME_FROM, else the newest under --out)
  --images N                   rows in the grid (default 8)`,
  "train-tokenizer": `usage: mergevq-trainer train-tokenizer [tokenizer train flags]
The operator's default container argument for a TokenizerTraining: \`tokenizer train\` with every setting from
the env contract (MERGEVQ_MODEL_CONFIG, MERGEVQ_TRAIN_CONFIG, DATASET_URI, CHECKPOINT_DIR, …); flags override it.`,
} as const;

const OPTIONS = {
  ...TRAINING_FLAGS,
  config: { type: "string" },
  checkpoint: { type: "string" },
  K: { type: "string" },
  images: { type: "string" },
} as const;

const ContractEnv = z.object({
  ...TRAINING_ENV,
  [ENV.INCEPTION_URI]: z.string().min(1).optional(),
  [ENV.TEACHER_URI]: envUri().optional(),
  [ENV.PERCEPTUAL_URI]: envUri().optional(),
});

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
    return new CliError(describeZodError(source, e));
  }
  return new CliError(`${source}: ${(e as Error).message}`);
}

/** `tokenizer train|eval|reconstruct …` and `train-tokenizer …` (see the header). */
export async function tokenizerMain(argv: string[], log?: Logger): Promise<CliResult> {
  // The operator's default container args: ["train-tokenizer"] (+ optional flags).
  if (argv[0] === "train-tokenizer") argv = ["tokenizer", "train", ...argv.slice(1)];
  const [group, command, ...rest] = argv;
  if (group !== "tokenizer" || !["train", "eval", "reconstruct"].includes(command ?? "")) {
    throw new CliError(`unknown command "${[group, command].filter(Boolean).join(" ")}"`);
  }
  const { values, env, rank, worldSize, logger } = startTrainingCommand(rest, {
    options: OPTIONS,
    usage: TOKENIZER_USAGE[command as keyof typeof TOKENIZER_USAGE],
    env: ContractEnv,
    component: "trainer",
    log,
  });
  if (worldSize > 1 && command !== "train") {
    throw new CliError(
      `WORLD_SIZE: ${worldSize} ranks: only "tokenizer train" runs data-parallel; run ${command} with WORLD_SIZE=1`,
    );
  }
  await registerS3For([
    values.out,
    values.data ?? env[ENV.DATASET_URI],
    env[ENV.CHECKPOINT_DIR],
    env[ENV.STATUS_URI],
    env[ENV.RESUME_FROM],
  ]);

  // Model config: `--config` (preset name or a file with the trainer's fields) or the CRD's spec.model.
  let modelInput: string | Record<string, unknown>;
  let contractEvalKs: number[] | undefined;
  const trainFromModel: Record<string, unknown> = {};
  if (values.config !== undefined) {
    modelInput = modelConfigInput(values.config, undefined);
  } else if (env[ENV.MODEL_CONFIG] !== undefined) {
    try {
      const m = modelFromContract(parseJson(ENV.MODEL_CONFIG, env[ENV.MODEL_CONFIG] as string));
      modelInput = m.input;
      contractEvalKs = m.evalKs;
      Object.assign(trainFromModel, m.train);
    } catch (e) {
      if (e instanceof ContractConfigError) throw new CliError(e.message);
      throw e;
    }
  } else {
    throw new CliError(`--config is required (or set ${ENV.MODEL_CONFIG})`);
  }
  // Training config: `--train-config` (train/config.ts fields) or the CRD's spec.training + evaluation.
  let trainInput: Record<string, unknown>;
  let inceptionUri = env[ENV.INCEPTION_URI];
  const extraNotes: string[] = [];
  if (values["train-config"]) {
    trainInput = parseJson(`--train-config ${values["train-config"]}`, readFileSync(values["train-config"], "utf8"));
  } else if (env[ENV.TRAIN_CONFIG] !== undefined) {
    try {
      const t = trainFromContract(parseJson(ENV.TRAIN_CONFIG, env[ENV.TRAIN_CONFIG] as string));
      trainInput = t.train;
      inceptionUri = t.evaluation.inceptionUri ?? inceptionUri;
      if (t.evaluation.referenceStatsUri)
        extraNotes.push(`evaluation.referenceStatsUri is not used for rFID (the held-out originals are the reference)`);
    } catch (e) {
      if (e instanceof ContractConfigError) throw new CliError(e.message);
      throw e;
    }
  } else {
    trainInput = {};
  }
  for (const [k, v] of Object.entries(trainFromModel)) trainInput[k] ??= v;
  const steps = intFlag("steps", values.steps);
  const batchSize = intFlag("batch", values.batch, 1);
  const seed = intFlag("seed", values.seed);
  if (steps !== undefined) trainInput.steps = steps;
  if (batchSize !== undefined) trainInput.batchSize = batchSize;
  if (seed !== undefined) trainInput.seed = seed;
  if (env[ENV.CHECKPOINT_INTERVAL] !== undefined) trainInput.checkpointInterval = env[ENV.CHECKPOINT_INTERVAL];
  if (env[ENV.CHECKPOINT_KEEP_LAST] !== undefined) trainInput.keepLast = env[ENV.CHECKPOINT_KEEP_LAST];
  if (env[ENV.TEACHER_URI] && trainInput.teacher === undefined) trainInput.teacher = env[ENV.TEACHER_URI];
  if (env[ENV.PERCEPTUAL_URI] && trainInput.perceptual === undefined) trainInput.perceptual = env[ENV.PERCEPTUAL_URI];

  const { data, out, checkpointDir, statusUri } = trainingPaths(values, env);

  const configSource = values.config ? `--config ${values.config}` : ENV.MODEL_CONFIG;
  let resolvedModel: ReturnType<typeof resolveConfig>;
  try {
    resolvedModel = typeof modelInput === "string" ? resolveConfig(modelInput) : resolveConfig(modelInput as never);
  } catch (e) {
    throw configError(configSource, e);
  }
  if (typeof modelInput === "object" && values.config !== undefined) {
    // The model schema strips unknown keys silently; a typo in a config file must be an error.
    const unknown = unknownKeys(modelInput, resolvedModel as unknown as Record<string, unknown>, ["preset"]);
    if (unknown.length) throw new CliError(`--config ${values.config}: unknown field(s): ${unknown.join(", ")}`);
  }
  const backend = await selectBackend({ requested: values.backend, log: logger });
  let built: Awaited<ReturnType<typeof buildTrainer>>;
  try {
    built = await buildTrainer({
      model: modelInput,
      train: trainInput,
      data: uriScheme(data) === "file" ? toLocalPath(data) : data,
      dataFormat: env[ENV.DATASET_FORMAT],
      out,
      log: logger,
      rank,
      worldSize,
      checkpointDir,
      statusUri,
      backend: backend.name,
    });
  } catch (e) {
    if (e instanceof z.ZodError) throw configError(configSource, e);
    if (/training config|--train-config|MERGEVQ_TRAIN_CONFIG/.test((e as Error).message))
      throw new CliError((e as Error).message);
    throw e;
  }
  const { trainer } = built;
  const notes = [...built.notes, ...extraNotes];
  const K = intFlag("K", values.K, 1);
  const images = intFlag("images", values.images, 1);

  if (command === "train") {
    const ctx: JobContext = { env, resumeFlag: values.resume, checkpointDir, rank, worldSize, log: logger };
    return runTrainingJob(trainer, ctx, {
      // Everything that must match across ranks: model, training config, data, world.
      hashed: { model: resolvedModel, train: built.trainConfig, data, worldSize },
      notes,
      closeData: () => built.data.close?.(),
      finish: async (last) => {
        const metrics: Record<string, number> = {};
        for (const [k, v] of Object.entries(last)) if (Number.isFinite(v)) metrics[`train/${k}`] = v;
        if (trainer.cfg.evalImages <= 0) return { metrics };
        const Ks = K ? [K] : (contractEvalKs ?? [trainer.cfg.evalK ?? built.modelConfig.derived.K]);
        const ev = await finalEvaluation({
          trainer,
          openEval: built.openEval,
          Ks,
          nominalK: built.modelConfig.derived.K,
          images: trainer.cfg.evalImages,
          inceptionUri,
          log: logger,
        });
        Object.assign(metrics, ev.metrics);
        notes.push(...ev.notes);
        if (built.evalSource === "train-shards")
          notes.push("no val shards found next to the dataset: evaluation used TRAINING images (centre crops)");
        const uri = joinUri(checkpointDir, "artifacts/reconstruction.png");
        await storageFor(uri).put(uri, ev.grid);
        logger.info({ uri, rows: ["originals", ...Ks.map((k) => `K=${k}`)] }, "reconstruction grid written");
        return { metrics, imageUris: [uri] };
      },
    });
  }

  const ckpt = values.checkpoint ?? env[ENV.RESUME_FROM] ?? (await latestCheckpoint(checkpointDir));
  if (!ckpt)
    throw new CliError(`--checkpoint is required for "${command}" (no checkpoint found under ${checkpointDir})`);
  await trainer.resume(ckpt);

  if (command === "eval") {
    const Ks = K ? [K] : built.modelConfig.derived.candidates.map((c) => c.K);
    const metrics: Record<string, number> = {};
    for (const k of Ks) {
      const src = await built.openEval();
      const ev = await trainer.evaluate(src, {
        images: images ?? trainer.cfg.evalImages ?? 64,
        K: k,
      });
      src.close?.();
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
    await writeMetricsJson(statusUri, report);
    writeTermination(env[ENV.TERMINATION_MESSAGE_PATH], report);
    return { report };
  }

  // reconstruct: grid PNG, each row = originals | reconstructions (EMA weights, clamped), at K.
  const evalSrc = await built.openEval();
  const k = K ?? built.modelConfig.derived.K;
  const n = images ?? 8;
  const batch = await evalSrc.next(n);
  evalSrc.close?.();
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

/** Images in the reconstruction grid (one row each: originals, then one row per K). */
const GRID_COLUMNS = 8;

/**
 * End-of-training evaluation with EMA weights on `images` held-out images, for every K: rFID (one Inception
 * pass over the originals, reused, plus one per K), mean L1 and codebook usage; plus the reconstruction grid
 * (top row: the first GRID_COLUMNS originals; below: their reconstructions, one row per K). `rFID` (plain
 * key) is the nominal K's value (else the first K's); the labelled per-K keys are kept. An unavailable
 * Inception model skips rFID with a note instead of failing the finished run.
 */
export async function finalEvaluation(o: {
  trainer: TokenizerTrainer;
  openEval: () => Promise<BatchSource>;
  Ks: number[];
  nominalK: number;
  images: number;
  inceptionUri?: string;
  log: Logger;
}): Promise<{ metrics: Record<string, number>; notes: string[]; grid: Buffer }> {
  const { trainer, log } = o;
  const bs = Math.max(1, Math.min(trainer.cfg.batchSize, 32));
  const metrics: Record<string, number> = {};
  const notes: string[] = [];
  const gridRows: Float32Array[] = [];
  let side = 0;
  let gridCols = 0;
  const codes = 2 ** trainer.info.codebookBits;
  /** One reconstruction pass at K over the held-out images (EMA weights must be swapped in by the caller). */
  async function* pass(k: number): AsyncGenerator<ReconstructionBatch> {
    const src = await o.openEval();
    const used = new Uint8Array(codes);
    let l1 = 0;
    let n = 0;
    try {
      while (n < o.images) {
        const b = Math.min(bs, o.images - n);
        const batch = await src.next(b);
        try {
          const [orig, rec, l1s, idx] = tf.tidy(() => {
            const out = trainer.model.forward(batch.image, { K: k, training: false });
            const r = tf.clipByValue(out.recon, -1, 1);
            const l = tf.mean(tf.abs(tf.sub(batch.image, r)), [1, 2, 3]);
            return [
              batch.image.dataSync() as Float32Array,
              r.dataSync() as Float32Array,
              l.dataSync(),
              out.indices.dataSync(),
            ];
          });
          side = batch.image.shape[1];
          for (const v of l1s) l1 += v;
          for (const c of idx) used[c] = 1;
          if (n === 0) {
            gridCols = Math.min(GRID_COLUMNS, b);
            const px = gridCols * side * side * 3;
            if (gridRows.length === 0) gridRows.push(orig.slice(0, px));
            gridRows.push(rec.slice(0, px));
          }
          n += b;
          yield {
            original: { data: orig, n: b, height: side, width: side, range: "symmetric" },
            reconstruction: { data: rec, n: b, height: side, width: side, range: "symmetric" },
          };
        } finally {
          disposeBatch(batch);
        }
      }
    } finally {
      src.close?.();
    }
    metrics[`l1@K=${k}`] = l1 / Math.max(1, n);
    metrics[`codebookUsage@K=${k}`] = used.reduce((a, x) => a + x, 0) / codes;
  }
  const t0 = performance.now();
  await trainer.withEmaWeights(async () => {
    let extractor: InceptionExtractor | undefined;
    try {
      extractor = await InceptionExtractor.create({ modelUri: o.inceptionUri, logger: log });
    } catch (e) {
      notes.push(`rFID not computed: ${(e as Error).message}`);
      log.error({ err: (e as Error).message }, "Inception model unavailable: rFID skipped");
    }
    if (extractor) {
      const r = await computeRfidPerK(o.Ks, pass, { extractor, logger: log });
      Object.assign(metrics, r.metrics);
      notes.push(...r.notes);
      const main = r.results.find((x) => x.k === o.nominalK) ?? r.results[0];
      if (main) metrics.rFID = main.value;
    } else {
      for (const k of o.Ks) for await (const _ of pass(k));
    }
  });
  log.info({ seconds: round1((performance.now() - t0) / 1000), Ks: o.Ks, images: o.images }, "final evaluation done");
  // Grid: rows of gridCols images, [-1,1] → uint8.
  const rows = gridRows.length;
  const w = gridCols * side;
  const px = new Uint8Array(rows * side * w * 3);
  gridRows.forEach((row, r) => {
    for (let i = 0; i < gridCols; i++)
      for (let y = 0; y < side; y++)
        for (let x = 0; x < side; x++)
          for (let c = 0; c < 3; c++) {
            const v = row[((i * side + y) * side + x) * 3 + c];
            px[((r * side + y) * w + i * side + x) * 3 + c] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
          }
  });
  const grid = await sharp(px, { raw: { width: w, height: rows * side, channels: 3 } })
    .png()
    .toBuffer();
  return { metrics, notes, grid };
}

const round1 = (v: number) => Math.round(v * 10) / 10;
