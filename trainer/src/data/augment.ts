// Decode + the training views (docs/model.md §3, §7), all with sharp, written straight into NHWC Float32 batch buffers.
//
// Train (three views from one decoded RGB image, each its own random crop):
//   image (recon R):     resize shorter side to R (bicubic) → random crop R×R → [−1, 1]. No flip.
//   image_aug_w (T):     resize shorter side to T (bicubic) → random crop T×T → ImageNet mean/std.
//   image_aug_s (S):     RandomResizedCrop S (scale 0.08–1, ratio 3/4–4/3, bicubic) → h-flip 0.5 → [−1, 1].
// Val: every view is resize shorter side (bilinear) + center crop, same normalisations.
// Sizes are parameters: 256/224/224 for the paper, 32/28/28 (T0) or 64/56/56 (T1) for the small configs.
import sharp from "sharp";
import { type Rand, randInt } from "./random.ts";

export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;

export interface ViewSizes {
  /** Reconstruction view side R. */
  recon: number;
  /** Teacher view side T (omit to skip the view). */
  teacher?: number;
  /** Student view side S (omit to skip the view). */
  student?: number;
}

export type Normalisation = "minus1to1" | "imagenet";

export interface DecodedImage {
  data: Buffer;
  width: number;
  height: number;
}

export class CorruptImageError extends Error {
  override name = "CorruptImageError";
}

/** Decode to 8-bit sRGB (EXIF orientation applied). Truncated/corrupt input throws CorruptImageError. */
export async function decodeRgb(jpg: Buffer): Promise<DecodedImage> {
  try {
    const { data, info } = await sharp(jpg, { failOn: "warning" })
      .rotate()
      .toColourspace("srgb")
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`expected 3 channels after conversion, got ${info.channels}`);
    return { data, width: info.width, height: info.height };
  } catch (e) {
    throw new CorruptImageError((e as Error).message);
  }
}

/** torchvision Resize(int): shorter side → size, longer side scaled and truncated. */
export function resizeShorter(w: number, h: number, size: number): [number, number] {
  return w <= h ? [size, Math.max(1, Math.floor((size * h) / w))] : [Math.max(1, Math.floor((size * w) / h)), size];
}

export interface Box {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** torchvision RandomResizedCrop.get_params (10 tries, then a center crop with the ratio clamped). */
export function randomResizedCropBox(w: number, h: number, rnd: Rand, scale = [0.08, 1], ratio = [3 / 4, 4 / 3]): Box {
  const area = w * h;
  const logR = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let i = 0; i < 10; i++) {
    const target = area * (scale[0] + rnd() * (scale[1] - scale[0]));
    const aspect = Math.exp(logR[0] + rnd() * (logR[1] - logR[0]));
    const cw = Math.round(Math.sqrt(target * aspect));
    const ch = Math.round(Math.sqrt(target / aspect));
    if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
      return { top: randInt(rnd, 0, h - ch), left: randInt(rnd, 0, w - cw), width: cw, height: ch };
    }
  }
  const inRatio = w / h;
  let cw = w;
  let ch = h;
  if (inRatio < ratio[0]) ch = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) cw = Math.round(h * ratio[1]);
  return { top: Math.floor((h - ch) / 2), left: Math.floor((w - cw) / 2), width: cw, height: ch };
}

const raw = (img: DecodedImage) => sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });

/** Resize shorter side to `size`, then crop size×size (random or centered). */
async function resizeCrop(img: DecodedImage, size: number, kernel: "cubic" | "linear", rnd?: Rand): Promise<Buffer> {
  const [rw, rh] = resizeShorter(img.width, img.height, size);
  const top = rnd ? randInt(rnd, 0, rh - size) : Math.round((rh - size) / 2);
  const left = rnd ? randInt(rnd, 0, rw - size) : Math.round((rw - size) / 2);
  let p = raw(img);
  if (rw !== img.width || rh !== img.height) p = p.resize(rw, rh, { kernel, fit: "fill" });
  return p.extract({ left, top, width: size, height: size }).raw().toBuffer();
}

async function randomResizedCrop(img: DecodedImage, size: number, rnd: Rand): Promise<Buffer> {
  const b = randomResizedCropBox(img.width, img.height, rnd);
  const flip = rnd() < 0.5;
  let p = raw(img).extract(b).resize(size, size, { kernel: "cubic", fit: "fill" });
  if (flip) p = p.flop();
  return p.raw().toBuffer();
}

/** Write 8-bit RGB pixels as normalised floats at `offset` (NHWC). */
export function normaliseInto(px: Buffer, out: Float32Array, offset: number, norm: Normalisation): void {
  if (norm === "minus1to1") {
    for (let i = 0; i < px.length; i++) out[offset + i] = px[i] / 127.5 - 1;
    return;
  }
  for (let i = 0; i < px.length; i += 3) {
    for (let c = 0; c < 3; c++) out[offset + i + c] = (px[i + c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
  }
}

export interface ViewPixels {
  image: Buffer;
  imageAugW?: Buffer;
  imageAugS?: Buffer;
}

/** All views of one decoded image as 8-bit RGB (normalise with `normaliseInto`). */
export async function makeViews(
  img: DecodedImage,
  sizes: ViewSizes,
  mode: "train" | "val",
  rnd: Rand,
): Promise<ViewPixels> {
  if (mode === "val") {
    return {
      image: await resizeCrop(img, sizes.recon, "linear"),
      imageAugW: sizes.teacher ? await resizeCrop(img, sizes.teacher, "linear") : undefined,
      imageAugS: sizes.student ? await resizeCrop(img, sizes.student, "linear") : undefined,
    };
  }
  // Fixed draw order (recon, teacher, student) keeps the views a pure function of the sample's seed.
  const image = await resizeCrop(img, sizes.recon, "cubic", rnd);
  const imageAugW = sizes.teacher ? await resizeCrop(img, sizes.teacher, "cubic", rnd) : undefined;
  const imageAugS = sizes.student ? await randomResizedCrop(img, sizes.student, rnd) : undefined;
  return { image, imageAugW, imageAugS };
}
