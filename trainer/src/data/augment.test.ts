import assert from "node:assert/strict";
import { test } from "node:test";
import sharp from "sharp";
import {
  CorruptImageError,
  decodeRgb,
  makeViews,
  normaliseInto,
  randomResizedCropBox,
  resizeShorter,
} from "./augment.ts";
import { seededRandom } from "./random.ts";
import { syntheticJpeg } from "./testImages.ts";

test("resizeShorter follows torchvision Resize(int)", () => {
  assert.deepEqual(resizeShorter(400, 300, 256), [341, 256]);
  assert.deepEqual(resizeShorter(300, 400, 256), [256, 341]);
  assert.deepEqual(resizeShorter(64, 64, 32), [32, 32]);
});

test("RandomResizedCrop boxes stay inside the image with scale/ratio in range", () => {
  const rnd = seededRandom(1);
  for (let i = 0; i < 500; i++) {
    const w = 30 + Math.floor(rnd() * 300);
    const h = 30 + Math.floor(rnd() * 300);
    const b = randomResizedCropBox(w, h, rnd);
    assert.ok(b.left >= 0 && b.top >= 0 && b.left + b.width <= w && b.top + b.height <= h, JSON.stringify({ w, h, b }));
    const area = (b.width * b.height) / (w * h);
    assert.ok(area <= 1 && area > 0.02, `area ${area}`);
  }
});

test("decodeRgb rejects truncated JPEGs and converts greyscale to 3 channels", async () => {
  const jpg = await syntheticJpeg(3, 64, 64);
  await assert.rejects(decodeRgb(jpg.subarray(0, Math.floor(jpg.length / 2))), CorruptImageError);
  await assert.rejects(decodeRgb(Buffer.from("not a jpeg at all")), CorruptImageError);
  const grey = await syntheticJpeg(4, 32, 24, 1);
  assert.equal((await sharp(grey).metadata()).channels, 1);
  const img = await decodeRgb(grey);
  assert.equal(img.data.length, 32 * 24 * 3);
});

test("train views have the requested sizes, differ between crops, and are a pure function of the seed", async () => {
  const img = await decodeRgb(await syntheticJpeg(5, 90, 70));
  const sizes = { recon: 32, teacher: 28, student: 24 };
  const a = await makeViews(img, sizes, "train", seededRandom(9));
  const b = await makeViews(img, sizes, "train", seededRandom(9));
  const c = await makeViews(img, sizes, "train", seededRandom(10));
  assert.equal(a.image.length, 32 * 32 * 3);
  assert.equal(a.imageAugW?.length, 28 * 28 * 3);
  assert.equal(a.imageAugS?.length, 24 * 24 * 3);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.imageAugS, c.imageAugS);
});

test("val views are deterministic center crops", async () => {
  const img = await decodeRgb(await syntheticJpeg(6, 80, 50));
  const a = await makeViews(img, { recon: 32 }, "val", seededRandom(1));
  const b = await makeViews(img, { recon: 32 }, "val", seededRandom(2));
  assert.deepEqual(a.image, b.image);
  // Center crop of the resized image equals a manual sharp pipeline.
  const ref = await sharp(img.data, { raw: { width: 80, height: 50, channels: 3 } })
    .resize(51, 32, { kernel: "linear", fit: "fill" })
    .extract({ left: 10, top: 0, width: 32, height: 32 })
    .raw()
    .toBuffer();
  assert.deepEqual(a.image, ref);
});

test("normalisations: [−1, 1] and ImageNet mean/std", () => {
  const px = Buffer.from([0, 255, 128, 124, 116, 104]);
  const out = new Float32Array(8);
  normaliseInto(px, out, 1, "minus1to1");
  assert.equal(out[1], -1);
  assert.equal(out[2], 1);
  assert.ok(Math.abs(out[3] - (128 / 127.5 - 1)) < 1e-6);
  normaliseInto(px, out, 0, "imagenet");
  assert.ok(Math.abs(out[0] - (0 - 0.485) / 0.229) < 1e-5);
  assert.ok(Math.abs(out[1] - (1 - 0.456) / 0.224) < 1e-5);
  assert.ok(Math.abs(out[3] - (124 / 255 - 0.485) / 0.229) < 1e-5);
});
