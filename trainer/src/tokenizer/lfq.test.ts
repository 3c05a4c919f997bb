// docs/model.md §2.4 LFQ: LSB-first indices, zero → −1, straight-through gradient, commitment, and the
// memory-safe entropy terms against a brute-force computation over the whole (small) codebook.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import {
  codebookEntropyFromLogits,
  codesToIndices,
  entropyBruteForce,
  indicesToCodes,
  lfq,
  quantizeST,
  sampleEntropyFromLogits,
  splitIndices,
} from "./lfq.ts";

const close = (a: number, b: number, tol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

function maxRelDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0] / Math.max(1e-12, tf.max(tf.abs(b)).dataSync()[0]));
}

describe("LFQ", () => {
  before(async () => {
    await selectBackend({ requested: "cpu" });
  });

  it("index is LSB-first, exact zero quantizes to −1, and bits ↔ index round-trips", () => {
    tf.tidy(() => {
      const z = tf.tensor2d([
        [0.3, -0.1, 0, 2, -5],
        [-1, -1, -1, -1, -1],
        [1, 1, 1, 1, 1],
      ]);
      assert.deepEqual(Array.from(codesToIndices(z).dataSync()), [1 + 8, 0, 31]);
      const out = lfq(z, { training: false });
      assert.deepEqual(Array.from(out.zq.dataSync()).slice(0, 5), [1, -1, -1, 1, -1]);
      const all = tf.range(0, 1024, 1, "int32");
      const codes = indicesToCodes(all, 10);
      assert.deepEqual(Array.from(codesToIndices(codes).dataSync()), Array.from(all.dataSync()));
      const { pre, post } = splitIndices(tf.tensor1d([0b1011_001101], "int32"), 4);
      assert.deepEqual([pre.dataSync()[0], post.dataSync()[0]], [0b1101, 0b101100]);
    });
  });

  it("straight-through: forward ±1, gradient identity to z", () => {
    tf.tidy(() => {
      const z = tf.tensor1d([0.2, -0.7, 0, 3]);
      const w = tf.tensor1d([1, 2, 3, 4]);
      const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(quantizeST(x), w)))(z);
      assert.deepEqual(Array.from(g.dataSync()), [1, 2, 3, 4]);
    });
  });

  it("commitment = mean((z − sg(q))²) with gradient 2(z − q)/N", () => {
    tf.tidy(() => {
      const z = tf.tensor2d([[0.5, -0.25, 2, -1]]);
      const out = lfq(z);
      close(out.losses.commitment.dataSync()[0], (0.25 + 0.5625 + 1 + 0) / 4, 1e-6, "commitment");
      const g = tf.grad((x: tf.Tensor) => lfq(x).losses.commitment)(z);
      const expect = [0.5 - 1, -0.25 + 1, 2 - 1, -1 + 1].map((d) => (2 * d) / 4);
      Array.from(g.dataSync()).forEach((v, i) => {
        close(v, expect[i], 1e-5, `dz[${i}]`);
      });
    });
  });

  it("entropy terms equal brute force over a 2^8 codebook, values and gradients", () => {
    tf.tidy(() => {
      // τ = 0.01 makes the distributions nearly one-hot for |z| ~ 1; small z keeps every code relevant.
      const z = tf.mul(tf.randomNormal([40, 8], 0, 1, "float32", 3), 0.004) as tf.Tensor2D;
      const ref = entropyBruteForce(z);
      const out = lfq(z);
      close(out.losses.sampleEntropy.dataSync()[0], ref.sampleEntropy.dataSync()[0], 1e-4, "H_sample");
      close(out.losses.codebookEntropy.dataSync()[0], ref.codebookEntropy.dataSync()[0], 1e-4, "H_codebook");
      close(
        out.losses.entropy.dataSync()[0],
        ref.sampleEntropy.dataSync()[0] - ref.codebookEntropy.dataSync()[0],
        1e-4,
        "L_ent",
      );
      assert.ok(out.losses.codebookEntropy.dataSync()[0] > 3, "a spread batch has large codebook entropy");
      const gFast = tf.grad((x: tf.Tensor) => lfq(x).losses.entropy)(z);
      const gRef = tf.grad((x: tf.Tensor) => {
        const r = entropyBruteForce(x as tf.Tensor2D);
        return tf.sub(r.sampleEntropy, r.codebookEntropy);
      })(z);
      assert.ok(maxRelDiff(gFast, gRef) < 2e-3, `entropy gradient rel diff ${maxRelDiff(gFast, gRef)}`);
    });
  });

  it("chunked codebook entropy (several chunks) matches brute force", () => {
    tf.tidy(() => {
      // N = 20000 tokens × 2^8 codes exceeds one 4 M-float chunk → 2 chunks of 128 codes.
      const a = tf.mul(tf.randomNormal([20000, 8], 0, 1, "float32", 5), 2) as tf.Tensor2D;
      const z = tf.div(a, 400) as tf.Tensor2D;
      const ref = entropyBruteForce(z);
      close(codebookEntropyFromLogits(a).dataSync()[0], ref.codebookEntropy.dataSync()[0], 1e-4, "H_codebook");
      close(sampleEntropyFromLogits(a).dataSync()[0], ref.sampleEntropy.dataSync()[0], 1e-4, "H_sample");
      const g1 = tf.grad((x: tf.Tensor) => codebookEntropyFromLogits(tf.mul(x, 400) as tf.Tensor2D))(z);
      const g2 = tf.grad((x: tf.Tensor) => entropyBruteForce(x as tf.Tensor2D).codebookEntropy)(z);
      assert.ok(maxRelDiff(g1, g2) < 2e-3, `rel diff ${maxRelDiff(g1, g2)}`);
    });
  });

  it("bounds at collapse and in eval mode: H_sample ≥ 0, −1e-5 ≤ H_codebook ≤ d·ln 2; zeros when not training", () => {
    tf.tidy(() => {
      const collapsed = tf.fill([16, 10], 0.5) as tf.Tensor2D; // every token the same code
      const out = lfq(collapsed);
      const hc = out.losses.codebookEntropy.dataSync()[0];
      // −log(1 + 1e-5) ≈ −1e-5; float32 rounds log(1.00001) to 1.0013e-5.
      assert.ok(hc >= -1.01e-5 && hc < 0, `collapsed H_codebook ${hc}`);
      assert.ok(out.losses.sampleEntropy.dataSync()[0] >= 0);
      const spread = lfq(tf.randomUniform([512, 10], -0.003, 0.003, "float32", 9));
      assert.ok(spread.losses.codebookEntropy.dataSync()[0] <= 10 * Math.LN2 + 1e-4);
      const ev = lfq(collapsed, { training: false });
      assert.equal(ev.losses.entropy.dataSync()[0], 0);
      assert.equal(ev.losses.commitment.dataSync()[0], 0);
    });
  });

  it("18-bit codebook entropy runs streamed without a [N, 2^18] tensor", () => {
    tf.tidy(() => {
      const z = tf.randomNormal([64, 18], 0, 1, "float32", 11) as tf.Tensor2D;
      const before = tf.memory().numBytes;
      const out = lfq(z);
      const h = out.losses.codebookEntropy.dataSync()[0];
      const hs = out.losses.sampleEntropy.dataSync()[0];
      // Mixture bound: H(mean_n p_n) ≤ ln N + mean_n H(p_n).
      assert.ok(h > 0 && h <= Math.log(64) + hs + 1e-3, `H ${h}, H_sample ${hs}`);
      assert.ok(tf.memory().numBytes - before < 64 * 2 ** 18 * 4, "no full [N, 2^18] buffer kept");
    });
  });
});
