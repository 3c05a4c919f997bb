// Stage II AR generator configuration (docs/model.md §5.2 size table, §10 "Stage-II tiny" / "MergeAR tiny").
// `resolveARConfig` turns the ARTraining CRD's `spec.model` plus the frozen tokenizer's shape into the
// fully resolved `ARConfig` that the model, the trainer and checkpoints (meta.arConfig) share;
// `arParamCount` is the analytic parameter count (docs/model.md §5.2 "params [derived]", a porting checksum).

export type ARSize = "tiny" | "B" | "L" | "XL";

export interface ARConfig {
  size: ARSize;
  /** Model width D. */
  dim: number;
  heads: number;
  /** Llama blocks over the token sequence. */
  spatialLayers: number;
  /** Llama blocks over the length-2 intra-token sequence [h_n, pre_emb(pre_n)]. */
  factorizedLayers: number;
  /** SwiGLU hidden width = round_up(⌊2·4·dim/3⌋, multiple_of). */
  ffnHidden: number;
  /** Low LFQ bits predicted first (pitfall 1: LSB-first → pre = idx & (2^preBits − 1)). */
  preBits: number;
  /** High LFQ bits (post = idx >> preBits). */
  postBits: number;
  /** Tokens per image = the tokenizer's full raster length (block_size). */
  L: number;
  /** √L: side of the 2-D RoPE grid. */
  gridSide: number;
  /** Number of real classes; the class table has numClasses + 1 rows (last = null class for CFG). */
  numClasses: number;
  /** Probability a training label is replaced by the null class (applied by the trainer). */
  classDropout: number;
  /** Dropout on the input embeddings (LlamaGen `token_drop`). */
  tokenDropout: number;
  /** Dropout after the attention output projection and after the FFN (`resid_dropout`, `ffn_dropout`). */
  residDropout: number;
  mergeAR: {
    enabled: boolean;
    /** Recent window w: keys j ≥ i − w are always visible (docs/model.md §5.5 item 3). */
    window: number;
    /** Rows of the Merge-Instruction table (= number of tokenizer K candidates; 0 when disabled). */
    numMergeTokens: number;
  };
  /** Parameter-initialisation seed. */
  seed: number;
}

interface SizeRow {
  dim: number;
  heads: number;
  spatialLayers: number;
  factorizedLayers: number;
  multipleOf: number;
}

/** docs/model.md §5.2 table (B/L/XL: LlamaGen `multiple_of 256`) and §10 Stage-II tiny (`multiple_of 32`). */
export const AR_SIZES: Readonly<Record<ARSize, SizeRow>> = {
  tiny: { dim: 64, heads: 4, spatialLayers: 2, factorizedLayers: 1, multipleOf: 32 },
  B: { dim: 1024, heads: 16, spatialLayers: 24, factorizedLayers: 2, multipleOf: 256 },
  L: { dim: 1280, heads: 20, spatialLayers: 36, factorizedLayers: 3, multipleOf: 256 },
  XL: { dim: 1536, heads: 24, spatialLayers: 48, factorizedLayers: 4, multipleOf: 256 },
};

/** LlamaGen `find_multiple(int(2·hidden/3), multiple_of)` with hidden = 4·dim. */
export function ffnHiddenDim(dim: number, multipleOf: number): number {
  const h = Math.floor((2 * 4 * dim) / 3);
  return Math.ceil(h / multipleOf) * multipleOf;
}

/** Decision (interface doc): preBits = ⌈z/3⌉ (18 → 6/12 as upstream, 10 → 4/6 as docs/model.md §10). */
export function splitBits(zChannels: number): { preBits: number; postBits: number } {
  const preBits = Math.ceil(zChannels / 3);
  return { preBits, postBits: zChannels - preBits };
}

export interface ARModelSpec {
  size: ARSize;
  numClasses: number;
  classDropout: number;
  mergeAR: { enabled: boolean; window: number };
}

export interface ARTokenizerShape {
  /** LFQ bits (codebook 2^zChannels). */
  zChannels: number;
  /** Full raster token count of the tokenizer (its `derived.L`). */
  L: number;
  /** Number of training K candidates of the tokenizer (`derived.candidates.length`). */
  numCandidates: number;
}

export class ARConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ARConfigError";
  }
}

export function resolveARConfig(model: ARModelSpec, tokenizer: ARTokenizerShape, seed = 0): ARConfig {
  const row = AR_SIZES[model.size];
  if (!row) throw new ARConfigError(`model.size: unknown size ${String(model.size)}`);
  const { zChannels, L, numCandidates } = tokenizer;
  if (!Number.isInteger(zChannels) || zChannels < 2) throw new ARConfigError(`tokenizer.zChannels: ${zChannels} < 2`);
  const gridSide = Math.round(Math.sqrt(L));
  if (gridSide * gridSide !== L) throw new ARConfigError(`tokenizer.L: ${L} is not a perfect square`);
  const headDim = row.dim / row.heads;
  if (headDim % 4 !== 0) throw new ARConfigError(`head_dim ${headDim} must be divisible by 4 (2-D RoPE)`);
  if (!Number.isInteger(model.numClasses) || model.numClasses < 1) {
    throw new ARConfigError(`model.numClasses: must be a positive integer, got ${model.numClasses}`);
  }
  if (!(model.classDropout >= 0 && model.classDropout <= 1)) {
    throw new ARConfigError(`model.classDropout: must be in [0, 1], got ${model.classDropout}`);
  }
  const { enabled, window } = model.mergeAR;
  if (enabled && (!Number.isInteger(window) || window < 1)) {
    throw new ARConfigError(`model.mergeAR.window: must be an integer ≥ 1 when MergeAR is enabled, got ${window}`);
  }
  if (enabled && (!Number.isInteger(numCandidates) || numCandidates < 1)) {
    throw new ARConfigError(`tokenizer.numCandidates: MergeAR needs at least one K candidate, got ${numCandidates}`);
  }
  if (!Number.isInteger(seed) || seed < 0) throw new ARConfigError(`seed: must be a non-negative integer, got ${seed}`);
  return {
    size: model.size,
    dim: row.dim,
    heads: row.heads,
    spatialLayers: row.spatialLayers,
    factorizedLayers: row.factorizedLayers,
    ffnHidden: ffnHiddenDim(row.dim, row.multipleOf),
    ...splitBits(zChannels),
    L,
    gridSide,
    numClasses: model.numClasses,
    classDropout: model.classDropout,
    tokenDropout: 0.1,
    residDropout: 0.1,
    mergeAR: { enabled, window, numMergeTokens: enabled ? numCandidates : 0 },
    seed,
  };
}

/** Number of prefix slots before the tokens: [C] or [C, M] (MergeAR). */
export const prefixLength = (cfg: ARConfig): number => (cfg.mergeAR.enabled ? 2 : 1);

/** Per Llama block: fused qkv (3D²) + wo (D²) + SwiGLU w1, w3, w2 (3·D·F) + two RMSNorm weights (2D). */
export const blockParamCount = (dim: number, ffn: number): number => 4 * dim * dim + 3 * dim * ffn + 2 * dim;

/**
 * Analytic parameter count (independent of the model builder; tests check both agree):
 * blocks + pre/post embeddings + class table (numClasses + 1) + Merge-Instruction table + final norm + 2 heads.
 * B at 18 bits, L = 256, 1000 classes → 343 570 432 ≈ 343.6 M (docs/model.md §5.2).
 */
export function arParamCount(cfg: ARConfig): number {
  const D = cfg.dim;
  const vPre = 2 ** cfg.preBits;
  const vPost = 2 ** cfg.postBits;
  return (
    (cfg.spatialLayers + cfg.factorizedLayers) * blockParamCount(D, cfg.ffnHidden) +
    (vPre + vPost) * D + // pre_emb, post_emb
    (cfg.numClasses + 1) * D + // class table incl. null class
    cfg.mergeAR.numMergeTokens * D + // Merge-Instruction tokens
    D + // final RMSNorm
    D * (vPre + vPost) // head0, head1 (bias-free)
  );
}
