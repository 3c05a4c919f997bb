// docs/model.md §2.3 ToMe: bipartite soft matching with protected CLS, deterministic ties, size-weighted merge,
// source tracking (columns one-hot, sizes = row sums, mass preserved).
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { bipartitePlan, MergeTracker, matchingScores, mergeTokens } from "./tome.ts";

/** Naive reference of one ToMe step on one sample (docs/model.md §2.3 pseudo-code, scatter form). */
function naiveMerge(x: number[][], s: number[], score: number[][], r: number) {
  const t = x.length;
  const nA = Math.ceil(t / 2);
  const best = score.map((row, a) => (a === 0 ? Number.NEGATIVE_INFINITY : Math.max(...row)));
  const dst = score.map((row) => row.indexOf(Math.max(...row)));
  const order = [...best.keys()].sort((i, j) => (best[i] === best[j] ? i - j : best[j] - best[i]));
  const src = new Set(order.slice(0, r));
  const bx = [...Array(Math.floor(t / 2)).keys()].map((b) => x[2 * b + 1].map((v) => v * s[2 * b + 1]));
  const bs = [...Array(Math.floor(t / 2)).keys()].map((b) => s[2 * b + 1]);
  const ux: number[][] = [];
  const us: number[] = [];
  for (let a = 0; a < nA; a++) {
    if (src.has(a)) {
      bx[dst[a]] = bx[dst[a]].map((v, c) => v + x[2 * a][c] * s[2 * a]);
      bs[dst[a]] += s[2 * a];
    } else {
      ux.push(x[2 * a]);
      us.push(s[2 * a]);
    }
  }
  return { x: [...ux, ...bx.map((row, b) => row.map((v) => v / bs[b]))], s: [...us, ...bs] };
}

describe("ToMe bipartite soft matching", () => {
  before(async () => {
    await selectBackend({ requested: "cpu" });
  });

  it("plan + size-weighted merge equal the naive scatter formulation over three steps", () => {
    const B = 2;
    const D = 5;
    let x = tf.randomNormal([B, 17, D], 0, 1, "float32", 1) as tf.Tensor3D;
    const tracker = new MergeTracker(B, 17);
    let ref = [0, 1].map((b) => ({ x: (x.arraySync() as number[][][])[b], s: new Array(17).fill(1) }));
    for (const r of [5, 4, 3]) {
      const t = x.shape[1];
      const metric = tf.randomNormal([B, t, 4], 0, 1, "float32", 10 + r) as tf.Tensor3D;
      const score = matchingScores(metric);
      const plan = bipartitePlan(score, B, t, r);
      const before = tracker.merged ? tracker.sizes : null;
      const after = tracker.apply(plan);
      const next = mergeTokens(x, before, after, plan);
      const nA = Math.ceil(t / 2);
      const nB = Math.floor(t / 2);
      ref = ref.map((st, b) => {
        const sc = [...Array(nA).keys()].map((a) =>
          Array.from(score.slice(b * nA * nB + a * nB, b * nA * nB + (a + 1) * nB)),
        );
        return naiveMerge(st.x, st.s, sc, r);
      });
      const got = next.arraySync() as number[][][];
      for (let b = 0; b < B; b++) {
        assert.deepEqual(Array.from(after.slice(b * (t - r), (b + 1) * (t - r))), ref[b].s);
        got[b].forEach((row, i) => {
          row.forEach((v, c) => {
            assert.ok(Math.abs(v - ref[b].x[i][c]) < 1e-5);
          });
        });
      }
      x.dispose();
      metric.dispose();
      x = next;
    }
    assert.equal(x.shape[1], 17 - 12);
    x.dispose();
  });

  it("mass is preserved, source columns are one-hot, CLS stays first with size 1", () => {
    const B = 3;
    const L = 64;
    const tracker = new MergeTracker(B, 1 + L);
    for (const r of [15, 11, 8, 5]) {
      const metric = tf.randomNormal([B, tracker.t, 8], 0, 1, "float32", r) as tf.Tensor3D;
      tracker.apply(bipartitePlan(matchingScores(metric), B, tracker.t, r));
      metric.dispose();
    }
    assert.equal(tracker.t - 1, 25);
    const S = tracker.sourceMatrix();
    const sizes = tracker.tokenSizes();
    tf.tidy(() => {
      assert.deepEqual(S.shape, [B, 25, L]);
      assert.ok(tf.all(tf.equal(tf.sum(S, 1), 1)).dataSync()[0], "every column sums to 1");
      assert.ok(tf.all(tf.logicalOr(tf.equal(S, 0), tf.equal(S, 1))).dataSync()[0], "binary");
      assert.deepEqual(Array.from(tf.sum(sizes, 1).dataSync()), [L, L, L], "sizes sum to L");
      assert.ok(tf.all(tf.equal(tf.sum(S, 2), sizes)).dataSync()[0], "sizes = row sums of S");
    });
    for (let b = 0; b < B; b++) {
      assert.equal(tracker.groups[b * (1 + L)], 0, "CLS group stays at position 0");
      assert.equal(tracker.sizes[b * tracker.t], 1, "CLS never absorbs tokens");
    }
    tf.dispose([S, sizes]);
  });

  it("ties are broken deterministically by index", () => {
    // All-equal scores: sources are A₁…A_r (CLS protected), every one merges into B₀.
    const t = 9;
    const plan = bipartitePlan(new Float32Array(5 * 4).fill(0.5), 1, t, 3);
    assert.deepEqual(Array.from(plan.newPos), [0, 2, 2, 3, 2, 4, 2, 5, 1]);
    // unmerged A = {A₀ = CLS, A₄} → 0, 1; B₀…B₃ → 2…5; sources A₁, A₂, A₃ (positions 2, 4, 6) → B₀ = 2.
    assert.equal(plan.tNew, 6);
  });

  it("caps r at ⌊(t−1)/2⌋", () => {
    const plan = bipartitePlan(new Float32Array(3 * 2).fill(1), 1, 5, 10);
    assert.equal(plan.tNew, 3);
  });
});
