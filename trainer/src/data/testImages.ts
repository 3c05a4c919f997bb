// Synthetic ImageNet-layout folders for unit tests (generated pixels, NOT photos): smooth per-class
// colour gradients plus seeded noise, JPEG-encoded with sharp. The real-photo dataset is hack/dataset.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import sharp from "sharp";
import { seededRandom } from "./random.ts";

export async function syntheticJpeg(seed: number, w = 48, h = 40, channels: 1 | 3 = 3): Promise<Buffer> {
  const rnd = seededRandom("synthetic", seed);
  const px = Buffer.alloc(w * h * channels);
  const base = [rnd() * 255, rnd() * 255, rnd() * 255];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < channels; c++)
        px[(y * w + x) * channels + c] = Math.min(255, (base[c] + x * 2 + y + rnd() * 30) % 256);
    }
  }
  const img = sharp(px, { raw: { width: w, height: h, channels } });
  return (channels === 1 ? img.toColourspace("b-w") : img).jpeg({ quality: 85 }).toBuffer();
}

/** `<dir>/train/<wnid>/<wnid>_<i>.JPEG` for `classes` × `perClass` generated images; returns the root. */
export async function writeSyntheticImageNet(
  dir: string,
  classes: number,
  perClass: number,
  split = "train",
): Promise<string> {
  for (let c = 0; c < classes; c++) {
    const wnid = `n0000000${c}`;
    mkdirSync(path.join(dir, split, wnid), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const w = 40 + ((c * 7 + i * 3) % 24);
      const h = 36 + ((c * 5 + i * 11) % 28);
      writeFileSync(path.join(dir, split, wnid, `${wnid}_${i}.JPEG`), await syntheticJpeg(c * 1000 + i, w, h));
    }
  }
  return dir;
}
