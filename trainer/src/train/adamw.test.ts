// AdamW against a hand computation (PyTorch formulas written out in float64 for scalars/short vectors).
import assert from "node:assert/strict";
import { test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { clipByGlobalNorm, NamedAdamW } from "./adamw.ts";

function ref(p: number, g: number[], lr: number[], wd: number, b1 = 0.9, b2 = 0.95, eps = 1e-8): number {
  let m = 0;
  let v = 0;
  for (let t = 1; t <= g.length; t++) {
    p = p * (1 - lr[t - 1] * wd);
    m = b1 * m + (1 - b1) * g[t - 1];
    v = b2 * v + (1 - b2) * g[t - 1] ** 2;
    const denom = Math.sqrt(v) / Math.sqrt(1 - b2 ** t) + eps;
    p = p - (lr[t - 1] / (1 - b1 ** t)) * (m / denom);
  }
  return p;
}

const close = (a: number, b: number, tol = 2e-6) =>
  assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b} (|Δ| ${Math.abs(a - b)})`);

test("AdamW matches the hand computation; 1-D tensors are exempt from weight decay", () => {
  const w2 = tf.variable(tf.tensor2d([[0.5, -1.5]]), true, "w2");
  const norm = tf.variable(tf.tensor1d([1.0, 2.0]), true, "norm");
  const opt = new NamedAdamW(
    new Map<string, tf.Variable>([
      ["w2", w2],
      ["norm", norm],
    ]),
    { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
  );
  assert.equal(opt.decay.get("w2"), 0.1);
  assert.equal(opt.decay.get("norm"), 0);
  const gs = [
    [0.3, -0.2, 0.05, 1.0],
    [0.1, 0.4, -0.3, 0.2],
    [-0.5, 0.1, 0.2, -0.1],
  ];
  const lrs = [0.01, 0.02, 0.005];
  for (let s = 0; s < 3; s++) {
    const g = new Map<string, tf.Tensor>([
      ["w2", tf.tensor2d([[gs[s][0], gs[s][1]]])],
      ["norm", tf.tensor1d([gs[s][2], gs[s][3]])],
    ]);
    opt.step(g, lrs[s]);
    for (const t of g.values()) t.dispose();
  }
  assert.equal(opt.t, 3);
  const w = w2.dataSync();
  const n = norm.dataSync();
  close(
    w[0],
    ref(
      0.5,
      gs.map((x) => x[0]),
      lrs,
      0.1,
    ),
  );
  close(
    w[1],
    ref(
      -1.5,
      gs.map((x) => x[1]),
      lrs,
      0.1,
    ),
  );
  close(
    n[0],
    ref(
      1.0,
      gs.map((x) => x[2]),
      lrs,
      0,
    ),
  );
  close(
    n[1],
    ref(
      2.0,
      gs.map((x) => x[3]),
      lrs,
      0,
    ),
  );
  // The decay is visible: with wd the 2-D weight differs from the no-decay update by ≈ lr·wd·p per step.
  assert.ok(
    Math.abs(
      ref(
        0.5,
        gs.map((x) => x[0]),
        lrs,
        0.1,
      ) -
        ref(
          0.5,
          gs.map((x) => x[0]),
          lrs,
          0,
        ),
    ) > 1e-4,
  );
  opt.dispose();
  w2.dispose();
  norm.dispose();
});

test("global-norm clipping scales every gradient by maxNorm/(norm+1e-6) only above the threshold", () => {
  const g = new Map<string, tf.Tensor>([
    ["a", tf.tensor1d([3, 0])],
    ["b", tf.tensor2d([[0, 4]])],
  ]);
  const c = clipByGlobalNorm(g, 1);
  close(c.norm, 5, 1e-6);
  assert.equal(c.clipped, true);
  const f = 1 / (5 + 1e-6);
  close(c.grads.get("a")?.dataSync()[0] as number, 3 * f);
  close(c.grads.get("b")?.dataSync()[1] as number, 4 * f);
  const n = clipByGlobalNorm(g, 10);
  assert.equal(n.clipped, false);
  assert.equal(n.grads, g);
  const none = clipByGlobalNorm(g, null);
  assert.equal(none.clipped, false);
  // Clipped update = hand AdamW with the scaled gradient (first step: Adam's normalisation makes |Δp| ≈ lr).
  const p = tf.variable(tf.tensor2d([[1, 1]]), true, "p-clip");
  const opt = new NamedAdamW(new Map([["p", p]]), { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0 });
  opt.step(new Map([["p", c.grads.get("b") as tf.Tensor]]), 0.1);
  const v = p.dataSync();
  close(v[0], ref(1, [0], [0.1], 0));
  close(v[1], ref(1, [4 * f], [0.1], 0));
  for (const t of [...g.values(), ...c.grads.values()]) t.dispose();
  opt.dispose();
  p.dispose();
});
