import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-cpu";
import { Rng } from "../util/rng.ts";
import { generateTinyVitTeacher, klAlignmentLoss, OnnxTeacher, writeGeneratedTeacher } from "./alignment.ts";

test("KL alignment at T=4 equals a hand computation and is 0 for equal inputs", async () => {
  await tf.setBackend("cpu");
  const t = [1, 3, -2];
  const s = [0, 1, 4];
  const sm = (v: number[]) => {
    const e = v.map((x) => Math.exp(x / 4));
    const z = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / z);
  };
  const pt = sm(t);
  const ps = sm(s);
  const kl = pt.reduce((a, p, i) => a + p * Math.log(p / ps[i]), 0);
  const got = klAlignmentLoss(tf.tensor2d([t, s]), tf.tensor2d([s, s])).dataSync()[0];
  // batch mean of [kl, 0] times T² = 16
  assert.ok(Math.abs(got - (16 * kl) / 2) < 1e-5, `${got}`);
  assert.ok(Math.abs(klAlignmentLoss(tf.tensor2d([t]), tf.tensor2d([t])).dataSync()[0]) < 1e-6);
  // gradient flows into the student only
  const g = tf.grad((x: tf.Tensor) => klAlignmentLoss(tf.tensor2d([t]), x as tf.Tensor2D))(tf.tensor2d([s]));
  assert.ok(tf.sum(tf.abs(g)).dataSync()[0] > 0);
});

test("generated tiny ViT teacher runs in onnxruntime-node with the DINOv2 interface", async () => {
  await tf.setBackend("cpu");
  const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-teacher-"));
  const file = path.join(dir, "teacher.onnx");
  const spec = { imageSize: 28, patch: 4, dim: 32, depth: 2, heads: 4, outDim: 32 };
  await writeGeneratedTeacher(file, spec, new Rng(11));
  const teacher = await OnnxTeacher.load(pathToFileURL(file).href);
  assert.equal(teacher.generated, true);
  assert.equal(teacher.inputName, "pixel_values");
  assert.equal(teacher.outputName, "pooler_output");
  const x = tf.randomNormal([3, 28, 28, 3], 0, 1, "float32", 5) as tf.Tensor4D;
  const f = await teacher.features(x);
  assert.deepEqual(f.shape, [3, 32]);
  // pooler_output = final LayerNorm (γ=1, β=0) of CLS: zero mean, unit variance per row
  const { mean, variance } = tf.moments(f, -1);
  for (const m of mean.dataSync()) assert.ok(Math.abs(m) < 1e-4);
  for (const v of variance.dataSync()) assert.ok(Math.abs(v - 1) < 1e-2);
  // rows differ for different images, and a second load gives identical features
  const fd = f.arraySync();
  assert.notDeepEqual(fd[0], fd[1]);
  const again = await (await OnnxTeacher.load(file)).features(x);
  assert.deepEqual(again.arraySync(), fd);
  // projection head when outDim ≠ dim; generation is deterministic per seed
  const proj = generateTinyVitTeacher({ ...spec, outDim: 10 }, new Rng(1));
  assert.deepEqual(proj, generateTinyVitTeacher({ ...spec, outDim: 10 }, new Rng(1)));
  await writeGeneratedTeacher(file, { ...spec, outDim: 10 }, new Rng(1));
  const f10 = await (await OnnxTeacher.load(file)).features(x);
  assert.deepEqual(f10.shape, [3, 10]);
  await teacher.dispose();
});
