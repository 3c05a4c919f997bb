// MergeVQ Stage-I tokenizer (docs/model.md §0, §2): CNN (or ViT patch) encoder → encoder transformer with ToMe →
// output head → LFQ → unmerge with the source matrix of the same forward → decoder; CLS → representation
// head. A module tree (paramShapes.ts) run over a named parameter store; every public method runs in tf.tidy and returns
// tensors the caller owns (dispose them, e.g. with `tf.dispose(out)`).
import * as tf from "@tensorflow/tfjs";
import { countParams, type ParamGroup, ParamStore, tidyObject } from "../nn/params.ts";
import { candidateForBatch } from "./candidates.ts";
import { type ResolvedTokenizerConfig, resolveConfig, type TokenizerConfigInput } from "./config.ts";
import { indicesToCodes, type LfqLosses, lfq } from "./lfq.ts";
import { TokenizerModules } from "./paramShapes.ts";
import { mergeSchedule, tokensAfterBlocks } from "./tome.ts";
import { unmerge } from "./unmerge.ts";

export interface EncodeOutput {
  /** Pre-quantization latents [B, K, zc] (ToMe order). */
  z: tf.Tensor3D;
  /** Straight-through quantized latents (±1) [B, K, zc]. */
  zq: tf.Tensor3D;
  /** LFQ indices (LSB-first) [B, K] int32. */
  indices: tf.Tensor2D;
  /** Source matrix S [B, K, L] (binary, columns one-hot; identity when K = L). */
  source: tf.Tensor3D;
  /** Group (kept-token index 0…K−1) of every raster position [B, L] int32 (= argmax of S over K). */
  groups: tf.Tensor2D;
  /** Token sizes [B, K] (row sums of S; sum to L). */
  sizes: tf.Tensor2D;
  /** LFQ loss terms (zero scalars when training is false). */
  losses: LfqLosses;
  /** CLS representation of this pass [B, numClasses]. */
  cls: tf.Tensor2D;
}

export interface ForwardOutput extends Omit<EncodeOutput, "cls"> {
  /** Reconstruction [B, H, W, 3], unclamped. */
  recon: tf.Tensor4D;
  /** CLS representation: from `clsView` when given (second encoder pass), else from the recon pass. */
  cls: tf.Tensor2D;
}

export interface EncodeOptions {
  /** Compute entropy/commitment losses (default true). */
  training?: boolean;
}

export interface ForwardOptions extends EncodeOptions {
  /** Kept tokens (perfect square; defaults to the nominal K). */
  K?: number;
  /** Student view [B, v, v, 3] in [−1, 1] for the CLS alignment pass (docs/model.md §3). */
  clsView?: tf.Tensor4D;
}

export class MergeVQTokenizer {
  readonly config: ResolvedTokenizerConfig;
  readonly params: ParamStore;
  private readonly modules: TokenizerModules;
  private readonly schedules = new Map<number, number[]>();

  constructor(config: ResolvedTokenizerConfig | string | (TokenizerConfigInput & { preset?: string })) {
    this.config = typeof config === "object" && "derived" in config ? config : resolveConfig(config);
    this.modules = new TokenizerModules(this.config);
    this.params = new ParamStore(this.modules.specs(), this.config.seed);
  }

  /** Training keep-count for the micro-batch with in-epoch index b (deterministic 100-batch cycle, §2.3). */
  kForBatch(b: number): number {
    return candidateForBatch(this.config.derived.candidates, b).K;
  }

  /** Per-block r list for K kept tokens; throws unless K is a square reachable without hitting the cap. */
  scheduleFor(K: number): number[] {
    const cached = this.schedules.get(K);
    if (cached) return cached;
    const { L } = this.config.derived;
    const side = Math.round(Math.sqrt(K));
    if (!Number.isInteger(K) || K < 1 || K > L || side * side !== K) {
      throw new Error(`K = ${K} must be a perfect square in [1, L = ${L}]`);
    }
    const { r } = mergeSchedule(L - K, this.config.numAttBlocks);
    const last = tokensAfterBlocks(L, r).at(-1);
    if (last !== K) throw new Error(`K = ${K}: schedule [${r}] hits the per-layer cap (ends at ${last} tokens)`);
    this.schedules.set(K, r);
    return r;
  }

  /** Image → raster tokens [B, L', D] (CNN or ViT patch embedding). */
  private features(x: tf.Tensor4D): tf.Tensor3D {
    const f = this.modules.features.forward(this.params, x);
    const [B, h, w, D] = f.shape;
    return tf.reshape(f, [B, h * w, D]) as tf.Tensor3D; // [B, h, w, D] → [B, L, D] raster
  }

  private checkImage(x: tf.Tensor, what: string): void {
    tf.util.assert(x.rank === 4 && x.shape[3] === 3, () => `${what}: expected [B, H, W, 3], got [${x.shape}]`);
  }

  /** Encode x [B, H, W, 3] in [−1, 1] to K quantized tokens (docs/model.md §2.2–2.4). */
  encode(x: tf.Tensor4D, K = this.config.derived.K, opts: EncodeOptions = {}): EncodeOutput {
    this.checkImage(x, "encode");
    const r = this.scheduleFor(K);
    return tidyObject(() => {
      const cfg = this.config;
      const tokens = this.features(x);
      tf.util.assert(
        tokens.shape[1] === cfg.derived.L,
        () => `encode: ${tokens.shape[1]} tokens, config L = ${cfg.derived.L}`,
      );
      const enc = this.modules.transformer.forward(this.params, tokens, r);
      const z = this.modules.transformer.head(this.params, enc.tokens); // [B, K, zc]
      const q = lfq(z, {
        temperature: cfg.entropyTemperature,
        training: opts.training ?? true,
        sampleWeight: cfg.train.sampleMinimizationWeight,
        batchWeight: cfg.train.batchMaximizationWeight,
      });
      const [B] = x.shape;
      return {
        z,
        zq: q.zq as tf.Tensor3D,
        indices: q.indices as tf.Tensor2D,
        source: enc.tracker.sourceMatrix(),
        groups: tf.tensor2d(enc.tracker.tokenGroups(), [B, cfg.derived.L], "int32"),
        sizes: enc.tracker.tokenSizes(),
        losses: q.losses,
        cls: this.modules.clsHead.forward(this.params, enc.cls),
      };
    });
  }

  /**
   * CLS-only encoder pass (docs/model.md §3 student view, any size divisible by the encoder stride): same r list
   * as K, with the per-layer cap; no square token count required. → [B, numClasses].
   */
  encodeCls(view: tf.Tensor4D, K = this.config.derived.K): tf.Tensor2D {
    this.checkImage(view, "encodeCls");
    const r = this.scheduleFor(K);
    return tf.tidy(() => {
      const { transformer, clsHead } = this.modules;
      return clsHead.forward(this.params, transformer.forward(this.params, this.features(view), r).cls);
    });
  }

  /** Decode K quantized tokens with their source matrix (docs/model.md §2.5–2.6) → [B, H, W, 3] (unclamped). */
  decode(zq: tf.Tensor3D, source: tf.Tensor3D | null): tf.Tensor4D {
    return tf.tidy(() => this.modules.decoder.forward(this.params, unmerge(zq, source)));
  }

  /** Decode a full (unmerged) raster grid of indices [B, L] (Stage-II samples, docs/model.md §5.4). */
  decodeIndices(indices: tf.Tensor2D): tf.Tensor4D {
    return tf.tidy(() => {
      const [B, L] = indices.shape;
      const S = Math.round(Math.sqrt(L));
      const codes = tf.reshape(indicesToCodes(indices, this.config.zChannels), [B, S, S, this.config.zChannels]);
      return this.modules.decoder.forward(this.params, codes as tf.Tensor4D); // [B, L] → [B, S, S, zc] → image
    });
  }

  /** encode → unmerge with the same pass's S → decode, then (optionally) the CLS pass on `clsView`. */
  forward(x: tf.Tensor4D, opts: ForwardOptions = {}): ForwardOutput {
    return tidyObject(() => {
      const enc = this.encode(x, opts.K ?? this.config.derived.K, { training: opts.training });
      const recon = this.decode(enc.zq, enc.source); // decode before the CLS pass (pitfall 6)
      const cls = opts.clsView ? this.encodeCls(opts.clsView, opts.K ?? this.config.derived.K) : enc.cls;
      if (opts.clsView) enc.cls.dispose();
      return { ...enc, recon, cls };
    });
  }

  /** Trainable variables (optionally one group: "encoder" | "clsHead" | "decoder"). LFQ has none. */
  trainableVariables(group?: ParamGroup): tf.Variable[] {
    return this.params.variables(group ? (s) => s.group === group : undefined);
  }

  /** Live variables by stable name (checkpoint keys such as `encoder.blocks.0.attn.qkv.weight`). */
  getWeights(): Map<string, tf.Variable> {
    return this.params.getWeights();
  }

  setWeights(weights: ReadonlyMap<string, tf.Tensor> | Record<string, tf.Tensor>): void {
    this.params.setWeights(weights);
  }

  paramCount(group?: ParamGroup): number {
    return countParams(this.params.specs.filter((s) => !group || s.group === group));
  }

  dispose(): void {
    this.params.dispose();
  }
}
