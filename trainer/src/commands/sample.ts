// mergevq-trainer sampling commands (SamplingJob, docs/model.md §5.4 / §6.2):
//   sample   one shard pod: generate its slice of numSamples with the AR model, decode with the tokenizer,
//            write <CHECKPOINT_DIR>/shards/<i>.npz (arr_0 uint8 [N,H,W,3], labels int32 [N]); a valid existing
//            output is reused (idempotent retry), an invalid one (truncated/corrupt/other job) regenerated.
//   reduce   read all shard npz, gFID (needs evaluation.referenceStatsUri) and IS (10 shuffled splits) with the
//            FID Inception, sample grid <CHECKPOINT_DIR>/artifacts/samples.png.
//   eval reference-stats --data <dir|uri> --out <npz uri> [--size N | --tokenizer <ckpt>] [--images N]
//            Inception mu/sigma of real images (centre crops at the tokenizer resolution).
// Operator env contract (operator/src/reconcile/desired.ts desiredShardPod / desiredReducePod), used when the
// flag is absent:
//   MERGEVQ_TRAIN_CONFIG       JSON of spec.sampling + {evaluation}      (--config file.json)
//   MERGEVQ_MODEL_CHECKPOINT   "ar-train" checkpoint                      (--model uri)
//   MERGEVQ_TOKENIZER_CHECKPOINT "tokenizer-train" checkpoint            (--tokenizer uri)
//   MERGEVQ_SHARD_INDEX / MERGEVQ_NUM_SHARDS                             (--shard i / --shards n)
//   CHECKPOINT_DIR (= spec.checkpoint.uri)                               (--out uri)
//   MERGEVQ_STATUS_URI (per shard for shard pods; default <out>/status[/shards/<i>]), MERGEVQ_INCEPTION_URI,
//   TERMINATION_MESSAGE_PATH, TFJS_BACKEND (--backend), AWS_* for s3:// URIs.
// Each command writes metrics.json under the status prefix and the termination message (as the tokenizer
// CLI does) and resolves to { report }.
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { ENV, type FinalReport, SamplingStep } from "../../../common/src/contract.ts";
import { envInt, envUri, parseEnv } from "../../../common/src/env.ts";
import { createLogger, type Logger } from "../../../common/src/logger.ts";
import { InceptionExtractor } from "../eval/inception.ts";
import { inceptionNotes } from "../eval/rfid.ts";
import { loadCheckpoint } from "../io/checkpoint.ts";
import { writeMetricsJson, writeTermination } from "../io/status.ts";
import { joinUri } from "../io/uri.ts";
import { parseSamplingConfig, type SamplingConfig, SamplingConfigError } from "../sample/config.ts";
import { reduceShards } from "../sample/reduce.ts";
import { computeReferenceStats } from "../sample/referenceStats.ts";
import { runShard } from "../sample/shard.ts";
import { CliError, type CliResult, intFlag, parseFlags, registerS3For } from "./common.ts";

const SampleEnv = z.object({
  [ENV.STEP]: SamplingStep.optional(),
  [ENV.TRAIN_CONFIG]: z.string().optional(),
  [ENV.MODEL_CHECKPOINT]: envUri().optional(),
  [ENV.TOKENIZER_CHECKPOINT]: envUri().optional(),
  [ENV.SHARD_INDEX]: envInt({ min: 0 }).optional(),
  [ENV.NUM_SHARDS]: envInt({ min: 1 }).optional(),
  [ENV.CHECKPOINT_DIR]: envUri().optional(),
  [ENV.STATUS_URI]: envUri().optional(),
  [ENV.INCEPTION_URI]: z.string().min(1).optional(),
  [ENV.TERMINATION_MESSAGE_PATH]: z.string().optional(),
  [ENV.RUN]: z.string().optional(),
  [ENV.ATTEMPT]: envInt({ min: 1 }).optional(),
});
type SampleEnv = z.infer<typeof SampleEnv>;

const ENV_NOTE = "(everything not given as a flag comes from the operator's env contract: MERGEVQ_TRAIN_CONFIG, …)";

export const SAMPLING_USAGE = {
  sample: `usage: mergevq-trainer sample [--config sampling.json] [--model <ar ckpt>] [--tokenizer <tokenizer ckpt>]
         [--out <dir|uri>] [--shard i] [--shards n] [--backend tensorflow-gpu|tensorflow|wasm|cpu] [--status <uri>]
One SamplingJob shard: generate this shard's slice of the samples and write <out>/shards/<i>.npz.
${ENV_NOTE}`,
  reduce: `usage: mergevq-trainer reduce [--config sampling.json] [--out <dir|uri>] [--shards n] [--reference <stats npz>]
         [--inception <onnx>] [--no-is] [--status <uri>]
Read every shard's npz and report gFID (against --reference) and IS, plus a sample grid.
${ENV_NOTE}`,
  "reference-stats": `usage: mergevq-trainer eval reference-stats --data <dir|uri> --out <npz uri> [--size N | --tokenizer <ckpt>]
         [--images N] [--split train|val] [--inception <onnx>] [--batch B] [--data-format folder|tar-shards]
Inception mean and covariance of real images (centre crops), the reference of gFID.`,
} as const;

/**
 * The env contract of a sampling pod. `command` is the step this process runs: the operator sets MERGEVQ_STEP on
 * SamplingJob pods, so a pod whose command line was overridden to run the other step fails at once, naming both.
 */
function readEnv(command?: SamplingStep): SampleEnv {
  let env: SampleEnv;
  try {
    env = parseEnv(SampleEnv);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const step = env[ENV.STEP];
  if (command !== undefined && step !== undefined && step !== command)
    throw new CliError(`${ENV.STEP}=${step}: this pod is the SamplingJob's "${step}" step but runs "${command}"`);
  return env;
}

async function samplingConfig(flag: string | undefined, env: SampleEnv): Promise<SamplingConfig> {
  try {
    if (flag !== undefined) {
      let text: string;
      try {
        text = await readFile(flag, "utf8");
      } catch (e) {
        throw new CliError(`--config ${flag}: ${(e as Error).message}`);
      }
      return parseSamplingConfig(text, `--config ${flag}`);
    }
    const json = env[ENV.TRAIN_CONFIG];
    if (json === undefined) throw new CliError(`--config is required (or set ${ENV.TRAIN_CONFIG})`);
    return parseSamplingConfig(json, ENV.TRAIN_CONFIG);
  } catch (e) {
    if (e instanceof SamplingConfigError) throw new CliError(e.message);
    throw e;
  }
}

/** metrics.json under the status prefix (when there is one) + termination message, as the tokenizer CLI. */
async function publishReport(
  o: { statusUri?: string; terminationPath?: string },
  report: FinalReport,
): Promise<FinalReport> {
  const r: FinalReport = { ...report, updatedAt: report.updatedAt ?? new Date().toISOString() };
  if (r.notes?.length === 0) delete r.notes;
  if (o.statusUri) await writeMetricsJson(o.statusUri, r);
  writeTermination(o.terminationPath, r);
  return r;
}

const SAMPLE_OPTIONS = {
  config: { type: "string" },
  model: { type: "string" },
  tokenizer: { type: "string" },
  out: { type: "string" },
  shard: { type: "string" },
  shards: { type: "string" },
  backend: { type: "string" },
  status: { type: "string" },
} as const;

/** `sample`: one shard of a SamplingJob. */
export async function sampleMain(argv: string[], log?: Logger): Promise<CliResult> {
  const v = parseFlags(argv, SAMPLE_OPTIONS, SAMPLING_USAGE.sample);
  const env = readEnv("sample");
  const cfg = await samplingConfig(v.config, env);
  const index = intFlag("shard", v.shard) ?? env[ENV.SHARD_INDEX] ?? 0;
  const numShards = intFlag("shards", v.shards, 1) ?? env[ENV.NUM_SHARDS] ?? cfg.shards;
  if (numShards !== cfg.shards) {
    throw new CliError(`${ENV.NUM_SHARDS}/--shards (${numShards}) differs from sampling.shards (${cfg.shards})`);
  }
  if (index >= numShards)
    throw new CliError(`${ENV.SHARD_INDEX}/--shard ${index} out of range for ${numShards} shards`);
  const model = v.model ?? env[ENV.MODEL_CHECKPOINT];
  const tokenizer = v.tokenizer ?? env[ENV.TOKENIZER_CHECKPOINT];
  const out = v.out ?? env[ENV.CHECKPOINT_DIR];
  if (!model) throw new CliError(`--model is required (or set ${ENV.MODEL_CHECKPOINT})`);
  if (!tokenizer) throw new CliError(`--tokenizer is required (or set ${ENV.TOKENIZER_CHECKPOINT})`);
  if (!out) throw new CliError(`--out is required (or set ${ENV.CHECKPOINT_DIR})`);
  const statusUri = v.status ?? env[ENV.STATUS_URI] ?? joinUri(out, `status/shards/${index}`);
  const logger = log ?? createLogger({ component: "sampler", run: env[ENV.RUN], rank: 0 });
  await registerS3For([model, tokenizer, out, statusUri]);

  const res = await runShard({
    config: cfg,
    index,
    numShards,
    checkpointDir: out,
    checkpoints: { model, tokenizer },
    statusUri,
    attempt: env[ENV.ATTEMPT],
    log: logger,
    openGenerator: async () => {
      const { selectBackend } = await import("../backend/select.ts");
      await selectBackend({ requested: v.backend, log: logger });
      const { openARGenerator } = await import("../sample/generator.ts");
      return openARGenerator({ modelUri: model, tokenizerUri: tokenizer, config: cfg, log: logger });
    },
  });
  const report = await publishReport(
    { statusUri, terminationPath: env[ENV.TERMINATION_MESSAGE_PATH] },
    {
      metrics: { samples: res.samples, samplesPerSecond: res.samplesPerSecond },
      artifacts: { extra: { samples: res.uri } },
      notes: res.notes,
      // No `step`: a SamplingJob's progress is counted in shards by the operator; samples are a metric.
    },
  );
  return { report };
}

const REDUCE_OPTIONS = {
  config: { type: "string" },
  out: { type: "string" },
  shards: { type: "string" },
  reference: { type: "string" },
  inception: { type: "string" },
  "no-is": { type: "boolean" },
  status: { type: "string" },
} as const;

/** `reduce`: gFID / IS over all shard outputs + sample grid. */
export async function reduceMain(argv: string[], log?: Logger): Promise<CliResult> {
  const v = parseFlags(argv, REDUCE_OPTIONS, SAMPLING_USAGE.reduce);
  const env = readEnv("reduce");
  const haveConfig = v.config !== undefined || env[ENV.TRAIN_CONFIG] !== undefined;
  const cfg = haveConfig ? await samplingConfig(v.config, env) : undefined;
  const numShards = intFlag("shards", v.shards, 1) ?? env[ENV.NUM_SHARDS] ?? cfg?.shards;
  if (numShards === undefined)
    throw new CliError(`--shards is required (or set ${ENV.NUM_SHARDS} / ${ENV.TRAIN_CONFIG})`);
  if (cfg && numShards !== cfg.shards) {
    throw new CliError(`${ENV.NUM_SHARDS}/--shards (${numShards}) differs from sampling.shards (${cfg.shards})`);
  }
  const out = v.out ?? env[ENV.CHECKPOINT_DIR];
  if (!out) throw new CliError(`--out is required (or set ${ENV.CHECKPOINT_DIR})`);
  const statusUri = v.status ?? env[ENV.STATUS_URI] ?? joinUri(out, "status");
  const referenceStatsUri = v.reference ?? cfg?.evaluation.referenceStatsUri;
  const inceptionUri = v.inception ?? cfg?.evaluation.inceptionUri ?? env[ENV.INCEPTION_URI];
  const logger = log ?? createLogger({ component: "sampler", run: env[ENV.RUN], rank: 0, command: "reduce" });
  await registerS3For([out, statusUri, referenceStatsUri, inceptionUri]);
  const r = await reduceShards({
    checkpointDir: out,
    numShards,
    numSamples: cfg?.numSamples,
    referenceStatsUri,
    inceptionUri,
    computeIS: v["no-is"] ? false : (cfg?.evaluation.computeIS ?? true),
    seed: cfg?.seed ?? 0,
    log: logger,
  });
  const report: FinalReport = {
    metrics: r.metrics,
    artifacts: r.gridUri ? { imageUris: [r.gridUri] } : undefined,
    notes: r.notes,
  };
  return { report: await publishReport({ statusUri, terminationPath: env[ENV.TERMINATION_MESSAGE_PATH] }, report) };
}

const REFSTATS_OPTIONS = {
  data: { type: "string" },
  out: { type: "string" },
  size: { type: "string" },
  tokenizer: { type: "string" },
  images: { type: "string" },
  split: { type: "string" },
  inception: { type: "string" },
  batch: { type: "string" },
  "data-format": { type: "string" },
} as const;

/** Resolution of a tokenizer-train checkpoint (its stored model config). */
async function tokenizerResolution(uri: string): Promise<number> {
  const ckpt = await loadCheckpoint(uri);
  const mc = ckpt.meta.modelConfig as { resolution?: number } | undefined;
  if (ckpt.kind !== "tokenizer-train" || typeof mc?.resolution !== "number") {
    throw new CliError(`--tokenizer ${uri}: not a tokenizer checkpoint with a modelConfig.resolution`);
  }
  return mc.resolution;
}

/** `eval reference-stats` (argv after those two words). */
export async function referenceStatsMain(argv: string[], log?: Logger): Promise<CliResult> {
  const v = parseFlags(argv, REFSTATS_OPTIONS, SAMPLING_USAGE["reference-stats"]);
  const env = readEnv();
  if (!v.data) throw new CliError(`--data is required\n${SAMPLING_USAGE["reference-stats"]}`);
  if (!v.out) throw new CliError(`--out is required\n${SAMPLING_USAGE["reference-stats"]}`);
  if (v.split !== undefined && v.split !== "train" && v.split !== "val")
    throw new CliError(`--split: expected train or val, got "${v.split}"`);
  if (v["data-format"] !== undefined && !["folder", "tar-shards"].includes(v["data-format"]))
    throw new CliError(`--data-format: expected folder or tar-shards, got "${v["data-format"]}"`);
  const logger = log ?? createLogger({ component: "trainer", run: env[ENV.RUN], rank: 0, command: "reference-stats" });
  await registerS3For([v.data, v.out, v.tokenizer, v.inception ?? env[ENV.INCEPTION_URI]]);
  let size = intFlag("size", v.size, 1);
  if (size === undefined && v.tokenizer) size = await tokenizerResolution(v.tokenizer);
  size ??= 256;
  const extractor = await InceptionExtractor.create({ modelUri: v.inception ?? env[ENV.INCEPTION_URI], logger });
  try {
    const r = await computeReferenceStats({
      extractor,
      data: v.data,
      out: v.out,
      size,
      images: intFlag("images", v.images, 2),
      split: v.split as "train" | "val" | undefined,
      batchSize: intFlag("batch", v.batch, 1),
      dataFormat: v["data-format"],
      log: logger,
    });
    const report: FinalReport = {
      metrics: { images: r.count, size },
      artifacts: { extra: { referenceStats: r.uri } },
      notes: inceptionNotes(extractor),
    };
    return { report: await publishReport({ terminationPath: env[ENV.TERMINATION_MESSAGE_PATH] }, report) };
  } finally {
    await extractor.close();
  }
}

/** Dispatch for this module's commands (argv[0] ∈ sample | reduce | eval reference-stats). */
export async function samplingCli(argv: string[], log?: Logger): Promise<CliResult> {
  const [cmd, ...rest] = argv;
  if (cmd === "sample") return sampleMain(rest, log);
  if (cmd === "reduce") return reduceMain(rest, log);
  if (cmd === "eval" && rest[0] === "reference-stats") return referenceStatsMain(rest.slice(1), log);
  throw new CliError(`unknown command "${argv.slice(0, 2).join(" ")}"`);
}
