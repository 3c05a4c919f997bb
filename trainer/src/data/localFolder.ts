// Local ImageNet-folder reader (for class-folder trees; tar shards go through data/loader.ts): decodes JPEG/PNG/WebP with
// sharp and produces the three Stage-I views of docs/model.md §7 as NHWC float tensors:
//   image        resize shorter side → random crop `size` (train) / centre crop (eval); [−1,1]; no flip
//   teacherView  resize shorter side → random crop `teacherSize` (train) / centre crop; ImageNet mean/std
//   studentView  RandomResizedCrop `studentSize` (scale [0.08,1], ratio [3/4,4/3]) + h-flip 0.5 (train) /
//                resize + centre crop (eval); [−1,1]
// Layout: `<root>/train/<wnid>/*.JPEG` + `<root>/val/<wnid>/*` (or `<root>/<wnid>/*`, or a flat folder).
// Labels = index of the wnid in the sorted list of class folders. Each file is decoded once and cached in
// memory at a reduced resolution (shorter side = 2× the largest view), and all crops are taken from that
// cache: an approximation of resize-then-crop from the full-resolution original (documented deviation).
// Order and crops come from a seeded Rng whose state (with the epoch/cursor) is `getState()`.
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { Rng, type RngState } from "../util/rng.ts";
import { IMAGENET_MEAN, IMAGENET_STD } from "./augment.ts";

export interface TrainBatch {
  /** Reconstruction view `[B,size,size,3]` in [−1,1]. */
  image: tf.Tensor4D;
  /** Teacher view `[B,t,t,3]`, ImageNet-normalised (absent when teacherSize is 0). */
  teacherView?: tf.Tensor4D;
  /** Student (CLS) view `[B,s,s,3]` in [−1,1] (absent when studentSize is 0). */
  studentView?: tf.Tensor4D;
  labels: Int32Array;
  /** Source file of each sample (for logs/debugging). */
  files: string[];
  /**
   * Index of this batch within its epoch (0 for an epoch's first batch), like `b` in `for b, batch in
   * enumerate(loader)`: the tokenizer's keep-count cycle is indexed by it (docs/model.md §2.3).
   */
  indexInEpoch?: number;
}

/** Data-order state stored in checkpoints (source-specific fields besides the epoch). */
export interface DataSourceState {
  epoch: number;
}

export interface BatchSource {
  readonly size: number;
  /** Samples this rank sees per epoch. */
  readonly epochSize: number;
  next(batchSize: number): Promise<TrainBatch>;
  getState(): DataSourceState;
  setState(s: DataSourceState): void;
  /** Counters of skipped inputs (only non-zero ones need be present). */
  readonly dataErrors: Record<string, number>;
  /** Stop background reading (optional). */
  close?(): void;
}

export interface LocalFolderState extends DataSourceState {
  epoch: number;
  cursor: number;
  rng: RngState;
  order: number[];
}

export interface LocalFolderOptions {
  root: string;
  split: "train" | "val";
  size: number;
  teacherSize?: number;
  studentSize?: number;
  /** true: random crops/flips and a shuffled order; false: centre crops, sorted order. */
  augment?: boolean;
  seed?: number;
  /**
   * Seed of the epoch order, identical on every rank (the global seed), so that the ranks' strided slices of
   * the same permutation partition the epoch. Unset: the order comes from `seed`'s RNG (single process only).
   */
  orderSeed?: number;
  rank?: number;
  worldSize?: number;
  /** Use at most this many files (after sorting; deterministic subset). */
  limit?: number;
}

const IMAGE_RE = /\.(jpe?g|png|webp)$/i;

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (IMAGE_RE.test(e.name)) out.push(p);
  }
  return out;
}

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

/** Resolve the split folder and list (file, label) pairs, sorted. */
export async function listImageFolder(
  root: string,
  split: "train" | "val",
): Promise<{ files: string[]; labels: number[]; classes: string[] }> {
  if (!(await isDir(root))) throw new Error(`--data ${root}: not a directory`);
  const splitDir = (await isDir(path.join(root, split))) ? path.join(root, split) : root;
  const files = (await walk(splitDir)).sort();
  if (files.length === 0) throw new Error(`--data ${root}: no .jpg/.jpeg/.png/.webp images under ${splitDir}`);
  const classOf = (f: string) => {
    const rel = path.relative(splitDir, f);
    return rel.includes(path.sep) ? rel.split(path.sep)[0] : "";
  };
  const classes = [...new Set(files.map(classOf))].sort();
  return { files, labels: files.map((f) => classes.indexOf(classOf(f))), classes };
}

interface Cached {
  data: Buffer;
  width: number;
  height: number;
}

export class LocalFolderSource implements BatchSource {
  readonly size: number;
  readonly teacherSize: number;
  readonly studentSize: number;
  private rng: Rng;
  private epoch = 0;
  private cursor = 0;
  private order: number[] = [];
  private readonly cache = new Map<number, Cached>();
  readonly dataErrors: Record<string, number> = {};

  private constructor(
    private readonly opts: LocalFolderOptions,
    readonly files: string[],
    readonly labels: number[],
    readonly classes: string[],
  ) {
    this.size = opts.size;
    this.teacherSize = opts.teacherSize ?? 0;
    this.studentSize = opts.studentSize ?? 0;
    this.rng = new Rng(opts.seed ?? 0);
    this.newEpoch();
  }

  static async open(opts: LocalFolderOptions): Promise<LocalFolderSource> {
    const { files, labels, classes } = await listImageFolder(opts.root, opts.split);
    const n = opts.limit ? Math.min(opts.limit, files.length) : files.length;
    return new LocalFolderSource(opts, files.slice(0, n), labels.slice(0, n), classes);
  }

  get epochSize(): number {
    const ws = this.opts.worldSize ?? 1;
    const rank = this.opts.rank ?? 0;
    return Math.floor((this.files.length - rank + ws - 1) / ws);
  }

  private newEpoch(): void {
    const { orderSeed } = this.opts;
    const shuffle = orderSeed === undefined ? this.rng : new Rng(orderSeed * 1_000_003 + this.epoch);
    const all = this.opts.augment ? shuffle.permutation(this.files.length) : this.files.map((_, i) => i);
    const ws = this.opts.worldSize ?? 1;
    const rank = this.opts.rank ?? 0;
    this.order = all.filter((_, i) => i % ws === rank);
    this.cursor = 0;
  }

  getState(): LocalFolderState {
    return { epoch: this.epoch, cursor: this.cursor, rng: this.rng.getState(), order: [...this.order] };
  }

  setState(state: DataSourceState): void {
    const s = state as LocalFolderState;
    if (!Array.isArray(s.order) || typeof s.cursor !== "number")
      throw new Error("checkpoint data state was not written by the local-folder source (resume with the same --data)");
    this.epoch = s.epoch;
    this.cursor = s.cursor;
    this.rng.setState(s.rng);
    this.order = [...s.order];
  }

  get currentEpoch(): number {
    return this.epoch;
  }

  private async load(i: number): Promise<Cached> {
    const hit = this.cache.get(i);
    if (hit) return hit;
    const side = 2 * Math.max(this.size, this.teacherSize, this.studentSize);
    const { data, info } = await sharp(this.files[i])
      .rotate()
      .removeAlpha()
      .toColourspace("srgb")
      .resize(side, side, { fit: "outside", kernel: "cubic", withoutEnlargement: false })
      .raw()
      .toBuffer({ resolveWithObject: true });
    const c = { data, width: info.width, height: info.height };
    this.cache.set(i, c);
    return c;
  }

  /** Crop a box from a cached image and resize it to out×out; returns HWC uint8. */
  private async crop(c: Cached, left: number, top: number, w: number, h: number, out: number, flip = false) {
    let img = sharp(c.data, { raw: { width: c.width, height: c.height, channels: 3 } })
      .extract({ left, top, width: w, height: h })
      .resize(out, out, { fit: "fill", kernel: "cubic" });
    if (flip) img = img.flop();
    return img.raw().toBuffer();
  }

  /** Shorter-side resize to `out` then crop out×out (random when augmenting, else centred). */
  private async resizeCrop(c: Cached, out: number): Promise<Buffer> {
    const s = Math.min(c.width, c.height); // the crop is out/shorter of the resized image = s·(out/s)
    const left = this.opts.augment ? this.rng.int(c.width - s + 1) : Math.floor((c.width - s) / 2);
    const top = this.opts.augment ? this.rng.int(c.height - s + 1) : Math.floor((c.height - s) / 2);
    return this.crop(c, left, top, s, s, out);
  }

  /** torchvision RandomResizedCrop(scale [0.08,1], ratio [3/4,4/3]) + h-flip 0.5. */
  private async randomResizedCrop(c: Cached, out: number): Promise<Buffer> {
    const area = c.width * c.height;
    for (let attempt = 0; attempt < 10; attempt++) {
      const target = area * (0.08 + 0.92 * this.rng.uniform());
      const logR = Math.log(3 / 4) + (Math.log(4 / 3) - Math.log(3 / 4)) * this.rng.uniform();
      const ratio = Math.exp(logR);
      const w = Math.round(Math.sqrt(target * ratio));
      const h = Math.round(Math.sqrt(target / ratio));
      if (w > 0 && h > 0 && w <= c.width && h <= c.height) {
        const top = this.rng.int(c.height - h + 1);
        const left = this.rng.int(c.width - w + 1);
        return this.crop(c, left, top, w, h, out, this.rng.uniform() < 0.5);
      }
    }
    const s = Math.min(c.width, c.height);
    return this.crop(
      c,
      Math.floor((c.width - s) / 2),
      Math.floor((c.height - s) / 2),
      s,
      s,
      out,
      this.rng.uniform() < 0.5,
    );
  }

  async next(batchSize: number): Promise<TrainBatch> {
    const indexInEpoch = Math.floor((this.cursor >= this.order.length ? 0 : this.cursor) / batchSize);
    const idx: number[] = [];
    while (idx.length < batchSize) {
      if (this.cursor >= this.order.length) {
        this.epoch++;
        this.newEpoch();
        if (this.order.length === 0) throw new Error(`--data ${this.opts.root}: no samples for this rank`);
      }
      idx.push(this.order[this.cursor++]);
    }
    const S = this.size;
    const img = new Float32Array(batchSize * S * S * 3);
    const T = this.teacherSize;
    const tv = T ? new Float32Array(batchSize * T * T * 3) : undefined;
    const St = this.studentSize;
    const sv = St ? new Float32Array(batchSize * St * St * 3) : undefined;
    for (let b = 0; b < batchSize; b++) {
      const c = await this.load(idx[b]);
      const a = await this.resizeCrop(c, S);
      for (let j = 0; j < a.length; j++) img[b * a.length + j] = a[j] / 127.5 - 1;
      if (tv) {
        const t = await this.resizeCrop(c, T);
        for (let j = 0; j < t.length; j++) {
          const ch = j % 3;
          tv[b * t.length + j] = (t[j] / 255 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
        }
      }
      if (sv) {
        const s = this.opts.augment ? await this.randomResizedCrop(c, St) : await this.resizeCrop(c, St);
        for (let j = 0; j < s.length; j++) sv[b * s.length + j] = s[j] / 127.5 - 1;
      }
    }
    return {
      image: tf.tensor4d(img, [batchSize, S, S, 3]),
      teacherView: tv ? tf.tensor4d(tv, [batchSize, T, T, 3]) : undefined,
      studentView: sv ? tf.tensor4d(sv, [batchSize, St, St, 3]) : undefined,
      labels: Int32Array.from(idx.map((i) => this.labels[i])),
      files: idx.map((i) => this.files[i]),
      indexInEpoch,
    };
  }
}

export function disposeBatch(b: TrainBatch): void {
  b.image.dispose();
  b.teacherView?.dispose();
  b.studentView?.dispose();
}
