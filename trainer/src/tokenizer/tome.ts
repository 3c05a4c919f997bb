// MergeVQ docs/model.md §2.3 "Encoder transformer with token merging (ToMe)": bipartite soft matching with a
// protected CLS token, size-weighted averaging, source-matrix tracking, and the exact per-layer merge
// schedule (`parse_r` / `check_parse_r`, step-first float64 rule). Follows facebookresearch/ToMe
// `tome/merge.py` (bipartite_soft_matching, merge_wavg, merge_source) with the scatter replaced by
// assignment-matrix matmuls (docs/model.md §2.3 "TF.js" note, §11).
//
// Matching is computed without gradient: the similarity scores are read back to JS, the plan (who merges
// into whom) is decided there with deterministic index tie-breaking (docs/model.md §11), and the merge is applied
// as `x_new = (M·(x⊙s)) / (M·s)` with a constant 0/1 assignment matrix M [B, t−r, t].
import * as tf from "@tensorflow/tfjs";

// ───────────────────────────── merge schedule (pure, float64) ─────────────────────────────

/**
 * Raw `parse_r` list (inflection −0.5): first = ⌊1.5·r̄⌋, last = 2r̄ − first,
 * step = (last − first)/(n − 1) computed first in float64, r_ℓ = trunc(first + step·ℓ).
 */
export function parseRRaw(rBar: number, n: number): number[] {
  if (n < 2) throw new Error(`merge schedule needs n ≥ 2 blocks (got ${n})`);
  const first = Math.floor(1.5 * rBar);
  const last = 2 * rBar - first;
  const step = (last - first) / (n - 1); // division first: this exact order reproduces the Python code
  const out: number[] = [];
  for (let l = 0; l < n; l++) out.push(Math.trunc(first + step * l));
  return out;
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

/**
 * `check_parse_r`: choose r̄ by scanning i = 0…mergeNum−1 on the raw lists (strict improvement updates,
 * strict worsening stops), then put the remainder `mergeNum − Σ raw` on layer 0 (may be negative).
 */
export function mergeSchedule(mergeNum: number, n: number): { rBar: number; r: number[] } {
  if (!Number.isInteger(mergeNum) || mergeNum < 0)
    throw new Error(`merge_num must be an integer ≥ 0 (got ${mergeNum})`);
  if (mergeNum === 0) return { rBar: 0, r: new Array(n).fill(0) };
  let best = Number.POSITIVE_INFINITY;
  let rBar = 0;
  for (let i = 0; i < mergeNum; i++) {
    const gap = Math.abs(sum(parseRRaw(i, n)) - mergeNum);
    if (gap < best) {
      best = gap;
      rBar = i;
    } else if (gap > best) break;
  }
  const r = parseRRaw(rBar, n);
  r[0] += mergeNum - sum(r);
  return { rBar, r };
}

/** Per-layer cap with one protected CLS token: r ← min(r, ⌊(t−1)/2⌋), t counting CLS. */
export const capR = (r: number, tWithCls: number): number => Math.max(0, Math.min(r, Math.floor((tWithCls - 1) / 2)));

/** Token counts (excluding CLS) after each block for L input tokens and schedule r, with the cap applied. */
export function tokensAfterBlocks(L: number, r: readonly number[]): number[] {
  const out: number[] = [];
  let t = L + 1;
  for (const rl of r) {
    t -= capR(rl, t);
    out.push(t - 1);
  }
  return out;
}

// ───────────────────────────── bipartite soft matching (JS plan) ─────────────────────────────

export interface MergePlan {
  /** Tokens (incl. CLS) before / after. */
  t: number;
  tNew: number;
  /** Assignment matrix M, row-major [B, tNew, t], M[new, old] = 1. */
  assign: Float32Array;
  /** New position of every old position, [B, t]. */
  newPos: Int32Array;
}

/**
 * Bipartite soft matching on precomputed scores (docs/model.md §2.3). `score` is row-major [B, |A|, |B|] with
 * A = even positions (A₀ = CLS) and B = odd positions of the current order. Row A₀ is treated as −∞.
 * Ties: dst(a) = lowest b among equal maxima; the ranking of A by best score is a stable descending sort
 * (lower A index first on ties) [decision, docs/model.md §11].
 */
export function bipartitePlan(score: Float32Array, batch: number, t: number, rIn: number): MergePlan {
  const nA = Math.ceil(t / 2);
  const nB = Math.floor(t / 2);
  const r = capR(rIn, t);
  const tNew = t - r;
  const assign = new Float32Array(batch * tNew * t);
  const newPos = new Int32Array(batch * t);
  const best = new Float64Array(nA);
  const dst = new Int32Array(nA);
  const order = new Int32Array(nA);
  for (let b = 0; b < batch; b++) {
    const base = b * nA * nB;
    for (let a = 0; a < nA; a++) {
      if (a === 0) {
        best[a] = Number.NEGATIVE_INFINITY; // protected CLS
        dst[a] = 0;
        continue;
      }
      let m = Number.NEGATIVE_INFINITY;
      let arg = 0;
      for (let j = 0; j < nB; j++) {
        const v = score[base + a * nB + j];
        if (v > m) {
          m = v;
          arg = j;
        }
      }
      best[a] = m;
      dst[a] = arg;
    }
    for (let a = 0; a < nA; a++) order[a] = a;
    // Stable descending sort by best score (Array.prototype.sort is stable); NaN sorts last.
    const sorted = Array.from(order).sort((i, j) => {
      const bi = Number.isNaN(best[i]) ? Number.NEGATIVE_INFINITY : best[i];
      const bj = Number.isNaN(best[j]) ? Number.NEGATIVE_INFINITY : best[j];
      return bi === bj ? i - j : bj - bi;
    });
    const isSource = new Uint8Array(nA);
    for (let k = 0; k < r; k++) isSource[sorted[k]] = 1;
    // New order: [unmerged A ascending, all B in original order].
    let u = 0;
    const np = b * t;
    for (let a = 0; a < nA; a++) if (!isSource[a]) newPos[np + 2 * a] = u++;
    for (let a = 0; a < nA; a++) if (isSource[a]) newPos[np + 2 * a] = nA - r + dst[a];
    for (let j = 0; j < nB; j++) newPos[np + 2 * j + 1] = nA - r + j;
    const ab = b * tNew * t;
    for (let p = 0; p < t; p++) assign[ab + newPos[np + p] * t + p] = 1;
  }
  return { t, tNew, assign, newPos };
}

/**
 * Bookkeeping for one encoder forward: token sizes and, for every original token (CLS at index 0), the
 * position of the group it currently belongs to. The source matrix is rebuilt from `groups` on demand;
 * this equals the `S_new = M·S` updates of docs/model.md §2.3 (columns are one-hot by construction).
 */
export class MergeTracker {
  readonly batch: number;
  /** Original token count including CLS (1 + L). */
  readonly n0: number;
  t: number;
  /** Sizes [B, t] (all ones until the first merge). */
  sizes: Float32Array;
  /** Current position of every original token, [B, n0]. */
  groups: Int32Array;
  merged = false;

  constructor(batch: number, tokensWithCls: number) {
    this.batch = batch;
    this.n0 = tokensWithCls;
    this.t = tokensWithCls;
    this.sizes = new Float32Array(batch * tokensWithCls).fill(1);
    this.groups = new Int32Array(batch * tokensWithCls);
    for (let b = 0; b < batch; b++) for (let i = 0; i < tokensWithCls; i++) this.groups[b * tokensWithCls + i] = i;
  }

  /** Apply a plan: sizes ← M·s, groups ← newPos[groups]. Returns the new sizes. */
  apply(plan: MergePlan): Float32Array {
    const { batch: B, n0 } = this;
    const { t, tNew, newPos } = plan;
    const sizes = new Float32Array(B * tNew);
    for (let b = 0; b < B; b++) {
      for (let p = 0; p < t; p++) sizes[b * tNew + newPos[b * t + p]] += this.sizes[b * t + p];
      for (let i = 0; i < n0; i++) this.groups[b * n0 + i] = newPos[b * t + this.groups[b * n0 + i]];
    }
    this.sizes = sizes;
    this.t = tNew;
    this.merged = true;
    return sizes;
  }

  /** Group index (0…K−1) of every original non-CLS token, [B, L] row-major (CLS row/column dropped). */
  tokenGroups(): Int32Array {
    const L = this.n0 - 1;
    const out = new Int32Array(this.batch * L);
    for (let b = 0; b < this.batch; b++) {
      for (let l = 0; l < L; l++) out[b * L + l] = this.groups[b * this.n0 + 1 + l] - 1;
    }
    return out;
  }

  /** Source matrix S [B, K, L] (binary, one 1 per column), CLS row and column dropped. */
  sourceMatrix(): tf.Tensor3D {
    const L = this.n0 - 1;
    const K = this.t - 1;
    const g = this.tokenGroups();
    const data = new Float32Array(this.batch * K * L);
    for (let b = 0; b < this.batch; b++) for (let l = 0; l < L; l++) data[b * K * L + g[b * L + l] * L + l] = 1;
    return tf.tensor3d(data, [this.batch, K, L]);
  }

  /** Token sizes without CLS, [B, K]. */
  tokenSizes(): tf.Tensor2D {
    const K = this.t - 1;
    const data = new Float32Array(this.batch * K);
    for (let b = 0; b < this.batch; b++) data.set(this.sizes.subarray(b * this.t + 1, b * this.t + this.t), b * K);
    return tf.tensor2d(data, [this.batch, K]);
  }
}

// ───────────────────────────── tensor side ─────────────────────────────

/**
 * Similarity scores of the matching: m̂ = m/‖m‖₂ per token; score = m̂_A m̂_Bᵀ with A = even and
 * B = odd positions. `metric` [B, t, d_h] → [B, ⌈t/2⌉, ⌊t/2⌋], read back to JS (no gradient).
 */
export function matchingScores(metric: tf.Tensor3D): Float32Array {
  return tf.tidy(() => {
    const [B, t, d] = metric.shape;
    const mh = tf.div(metric, tf.norm(metric, "euclidean", -1, true));
    const mA = tf.stridedSlice(mh, [0, 0, 0], [B, t, d], [1, 2, 1]) as tf.Tensor3D; // [B, ⌈t/2⌉, d]
    const mB = tf.stridedSlice(mh, [0, 1, 0], [B, t, d], [1, 2, 1]) as tf.Tensor3D; // [B, ⌊t/2⌋, d]
    return tf.matMul(mA, mB, false, true).dataSync() as Float32Array; // [B, |A|, |B|]
  });
}

/**
 * Size-weighted merge of tokens with a plan: x_new = (M·(x⊙s)) / (M·s). `sizes` is null before the first
 * merge (all ones). Gradients flow through x only (M and sizes are constants).
 */
export function mergeTokens(x: tf.Tensor3D, sizes: Float32Array | null, newSizes: Float32Array, plan: MergePlan) {
  const [B, t] = x.shape;
  const M = tf.tensor3d(plan.assign, [B, plan.tNew, t]); // [B, t−r, t]
  const xs = sizes ? tf.mul(x, tf.tensor3d(sizes, [B, t, 1])) : x; // x ⊙ s
  return tf.div(tf.matMul(M, xs), tf.tensor3d(newSizes, [B, plan.tNew, 1])) as tf.Tensor3D; // [B, t−r, D]
}
