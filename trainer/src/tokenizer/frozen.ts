// A trained tokenizer, frozen, for Stage II (docs/model.md §5.1: the AR model is trained on the codes of the frozen
// tokenizer in eval mode, and sampled codes are decoded with it). Loads a `tokenizer-train` checkpoint
// (local path, file:// or s3://) and installs its EMA weights (pitfall 12: evaluate with EMA).
import * as tf from "@tensorflow/tfjs";
import { type Checkpoint, CheckpointError, loadCheckpoint } from "../io/checkpoint.ts";
import { type ResolvedTokenizerConfig, resolveConfig } from "./config.ts";
import { MergeVQTokenizer } from "./mergevq.ts";

export interface FrozenTokenizer {
  tokenizer: MergeVQTokenizer;
  /** Checkpoint the weights came from. */
  uri: string;
  /** Tokenizer training step of that checkpoint. */
  step: number;
  /** Which weights were installed: "ema" (normal) or "raw" (a checkpoint without EMA shadows). */
  weights: "ema" | "raw";
}

/** Rebuild the tokenizer of a `tokenizer-train` checkpoint with its EMA (else raw generator) weights. */
export function tokenizerFromCheckpoint(ckpt: Checkpoint, uri: string): FrozenTokenizer {
  if (ckpt.kind !== "tokenizer-train") {
    throw new CheckpointError(`${uri}: not a tokenizer checkpoint (kind "${ckpt.kind}", expected "tokenizer-train")`);
  }
  const stored = ckpt.meta.modelConfig as ResolvedTokenizerConfig | undefined;
  if (!stored || typeof stored !== "object") throw new CheckpointError(`${uri}: header has no modelConfig`);
  let config: ResolvedTokenizerConfig;
  try {
    // Checkpoints store the resolved config without its `derived` part (recomputed from the fields).
    const { derived, ...fields } = stored as ResolvedTokenizerConfig & { derived?: unknown };
    config = derived ? stored : resolveConfig(fields as never);
  } catch (e) {
    throw new CheckpointError(`${uri}: modelConfig is invalid: ${(e as Error).message}`);
  }
  const tokenizer = new MergeVQTokenizer(config);
  const names = [...tokenizer.getWeights().keys()];
  const hasEma = names.every((n) => ckpt.tensors.has(`ema/${n}`));
  const prefix = hasEma ? "ema/" : "g/";
  const weights = new Map<string, tf.Tensor>();
  try {
    for (const [name, v] of tokenizer.getWeights()) {
      const e = ckpt.tensors.get(`${prefix}${name}`);
      if (!e) throw new CheckpointError(`${uri}: missing tensor ${prefix}${name}`);
      if (e.shape.join() !== v.shape.join()) {
        throw new CheckpointError(`${uri}: ${prefix}${name} has shape [${e.shape}], model has [${v.shape}]`);
      }
      weights.set(name, tf.tensor(e.data as Float32Array, e.shape));
    }
    tokenizer.setWeights(weights);
  } catch (e) {
    tokenizer.dispose();
    throw e;
  } finally {
    for (const t of weights.values()) t.dispose();
  }
  for (const v of tokenizer.trainableVariables()) v.trainable = false;
  const step = typeof ckpt.meta.step === "number" ? ckpt.meta.step : 0;
  return { tokenizer, uri, step, weights: hasEma ? "ema" : "raw" };
}

/** Load a frozen tokenizer from a checkpoint URI (path, file:// or s3://; SHA-256 verified on read). */
export async function loadFrozenTokenizer(uri: string): Promise<FrozenTokenizer> {
  return tokenizerFromCheckpoint(await loadCheckpoint(uri), uri);
}
