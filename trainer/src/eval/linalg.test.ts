import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { symmetricEigen, traceSqrtProduct } from "./linalg.ts";
import { rng } from "./testing.ts";

function randomSymmetric(n: number, seed: number): Float64Array {
  const r = rng(seed);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const v = r.normal();
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  }
  return a;
}

/** X Xᵀ / k for an n×k Gaussian X: PSD with rank min(n, k). */
function randomPsd(n: number, k: number, seed: number): Float64Array {
  const r = rng(seed);
  const x = Float64Array.from({ length: n * k }, () => r.normal());
  const s = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let t = 0; t < k; t++) acc += x[i * k + t] * x[j * k + t];
      s[i * n + j] = acc / k;
    }
  }
  return s;
}

describe("symmetricEigen", () => {
  for (const n of [1, 2, 7, 64]) {
    it(`satisfies A v = λ v with orthonormal vectors (n=${n})`, () => {
      const a = randomSymmetric(n, n);
      const { values, vectors } = symmetricEigen(a, n);
      assert.ok(vectors);
      for (let q = 1; q < n; q++) assert.ok(values[q] >= values[q - 1], "ascending");
      for (let q = 0; q < n; q++) {
        for (let i = 0; i < n; i++) {
          let av = 0;
          for (let k = 0; k < n; k++) av += a[i * n + k] * vectors[q * n + k];
          assert.ok(Math.abs(av - values[q] * vectors[q * n + i]) < 1e-12 * n, `residual q=${q} i=${i}`);
        }
        for (let p = 0; p <= q; p++) {
          let dot = 0;
          for (let k = 0; k < n; k++) dot += vectors[p * n + k] * vectors[q * n + k];
          assert.ok(Math.abs(dot - (p === q ? 1 : 0)) < 1e-12 * n, `orthonormal ${p},${q}`);
        }
      }
      // Eigenvalues without vectors are the same.
      const only = symmetricEigen(a, n, { vectors: false });
      assert.equal(only.vectors, undefined);
      for (let q = 0; q < n; q++) assert.ok(Math.abs(only.values[q] - values[q]) < 1e-12 * n);
    });
  }

  it("finds the zero eigenvalues of a rank-deficient matrix", () => {
    const n = 30;
    const { values } = symmetricEigen(randomPsd(n, 5, 3), n);
    for (let q = 0; q < n - 5; q++) assert.ok(Math.abs(values[q]) < 1e-13, `λ${q} = ${values[q]}`);
    for (let q = n - 5; q < n; q++) assert.ok(values[q] > 1e-3);
  });

  it("rejects non-finite input", () => {
    assert.throws(() => symmetricEigen(Float64Array.from([1, Number.NaN, Number.NaN, 1]), 2), /non-finite/);
  });
});

describe("traceSqrtProduct", () => {
  it("equals Tr Σ when Σ₁ = Σ₂ (also singular)", () => {
    for (const [n, k] of [
      [20, 40],
      [20, 6],
    ]) {
      const s = randomPsd(n, k, n + k);
      let tr = 0;
      for (let i = 0; i < n; i++) tr += s[i * n + i];
      assert.ok(Math.abs(traceSqrtProduct(s, s, n) - tr) < 1e-12 * tr, `n=${n} k=${k}`);
    }
  });

  it("matches the closed form for commuting (diagonal) matrices", () => {
    const n = 9;
    const a = new Float64Array(n * n);
    const b = new Float64Array(n * n);
    let expected = 0;
    for (let i = 0; i < n; i++) {
      a[i * n + i] = i === 0 ? 0 : i * 0.5;
      b[i * n + i] = (i + 1) ** 2;
      expected += Math.sqrt(a[i * n + i] * b[i * n + i]);
    }
    assert.ok(Math.abs(traceSqrtProduct(a, b, n) - expected) < 1e-12 * expected);
  });

  it("is symmetric in its arguments (up to √ε noise of the singular one)", () => {
    const n = 16;
    const a = randomPsd(n, 30, 1);
    const b = randomPsd(n, 10, 2);
    const ab = traceSqrtProduct(a, b, n);
    const ba = traceSqrtProduct(b, a, n);
    assert.ok(Math.abs(ab - ba) < 1e-8 * ab, `${ab} vs ${ba}`);
  });
});
