// docs/model.md §2.1 primitives: DCR depth-to-space, GroupNorm, exact GELU, AdaGN statistics, initialisation
// (pitfall 22), and the manual (wasm-friendly) conv/matmul/depthwise gradients against tfjs' native ones.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { groupNormAutodiff, groupNormRaw, setGroupNormMode } from "../nn/groupNorm.ts";
import { conv2dValid, depthwiseConv3x3, matMul2d, setConvGradMode } from "../nn/kernels.ts";
import { Conv2d, gelu } from "../nn/layers.ts";
import { initTensor } from "../nn/params.ts";
import { adaGNStats, depthToSpace2 } from "./blocks.ts";

const maxAbs = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

/** Value and gradients of sum(f(inputs) ⊙ probe) in a given gradient mode. */
function gradsIn(mode: "native" | "manual", f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[]) {
  setConvGradMode(mode);
  try {
    return tf.tidy(() => {
      const probe = tf.randomNormal(f(...inputs).shape, 0, 1, "float32", 42);
      const { value, grads } = tf.valueAndGrads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), probe)))(inputs);
      return [value, ...grads];
    });
  } finally {
    setConvGradMode("auto");
  }
}

describe("tokenizer blocks", () => {
  before(async () => {
    await selectBackend({ requested: "cpu" });
  });
  after(() => setConvGradMode("auto"));

  it("depthToSpace2 equals TF depthToSpace (DCR), not pixel_shuffle", () => {
    tf.tidy(() => {
      const x = tf.randomNormal([2, 3, 4, 8], 0, 1, "float32", 1) as tf.Tensor4D;
      assert.equal(maxAbs(depthToSpace2(x), tf.depthToSpace(x, 2, "NHWC")), 0);
      // out[2h+i, 2w+j, c] = in[h, w, (2i+j)·C + c] with C = 2: out[1, 0, 1] = in[0, 0, 2·2 + 1].
      const v = x.arraySync() as number[][][][];
      const y = depthToSpace2(x).arraySync() as number[][][][];
      assert.equal(y[0][1][0][1], v[0][0][0][5]);
    });
  });

  it("GroupNorm(32) normalises contiguous channel groups (biased variance, eps inside the sqrt)", () => {
    tf.tidy(() => {
      const x = tf.randomNormal([1, 2, 2, 64], 3, 2, "float32", 2) as tf.Tensor4D;
      const y = groupNormRaw(x, 32, 1e-6);
      const xs = x.dataSync();
      const idx = [0, 1, 64, 65, 128, 129, 192, 193]; // group 0 = channels 0, 1 of the 4 pixels
      const vals = idx.map((i) => xs[i]);
      const mean = vals.reduce((a, b) => a + b) / 8;
      const variance = vals.reduce((a, b) => a + (b - mean) ** 2, 0) / 8;
      assert.ok(Math.abs(y.dataSync()[65] - (xs[65] - mean) / Math.sqrt(variance + 1e-6)) < 1e-4);
    });
  });

  it("GroupNorm's analytic gradient equals autodiff in both reduction layouts (affine and not, C/G = 1 and 2)", () => {
    for (const mode of ["groupAxes", "contiguous"] as const) {
      for (const [C, affine] of [
        [64, true],
        [64, false],
        [32, true],
      ] as const) {
        const x = tf.randomNormal([2, 3, 4, C], 1, 2, "float32", 21);
        const g = tf.randomNormal([C], 1, 0.5, "float32", 22);
        const b = tf.randomNormal([C], 0, 0.5, "float32", 23);
        const fa = (a: tf.Tensor, c?: tf.Tensor, d?: tf.Tensor) => groupNormRaw(a as tf.Tensor4D, 32, 1e-6, c, d);
        const fr = (a: tf.Tensor, c?: tf.Tensor, d?: tf.Tensor) => groupNormAutodiff(a as tf.Tensor4D, 32, 1e-6, c, d);
        const inputs = affine ? [x, g, b] : [x];
        setGroupNormMode(mode);
        let got: tf.Tensor[];
        try {
          got = gradsIn("native", fa, inputs);
        } finally {
          setGroupNormMode("auto");
        }
        const want = gradsIn("native", fr, inputs);
        assert.equal(got.length, want.length);
        for (const [i, t] of want.entries()) {
          const scale = tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]);
          const err = maxAbs(t, got[i]);
          assert.ok(err <= 1e-5 * Math.max(1, scale), `${mode} C ${C} affine ${affine} output ${i}: ${err}`);
        }
        tf.dispose([x, g, b, ...got, ...want]);
      }
    }
  });

  it("GELU is the exact erf form", () => {
    tf.tidy(() => {
      // Φ(1) = 0.8413447460685429 → GELU(1) = 0.8413447…, GELU(−1) = −0.1586552…
      const y = gelu(tf.tensor1d([1, -1, 0])).dataSync();
      assert.ok(Math.abs(y[0] - 0.8413447460685429) < 1e-6);
      assert.ok(Math.abs(y[1] + 0.15865525393145707) < 1e-6);
      assert.equal(y[2], 0);
    });
  });

  it("AdaGN statistics use the unbiased variance with eps inside the sqrt", () => {
    tf.tidy(() => {
      const s = tf.tensor4d([1, 2, 3, 6], [1, 2, 2, 1]);
      const { sigma, mu } = adaGNStats(s);
      assert.equal(mu.dataSync()[0], 3);
      assert.ok(Math.abs(sigma.dataSync()[0] - Math.sqrt(14 / 3 + 1e-6)) < 1e-5);
    });
  });

  it("PyTorch default init: U(±1/√fan_in) for weights and biases; seeds depend on the name only", () => {
    tf.tidy(() => {
      const [w, b] = new Conv2d("c", 3, 3, 32, 64, { bias: true, init: "torch", group: "encoder" }).specs();
      const bound = 1 / Math.sqrt(32 * 9);
      const wt = initTensor(w, 0);
      assert.ok(tf.max(tf.abs(wt)).dataSync()[0] <= bound);
      assert.ok(tf.max(tf.abs(wt)).dataSync()[0] > 0.9 * bound, "spans the range");
      assert.ok(tf.max(tf.abs(initTensor(b, 0))).dataSync()[0] <= bound);
      assert.equal(maxAbs(initTensor(w, 0), wt), 0, "same seed, same tensor");
      assert.ok(maxAbs(initTensor(w, 1), wt) > 0, "other seed, other tensor");
    });
  });

  it("manual 'same' conv gradients equal native ones", () => {
    const x = tf.randomNormal([2, 6, 5, 3], 0, 1, "float32", 13);
    const w = tf.randomNormal([3, 3, 3, 4], 0, 1, "float32", 14);
    const f = (a: tf.Tensor, b: tf.Tensor) => conv2dValid(a as tf.Tensor4D, b as tf.Tensor4D, 1, "same");
    const nat = gradsIn("native", f, [x, w]);
    const man = gradsIn("manual", f, [x, w]);
    for (const [i, t] of nat.entries()) assert.ok(maxAbs(t, man[i]) < 1e-3, `output ${i}: ${maxAbs(t, man[i])}`);
    tf.dispose([x, w, ...nat, ...man]);
  });

  it("manual conv gradients equal native ones (stride 1 and stride 2 with symmetric padding)", () => {
    for (const [stride, H] of [
      [1, 6],
      [2, 8],
      [2, 7],
    ]) {
      const x = tf.randomNormal([2, H + 2, H + 2, 3], 0, 1, "float32", 3);
      const w = tf.randomNormal([3, 3, 3, 5], 0, 1, "float32", 4);
      const f = (a: tf.Tensor, b: tf.Tensor) => conv2dValid(a as tf.Tensor4D, b as tf.Tensor4D, stride);
      const nat = gradsIn("native", f, [x, w]);
      const man = gradsIn("manual", f, [x, w]);
      for (const [i, t] of nat.entries()) {
        assert.ok(maxAbs(t, man[i]) < 1e-3, `stride ${stride} H ${H} output ${i}: ${maxAbs(t, man[i])}`);
      }
      tf.dispose([x, w, ...nat, ...man]);
    }
  });

  it("manual depthwise 3×3 and matmul gradients equal native ones", () => {
    const x = tf.randomNormal([2, 5, 5, 4], 0, 1, "float32", 5);
    const w = tf.randomNormal([3, 3, 4, 1], 0, 1, "float32", 6);
    const b = tf.randomNormal([4], 0, 1, "float32", 7);
    const dw = (a: tf.Tensor, c: tf.Tensor, d: tf.Tensor) => depthwiseConv3x3(a as tf.Tensor4D, c, d);
    const n1 = gradsIn("native", dw, [x, w, b]);
    const m1 = gradsIn("manual", dw, [x, w, b]);
    n1.forEach((t, i) => {
      assert.ok(maxAbs(t, m1[i]) < 1e-4, `depthwise output ${i}`);
    });
    for (const [K, O] of [
      [3, 7],
      [9, 2],
    ]) {
      const a = tf.randomNormal([6, K], 0, 1, "float32", 8);
      const c = tf.randomNormal([K, O], 0, 1, "float32", 9);
      const mm = (p: tf.Tensor, q: tf.Tensor) => matMul2d(p as tf.Tensor2D, q as tf.Tensor2D);
      const n2 = gradsIn("native", mm, [a, c]);
      const m2 = gradsIn("manual", mm, [a, c]);
      n2.forEach((t, i) => {
        assert.ok(maxAbs(t, m2[i]) < 1e-4, `matmul ${K}×${O} output ${i}`);
      });
      tf.dispose([a, c, ...n2, ...m2]);
    }
    tf.dispose([x, w, b, ...n1, ...m1]);
  });
});
