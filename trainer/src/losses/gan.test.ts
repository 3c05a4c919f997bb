import assert from "node:assert/strict";
import { test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-cpu";
import { Rng } from "../util/rng.ts";
import { adoptWeight, hingeDLoss, LeCamEma, nonSaturatingGLoss, PatchGanDiscriminator } from "./gan.ts";

const close = (a: number, b: number, tol = 1e-5) => assert.ok(Math.abs(a - b) <= tol, `${a} vs ${b}`);
const softplus = (x: number) => Math.log1p(Math.exp(x));

test("hinge D loss on known logits", async () => {
  await tf.setBackend("cpu");
  const real = tf.tensor([2, 0.5, -1]);
  const fake = tf.tensor([-2, 0, 1]);
  // ½(mean[0, .5, 2] + mean[0, 1, 2]) = ½(5/6 + 1)
  close(hingeDLoss(real, fake).dataSync()[0], 0.5 * (2.5 / 3 + 1));
});

test("non-saturating G loss uses the per-sample mean patch logit", () => {
  const logits = tf.tensor4d([0, 2, -1, -3], [2, 1, 2, 1]); // sample means 1 and −2
  close(nonSaturatingGLoss(logits).dataSync()[0], (softplus(-1) + softplus(2)) / 2);
});

test("LeCam EMAs update before the regulariser and with decay 0.999", () => {
  const l = new LeCamEma();
  l.update(1, -1);
  close(l.emaReal, 0.001, 1e-12);
  close(l.emaFake, -0.001, 1e-12);
  l.update(3, 1);
  close(l.emaReal, 0.001 * 0.999 + 0.003, 1e-12);
  close(l.emaFake, -0.001 * 0.999 + 0.001, 1e-12);
  const real = tf.tensor([0.5, -2]);
  const fake = tf.tensor([-0.5, 4]);
  const er = l.emaReal;
  const ef = l.emaFake;
  const relu = (x: number) => Math.max(0, x);
  const want = (relu(0.5 - ef) ** 2 + relu(-2 - ef) ** 2) / 2 + (relu(er + 0.5) ** 2 + relu(er - 4) ** 2) / 2;
  close(l.regulariser(real, fake).dataSync()[0], want);
  const restored = new LeCamEma();
  restored.setState(l.getState());
  assert.deepEqual(restored.getState(), l.getState());
});

test("adoptWeight gates by the start step", () => {
  assert.equal(adoptWeight(0.1, 4, 5), 0);
  assert.equal(adoptWeight(0.1, 5, 5), 0.1);
  assert.equal(adoptWeight(0.1, 0, 0), 0.1);
});

test("PatchGAN shapes, parameter count and gradients", () => {
  const full = new PatchGanDiscriminator({ ndf: 64, nLayers: 3 }, new Rng(1));
  // docs/model.md §2.8: 2.77 M for ndf 64, n_layers 3; 256² → 30×30 patches
  assert.equal(full.parameterCount(), 2765633);
  assert.equal(full.outputSize(256), 30);
  full.dispose();
  const d = new PatchGanDiscriminator({ ndf: 16, nLayers: 2 }, new Rng(2));
  const x = tf.randomUniform([2, 32, 32, 3], -1, 1, "float32", 7) as tf.Tensor4D;
  const y = d.apply(x);
  assert.deepEqual(y.shape, [2, 6, 6, 1]); // docs/model.md §10 T0: [B,1,6,6]
  const vars = d.trainableVariables();
  // With every hinge term active, the last bias's gradients from the real and fake halves cancel exactly
  // (−1/N·N + 1/N·N = 0), so add a term that depends on the raw logits to test that every variable is reached.
  const { grads } = tf.variableGrads(
    () =>
      tf.add(hingeDLoss(d.apply(x), d.apply(tf.neg(x) as tf.Tensor4D)), tf.mean(tf.square(d.apply(x)))) as tf.Scalar,
    vars,
  );
  for (const v of vars) {
    const g = grads[v.name];
    assert.ok(g, `no gradient for ${v.name}`);
    assert.ok(tf.sum(tf.abs(g)).dataSync()[0] > 0, `zero gradient for ${v.name}`);
  }
  // Init statistics: conv weights N(0, 0.02), BN γ N(1, 0.02)
  const w = d.getWeights();
  const k = (w.get("disc/conv1/kernel") as tf.Tensor).dataSync() as Float32Array;
  const std = Math.sqrt(k.reduce((a, b) => a + b * b, 0) / k.length);
  assert.ok(Math.abs(std - 0.02) < 0.002, `kernel std ${std}`);
  const g = (w.get("disc/conv1/bn/gamma") as tf.Tensor).dataSync() as Float32Array;
  assert.ok(Math.abs(g.reduce((a, b) => a + b, 0) / g.length - 1) < 0.02);
  // Same seed → same weights (deterministic init through the seeded Rng)
  const d2 = new PatchGanDiscriminator({ ndf: 16, nLayers: 2 }, new Rng(2));
  assert.deepEqual(
    Array.from((d2.getWeights().get("disc/conv0/bias") as tf.Tensor).dataSync()),
    Array.from((w.get("disc/conv0/bias") as tf.Tensor).dataSync()),
  );
});
