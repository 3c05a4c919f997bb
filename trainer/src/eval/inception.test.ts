import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import {
  labelForWeights,
  linearAxis,
  preprocess,
  providerCandidates,
  RANDOM_LABEL,
  readOnnxMetadata,
  UNVERIFIED_LABEL,
} from "./inception.ts";
import { ensureRandomInception, rng, runPython } from "./testing.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "inception-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function nhwcToNchw(x: Float32Array, n: number, h: number, w: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let b = 0; b < n; b++)
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++)
        for (let c = 0; c < 3; c++) out[((b * 3 + c) * h + y) * w + xx] = x[((b * h + y) * w + xx) * 3 + c];
  return out;
}

describe("preprocess (pytorch-fid resize + scaling)", () => {
  it("matches onnxruntime's Resize(linear, pytorch_half_pixel) = F.interpolate(align_corners=False)", async () => {
    const model = path.join(dir, "resize.onnx");
    runPython("fid_reference.py", ["resize-model", model]);
    const session = await ort.InferenceSession.create(model);
    const r = rng(3);
    for (const [h, w] of [
      [256, 256],
      [64, 97],
      [512, 384],
      [299, 299],
    ]) {
      const n = 2;
      const img = Float32Array.from({ length: n * h * w * 3 }, () => r.uniform());
      const ours = preprocess({ data: img, n, height: h, width: w });
      const res = await session.run({ x: new ort.Tensor("float32", nhwcToNchw(img, n, h, w), [n, 3, h, w]) });
      const ref = res.y.data as Float32Array;
      assert.equal(ours.length, ref.length);
      let maxErr = 0;
      for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(ours[i] - ref[i]));
      // ORT places samples at (o+0.5)/scale−0.5 in float32, PyTorch (and we) at scale·(o+0.5)−0.5: ≤1e-4
      // apart. Any semantic difference (align_corners, clamping, antialias) would show up as ≳1e-2.
      assert.ok(maxErr < 2e-4, `${h}×${w}: max |Δ| = ${maxErr}`);
    }
    await session.release();
  });

  it("maps uint8, [0,1] and [-1,1] inputs identically and clamps out-of-range floats", () => {
    const n = 1;
    const h = 5;
    const w = 4;
    const u8 = Uint8Array.from({ length: n * h * w * 3 }, (_, i) => (i * 29) % 256);
    const unit = Float32Array.from(u8, (v) => v / 255);
    const sym = Float32Array.from(unit, (v) => v * 2 - 1);
    const a = preprocess({ data: u8, n, height: h, width: w }, 7);
    const b = preprocess({ data: unit, n, height: h, width: w }, 7);
    const c = preprocess({ data: sym, n, height: h, width: w, range: "symmetric" }, 7);
    for (let i = 0; i < a.length; i++) {
      assert.ok(Math.abs(a[i] - b[i]) < 1e-6 && Math.abs(a[i] - c[i]) < 1e-6);
      assert.ok(a[i] >= -1 && a[i] <= 1);
    }
    const over = preprocess(
      { data: new Float32Array(h * w * 3).fill(3), n, height: h, width: w, range: "symmetric" },
      3,
    );
    assert.ok(over.every((v) => v === 1));
    assert.throws(() => preprocess({ data: new Uint8Array(10), n: 1, height: h, width: w }), /NHWC/);
  });

  it("uses half-pixel source coordinates clamped at the borders", () => {
    const t = linearAxis(2, 4); // src = 0.5·(o+0.5) − 0.5 → −0.25→0, 0.25, 0.75, 1.25
    assert.deepEqual(Array.from(t.i0), [0, 0, 0, 1]);
    assert.deepEqual(Array.from(t.i1), [1, 1, 1, 1]);
    assert.deepEqual(Array.from(t.w1), [0, 0.25, 0.75, 0.25]);
  });
});

describe("model provenance", () => {
  it("reads the weights label from the generated model's ONNX metadata", async () => {
    const meta = await readOnnxMetadata(ensureRandomInception());
    assert.equal(meta["mergevq.weights"], "random");
    assert.match(meta["mergevq.preprocess"], /align_corners=False/);
  });

  it("labels every non-real weights kind", () => {
    assert.equal(labelForWeights("random"), RANDOM_LABEL);
    assert.equal(labelForWeights("unknown"), UNVERIFIED_LABEL);
    assert.equal(labelForWeights("pt_inception-2015-12-05"), "");
  });

  it("selects execution providers: CPU always last, GPU ones only with their plug-in, env override", () => {
    const { candidates, skipped } = providerCandidates();
    assert.equal(candidates.at(-1), "cpu");
    for (const ep of candidates.filter((e) => e !== "cpu")) assert.ok(["cuda", "cann"].includes(ep));
    for (const s of skipped) assert.ok(s.reason.length > 0);
    process.env.MERGEVQ_ORT_EP = "cann, cpu";
    try {
      assert.deepEqual(providerCandidates().candidates, ["cann", "cpu"]);
    } finally {
      delete process.env.MERGEVQ_ORT_EP;
    }
  });
});
