// Sub-token sampling (docs/model.md §5.4; LlamaGen `sample` + `top_k_top_p_filtering`), on the host in float64 with
// a seeded xoshiro stream so a sample is a pure function of (logits, seed) on every backend:
//   logits = u + s·(c − u)  (CFG; c/u = conditional/unconditional rows)  →  / temperature
//   → top-k (keep logits ≥ the k-th largest; 0 = off) → top-p (HF nucleus: keep the smallest prefix of the
//   sorted distribution whose mass exceeds p, i.e. the first token crossing p is kept; 1 = off)
//   → softmax → multinomial.
import type { Rng } from "../util/rng.ts";

export interface SamplingParams {
  temperature: number;
  /** 0 / undefined = off. */
  topK?: number;
  /** 1 / undefined = off. */
  topP?: number;
}

/** Classifier-free guidance: u + s·(c − u). */
export function cfgCombine(cond: ArrayLike<number>, uncond: ArrayLike<number>, scale: number): Float64Array {
  if (cond.length !== uncond.length) throw new Error("cfgCombine: length mismatch");
  const out = new Float64Array(cond.length);
  for (let i = 0; i < cond.length; i++) out[i] = uncond[i] + scale * (cond[i] - uncond[i]);
  return out;
}

/** Keep logits ≥ the k-th largest (ties at the threshold kept, as `logits < topk[..., -1]` upstream). */
export function topKFilter(logits: Float64Array, k: number): Float64Array {
  if (!(k > 0) || k >= logits.length) return logits;
  const kth = Float64Array.from(logits).sort((a, b) => b - a)[k - 1];
  return logits.map((x) => (x < kth ? Number.NEGATIVE_INFINITY : x));
}

/** Stable descending order of logits (ties by index). */
function descendingOrder(logits: Float64Array): number[] {
  return Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
}

/**
 * HF-style nucleus filter: sort descending, cumulative softmax mass c_i; remove i when c_{i−1} > p
 * (the removal mask is shifted right by one, so the first token whose cumulative mass exceeds p is kept,
 * and the top token is always kept).
 */
export function topPFilter(logits: Float64Array, p: number): Float64Array {
  if (!(p < 1)) return logits;
  const order = descendingOrder(logits);
  const probs = softmax(Float64Array.from(order, (i) => logits[i]));
  const out = Float64Array.from(logits);
  let cum = 0;
  for (let r = 0; r < order.length; r++) {
    if (r > 0 && cum > p) out[order[r]] = Number.NEGATIVE_INFINITY;
    cum += probs[r];
  }
  return out;
}

export function softmax(logits: ArrayLike<number>): Float64Array {
  let m = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) m = Math.max(m, logits[i]);
  const out = new Float64Array(logits.length);
  let s = 0;
  for (let i = 0; i < logits.length; i++) {
    out[i] = Math.exp(logits[i] - m);
    s += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= s;
  return out;
}

/** Inverse-CDF draw from probabilities with one uniform u ∈ [0, 1); zero-probability entries are never drawn. */
export function multinomial(probs: Float64Array, u: number): number {
  let cum = 0;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    last = i;
    if (u < cum) return i;
  }
  return last; // rounding: u ≥ total mass
}

/** Full chain for one row: temperature → top-k → top-p → softmax → multinomial. */
export function sampleLogits(logits: ArrayLike<number>, p: SamplingParams, rng: Rng): number {
  if (!(p.temperature > 0)) throw new Error(`sampling: temperature must be > 0, got ${p.temperature}`);
  let x: Float64Array = Float64Array.from(logits, (v) => v / p.temperature);
  if (p.topK !== undefined && p.topK > 0) x = topKFilter(x, p.topK);
  if (p.topP !== undefined && p.topP < 1) x = topPFilter(x, p.topP);
  return multinomial(softmax(x), rng.uniform());
}
