// 2-D RoPE (docs/model.md §5.2, pitfall 15): zeroed prefix slots, norm-preserving rotation, row/column halves,
// relative-position property of q·k.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { applyRope, FACTORIZED_POSITIONS, ropeAngles, ropeTable, ropeTensors, spatialPositions } from "./rope.ts";

const rot = (x: tf.Tensor3D, heads: number, positions: number[], side = 8) => {
  const t = ropeTensors(ropeTable(x.shape[2] / heads, side, positions));
  const y = applyRope(x, heads, t.cos, t.sin);
  tf.dispose([t.cos, t.sin]);
  return y;
};

describe("2-D RoPE", () => {
  before(async () => {
    await selectBackend({ requested: process.env.TFJS_BACKEND ?? "wasm" });
  });

  it("zeroes q/k at prefix slots (class, M, factorised slot 0) and is the identity at grid position 0", () => {
    const x = tf.randomNormal([2, 4, 32], 0, 1, "float32", 1) as tf.Tensor3D;
    const y = rot(x, 2, spatialPositions(2, 2)); // [C, M, pos 0, pos 1]
    const yd = y.arraySync() as number[][][];
    const xd = x.arraySync() as number[][][];
    for (const b of [0, 1]) {
      assert.ok(yd[b][0].every((v) => v === 0) && yd[b][1].every((v) => v === 0), "prefix slots zeroed");
      assert.ok(
        yd[b][2].every((v, i) => Math.abs(v - xd[b][2][i]) < 1e-6),
        "position 0 = identity",
      );
    }
    assert.deepEqual([...FACTORIZED_POSITIONS], [-1, 0]);
    tf.dispose([x, y]);
  });

  it("preserves the norm of every rotated pair", () => {
    const x = tf.randomNormal([1, 64, 64], 0, 1, "float32", 2) as tf.Tensor3D;
    const y = rot(x, 4, spatialPositions(0, 64));
    const pairNorm = (t: tf.Tensor) => tf.sum(tf.square(tf.reshape(t, [64, 32, 2])), -1).dataSync();
    const a = pairNorm(x);
    const b = pairNorm(y);
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i] - b[i]) < 1e-4 * Math.max(1, a[i]));
    const moved = tf.max(tf.abs(tf.sub(x, y))).dataSync()[0];
    assert.ok(moved > 0.1, "positions > 0 actually rotate");
    tf.dispose([x, y]);
  });

  it("rotates the first head_dim/4 pairs by row·f_k and the last head_dim/4 by col·f_k, f_k = 10000^(−4k/d)", () => {
    const d = 16;
    const a = ropeAngles(d, 3, 5);
    for (let k = 0; k < 4; k++) {
      const f = 10000 ** ((-4 * k) / d);
      assert.ok(Math.abs(a[k] - 3 * f) < 1e-12 && Math.abs(a[4 + k] - 5 * f) < 1e-12);
    }
    const t = ropeTable(d, 8, [1 * 8 + 0, 0 * 8 + 1]); // (row 1, col 0), (row 0, col 1)
    // (1,0): row half rotated, col half identity; (0,1): the opposite.
    for (let j = 0; j < 4; j++) {
      assert.ok(Math.abs(t.cos[j] - Math.cos(10000 ** (-j / 4))) < 1e-6 && t.cos[4 + j] === 1 && t.sin[4 + j] === 0);
      assert.ok(
        t.cos[8 + j] === 1 && t.sin[8 + j] === 0 && Math.abs(t.sin[8 + 4 + j] - Math.sin(10000 ** (-j / 4))) < 1e-6,
      );
    }
  });

  it("q·k depends only on the 2-D offset between positions", () => {
    const q = tf.randomNormal([1, 1, 16], 0, 1, "float32", 3) as tf.Tensor3D;
    const k = tf.randomNormal([1, 1, 16], 0, 1, "float32", 4) as tf.Tensor3D;
    const dot = (pq: number, pk: number) => tf.sum(tf.mul(rot(q, 1, [pq]), rot(k, 1, [pk]))).dataSync()[0];
    // (2,3)→(1,1) and (5,6)→(4,4): same offset (−1,−2); (2,3)→(1,2) different.
    const a = dot(2 * 8 + 3, 1 * 8 + 1);
    const b = dot(5 * 8 + 6, 4 * 8 + 4);
    const c = dot(2 * 8 + 3, 1 * 8 + 2);
    assert.ok(Math.abs(a - b) < 1e-4, `${a} vs ${b}`);
    assert.ok(Math.abs(a - c) > 1e-3);
    tf.dispose([q, k]);
  });
});
