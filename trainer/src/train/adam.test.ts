// NamedAdam's shape-grouped update must equal, bit for bit, the plain per-parameter PyTorch Adam loop
// (the formulation it replaced), including parameters without a gradient and shapes shared by several
// parameters; NamedEma and globalNorm sanity. Runs on TFJS_BACKEND (default wasm), like the model tests.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { globalNorm, NamedAdam, NamedEma } from "./adam.ts";

/** The per-parameter reference: one elementwise chain per parameter, scalars as JS numbers. */
function referenceStep(
  params: Map<string, tf.Variable>,
  m: Map<string, tf.Variable>,
  v: Map<string, tf.Variable>,
  grads: Map<string, tf.Tensor>,
  t: number,
  lr: number,
  o: { beta1: number; beta2: number; eps: number },
): void {
  const bc1 = 1 - o.beta1 ** t;
  const bc2Sqrt = Math.sqrt(1 - o.beta2 ** t);
  const stepSize = lr / bc1;
  tf.tidy(() => {
    for (const [name, p] of params) {
      const g = grads.get(name);
      const mi = m.get(name) as tf.Variable;
      const vi = v.get(name) as tf.Variable;
      const mNew = g ? tf.add(tf.mul(mi, o.beta1), tf.mul(g, 1 - o.beta1)) : tf.mul(mi, o.beta1);
      const vNew = g ? tf.add(tf.mul(vi, o.beta2), tf.mul(tf.square(g), 1 - o.beta2)) : tf.mul(vi, o.beta2);
      mi.assign(mNew);
      vi.assign(vNew);
      const denom = tf.add(tf.div(tf.sqrt(vNew), bc2Sqrt), o.eps);
      p.assign(tf.sub(p, tf.mul(stepSize, tf.div(mNew, denom))));
    }
  });
}

const SHAPES: Record<string, number[]> = {
  "a.weight": [3, 3, 4, 5],
  "b.weight": [3, 3, 4, 5], // same shape as a: grouped
  "c.weight": [3, 3, 4, 5],
  "a.bias": [5],
  "b.bias": [5],
  "lone.gamma": [7],
  "frozen.weight": [2, 3], // never gets a gradient
  "scalar.s": [],
  "big.weight": [3, 3, 64, 64], // above the grouping size: updated on its own
  "big2.weight": [3, 3, 64, 64],
};

const bits = (t: tf.Tensor): Uint32Array => new Uint32Array(new Float32Array(t.dataSync()).buffer);

describe("NamedAdam", () => {
  before(async () => {
    await selectBackend({ requested: process.env.TFJS_BACKEND ?? "wasm" });
  });

  it("grouped update is bit-identical to the per-parameter loop over several steps (with a grad-less param)", () => {
    const opts = { beta1: 0.5, beta2: 0.9, eps: 1e-8 };
    const mk = (seed: number) =>
      new Map(
        Object.entries(SHAPES).map(([n, s], i) => [n, tf.variable(tf.randomNormal(s, 0, 1, "float32", seed + i))]),
      );
    const pA = mk(1);
    const pB = mk(1);
    const adam = new NamedAdam(pA, opts);
    const refM = new Map([...pB].map(([n, p]) => [n, tf.variable(tf.zerosLike(p))]));
    const refV = new Map([...pB].map(([n, p]) => [n, tf.variable(tf.zerosLike(p))]));
    for (let t = 1; t <= 4; t++) {
      // Gradients spanning several magnitudes (tiny ones exercise eps, large ones the bias corrections).
      const grads = new Map(
        Object.entries(SHAPES)
          .filter(([n]) => n !== "frozen.weight")
          .map(([n, s], i) => [
            n,
            // b.bias: gradients ~1e-9, where eps dominates the denominator.
            tf.tidy(() =>
              tf.mul(tf.randomNormal(s, 0, 1, "float32", 100 * t + i), n === "b.bias" ? 1e-9 : 10 ** ((i % 5) - 3)),
            ),
          ]),
      );
      const live = tf.memory().numTensors;
      adam.step(grads, 1e-3 * t);
      assert.equal(tf.memory().numTensors, live, "step() leaks no tensors");
      referenceStep(pB, refM, refV, grads, t, 1e-3 * t, opts);
      tf.dispose([...grads.values()]);
    }
    for (const n of Object.keys(SHAPES)) {
      assert.deepEqual(bits(pA.get(n) as tf.Tensor), bits(pB.get(n) as tf.Tensor), `param ${n}`);
      assert.deepEqual(bits(adam.m.get(n) as tf.Tensor), bits(refM.get(n) as tf.Tensor), `m ${n}`);
      assert.deepEqual(bits(adam.v.get(n) as tf.Tensor), bits(refV.get(n) as tf.Tensor), `v ${n}`);
    }
    // The frozen parameter kept its value; the others moved.
    assert.deepEqual(bits(pA.get("frozen.weight") as tf.Tensor), bits(mk(1).get("frozen.weight") as tf.Tensor));
    assert.notDeepEqual(bits(pA.get("a.weight") as tf.Tensor), bits(mk(1).get("a.weight") as tf.Tensor));
    assert.equal(adam.t, 4);
    adam.dispose();
    tf.dispose([...pA.values(), ...pB.values(), ...refM.values(), ...refV.values()]);
  });

  it("NamedEma moves the shadow by (1 − decay) toward the params; globalNorm is the L2 norm", () => {
    const p = new Map([["w", tf.variable(tf.tensor1d([1, 2, 2]))]]);
    const ema = new NamedEma(p, 0.75);
    (p.get("w") as tf.Variable).assign(tf.tensor1d([5, 6, 10]));
    ema.update();
    assert.deepEqual(Array.from((ema.shadow.get("w") as tf.Variable).dataSync()), [2, 3, 4]);
    assert.equal(globalNorm([tf.tensor1d([3, 0]), tf.tensor2d([[4]])]), 5);
    ema.dispose();
    tf.dispose([...p.values()]);
  });
});
