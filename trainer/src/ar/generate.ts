// Incremental generation (docs/model.md §5.4) with MergeAR's duplicate detection and KV eviction (§5.5 item 4).
//
//   step 0:  prefill the prefix [C, (M)] (zero RoPE) → h_0
//   step s:  feed tok_{s−1} (pre_emb + post_emb, RoPE at its raster position s−1) → h_s
//            (MergeAR: first evict cached duplicates with position < (s−1) − w)
//   each s:  factorised blocks with a 2-slot cache: slot 0 = h_s → head0 → sample pre;
//            slot 1 = pre_emb(pre) → head1 → sample post;  tok_s = pre | post << preBits
//            (MergeAR: tok_s is a duplicate iff its code matches a token still in the cache — global search)
//
// CFG by batch doubling: rows [labels; null class], combined u + s·(c − u) per sub-token, and the same sample
// written to both halves. `ARDecoder` exposes the steps so tests can teacher-force a sequence and compare
// its logits with the masked full forward (masking ≡ eviction).
import * as tf from "@tensorflow/tfjs";
import type { DropoutCtx } from "../nn/layers.ts";
import { Rng } from "../util/rng.ts";
import type { KV } from "./blocks.ts";
import type { GPT } from "./gpt.ts";
import { KVCache, type Slot } from "./kvCache.ts";
import { spatialBias } from "./mergeAR.ts";
import { FACTORIZED_POSITIONS, ropeTable, ropeTensors } from "./rope.ts";
import { cfgCombine, sampleLogits } from "./sampling.ts";

const EVAL: { rate: number; ctx: DropoutCtx } = { rate: 0, ctx: { training: false, seed: 0 } };

export interface DecoderOptions {
  /** Class labels [B] (numClasses = null class). */
  labels: number[];
  /** K-candidate ids [B] (MergeAR models only). */
  mergeTokens?: number[];
  /** Double the batch with null-class rows (CFG). */
  cfg: boolean;
  /** Duplicate detection + KV eviction with the config's window. */
  evict: boolean;
}

export class ARDecoder {
  readonly B: number;
  /** Rows: B, or 2B with CFG. */
  readonly N: number;
  /** Next step s (= number of tokens whose logits were produced). */
  step = 0;
  /** Evicted (sample, token) entries so far. */
  evicted = 0;
  /** Longest live cache (incl. prefix) seen by any query. */
  maxCacheLength = 0;
  /** Per sample: the slot of the token committed last (fed at the next step). */
  private pending: Slot[] | null = null;
  private readonly cache: KVCache;
  private readonly fcache: KV[] = [];
  private h: tf.Tensor3D | null = null; // [N, 1, D]
  private readonly headDim: number;

  constructor(
    private readonly model: GPT,
    private readonly o: DecoderOptions,
  ) {
    const cfg = model.config;
    this.B = o.labels.length;
    if (this.B < 1) throw new Error("ARDecoder: need at least one label");
    if (cfg.mergeAR.enabled) {
      if (!o.mergeTokens || o.mergeTokens.length !== this.B) {
        throw new Error(`ARDecoder: MergeAR model needs mergeTokens for each of the ${this.B} samples`);
      }
      for (const m of o.mergeTokens) {
        if (!Number.isInteger(m) || m < 0 || m >= cfg.mergeAR.numMergeTokens) {
          throw new Error(`ARDecoder: merge token ${m} outside [0, ${cfg.mergeAR.numMergeTokens})`);
        }
      }
    }
    for (const y of o.labels) {
      if (!Number.isInteger(y) || y < 0 || y > cfg.numClasses)
        throw new Error(`ARDecoder: label ${y} outside [0, ${cfg.numClasses}]`);
    }
    this.N = o.cfg ? 2 * this.B : this.B;
    this.cache = new KVCache(cfg.spatialLayers, this.N, this.B);
    this.headDim = cfg.dim / cfg.heads;
  }

  /** Sample b's value for each row (rows b and B + b share the sample). */
  private rowsOf(perSample: ArrayLike<number>): Int32Array {
    return Int32Array.from({ length: this.N }, (_, r) => perSample[r % this.B]);
  }

  /** Run the spatial blocks for the current step: the prefix at step 0, else the pending token. */
  advance(): void {
    const cfg = this.model.config;
    const P = this.model.prefix;
    if (this.step >= cfg.L) throw new Error(`ARDecoder: all ${cfg.L} tokens were already produced`);
    if (this.step > 0 && !this.pending) throw new Error("ARDecoder: commit() the previous token before advance()");
    const queryPos = this.step - 1; // raster position of the token fed now (−1: prefix)
    if (this.o.evict && this.step > 0) {
      const w = cfg.mergeAR.window;
      this.evicted += this.cache.evict((s) => s.dup && s.pos >= 0 && s.pos < queryPos - w);
      this.cache.compact(Math.max(1, Math.floor(this.cache.length / 4))); // gather once ≥ 1/4 of the slots are dead
    }
    const h = tf.tidy(() => {
      let x: tf.Tensor3D;
      let rope: { cos: tf.Tensor2D; sin: tf.Tensor2D };
      let bias: tf.Tensor;
      if (this.step === 0) {
        const labels = Int32Array.from({ length: this.N }, (_, r) => (r < this.B ? this.o.labels[r] : cfg.numClasses));
        const merge = this.o.mergeTokens ? tf.tensor1d(this.rowsOf(this.o.mergeTokens), "int32") : undefined;
        x = this.model.embedPrefix(tf.tensor1d(labels, "int32"), merge); // [N, P, D]
        rope = ropeTensors(ropeTable(this.headDim, cfg.gridSide, Array<number>(P).fill(-1)));
        bias = spatialBias(P, 0); // causal within the prefix
      } else {
        const codes = this.rowsOf((this.pending as Slot[]).map((s) => s.code));
        x = this.model.embedTokens(tf.tensor2d(codes, [this.N, 1], "int32")) as tf.Tensor3D; // [N, 1, D]
        rope = ropeTensors(ropeTable(this.headDim, cfg.gridSide, [queryPos]));
        bias = this.cache.bias(1);
      }
      const { store, modules } = this.model;
      for (const [l, block] of modules.layers.entries()) {
        const r = block.forward(store, x, rope, bias, EVAL, this.cache.get(l));
        this.cache.append(l, r.kv);
        x = r.out;
      }
      const T = x.shape[1];
      return tf.slice(x, [0, T - 1, 0], [this.N, 1, cfg.dim]) as tf.Tensor3D; // [N, 1, D]
    });
    this.h?.dispose();
    this.h = h;
    if (this.step === 0) {
      this.cache.pushSlots(
        Array.from({ length: this.B }, () =>
          Array.from({ length: P }, () => ({ pos: -1, code: -1, group: -1, dup: false })),
        ),
      );
    } else {
      this.cache.pushSlots((this.pending as Slot[]).map((s) => [s]));
    }
    this.pending = null;
    this.maxCacheLength = Math.max(this.maxCacheLength, this.cache.maxLiveLength());
  }

  /** Factorised sub-step 0: logits of pre for every row, [N · 2^preBits] (row-major). */
  headPre(): Float32Array {
    const cfg = this.model.config;
    if (!this.h) throw new Error("ARDecoder: advance() first");
    for (const kv of this.fcache.splice(0)) {
      kv.k.dispose();
      kv.v.dispose();
    }
    const logits = tf.tidy(() => {
      const rope = ropeTensors(ropeTable(this.headDim, cfg.gridSide, [FACTORIZED_POSITIONS[0]]));
      const { store, modules } = this.model;
      let f = this.h as tf.Tensor3D;
      for (const block of modules.factorizedBlocks) {
        const r = block.forward(store, f, rope, null, EVAL);
        this.fcache.push({ k: tf.keep(r.kv.k), v: tf.keep(r.kv.v) });
        f = r.out;
      }
      return modules.heads[0].forward(store, tf.squeeze(modules.norm.forward(store, f), [1]));
    });
    const out = logits.dataSync() as Float32Array;
    logits.dispose();
    return out;
  }

  /** Factorised sub-step 1 given the sampled pre [B]: logits of post, [N · 2^postBits]. */
  headPost(pre: ArrayLike<number>): Float32Array {
    const cfg = this.model.config;
    if (this.fcache.length !== cfg.factorizedLayers) throw new Error("ARDecoder: headPre() first");
    const logits = tf.tidy(() => {
      const rope = ropeTensors(ropeTable(this.headDim, cfg.gridSide, [FACTORIZED_POSITIONS[1]]));
      const { store, modules } = this.model;
      let f = tf.expandDims(
        tf.gather(store.get(modules.preEmb.weight), tf.tensor1d(this.rowsOf(pre), "int32")),
        1,
      ) as tf.Tensor3D; // [N, 1, D]
      for (const [l, block] of modules.factorizedBlocks.entries()) {
        f = block.forward(store, f, rope, null, EVAL, this.fcache[l]).out;
      }
      return modules.heads[1].forward(store, tf.squeeze(modules.norm.forward(store, f), [1]));
    });
    const out = logits.dataSync() as Float32Array;
    logits.dispose();
    return out;
  }

  /** Record tok_s [B] (full LFQ indices); with eviction, resolve its group by code match against the cache. */
  commit(indices: ArrayLike<number>): void {
    const s = this.step;
    this.pending = Array.from({ length: this.B }, (_, b) => {
      const code = indices[b];
      const group = this.o.evict ? this.cache.findCode(b, code) : -1;
      return { pos: s, code, group: group >= 0 ? group : s, dup: group >= 0 };
    });
    this.step++;
  }

  /** Live cache slots of sample b (tests / stats). */
  liveSlots(b: number): Slot[] {
    return this.cache.live(b);
  }

  dispose(): void {
    this.cache.dispose();
    for (const kv of this.fcache.splice(0)) {
      kv.k.dispose();
      kv.v.dispose();
    }
    this.h?.dispose();
    this.h = null;
  }
}

export interface GenerateOptions {
  /** Class labels [B]. */
  labels: number[];
  /** K-candidate ids [B] (required for MergeAR models). */
  mergeTokens?: number[];
  /** CFG scale, one value or (pre, post). */
  cfgScale: number | [number, number];
  /** Temperature, one value or (pre, post). */
  temperature: number | [number, number];
  /** 0 / undefined = off. */
  topK?: number;
  /** 1 / undefined = off. */
  topP?: number;
  seed: number;
  /** Duplicate detection + KV eviction (default: cfg.mergeAR.enabled). */
  evict?: boolean;
}

export interface GenerateResult {
  /** [B · L] full LFQ indices, raster order. */
  indices: Int32Array;
  B: number;
  L: number;
  stats: { maxCacheLength: number; evicted: number; seconds: number };
}

const pair = (v: number | [number, number]): [number, number] => (Array.isArray(v) ? v : [v, v]);

/** Class-conditional sampling of B token grids with CFG (always batch-doubled, as upstream). */
export function generate(model: GPT, o: GenerateOptions): GenerateResult {
  const t0 = performance.now();
  const cfg = model.config;
  const [s0, s1] = pair(o.cfgScale);
  const [t0_, t1] = pair(o.temperature);
  const rng = new Rng(o.seed);
  const dec = new ARDecoder(model, {
    labels: o.labels,
    mergeTokens: o.mergeTokens,
    cfg: true,
    evict: o.evict ?? cfg.mergeAR.enabled,
  });
  const { B } = dec;
  const L = cfg.L;
  const vPre = 2 ** cfg.preBits;
  const vPost = 2 ** cfg.postBits;
  const out = new Int32Array(B * L);
  const sampleHalf = (logits: Float32Array, V: number, b: number, scale: number, temperature: number) => {
    const c = logits.subarray(b * V, (b + 1) * V);
    const u = logits.subarray((B + b) * V, (B + b + 1) * V);
    return sampleLogits(cfgCombine(c, u, scale), { temperature, topK: o.topK, topP: o.topP }, rng);
  };
  try {
    for (let s = 0; s < L; s++) {
      dec.advance();
      const lp = dec.headPre();
      const pre = Int32Array.from({ length: B }, (_, b) => sampleHalf(lp, vPre, b, s0, t0_));
      const lq = dec.headPost(pre);
      const tok = Int32Array.from({ length: B }, (_, b) => pre[b] + sampleHalf(lq, vPost, b, s1, t1) * vPre);
      for (let b = 0; b < B; b++) out[b * L + s] = tok[b];
      dec.commit(tok);
    }
    return {
      indices: out,
      B,
      L,
      stats: { maxCacheLength: dec.maxCacheLength, evicted: dec.evicted, seconds: (performance.now() - t0) / 1000 },
    };
  } finally {
    dec.dispose();
  }
}
