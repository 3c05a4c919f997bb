// gFID/IS from a sample .npz (ADM / sample.py layout: uint8 `arr_0` [N,H,W,3]) against reference statistics,
// and the weights provenance chain (converter ↔ generator, label checks). RANDOM Inception weights: the
// numbers are labelled [random-inception] and are not FID/IS.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as ort from "onnxruntime-node";
import { computeGfid, imageStats, npzImageBatches, npzRowCount } from "../../trainer/src/eval/gfid.ts";
import { InceptionExtractor, preprocess, RANDOM_LABEL, readOnnxMetadata } from "../../trainer/src/eval/inception.ts";
import { writeNpz } from "../../trainer/src/eval/npz.ts";
import { loadStats, saveStats } from "../../trainer/src/eval/stats.ts";
import {
  degrade,
  ensureRandomInception,
  HACK_DIR,
  loadTestImages,
  runPython,
  type TestImages,
  venvPython,
} from "../../trainer/src/eval/testing.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "eval-gfid-"));
const N = 16;
const HALF = N / 2;
const PER = 256 * 256 * 3;
let model: string;
let ext: InceptionExtractor;
let images: TestImages;

before(async () => {
  model = ensureRandomInception();
  ext = await InceptionExtractor.create({ modelUri: model, maxBatch: 8 });
  images = await loadTestImages(N);
});
after(async () => {
  await ext?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function* batchesOf(data: Uint8Array, n: number, b: number) {
  for (let s = 0; s < n; s += b) {
    const m = Math.min(b, n - s);
    yield { data: data.subarray(s * PER, (s + m) * PER), n: m, height: 256, width: 256 };
  }
}

describe("gFID / IS from sample npz files", () => {
  it("computes labelled gFID and IS from np.savez / np.savez_compressed samples against tagged reference stats", async () => {
    const refStats = await imageStats(ext, batchesOf(images.data, HALF, 8));
    const refPath = path.join(dir, "ref.npz");
    await saveStats(refPath, refStats, ext.weights);
    // "Generated" samples: degraded second half, as uint8, in sample.py's npz layout.
    const second: TestImages = { ...images, data: images.data.subarray(HALF * PER), n: HALF };
    const samples = Uint8Array.from(degrade(second, 0.4), (v) =>
      Math.round(Math.min(1, Math.max(0, (v + 1) / 2)) * 255),
    );
    const plain = path.join(dir, "samples.npz");
    await writeNpz(plain, { arr_0: { shape: [HALF, 256, 256, 3], data: samples } });
    const compressed = path.join(dir, "samples-compressed.npz");
    runPython("fid_reference.py", ["recompress", plain, compressed]);

    assert.equal(await npzRowCount(plain), HALF);
    const results = [];
    for (const file of [plain, compressed]) {
      results.push(
        await computeGfid({
          extractor: ext,
          samples: npzImageBatches(file, 3),
          reference: refPath,
          expectedCount: await npzRowCount(file),
          isSplits: 2,
        }),
      );
    }
    const [a, b] = results;
    assert.deepEqual(Object.keys(a.metrics).sort(), [`IS${RANDOM_LABEL}`, `gFID${RANDOM_LABEL}`].sort());
    assert.equal(a.count, HALF);
    assert.ok(a.gfid > 0 && Number.isFinite(a.gfid));
    assert.ok(a.is.mean >= 1 && a.is.mean <= 1008, `IS ${a.is.mean}`);
    assert.ok(Math.abs(a.gfid - b.gfid) <= 1e-9 * a.gfid, "stored and deflated npz give the same gFID");
    assert.match(a.notes[0], /RANDOMLY generated/);

    // Samples against their own statistics: gFID ≈ 0.
    const selfRef = path.join(dir, "self.npz");
    await saveStats(selfRef, a.stats, ext.weights);
    const self = await computeGfid({
      extractor: ext,
      samples: npzImageBatches(plain, 4),
      reference: selfRef,
      isSplits: 2,
    });
    assert.ok(self.gfid <= 1e-6, `self gFID ${self.gfid}`);
  });

  it("refuses reference statistics from other Inception weights", async () => {
    const s = await loadStats(path.join(dir, "ref.npz"));
    const untagged = path.join(dir, "pytorch-fid-style.npz");
    await saveStats(untagged, s); // like pytorch-fid/ADM files: real TF-FID weights assumed
    const run = (reference: string) =>
      computeGfid({
        extractor: ext,
        samples: npzImageBatches(path.join(dir, "samples.npz"), 4),
        reference,
        isSplits: 2,
      });
    await assert.rejects(run(untagged), /reference statistics were computed with Inception weights/);
    const real = path.join(dir, "real-tagged.npz");
    await saveStats(real, s, "pt_inception-2015-12-05");
    await assert.rejects(run(real), /"pt_inception-2015-12-05", the extractor has "random"/);
  });
});

describe("weights provenance (hack/inception)", () => {
  it("convert_pt_inception.py builds the same network from a state dict as the generator", async () => {
    const sd = path.join(dir, "sd.npz");
    const gen = path.join(dir, "gen.onnx");
    const conv = path.join(dir, "conv.onnx");
    const py = venvPython();
    execFileSync(
      py,
      [path.join(HACK_DIR, "make_random_inception.py"), "--seed", "3", "--out", gen, "--save-state-dict", sd],
      { cwd: HACK_DIR },
    );
    // Refuses to label an arbitrary file as the real weights …
    assert.throws(
      () =>
        execFileSync(py, [path.join(HACK_DIR, "convert_pt_inception.py"), "--weights", sd, "--out", conv], {
          cwd: HACK_DIR,
          stdio: "pipe",
        }),
      /refusing to label it as the real FID weights/,
    );
    // … and converts it under an explicit label.
    execFileSync(
      py,
      [path.join(HACK_DIR, "convert_pt_inception.py"), "--weights", sd, "--out", conv, "--kind", "random"],
      { cwd: HACK_DIR },
    );
    const meta = await readOnnxMetadata(conv);
    assert.equal(meta["mergevq.weights"], "random");
    assert.match(meta["mergevq.provenance"], /sha256=[0-9a-f]{64}/);
    const input = preprocess({ data: images.data.subarray(0, 2 * PER), n: 2, height: 256, width: 256 });
    const feed = { images: new ort.Tensor("float32", input, [2, 3, 299, 299]) };
    const [g, c, base] = await Promise.all([gen, conv, model].map((m) => ort.InferenceSession.create(m)));
    const og = (await g.run(feed)).pool.data as Float32Array;
    const oc = (await c.run(feed)).pool.data as Float32Array;
    const ob = (await base.run(feed)).pool.data as Float32Array;
    assert.deepEqual(Array.from(oc), Array.from(og), "converter and generator produce the same network");
    assert.ok(
      og.some((v, i) => Math.abs(v - ob[i]) > 1e-3),
      "seed 3 differs from seed 0",
    );
    await Promise.all([g, c, base].map((s) => s.release()));
  });
});
