// Inception Score: exp(E_x KL(p(y|x) ‖ p(y))), averaged over 10 contiguous splits (improved-GAN / ADM /
// torch-fidelity convention: split i = samples [⌊i·N/S⌋, ⌊(i+1)·N/S⌋)). Softmax over the logits WITHOUT the
// fc bias when the model provides them (`logits_unbiased`: the TF `softmax/logits/MatMul` output that the
// original inception_score.py and ADM's evaluator use), over all 1008 classes.
//
// Per split, mean_x KL(p_x ‖ p̄) = mean_x Σ_c p_xc log p_xc − Σ_c p̄_c log p̄_c, so a split only needs
// Σ_x Σ_c p log p and Σ_x p_x. With `expectedCount` known the accumulator is fully streaming (O(S·C)
// memory); without it, probabilities are buffered as float32 (N×C) until `result()`.

export interface InceptionScore {
  mean: number;
  std: number;
  splits: number;
  count: number;
}

interface SplitAcc {
  n: number;
  negEntropySum: number;
  pSum: Float64Array;
}

export class InceptionScoreAccumulator {
  readonly splits: number;
  readonly expectedCount?: number;
  private classes = 0;
  private count = 0;
  private acc: SplitAcc[] = [];
  private buffered: Float32Array[] = [];

  constructor(opts: { splits?: number; expectedCount?: number } = {}) {
    this.splits = opts.splits ?? 10;
    this.expectedCount = opts.expectedCount;
    if (this.expectedCount !== undefined && this.expectedCount < this.splits) {
      throw new Error(`IS: expectedCount ${this.expectedCount} < splits ${this.splits}`);
    }
  }

  /** Add logits [n, C] (row-major). */
  update(logits: ArrayLike<number>, n: number): void {
    if (n === 0) return;
    const c = logits.length / n;
    if (!Number.isInteger(c) || c < 2) throw new Error(`IS: ${logits.length} logits is not n×C`);
    if (this.classes === 0) {
      this.classes = c;
      this.acc = Array.from({ length: this.splits }, () => ({ n: 0, negEntropySum: 0, pSum: new Float64Array(c) }));
    } else if (c !== this.classes) throw new Error(`IS: class count changed ${this.classes} → ${c}`);
    const p = new Float64Array(c);
    for (let r = 0; r < n; r++) {
      let mx = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < c; j++) mx = Math.max(mx, logits[r * c + j]);
      if (!Number.isFinite(mx)) throw new Error("IS: non-finite logits");
      let z = 0;
      for (let j = 0; j < c; j++) {
        p[j] = Math.exp(logits[r * c + j] - mx);
        z += p[j];
      }
      const logZ = Math.log(z);
      if (this.expectedCount === undefined) {
        const row = new Float32Array(c);
        for (let j = 0; j < c; j++) row[j] = p[j] / z;
        this.buffered.push(row);
      } else {
        const idx = this.count;
        if (idx >= this.expectedCount) throw new Error(`IS: more than expectedCount=${this.expectedCount} samples`);
        // split s holds [⌊s·N/S⌋, ⌊(s+1)·N/S⌋)
        let s = Math.floor((idx * this.splits) / this.expectedCount);
        while (s > 0 && idx < Math.floor((s * this.expectedCount) / this.splits)) s--;
        while (s < this.splits - 1 && idx >= Math.floor(((s + 1) * this.expectedCount) / this.splits)) s++;
        const a = this.acc[s];
        let ne = 0;
        for (let j = 0; j < c; j++) {
          const q = p[j] / z;
          a.pSum[j] += q;
          if (q > 0) ne += q * (logits[r * c + j] - mx - logZ);
        }
        a.negEntropySum += ne;
        a.n++;
      }
      this.count++;
    }
  }

  result(): InceptionScore {
    const n = this.count;
    if (n < this.splits) throw new Error(`IS: need ≥ ${this.splits} samples, have ${n}`);
    if (this.expectedCount !== undefined && n !== this.expectedCount) {
      throw new Error(`IS: got ${n} samples, expectedCount was ${this.expectedCount}`);
    }
    let accs = this.acc;
    if (this.expectedCount === undefined) {
      const c = this.classes;
      accs = [];
      for (let s = 0; s < this.splits; s++) {
        const a: SplitAcc = { n: 0, negEntropySum: 0, pSum: new Float64Array(c) };
        for (let i = Math.floor((s * n) / this.splits); i < Math.floor(((s + 1) * n) / this.splits); i++) {
          const row = this.buffered[i];
          for (let j = 0; j < c; j++) {
            const q = row[j];
            a.pSum[j] += q;
            if (q > 0) a.negEntropySum += q * Math.log(q);
          }
          a.n++;
        }
        accs.push(a);
      }
    }
    const scores = accs.map((a) => {
      let cross = 0;
      for (let j = 0; j < a.pSum.length; j++) {
        const pm = a.pSum[j] / a.n;
        if (pm > 0) cross += pm * Math.log(pm);
      }
      return Math.exp(a.negEntropySum / a.n - cross);
    });
    const mean = scores.reduce((x, y) => x + y, 0) / scores.length;
    const std = Math.sqrt(scores.reduce((x, y) => x + (y - mean) ** 2, 0) / scores.length);
    return { mean, std, splits: this.splits, count: n };
  }
}

/** IS of a full logits matrix [n, C]. */
export function inceptionScore(logits: ArrayLike<number>, n: number, splits = 10): InceptionScore {
  const a = new InceptionScoreAccumulator({ splits, expectedCount: n });
  a.update(logits, n);
  return a.result();
}
