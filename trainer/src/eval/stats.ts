// Streaming feature statistics (mean, unbiased covariance) and the Fréchet distance.
//
// Accumulation is in float64 with Chan et al.'s pairwise update: each batch is centred on its own mean,
// its co-moment XᵀX is added, and the mean shift between the running set and the batch contributes
// δδᵀ·nₐn_b/n. Memory is O(d²) regardless of N (50 000 × 2048 never materialises). Only the upper triangle
// is accumulated; `covariance()` mirrors it.

import { traceSqrtFromSamples, traceSqrtProduct, traceSqrtSamplesCov } from "./linalg.ts";
import { listNpz, readNpz, toFloat64, writeNpz } from "./npz.ts";

export class FeatureStats {
  readonly dim: number;
  count = 0;
  readonly mean: Float64Array;
  /** Upper triangle of Σ (x−μ)(x−μ)ᵀ (row-major d×d; lower triangle unused until `covariance()`). */
  private readonly m2: Float64Array;
  /** Raw rows while count ≤ keepRows (enables the cheap low-rank FID path); dropped beyond. */
  private rows: Float64Array[] | undefined = [];
  private readonly keepRows: number;

  /**
   * `keepRows` (default = dim): while at most this many samples were added, they are also kept (at most
   * dim² doubles, the size of the co-moment matrix itself) so FID can use the N×N low-rank route.
   */
  constructor(dim: number, opts: { keepRows?: number } = {}) {
    if (!Number.isInteger(dim) || dim <= 0) throw new Error(`FeatureStats: bad dim ${dim}`);
    this.dim = dim;
    this.mean = new Float64Array(dim);
    this.m2 = new Float64Array(dim * dim);
    this.keepRows = opts.keepRows ?? dim;
  }

  /** Add `n` row vectors (row-major n×dim, any numeric array). Non-finite features throw. */
  update(features: ArrayLike<number>, n: number = features.length / this.dim): void {
    const d = this.dim;
    if (!Number.isInteger(n) || features.length !== n * d) {
      throw new Error(`FeatureStats.update: ${features.length} values is not n×${d}`);
    }
    if (n === 0) return;
    if (this.rows && this.count + n <= this.keepRows) this.rows.push(Float64Array.from(features));
    else this.rows = undefined;
    const bmean = new Float64Array(d);
    for (let r = 0; r < n; r++) {
      const o = r * d;
      for (let j = 0; j < d; j++) bmean[j] += features[o + j];
    }
    for (let j = 0; j < d; j++) {
      bmean[j] /= n;
      if (!Number.isFinite(bmean[j])) throw new Error("FeatureStats.update: non-finite features");
    }
    // Centred batch, transposed (d×n) so that co-moment entries are length-n dot products: every m2 entry
    // is read and written once per batch instead of once per row (m2 is 32 MB at d = 2048).
    const xt = new Float64Array(d * n);
    for (let r = 0; r < n; r++) {
      const o = r * d;
      for (let j = 0; j < d; j++) xt[j * n + r] = features[o + j] - bmean[j];
    }
    const m2 = this.m2;
    for (let i = 0; i < d; i++) {
      const oi = i * n;
      const row = i * d;
      let j = i;
      for (; j + 3 < d; j += 4) {
        const o0 = j * n;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        for (let r = 0; r < n; r++) {
          const xi = xt[oi + r];
          s0 += xi * xt[o0 + r];
          s1 += xi * xt[o0 + n + r];
          s2 += xi * xt[o0 + 2 * n + r];
          s3 += xi * xt[o0 + 3 * n + r];
        }
        m2[row + j] += s0;
        m2[row + j + 1] += s1;
        m2[row + j + 2] += s2;
        m2[row + j + 3] += s3;
      }
      for (; j < d; j++) {
        const oj = j * n;
        let acc = 0;
        for (let r = 0; r < n; r++) acc += xt[oi + r] * xt[oj + r];
        m2[row + j] += acc;
      }
    }
    const na = this.count;
    const nt = na + n;
    if (na > 0) {
      const f = (na * n) / nt;
      const delta = new Float64Array(d);
      for (let j = 0; j < d; j++) delta[j] = bmean[j] - this.mean[j];
      for (let i = 0; i < d; i++) {
        const di = delta[i] * f;
        const row = i * d;
        for (let j = i; j < d; j++) m2[row + j] += di * delta[j];
      }
      for (let j = 0; j < d; j++) this.mean[j] += (delta[j] * n) / nt;
    } else {
      this.mean.set(bmean);
    }
    this.count = nt;
  }

  /** Merge another accumulator (e.g. from another rank) into this one. */
  merge(other: FeatureStats): void {
    if (other.dim !== this.dim) throw new Error("FeatureStats.merge: dim mismatch");
    if (other.count === 0) return;
    this.rows = undefined;
    const d = this.dim;
    const na = this.count;
    const nb = other.count;
    const nt = na + nb;
    for (let i = 0; i < d * d; i++) this.m2[i] += other.m2[i];
    if (na > 0) {
      const f = (na * nb) / nt;
      const delta = new Float64Array(d);
      for (let j = 0; j < d; j++) delta[j] = other.mean[j] - this.mean[j];
      for (let i = 0; i < d; i++) {
        const row = i * d;
        for (let j = i; j < d; j++) this.m2[row + j] += delta[i] * delta[j] * f;
      }
      for (let j = 0; j < d; j++) this.mean[j] += (delta[j] * nb) / nt;
    } else this.mean.set(other.mean);
    this.count = nt;
  }

  /** Unbiased covariance (divides by N−1), full symmetric d×d row-major. Needs N ≥ 2. */
  covariance(): Float64Array {
    if (this.count < 2) throw new Error(`FeatureStats: covariance needs ≥2 samples, have ${this.count}`);
    const d = this.dim;
    const c = new Float64Array(d * d);
    const s = 1 / (this.count - 1);
    for (let i = 0; i < d; i++) {
      for (let j = i; j < d; j++) {
        const v = this.m2[i * d + j] * s;
        c[i * d + j] = v;
        c[j * d + i] = v;
      }
    }
    return c;
  }

  /** Freeze into reference statistics (with the centred samples when they were kept). */
  finalize(): GaussianStats {
    const out: GaussianStats = {
      mu: Float64Array.from(this.mean),
      sigma: this.covariance(),
      dim: this.dim,
      count: this.count,
    };
    if (this.rows) {
      const d = this.dim;
      const centred = new Float64Array(this.count * d);
      let o = 0;
      for (const chunk of this.rows) {
        for (let i = 0; i < chunk.length; i++) centred[o + i] = chunk[i] - this.mean[i % d];
        o += chunk.length;
      }
      out.centred = centred;
    }
    return out;
  }
}

/** Gaussian summary of a feature set (what pytorch-fid / ADM store as `mu`, `sigma`). */
export interface GaussianStats {
  mu: Float64Array;
  /** Row-major dim×dim. */
  sigma: Float64Array;
  dim: number;
  /** Number of samples behind the statistics, when known. */
  count?: number;
  /**
   * The samples minus μ (count×dim), when N was small enough to keep (N ≤ dim). Σ = XᵀX/(N−1), which lets
   * FID work in N×N instead of dim×dim. Not saved by `saveStats`.
   */
  centred?: Float64Array;
}

/** Batch (non-streaming) statistics of an n×d matrix, for tests and small sets. */
export function batchStats(features: ArrayLike<number>, n: number, d: number): GaussianStats {
  const mu = new Float64Array(d);
  for (let r = 0; r < n; r++) for (let j = 0; j < d; j++) mu[j] += features[r * d + j];
  for (let j = 0; j < d; j++) mu[j] /= n;
  const sigma = new Float64Array(d * d);
  for (let r = 0; r < n; r++) {
    for (let i = 0; i < d; i++) {
      const xi = features[r * d + i] - mu[i];
      for (let j = 0; j < d; j++) sigma[i * d + j] += xi * (features[r * d + j] - mu[j]);
    }
  }
  for (let i = 0; i < d * d; i++) sigma[i] /= n - 1;
  return { mu, sigma, dim: d, count: n };
}

export interface FrechetResult {
  fid: number;
  /** ‖μ₁−μ₂‖² */
  meanTerm: number;
  /** Tr Σ₁ + Tr Σ₂ − 2 Tr sqrtm(Σ₁Σ₂) */
  covTerm: number;
  traceSqrt: number;
}

/** Tr sqrtm(Σ₁Σ₂) by the cheapest exact route the available data allows. */
function traceSqrtAuto(a: GaussianStats, b: GaussianStats): number {
  const d = a.dim;
  if (a.centred && b.centred && a.count && b.count) {
    return traceSqrtFromSamples(a.centred, a.count, b.centred, b.count, d);
  }
  if (a.centred && a.count) return traceSqrtSamplesCov(a.centred, a.count, b.sigma, d);
  if (b.centred && b.count) return traceSqrtSamplesCov(b.centred, b.count, a.sigma, d);
  return traceSqrtProduct(a.sigma, b.sigma, d);
}

/**
 * FID = ‖μ₁−μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr(sqrtm(Σ₁Σ₂)), all in float64. The trace of the matrix square root
 * comes from a symmetric eigen route (see `traceSqrtProduct`) instead of scipy's Schur `sqrtm`; it needs no
 * ε·I retry for singular covariances. When a side kept its samples (N ≤ dim), the N×N route of
 * `traceSqrtSamplesCov`/`traceSqrtFromSamples` gives the same value far faster (O(N·d²) instead of
 * O(d³): seconds instead of about a minute at d = 2048). Tiny negative results from cancellation are clamped to 0.
 */
export function frechetDistance(a: GaussianStats, b: GaussianStats): FrechetResult {
  const d = a.dim;
  if (b.dim !== d || a.mu.length !== d || b.mu.length !== d || a.sigma.length !== d * d || b.sigma.length !== d * d) {
    throw new Error(`frechetDistance: dimension mismatch (${a.dim} vs ${b.dim})`);
  }
  let meanTerm = 0;
  for (let i = 0; i < d; i++) {
    const diff = a.mu[i] - b.mu[i];
    meanTerm += diff * diff;
  }
  let tr1 = 0;
  let tr2 = 0;
  for (let i = 0; i < d; i++) {
    tr1 += a.sigma[i * d + i];
    tr2 += b.sigma[i * d + i];
  }
  const traceSqrt = traceSqrtAuto(a, b);
  const covTerm = tr1 + tr2 - 2 * traceSqrt;
  const fid = meanTerm + covTerm;
  if (!Number.isFinite(fid)) throw new Error("frechetDistance: non-finite result");
  return { fid: Math.max(0, fid), meanTerm, covTerm, traceSqrt };
}

/** Reference statistics plus the Inception weights they were computed with (when recorded). */
export interface StoredStats extends GaussianStats {
  /** `mergevq_weights` member written by `saveStats`; undefined for external (pytorch-fid / ADM) files. */
  weights?: string;
}

/**
 * Load reference statistics from an .npz: pytorch-fid (`mu`, `sigma`) and the ADM evaluator's reference
 * batches (`mu`, `sigma` next to `arr_0`, `mu_s`, `sigma_s`; only `mu`/`sigma` — the pool_3 statistics —
 * are read, `arr_0` is not touched). An npz with only images (`arr_0`) has no statistics: compute them with
 * `referenceStatsFromNpz` (gfid.ts).
 */
export async function loadStats(path: string): Promise<StoredStats> {
  const names = await listNpz(path);
  if (!names.includes("mu") || !names.includes("sigma")) {
    throw new Error(`${path}: not a statistics npz (needs "mu" and "sigma"; has ${names.join(", ")})`);
  }
  const z = await readNpz(path, names.includes(WEIGHTS_KEY) ? ["mu", "sigma", WEIGHTS_KEY] : ["mu", "sigma"]);
  const mu = toFloat64(z.mu);
  const sigma = toFloat64(z.sigma);
  const d = mu.length;
  if (z.mu.shape.length !== 1 || z.sigma.shape.length !== 2 || z.sigma.shape[0] !== d || z.sigma.shape[1] !== d) {
    throw new Error(`${path}: mu ${JSON.stringify(z.mu.shape)} / sigma ${JSON.stringify(z.sigma.shape)} mismatch`);
  }
  const tag = z[WEIGHTS_KEY];
  const weights = tag ? Buffer.from(tag.data as Uint8Array).toString("utf8") : undefined;
  return { mu: Float64Array.from(mu), sigma: Float64Array.from(sigma), dim: d, weights };
}

const WEIGHTS_KEY = "mergevq_weights";

/**
 * Save statistics as float64 `mu`, `sigma` (pytorch-fid's format; also what ADM's evaluator reads). `weights`
 * (the Inception weights kind, e.g. "random") is stored as a uint8 UTF-8 member `mergevq_weights` so that
 * statistics from random weights can never be compared with real ones unnoticed.
 */
export async function saveStats(path: string, s: GaussianStats, weights?: string): Promise<void> {
  await writeNpz(path, {
    mu: { shape: [s.dim], data: s.mu },
    sigma: { shape: [s.dim, s.dim], data: s.sigma },
    ...(weights
      ? { [WEIGHTS_KEY]: { shape: [Buffer.byteLength(weights)], data: new Uint8Array(Buffer.from(weights)) } }
      : {}),
  });
}
