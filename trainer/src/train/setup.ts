// Assembles a TokenizerTrainer from configs: model (MergeVQTokenizer), discriminator, perceptual net,
// alignment teacher and the data source. Used by the CLI, the tests and the benchmark.
// Data: a local ImageNet-style folder → LocalFolderSource (in-memory cache; rank split by global rank), or
// tar shards (s3:// or local, `index.json`) → LoaderSource over the data plane's streaming DataLoader (rank
// split by global rank, equal batches per epoch on every rank). Held-out images for evaluation: the folder's
// val/ split; for shards `<uri>/val/index.json`, else `<parent of uri>/val/index.json` when the train shards
// live in `…/train`, else (no val shards) the TRAIN shards in val mode (centre crops, fixed order) — then
// `evalSource` is "train-shards" and the CLI adds a note that the metrics are not on held-out images.

import path from "node:path";
import { isShardDataset, valShardsFor } from "../data/dataset.ts";
import { LoaderSource } from "../data/loaderSource.ts";
import { type BatchSource, LocalFolderSource } from "../data/localFolder.ts";
import { joinUri, uriScheme } from "../io/uri.ts";
import { OnnxTeacher, writeGeneratedTeacher } from "../losses/alignment.ts";
import { PatchGanDiscriminator } from "../losses/gan.ts";
import { PerceptualLoss, writeGeneratedPerceptualNet } from "../losses/perceptual.ts";
import { type ResolvedTokenizerConfig, resolveConfig } from "../tokenizer/config.ts";
import { MergeVQTokenizer } from "../tokenizer/mergevq.ts";
import { cacheRoot } from "../util/cache.ts";
import { Rng, rankSeed } from "../util/rng.ts";
import { parseTrainConfig, type TrainConfig } from "./config.ts";
import { type RunDeps, runDepsOf } from "./runReport.ts";
import { type ModelTrainingInfo, TokenizerTrainer } from "./tokenizerTrainer.ts";

/** Training-config defaults taken from the model config's `train` block (spec per-config values). */
export function trainDefaultsFromModel(c: ResolvedTokenizerConfig): Record<string, unknown> {
  const t = c.train;
  return {
    lr: t.lr,
    beta1: t.betas[0],
    beta2: t.betas[1],
    emaDecay: t.emaDecay,
    lrDropEpochs: t.lrDropEpochs,
    batchSize: t.batchSize,
    accum: t.gradAccum,
    gradClip: t.gradClip,
    // docs/model.md §10: the tiny configs use PatchGAN ndf 16, n_layers 2; full configs ndf 64, n_layers 3 (§4.2).
    // (The model config has no discriminator fields yet; the T* preset names stand for "tiny".)
    discriminator: /^T\d/.test(c.name) ? { ndf: 16, nLayers: 2 } : { ndf: 64, nLayers: 3 },
    weights: {
      reconstruction: t.lossWeights.reconstruction,
      perceptual: t.lossWeights.perceptual,
      generator: t.lossWeights.gan,
      entropy: t.lossWeights.entropy,
      commitment: t.lossWeights.commitment,
      cls: t.lossWeights.cls,
      lecam: t.lossWeights.lecam,
    },
  };
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}
export function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over))
    out[k] = isObj(out[k]) && isObj(v) ? deepMerge(out[k] as Record<string, unknown>, v) : v;
  return out;
}

/** Model config → the facts the training loop needs. */
export function modelTrainingInfo(c: ResolvedTokenizerConfig): ModelTrainingInfo {
  const { name: _n, seed: _s, train: _t, derived: _d, ...architecture } = c;
  return {
    architecture,
    config: { ...c, derived: undefined },
    imageSize: c.resolution,
    clsViewSize: c.clsViewSize,
    codebookBits: c.zChannels,
    candidates: c.derived.candidates,
    nominalK: c.derived.K,
    clsWeight: c.train.lossWeights.cls,
  };
}

/** Resolve the train config: model-config defaults ← user JSON (strict; errors name the field). */
export function resolveTrainConfig(
  model: ResolvedTokenizerConfig,
  user: Record<string, unknown> = {},
  source = "training config",
): TrainConfig {
  return parseTrainConfig(deepMerge(trainDefaultsFromModel(model), user), source);
}

/** Patch size giving a ≈7×7 token grid for the generated teacher. */
function teacherPatch(view: number): number {
  for (const g of [7, 8, 6, 4, 2, 1]) if (view % g === 0) return view / g;
  return view;
}

/** The trainer's run settings (log, rank, worldSize, checkpointDir, statusUri, backend, pg) come from RunDeps. */
export interface BuildOptions extends RunDeps {
  model: string | Record<string, unknown>;
  train?: Record<string, unknown>;
  data: string;
  /** Output prefix (checkpoints, generated nets, status) — path or URI. */
  out: string;
  /** Limit the number of training files (tests; local folders only). */
  dataLimit?: number;
  /** "tar-shards" | "folder" (DATASET_FORMAT); default: shards when `data` is s3:// or holds an index.json. */
  dataFormat?: string;
  /** Use this training source instead of opening `data` (tests; `data` still provides the eval split). */
  source?: BatchSource;
}

export interface Built {
  trainer: TokenizerTrainer;
  model: MergeVQTokenizer;
  modelConfig: ResolvedTokenizerConfig;
  trainConfig: TrainConfig;
  data: BatchSource;
  notes: string[];
  /** Open a held-out (val split, centre crops, fixed order) source; close it when done. */
  openEval(): Promise<BatchSource>;
  /** What openEval reads: "val" (held-out split) or "train-shards" (no val shards were found). */
  evalSource: "val" | "train-shards";
}

/** Where generated stand-in networks are written: next to a local output, else in the cache (never the cwd: it is
 * read-only in the images). */
function generatedDir(out: string): string {
  return uriScheme(out) === "file" ? joinUri(out, "generated") : path.join(cacheRoot(), "generated");
}

/** Build the model, losses, data and trainer. Generated (random) stand-ins are logged and returned as notes. */
export async function buildTrainer(o: BuildOptions): Promise<Built> {
  const modelConfig = typeof o.model === "string" ? resolveConfig(o.model) : resolveConfig(o.model as never);
  const cfg = resolveTrainConfig(modelConfig, o.train ?? {});
  const rank = o.rank ?? 0;
  const worldSize = o.worldSize ?? 1;
  const seed = rankSeed(cfg.seed, worldSize, rank);
  const notes: string[] = [];
  const model = new MergeVQTokenizer(modelConfig);
  const disc = new PatchGanDiscriminator(cfg.discriminator, new Rng(cfg.seed * 7919 + 1)); // same D init on every rank
  const info = modelTrainingInfo(modelConfig);

  let perceptual: PerceptualLoss | null = null;
  if (cfg.perceptual !== "none" && cfg.weights.perceptual > 0) {
    let uri = cfg.perceptual;
    if (uri === "generated") {
      uri = joinUri(generatedDir(o.out), "perceptual-generated-random.bin");
      await writeGeneratedPerceptualNet(uri, new Rng(cfg.seed * 7919 + 2));
      notes.push("perceptual loss uses a GENERATED/RANDOM feature network, not LPIPS/VGG weights");
    }
    perceptual = await PerceptualLoss.load(uri, o.log);
  }
  let teacher: OnnxTeacher | null = null;
  const clsWeight = cfg.weights.cls ?? info.clsWeight;
  if (cfg.teacher !== "none" && clsWeight > 0) {
    let uri = cfg.teacher;
    if (uri === "generated") {
      uri = joinUri(generatedDir(o.out), "teacher-generated-random.onnx");
      const v = modelConfig.clsViewSize;
      await writeGeneratedTeacher(
        uri,
        { imageSize: v, patch: teacherPatch(v), dim: 64, depth: 2, heads: 4, outDim: modelConfig.numClasses },
        new Rng(cfg.seed * 7919 + 3),
      );
      notes.push("alignment teacher is a GENERATED/RANDOM tiny ViT, not DINOv2");
    }
    teacher = await OnnxTeacher.load(uri, o.log);
  }
  const views = teacher ? modelConfig.clsViewSize : 0;
  const shards = await isShardDataset(o.data, o.dataFormat);
  const viewSizes = { recon: modelConfig.resolution, teacher: views || undefined, student: views || undefined };
  let data: BatchSource;
  let openEval: () => Promise<BatchSource>;
  let evalSource: "val" | "train-shards" = "val";
  let describeData: Record<string, unknown>;
  if (o.source) {
    data = o.source;
    openEval = () =>
      LocalFolderSource.open({ root: o.data, split: "val", size: modelConfig.resolution, augment: false, seed: 0 });
    describeData = { source: "injected", evalFolder: o.data };
  } else if (shards) {
    // The loader's seed must be the GLOBAL seed: it fixes the epoch's shard permutation, which the ranks split.
    data = await LoaderSource.open({
      source: { kind: "shards", uri: o.data },
      mode: "train",
      batchSize: cfg.batchSize,
      views: viewSizes,
      rank,
      worldSize,
      seed: cfg.seed,
    });
    const val = await valShardsFor(o.data);
    if (!val) evalSource = "train-shards";
    const evalUri = val ?? o.data;
    openEval = () =>
      LoaderSource.open({
        source: { kind: "shards", uri: evalUri },
        mode: "val",
        batchSize: cfg.batchSize,
        views: { recon: modelConfig.resolution },
        rank: 0,
        worldSize: 1,
        seed: 0,
      });
    describeData = {
      shards: o.data,
      evalShards: evalUri,
      batchesPerEpoch: (data as LoaderSource).stepsCap,
    };
  } else {
    const folder = await LocalFolderSource.open({
      root: o.data,
      split: "train",
      size: modelConfig.resolution,
      teacherSize: views,
      studentSize: views,
      augment: true,
      seed,
      orderSeed: cfg.seed, // global: the ranks' slices of one permutation partition each epoch
      rank,
      worldSize,
      limit: o.dataLimit,
    });
    data = folder;
    openEval = () =>
      LocalFolderSource.open({ root: o.data, split: "val", size: modelConfig.resolution, augment: false, seed: 0 });
    describeData = { folder: o.data, trainImages: folder.files.length, classes: folder.classes.length };
  }
  if (o.train?.steps === undefined) {
    // No explicit step count: the model config's epochs (spec per-config values) × optimiser steps per epoch.
    cfg.steps = modelConfig.train.epochs * Math.max(1, Math.floor(data.epochSize / (cfg.batchSize * cfg.accum)));
  }
  const trainer = new TokenizerTrainer({
    model,
    info,
    disc,
    perceptual,
    teacher,
    data,
    cfg,
    ...runDepsOf(o),
  });
  o.log.info(
    {
      model: modelConfig.name,
      params: modelConfig.derived.paramCounts,
      discParams: disc.parameterCount(),
      ...describeData,
      rank,
      worldSize,
      batchSize: cfg.batchSize,
      accum: cfg.accum,
      steps: cfg.steps,
      candidates: modelConfig.derived.candidates.map((c) => c.K),
      seed,
    },
    "tokenizer trainer ready",
  );
  return {
    trainer,
    model,
    modelConfig,
    trainConfig: cfg,
    data,
    notes,
    openEval,
    evalSource,
  };
}
