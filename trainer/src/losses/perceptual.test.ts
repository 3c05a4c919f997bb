import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-cpu";
import { encodeCheckpoint, type TensorEntry } from "../io/checkpoint.ts";
import { FileStorage } from "../io/storage.ts";
import { Rng } from "../util/rng.ts";
import { PerceptualLoss, writeGeneratedPerceptualNet } from "./perceptual.ts";
import { l1Loss } from "./reconstruction.ts";

test("L1 reconstruction loss", async () => {
  await tf.setBackend("cpu");
  assert.ok(Math.abs(l1Loss(tf.tensor([1, -1, 0.5]), tf.tensor([0, 1, 0.5])).dataSync()[0] - 1) < 1e-7);
});

test("generated perceptual net: load from a weight file by path and file:// URI", async () => {
  await tf.setBackend("cpu");
  const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-lpips-"));
  const file = path.join(dir, "lpips-generated.bin");
  await writeGeneratedPerceptualNet(file, new Rng(7));
  const a = await PerceptualLoss.load(file);
  const b = await PerceptualLoss.load(pathToFileURL(file).href);
  assert.equal(a.spec.generated, true);
  const x = tf.randomUniform([2, 16, 16, 3], -1, 1, "float32", 1) as tf.Tensor4D;
  const y = tf.randomUniform([2, 16, 16, 3], -1, 1, "float32", 2) as tf.Tensor4D;
  const dxy = a.distance(x, y).dataSync();
  assert.deepEqual(Array.from(dxy), Array.from(b.distance(x, y).dataSync()));
  assert.ok(dxy[0] > 0 && dxy[1] > 0);
  assert.ok(Math.max(...a.distance(x, x).dataSync()) < 1e-6);
  const dyx = a.distance(y, x).dataSync();
  assert.ok(Math.abs(dxy[0] - dyx[0]) < 1e-5);
  // gradient reaches the reconstruction
  const g = tf.grad((r: tf.Tensor) => a.loss(x, r as tf.Tensor4D))(y);
  assert.ok(tf.sum(tf.abs(g)).dataSync()[0] > 0);
  // a different generated net gives different distances
  await writeGeneratedPerceptualNet(file, new Rng(8));
  const c = await PerceptualLoss.load(file);
  assert.notDeepEqual(Array.from(c.distance(x, y).dataSync()), Array.from(dxy));
});

test("LPIPS formula on a one-layer net equals a hand computation", async () => {
  await tf.setBackend("cpu");
  // One 3→3 conv with identity centre tap and bias 3 (ReLU stays active), tapped, lin weights (1,2,3).
  const kernel = new Float32Array(81);
  for (let c = 0; c < 3; c++) kernel[4 * 9 + c * 3 + c] = 1; // [kh=1,kw=1,cin=c,cout=c] → ((1·3+1)·3+c)·3+c
  const tensors = new Map<string, TensorEntry>([
    ["conv0/kernel", { shape: [3, 3, 3, 3], dtype: "float32", data: kernel }],
    ["conv0/bias", { shape: [3], dtype: "float32", data: Float32Array.of(3, 3, 3) }],
    ["lin0/weight", { shape: [3], dtype: "float32", data: Float32Array.of(1, 2, 3) }],
  ]);
  const bytes = encodeCheckpoint({
    kind: "perceptual",
    meta: { spec: { name: "hand", generated: true, layers: [3], taps: [0] } },
    tensors,
  });
  const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-lpips-"));
  const file = path.join(dir, "hand.bin");
  await new FileStorage().put(file, bytes);
  const net = await PerceptualLoss.load(file);
  const rng = new Rng(3);
  const xs = rng.uniformArray(2 * 2 * 3, -1, 1);
  const ys = rng.uniformArray(2 * 2 * 3, -1, 1);
  const got = net.distance(tf.tensor4d(xs, [1, 2, 2, 3]), tf.tensor4d(ys, [1, 2, 2, 3])).dataSync()[0];
  const shift = [-0.03, -0.088, -0.188];
  const scale = [0.458, 0.448, 0.45];
  const w = [1, 2, 3];
  let want = 0;
  for (let p = 0; p < 4; p++) {
    const f = (a: Float32Array) => [0, 1, 2].map((c) => Math.max(0, (a[p * 3 + c] - shift[c]) / scale[c] + 3));
    const fx = f(xs);
    const fy = f(ys);
    const nx = Math.sqrt(fx.reduce((s, v) => s + v * v, 0)) + 1e-10;
    const ny = Math.sqrt(fy.reduce((s, v) => s + v * v, 0)) + 1e-10;
    want += [0, 1, 2].reduce((s, c) => s + w[c] * (fx[c] / nx - fy[c] / ny) ** 2, 0) / 4;
  }
  assert.ok(Math.abs(got - want) < 1e-5, `${got} vs ${want}`);
});

test("perceptual weight file with a wrong shape is rejected with a clear error", async () => {
  const tensors = new Map<string, TensorEntry>([
    ["conv0/kernel", { shape: [3, 3, 3, 4], dtype: "float32", data: new Float32Array(108) }],
    ["conv0/bias", { shape: [4], dtype: "float32", data: new Float32Array(4) }],
  ]);
  const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-lpips-"));
  const file = path.join(dir, "bad.bin");
  await new FileStorage().put(
    file,
    encodeCheckpoint({
      kind: "perceptual",
      meta: { spec: { name: "bad", generated: true, layers: [8], taps: [0] } },
      tensors,
    }),
  );
  await assert.rejects(PerceptualLoss.load(file), /conv0\/kernel has shape \[3,3,3,4\], expected \[3,3,3,8\]/);
});
