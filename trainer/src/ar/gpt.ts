// Stage II generator: LlamaGen / Open-MAGVIT2 GPT with 2-D RoPE and a factorised intra-token head
// (docs/model.md §5.2), optionally with MergeAR's Merge-Instruction prefix and duplicate-masking attention (§5.5).
//
//   labels [B] ──cls_embedding──► C ┐
//   mergeTokens [B] ──merge_emb──► M ┤ prefix (zero RoPE)
//   indices [B, L] ─► pre = idx & (2^p−1), post = idx >> p ─► pre_emb(pre) + post_emb(post) of tok_0..tok_{L−2}
//   x = dropout([C, (M), tok_0..tok_{L−2}]) ─► spatial Llama blocks (causal [+ dup mask]) ─► h [B, L, D]
//   per position n: [h_n, pre_emb(pre_n)] ─► factorised blocks (RoPE: zero, identity) ─► RMSNorm
//     ─► head0(slot 0) = logits of pre_n [2^p],  head1(slot 1) = logits of post_n [2^(z−p)]
//
// Parameter names follow the upstream module paths (checkpoint keys "model/<name>"); linear weights are
// [in, out] (docs/model.md §11).
import * as tf from "@tensorflow/tfjs";
import type { Checkpoint, TensorEntry } from "../io/checkpoint.ts";
import { CheckpointError } from "../io/checkpoint.ts";
import { type DropoutCtx, dropout, Embedding, type Linear, oneHotF32, RMSNorm } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { countParams, type ParamSpec, ParamStore, tidyObject, ZEROS } from "../nn/params.ts";
import { AR_INIT, arLinear, LlamaBlock, MASK_VALUE } from "./blocks.ts";
import { type ARConfig, prefixLength } from "./config.ts";
import { spatialBias } from "./mergeAR.ts";
import { FACTORIZED_POSITIONS, ropeTable, ropeTensors, spatialPositions } from "./rope.ts";

export interface ARBatch {
  /** int32 [B], already label-dropped (null class = numClasses). */
  labels: tf.Tensor1D;
  /** int32 [B, L] full LFQ indices of the raster sequence (targets; inputs are the first L − 1). */
  indices: tf.Tensor2D;
  /** int32 [B] K-candidate id (MergeAR only). */
  mergeTokens?: tf.Tensor1D;
  /** float32 0/1 [B, L] duplicate flags (MergeAR only; absent = no duplicates masked). */
  dup?: tf.Tensor2D;
}

export interface ForwardOptions {
  training: boolean;
  /** Dropout seed (required for deterministic, resumable training; e.g. derived from the step). */
  seed?: number;
}

/**
 * The generator's modules under the upstream names: class / token / Merge-Instruction embeddings, spatial and
 * factorised Llama blocks, the final RMSNorm and the two bias-free, zero-initialised heads (docs/model.md §5.2).
 */
export class GPTModules extends Module {
  readonly clsEmbedding: Embedding;
  readonly preEmb: Embedding;
  readonly postEmb: Embedding;
  readonly mergeEmbedding: Embedding | null;
  readonly layers: LlamaBlock[] = [];
  readonly factorizedBlocks: LlamaBlock[] = [];
  readonly norm: RMSNorm;
  readonly heads: readonly [Linear, Linear];

  constructor(cfg: ARConfig) {
    super(""); // top-level names, as in the upstream state dict
    const D = cfg.dim;
    const vPre = 2 ** cfg.preBits;
    const vPost = 2 ** cfg.postBits;
    const emb = (name: string, V: number) => this.add(new Embedding(name, V, D, AR_INIT, "ar"));
    this.clsEmbedding = emb("cls_embedding.embedding_table", cfg.numClasses + 1);
    this.preEmb = emb("pre_emb", vPre);
    this.postEmb = emb("post_emb", vPost);
    this.mergeEmbedding = cfg.mergeAR.numMergeTokens > 0 ? emb("merge_embedding", cfg.mergeAR.numMergeTokens) : null;
    for (let i = 0; i < cfg.spatialLayers; i++)
      this.layers.push(this.add(new LlamaBlock(`layers.${i}`, D, cfg.ffnHidden, cfg.heads)));
    for (let i = 0; i < cfg.factorizedLayers; i++) {
      this.factorizedBlocks.push(this.add(new LlamaBlock(`factorized_blocks.${i}`, D, cfg.ffnHidden, cfg.heads)));
    }
    this.norm = this.add(new RMSNorm("norm", D, "ar"));
    this.heads = [this.add(arLinear("heads.0", D, vPre, ZEROS)), this.add(arLinear("heads.1", D, vPost, ZEROS))];
  }
}

/** All parameters of a config (shared by the builder; `arParamCount` is the independent analytic count). */
export const arParamSpecs = (cfg: ARConfig): ParamSpec[] => new GPTModules(cfg).specs();

/** LFQ index → (pre, post) sub-tokens (pitfall 1: LSB-first, pre = low bits). */
export function splitIndices(idx: tf.Tensor, preBits: number): { pre: tf.Tensor; post: tf.Tensor } {
  const m = tf.scalar(2 ** preBits, "int32");
  const i = tf.cast(idx, "int32");
  return { pre: tf.mod(i, m), post: tf.floorDiv(i, m) };
}

let dropoutCounter = 0;

export class GPT {
  readonly config: ARConfig;
  /** The module tree; the incremental decoder (generate.ts) runs its blocks and heads slot by slot. */
  readonly modules: GPTModules;
  private readonly params: ParamStore;

  constructor(cfg: ARConfig) {
    this.config = cfg;
    this.modules = new GPTModules(cfg);
    this.params = new ParamStore(this.modules.specs(), cfg.seed);
  }

  /** Number of prefix slots: 1 ([C]) or 2 ([C, M]). */
  get prefix(): number {
    return prefixLength(this.config);
  }

  /** Token embedding pre_emb(pre) + post_emb(post) of full indices [...] → [..., D]. */
  embedTokens(idx: tf.Tensor): tf.Tensor {
    const { pre, post } = splitIndices(idx, this.config.preBits);
    return tf.add(this.modules.preEmb.forward(this.params, pre), this.modules.postEmb.forward(this.params, post));
  }

  /** Prefix embeddings [N, P, D]: class (+ Merge-Instruction) tokens. */
  embedPrefix(labels: tf.Tensor1D, mergeTokens?: tf.Tensor1D): tf.Tensor3D {
    const { clsEmbedding, mergeEmbedding } = this.modules;
    const c = tf.expandDims(clsEmbedding.forward(this.params, labels), 1);
    if (!this.config.mergeAR.enabled) return c as tf.Tensor3D;
    if (!mergeTokens) throw new Error("GPT: MergeAR is enabled, so the batch needs mergeTokens (candidate ids)");
    if (!mergeEmbedding) throw new Error("GPT: MergeAR is enabled but the config declares no merge tokens");
    const m = tf.expandDims(mergeEmbedding.forward(this.params, mergeTokens), 1);
    return tf.concat([c, m], 1) as tf.Tensor3D;
  }

  /**
   * Factorised head over hidden states h [N, D] given the pre sub-token embeddings. Used by the training
   * forward (all positions at once); the decoder runs the same blocks slot by slot with a 2-slot cache.
   */
  private factorized(h: tf.Tensor2D, preEmb: tf.Tensor2D, drop: DropoutCtx) {
    const cfg = this.config;
    let f = tf.stack([h, preEmb], 1) as tf.Tensor3D; // [N, 2, D]
    const rope = ropeTensors(ropeTable(cfg.dim / cfg.heads, cfg.gridSide, FACTORIZED_POSITIONS));
    const causal = tf.tensor4d([0, MASK_VALUE, 0, 0], [1, 1, 2, 2]); // slot 0 cannot see slot 1
    for (const block of this.modules.factorizedBlocks) {
      f = block.forward(this.params, f, rope, causal, { rate: cfg.residDropout, ctx: drop }).out;
    }
    f = this.modules.norm.forward(this.params, f);
    const [s0, s1] = tf.unstack(f, 1) as tf.Tensor2D[]; // 2 × [N, D]
    const [head0, head1] = this.modules.heads;
    return {
      pre: head0.forward(this.params, s0) as tf.Tensor2D,
      post: head1.forward(this.params, s1) as tf.Tensor2D,
    };
  }

  forward(b: ARBatch, opts: ForwardOptions): { logitsPre: tf.Tensor3D; logitsPost: tf.Tensor3D } {
    const cfg = this.config;
    const [B, L] = b.indices.shape;
    if (L !== cfg.L) throw new Error(`GPT.forward: indices have length ${L}, config L = ${cfg.L}`);
    const drop: DropoutCtx = { training: opts.training, seed: opts.seed ?? dropoutCounter++ };
    return tidyObject(() => {
      const P = this.prefix;
      const n = L - 1; // input tokens tok_0..tok_{L−2}
      const inputs = tf.slice(b.indices, [0, 0], [B, n]);
      let x = tf.concat([this.embedPrefix(b.labels, b.mergeTokens), this.embedTokens(inputs)], 1) as tf.Tensor3D; // [B, T, D]
      x = dropout(x, cfg.tokenDropout, drop, "tok_dropout") as tf.Tensor3D;
      const rope = ropeTensors(ropeTable(cfg.dim / cfg.heads, cfg.gridSide, spatialPositions(P, n)));
      const useMask = cfg.mergeAR.enabled && b.dup !== undefined;
      const bias = spatialBias(P, n, useMask ? { dup: b.dup as tf.Tensor2D, window: cfg.mergeAR.window } : undefined);
      for (const block of this.modules.layers) {
        x = block.forward(this.params, x, rope, bias, { rate: cfg.residDropout, ctx: drop }).out;
      }
      const h = tf.reshape(tf.slice(x, [0, P - 1, 0], [B, L, cfg.dim]), [B * L, cfg.dim]) as tf.Tensor2D; // outputs predicting tok_0..tok_{L−1}
      const { pre } = splitIndices(b.indices, cfg.preBits);
      const preEmb = this.modules.preEmb.forward(this.params, tf.reshape(pre, [B * L])) as tf.Tensor2D; // teacher-forced pre_n
      const out = this.factorized(h, preEmb, drop);
      return {
        logitsPre: tf.reshape(out.pre, [B, L, 2 ** cfg.preBits]) as tf.Tensor3D,
        logitsPost: tf.reshape(out.post, [B, L, 2 ** cfg.postBits]) as tf.Tensor3D,
      };
    });
  }

  /** CE(pre) + CE(post), each averaged over all B·L positions (no label smoothing). */
  loss(b: ARBatch, opts: ForwardOptions): { loss: tf.Scalar; pre: tf.Scalar; post: tf.Scalar } {
    return tidyObject(() => {
      const { logitsPre, logitsPost } = this.forward(b, opts);
      const { pre, post } = splitIndices(b.indices, this.config.preBits);
      const lPre = crossEntropy(logitsPre, pre);
      const lPost = crossEntropy(logitsPost, post);
      return { loss: tf.add(lPre, lPost) as tf.Scalar, pre: lPre, post: lPost };
    });
  }

  /** The parameter store the decoder runs `modules` over. */
  get store(): ParamStore {
    return this.params;
  }

  trainableVariables(): tf.Variable[] {
    return this.params.variables();
  }

  getWeights(): Map<string, tf.Variable> {
    return this.params.getWeights();
  }

  setWeights(m: ReadonlyMap<string, tf.Tensor>): void {
    this.params.setWeights(m);
  }

  paramCount(): number {
    return countParams(this.params.specs);
  }

  dispose(): void {
    this.params.dispose();
  }
}

/** Mean cross-entropy of logits [B, L, V] at int targets [B, L]: logsumexp − picked logit. */
export function crossEntropy(logits: tf.Tensor3D, targets: tf.Tensor): tf.Scalar {
  const V = logits.shape[2];
  const picked = tf.sum(tf.mul(logits, oneHotF32(tf.cast(targets, "int32"), V)), -1); // [B, L]
  return tf.mean(tf.sub(tf.logSumExp(logits, -1), picked)) as tf.Scalar;
}

/** Label dropout for the trainer: each label → null class (numClasses) with probability p, from `uniform`. */
export function dropLabels(labels: ArrayLike<number>, cfg: ARConfig, uniform: () => number): Int32Array {
  return Int32Array.from(labels, (y) => (uniform() < cfg.classDropout ? cfg.numClasses : y));
}

/** Model weights as checkpoint tensors "model/<name>". */
export function gptCheckpointTensors(model: GPT): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  for (const [name, v] of model.getWeights()) {
    out.set(`model/${name}`, { shape: [...v.shape], dtype: "float32", data: v.dataSync() as Float32Array });
  }
  return out;
}

/** Rebuild the generator of an "ar-train" checkpoint (config from meta.arConfig, weights "model/<name>"). */
export function gptFromCheckpoint(ckpt: Checkpoint, uri: string): GPT {
  if (ckpt.kind !== "ar-train") {
    throw new CheckpointError(`${uri}: not an AR checkpoint (kind "${ckpt.kind}", expected "ar-train")`);
  }
  const cfg = ckpt.meta.arConfig as ARConfig | undefined;
  if (!cfg || typeof cfg !== "object" || typeof cfg.dim !== "number") {
    throw new CheckpointError(`${uri}: header has no arConfig`);
  }
  const model = new GPT(cfg);
  const weights = new Map<string, tf.Tensor>();
  try {
    for (const name of model.getWeights().keys()) {
      const e = ckpt.tensors.get(`model/${name}`);
      if (!e) throw new CheckpointError(`${uri}: missing tensor model/${name}`);
      weights.set(name, tf.tensor(e.data, e.shape, e.dtype));
    }
    model.setWeights(weights);
  } catch (e) {
    model.dispose();
    throw e instanceof CheckpointError ? e : new CheckpointError(`${uri}: ${(e as Error).message}`);
  } finally {
    for (const t of weights.values()) t.dispose();
  }
  return model;
}
