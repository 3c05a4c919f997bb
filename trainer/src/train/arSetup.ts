// Assembly of a Stage-II run (the counterpart of setup.ts for the tokenizer): load the frozen tokenizer, resolve
// the AR config from it, build the GPT, the tokenising data source and the trainer.
import { type ARConfig, ARConfigError, resolveARConfig } from "../ar/config.ts";
import { GPT } from "../ar/gpt.ts";
import type { BatchSource } from "../data/localFolder.ts";
import { type FrozenTokenizer, loadFrozenTokenizer } from "../tokenizer/frozen.ts";
import type { ARTrainConfig, ParsedARModelSpec } from "./arConfig.ts";
import { ARDataSource, openImageSource } from "./arData.ts";
import { ARTrainer } from "./arTrainer.ts";
import { type RunDeps, runDepsOf } from "./runReport.ts";

/** The resolved AR config with the training config's dropout overrides (absent rates unchanged). */
export function withDropout(c: ARConfig, d: ARTrainConfig["dropout"]): ARConfig {
  return { ...c, tokenDropout: d?.token ?? c.tokenDropout, residDropout: d?.resid ?? c.residDropout };
}

/** The trainer's run settings (log, rank, worldSize, checkpointDir, statusUri, backend, pg) come from RunDeps. */
export interface BuildAROptions extends RunDeps {
  model: ParsedARModelSpec;
  train: ARTrainConfig;
  /** Tokenizer checkpoint URI (or an already loaded frozen tokenizer). */
  tokenizer: string | FrozenTokenizer;
  /** What the tokenizer URI came from, for error messages (e.g. "MERGEVQ_TOKENIZER_CHECKPOINT"). */
  tokenizerSource?: string;
  data: string;
  dataFormat?: string;
  /** Use at most this many training images (tests; local folders only). */
  dataLimit?: number;
  /** Use this image source instead of opening `data` (tests). */
  images?: BatchSource;
}

export interface BuiltAR {
  trainer: ARTrainer;
  model: GPT;
  arConfig: ARConfig;
  frozen: FrozenTokenizer;
  data: ARDataSource;
  notes: string[];
}

/** Load the frozen tokenizer, resolve the AR config from it, build the GPT, the data and the trainer. */
export async function buildARTrainer(o: BuildAROptions): Promise<BuiltAR> {
  const rank = o.rank ?? 0;
  const worldSize = o.worldSize ?? 1;
  let frozen: FrozenTokenizer;
  if (typeof o.tokenizer === "string") {
    try {
      frozen = await loadFrozenTokenizer(o.tokenizer);
    } catch (e) {
      throw new ARConfigError(
        `${o.tokenizerSource ?? "tokenizer checkpoint"} ${o.tokenizer}: cannot load the tokenizer checkpoint: ${(e as Error).message}`,
      );
    }
  } else {
    frozen = o.tokenizer;
  }
  const tc = frozen.tokenizer.config;
  const arConfig = withDropout(
    resolveARConfig(
      o.model,
      { zChannels: tc.zChannels, L: tc.derived.L, numCandidates: tc.derived.candidates.length },
      o.train.seed,
    ),
    o.train.dropout,
  );
  const model = new GPT(arConfig);
  const notes: string[] = [
    `tokenizer: ${frozen.uri} (step ${frozen.step}, ${frozen.weights === "ema" ? "EMA" : "raw (no EMA in checkpoint)"} weights, ${tc.zChannels} bits, L = ${tc.derived.L})`,
    `AR: size ${arConfig.size}, ${model.paramCount()} params, bits ${arConfig.preBits}/${arConfig.postBits}, MergeAR ${arConfig.mergeAR.enabled ? `on (window ${arConfig.mergeAR.window}, ${arConfig.mergeAR.numMergeTokens} merge tokens)` : "off (K = L)"}`,
    "weight decay: 1-D tensors (RMSNorm weights) exempt (intended upstream behaviour, docs/model.md §5.3 decision)",
  ];
  if (o.train.dropout)
    notes.push(
      `dropout overridden by the training config: token ${arConfig.tokenDropout}, residual ${arConfig.residDropout} (spec: 0.1)`,
    );
  if (o.backend) notes.push(`backend: ${o.backend}`);
  let images = o.images;
  let describe: Record<string, unknown> = { source: "injected" };
  if (!images) {
    const opened = await openImageSource({
      data: o.data,
      format: o.dataFormat,
      size: tc.resolution,
      batchSize: o.train.batchSize,
      seed: o.train.seed,
      rank,
      worldSize,
      limit: o.dataLimit,
    });
    images = opened.source;
    describe = opened.describe;
  }
  const data = new ARDataSource({
    images,
    tokenizer: frozen.tokenizer,
    mergeAR: arConfig.mergeAR.enabled,
    numClasses: arConfig.numClasses,
    classDropout: arConfig.classDropout,
    seed: o.train.seed,
    rank,
    worldSize,
  });
  const trainer = new ARTrainer({
    model,
    data,
    cfg: o.train,
    tokenizer: { uri: frozen.uri, step: frozen.step, weights: frozen.weights },
    ...runDepsOf(o),
  });
  o.log.info(
    {
      arConfig,
      params: model.paramCount(),
      tokenizer: { uri: frozen.uri, step: frozen.step, weights: frozen.weights },
      ...describe,
      rank,
      worldSize,
      batchSize: o.train.batchSize,
      accum: o.train.accum,
      steps: o.train.steps,
    },
    "AR trainer ready",
  );
  return { trainer, model, arConfig, frozen, data, notes };
}
