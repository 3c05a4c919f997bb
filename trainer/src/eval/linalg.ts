// Dense float64 linear algebra for FID: symmetric eigendecomposition (Householder tridiagonalisation +
// implicit QL, after JAMA's tred2/tql2, itself from EISPACK) on row-major Float64Arrays. Loops are arranged
// so that inner loops walk contiguous memory (the orthogonal factor is kept transposed).

export interface SymEig {
  /** Eigenvalues, ascending. */
  values: Float64Array;
  /** Row-major n×n; row i is the unit eigenvector of values[i]. Absent when not requested. */
  vectors?: Float64Array;
}

/**
 * Eigen-decomposition of a symmetric n×n matrix (row-major; only symmetry is assumed, both triangles are
 * read as the lower one). `vectors: false` skips accumulating the transformations (≈3× cheaper).
 */
export function symmetricEigen(a: Float64Array, n: number, opts: { vectors?: boolean } = {}): SymEig {
  const wantVectors = opts.vectors ?? true;
  if (a.length !== n * n) throw new Error(`symmetricEigen: expected ${n * n} entries, got ${a.length}`);
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new Error("symmetricEigen: matrix has non-finite entries");
  }
  // W = Vᵀ where V is JAMA's working matrix; W[j*n+k] = V[k][j]. A is symmetric so W starts as A.
  const w = Float64Array.from(a);
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  if (n === 0) return { values: d, vectors: wantVectors ? w : undefined };
  tred2(w, d, e, n, wantVectors);
  tql2(w, d, e, n, wantVectors);
  // Sort ascending.
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => d[x] - d[y]);
  const values = Float64Array.from(order, (i) => d[i]);
  if (!wantVectors) return { values };
  const vectors = new Float64Array(n * n);
  for (let r = 0; r < n; r++) vectors.set(w.subarray(order[r] * n, order[r] * n + n), r * n);
  return { values, vectors };
}

function tred2(w: Float64Array, d: Float64Array, e: Float64Array, n: number, acc: boolean): void {
  // V[k][j] ≡ w[j*n+k]
  for (let j = 0; j < n; j++) d[j] = w[j * n + (n - 1)];
  for (let i = n - 1; i > 0; i--) {
    let scale = 0;
    let h = 0;
    for (let k = 0; k < i; k++) scale += Math.abs(d[k]);
    if (scale === 0) {
      e[i] = d[i - 1];
      for (let j = 0; j < i; j++) {
        d[j] = w[j * n + (i - 1)];
        w[j * n + i] = 0; // V[i][j]
        w[i * n + j] = 0; // V[j][i]
      }
    } else {
      for (let k = 0; k < i; k++) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      let f = d[i - 1];
      let g = Math.sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h = h - f * g;
      d[i - 1] = f - g;
      for (let j = 0; j < i; j++) e[j] = 0;
      for (let j = 0; j < i; j++) {
        f = d[j];
        w[i * n + j] = f; // V[j][i] = f
        const row = j * n;
        g = e[j] + w[row + j] * f;
        for (let k = j + 1; k <= i - 1; k++) {
          const v = w[row + k]; // V[k][j]
          g += v * d[k];
          e[k] += v * f;
        }
        e[j] = g;
      }
      f = 0;
      for (let j = 0; j < i; j++) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const hh = f / (h + h);
      for (let j = 0; j < i; j++) e[j] -= hh * d[j];
      for (let j = 0; j < i; j++) {
        f = d[j];
        g = e[j];
        const row = j * n;
        for (let k = j; k <= i - 1; k++) w[row + k] -= f * e[k] + g * d[k];
        d[j] = w[row + (i - 1)];
        w[row + i] = 0; // V[i][j]
      }
    }
    d[i] = h;
  }
  if (acc) {
    for (let i = 0; i < n - 1; i++) {
      // V[n-1][i] = V[i][i]; V[i][i] = 1
      w[i * n + (n - 1)] = w[i * n + i];
      w[i * n + i] = 1;
      const h = d[i + 1];
      const col = (i + 1) * n; // V[k][i+1] ≡ w[col + k]
      if (h !== 0) {
        for (let k = 0; k <= i; k++) d[k] = w[col + k] / h;
        for (let j = 0; j <= i; j++) {
          const row = j * n;
          let g = 0;
          for (let k = 0; k <= i; k++) g += w[col + k] * w[row + k];
          for (let k = 0; k <= i; k++) w[row + k] -= g * d[k];
        }
      }
      for (let k = 0; k <= i; k++) w[col + k] = 0;
    }
    for (let j = 0; j < n; j++) {
      d[j] = w[j * n + (n - 1)];
      w[j * n + (n - 1)] = 0;
    }
    w[(n - 1) * n + (n - 1)] = 1;
  } else {
    // The tridiagonal's diagonal sits on V's diagonal (the accumulation above moves it to V's last row).
    for (let j = 0; j < n; j++) d[j] = w[j * n + j];
  }
  e[0] = 0;
}

function tql2(w: Float64Array, d: Float64Array, e: Float64Array, n: number, acc: boolean): void {
  for (let i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  let f = 0;
  let tst1 = 0;
  const eps = 2 ** -52;
  for (let l = 0; l < n; l++) {
    tst1 = Math.max(tst1, Math.abs(d[l]) + Math.abs(e[l]));
    let m = l;
    while (m < n) {
      if (Math.abs(e[m]) <= eps * tst1) break;
      m++;
    }
    if (m > l) {
      let iter = 0;
      do {
        if (++iter > 60) throw new Error("symmetricEigen: QL iteration did not converge");
        let g = d[l];
        let p = (d[l + 1] - g) / (2 * e[l]);
        let r = Math.sqrt(p * p + 1);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const dl1 = d[l + 1];
        let h = g - d[l];
        for (let i = l + 2; i < n; i++) d[i] -= h;
        f += h;
        p = d[m];
        let c = 1;
        let c2 = c;
        let c3 = c;
        const el1 = e[l + 1];
        let s = 0;
        let s2 = 0;
        for (let i = m - 1; i >= l; i--) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = Math.sqrt(p * p + e[i] * e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          if (acc) {
            // Rotate columns i, i+1 of V ≡ rows i, i+1 of W.
            const ri = i * n;
            const rj = (i + 1) * n;
            for (let k = 0; k < n; k++) {
              const hk = w[rj + k];
              const vk = w[ri + k];
              w[rj + k] = s * vk + c * hk;
              w[ri + k] = c * vk - s * hk;
            }
          }
        }
        p = (-s * s2 * c3 * el1 * e[l]) / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (Math.abs(e[l]) > eps * tst1);
    }
    d[l] = d[l] + f;
    e[l] = 0;
  }
}

/**
 * Tr(sqrtm(Σ₁Σ₂)) for symmetric PSD Σ₁, Σ₂ (n×n, row-major float64).
 *
 * Σ₁ = V D Vᵀ (eigenvalues under the rounding floor n·ε·max D, including negative noise, treated as 0); with A = V D^½, Σ₁Σ₂ = A Aᵀ Σ₂ has the same
 * non-zero eigenvalues as the symmetric PSD M = Aᵀ Σ₂ A (r×r, r = rank of D), so
 * Tr sqrtm(Σ₁Σ₂) = Σᵢ √λᵢ(M) with λᵢ(M) < 0 (rounding) clipped to 0. No complex arithmetic and no
 * inversion, so singular and near-singular covariances are handled exactly like the PSD case.
 */
export function traceSqrtProduct(s1: Float64Array, s2: Float64Array, n: number): number {
  if (s1.length !== n * n || s2.length !== n * n) throw new Error("traceSqrtProduct: size mismatch");
  const { values, vectors } = symmetricEigen(s1, n, { vectors: true });
  if (!vectors) throw new Error("unreachable");
  // Eigenvalues below the rounding floor (n·ε·λmax) are zero up to noise: keeping them would add √noise
  // terms (≈1e-8·scale each) for singular covariances. Rows of Aᵀ: √dᵢ vᵢ for the kept dᵢ.
  const floor1 = n * 2 ** -52 * Math.max(0, values[n - 1]);
  const keep: number[] = [];
  for (let i = 0; i < n; i++) if (values[i] > floor1) keep.push(i);
  const r = keep.length;
  if (r === 0) return 0;
  const at = new Float64Array(r * n);
  for (let q = 0; q < r; q++) {
    const i = keep[q];
    const sd = Math.sqrt(values[i]);
    for (let k = 0; k < n; k++) at[q * n + k] = sd * vectors[i * n + k];
  }
  // Bᵀ = Aᵀ Σ₂ (Σ₂ symmetric).
  const bt = multiplyBySymmetric(at, r, s2, n);
  // M = Aᵀ (Σ₂ A): M[p,q] = at[p,:]·bt[q,:] (symmetric; upper triangle computed, mirrored).
  const m = new Float64Array(r * r);
  for (let p = 0; p < r; p++) {
    const ap = p * n;
    for (let q = p; q < r; q++) {
      const bq = q * n;
      let s = 0;
      for (let k = 0; k < n; k++) s += at[ap + k] * bt[bq + k];
      m[p * r + q] = s;
      m[q * r + p] = s;
    }
  }
  const ev = symmetricEigen(m, r, { vectors: false }).values;
  // Negative rounding noise → 0. No floor here: M's small eigenvalues are squares of Σ-scale ones (M = D²
  // when Σ₁ = Σ₂), so a relative floor would cut √ε-sized true contributions. Residual noise in M's null
  // space adds ≲ √(ε‖M‖) per null direction, the same order as scipy's Schur sqrtm error.
  let tr = 0;
  for (let i = 0; i < r; i++) if (ev[i] > 0) tr += Math.sqrt(ev[i]);
  return tr;
}

/** Σ √λᵢ over the positive eigenvalues of a symmetric k×k matrix. */
function sumSqrtEigen(m: Float64Array, k: number): number {
  const ev = symmetricEigen(m, k, { vectors: false }).values;
  let tr = 0;
  for (let i = 0; i < k; i++) if (ev[i] > 0) tr += Math.sqrt(ev[i]);
  return tr;
}

/**
 * Tr sqrtm(Σ₁Σ₂) with Σ₁ = XᵀX/(n−1) given by its centred samples X (n×d): Σ₁Σ₂ = XᵀXΣ₂/(n−1) has the
 * non-zero eigenvalues of the symmetric PSD n×n matrix X Σ₂ Xᵀ/(n−1). Cost O(n·d²).
 */
export function traceSqrtSamplesCov(x: Float64Array, n: number, s2: Float64Array, d: number): number {
  if (x.length !== n * d || s2.length !== d * d) throw new Error("traceSqrtSamplesCov: size mismatch");
  const y = multiplyBySymmetric(x, n, s2, d); // X Σ₂
  const m = new Float64Array(n * n);
  const f = 1 / (n - 1);
  for (let i = 0; i < n; i++) {
    for (let j = i; j < n; j++) {
      let acc = 0;
      for (let k = 0; k < d; k++) acc += y[i * d + k] * x[j * d + k];
      m[i * n + j] = acc * f;
      m[j * n + i] = acc * f;
    }
  }
  return sumSqrtEigen(m, n);
}

/**
 * Tr sqrtm(Σ₁Σ₂) with both covariances given by centred samples X₁ (n₁×d), X₂ (n₂×d): the nuclear norm of
 * X₁X₂ᵀ/√((n₁−1)(n₂−1)), i.e. Σ √λ(GGᵀ) for G = X₁X₂ᵀ. Cost O(n₁n₂d).
 */
export function traceSqrtFromSamples(x1: Float64Array, n1: number, x2: Float64Array, n2: number, d: number): number {
  if (x1.length !== n1 * d || x2.length !== n2 * d) throw new Error("traceSqrtFromSamples: size mismatch");
  const g = new Float64Array(n1 * n2);
  for (let i = 0; i < n1; i++) {
    for (let j = 0; j < n2; j++) {
      let acc = 0;
      for (let k = 0; k < d; k++) acc += x1[i * d + k] * x2[j * d + k];
      g[i * n2 + j] = acc;
    }
  }
  const m = new Float64Array(n1 * n1);
  const f = 1 / ((n1 - 1) * (n2 - 1));
  for (let i = 0; i < n1; i++) {
    for (let j = i; j < n1; j++) {
      let acc = 0;
      for (let k = 0; k < n2; k++) acc += g[i * n2 + k] * g[j * n2 + k];
      m[i * n1 + j] = acc * f;
      m[j * n1 + i] = acc * f;
    }
  }
  return sumSqrtEigen(m, n1);
}

/**
 * Y = X·S for X (rows×d, row-major) and symmetric S (d×d): Y[q,:] = Σ_k X[q,k]·S[k,:]. Rows are processed
 * 8 at a time so that each row of S is streamed from memory once per 8 output rows (S is 32 MB at d=2048;
 * the naive loop is memory-bound).
 */
export function multiplyBySymmetric(x: Float64Array, rows: number, s: Float64Array, d: number): Float64Array {
  const y = new Float64Array(rows * d);
  const B = 8;
  const a = new Float64Array(B);
  for (let q0 = 0; q0 < rows; q0 += B) {
    const nb = Math.min(B, rows - q0);
    for (let k = 0; k < d; k++) {
      let any = false;
      for (let t = 0; t < B; t++) {
        a[t] = t < nb ? x[(q0 + t) * d + k] : 0;
        if (a[t] !== 0) any = true;
      }
      if (!any) continue;
      const srow = k * d;
      if (nb === B) {
        const [a0, a1, a2, a3, a4, a5, a6, a7] = a;
        const o = q0 * d;
        for (let j = 0; j < d; j++) {
          const v = s[srow + j];
          y[o + j] += a0 * v;
          y[o + d + j] += a1 * v;
          y[o + 2 * d + j] += a2 * v;
          y[o + 3 * d + j] += a3 * v;
          y[o + 4 * d + j] += a4 * v;
          y[o + 5 * d + j] += a5 * v;
          y[o + 6 * d + j] += a6 * v;
          y[o + 7 * d + j] += a7 * v;
        }
      } else {
        for (let t = 0; t < nb; t++) {
          const at = a[t];
          const o = (q0 + t) * d;
          for (let j = 0; j < d; j++) y[o + j] += at * s[srow + j];
        }
      }
    }
  }
  return y;
}
