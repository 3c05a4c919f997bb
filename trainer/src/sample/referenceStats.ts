// `eval reference-stats`: Inception statistics (mu, sigma of the 2048-d pool features) of REAL images, so a
// SamplingJob has an evaluation.referenceStatsUri that matches its Inception weights (saveStats records them;
// the reduce step refuses a reference computed with other weights).
//
// Images come through the same readers as the tokenizer's evaluation (trainer/src/train/setup.ts): an image
// folder (ImageNet layout, `<root>/<split>/…`, or a flat folder) via LocalFolderSource — shorter side resized,
// centre crop `size` — or tar shards (s3:// or a local prefix with index.json) via the data plane's DataLoader
// in val mode (resize + centre crop, file order, one epoch). `size` should be the tokenizer resolution: the
// generated samples are that size too, and both go through the same bilinear resize to 299 in the extractor.
// Images are quantised to uint8 like the samples (exact: the readers normalise uint8 pixels).
import { mkdir, mkdtemp, readFile, rename, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Logger } from "../../../common/src/logger.ts";
import { isShardDataset } from "../data/dataset.ts";
import { DataLoader } from "../data/loader.ts";
import { LocalFolderSource } from "../data/localFolder.ts";
import type { ImageBatch, InceptionExtractor } from "../eval/inception.ts";
import { POOL_DIM } from "../eval/inception.ts";
import { FeatureStats, type GaussianStats, saveStats } from "../eval/stats.ts";
import { storageFor } from "../io/storage.ts";
import { toLocalPath, uriScheme } from "../io/uri.ts";

/** [-1,1] floats from a uint8-derived reader → uint8 (round((x+1)·127.5), clamped). */
export function symmetricToUint8(x: Float32Array): Uint8Array {
  const out = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = Math.max(0, Math.min(255, Math.round((x[i] + 1) * 127.5)));
  return out;
}

/** Uint8 NHWC batches of real images (at most `images`; all when undefined). */
export async function* realImageBatches(o: {
  data: string;
  size: number;
  images?: number;
  split?: "train" | "val";
  batchSize?: number;
  dataFormat?: string;
}): AsyncGenerator<ImageBatch> {
  const bs = o.batchSize ?? 32;
  const limit = o.images ?? Number.POSITIVE_INFINITY;
  const local = uriScheme(o.data) === "file" ? toLocalPath(o.data) : o.data;
  if (await isShardDataset(local, o.dataFormat)) {
    const loader = new DataLoader({
      source: { kind: "shards", uri: local },
      batchSize: bs,
      views: { recon: o.size },
      mode: "val",
      rank: 0,
      worldSize: 1,
      seed: 0,
      epochs: 1,
    });
    let n = 0;
    try {
      for await (const b of loader) {
        const take = Math.min(b.size, limit - n);
        if (take <= 0) break;
        const px = o.size * o.size * 3;
        yield { data: symmetricToUint8(b.image.subarray(0, take * px)), n: take, height: o.size, width: o.size };
        n += take;
        if (n >= limit) break;
      }
    } finally {
      loader.close();
    }
    return;
  }
  const src = await LocalFolderSource.open({
    root: local,
    split: o.split ?? "train",
    size: o.size,
    augment: false,
    seed: 0,
    limit: Number.isFinite(limit) ? limit : undefined,
  });
  const total = src.files.length; // centre crops in sorted order; one pass, never wrapping into a 2nd epoch
  for (let done = 0; done < total; ) {
    const b = Math.min(bs, total - done);
    const batch = await src.next(b);
    try {
      yield {
        data: symmetricToUint8(batch.image.dataSync() as Float32Array),
        n: b,
        height: o.size,
        width: o.size,
      };
    } finally {
      batch.image.dispose();
    }
    done += b;
  }
}

export interface ReferenceStatsResult {
  stats: GaussianStats;
  count: number;
  uri: string;
  weights: string;
}

/** Compute and save reference statistics (npz mu, sigma, mergevq_weights) to `out` (path, file:// or s3://). */
export async function computeReferenceStats(o: {
  extractor: InceptionExtractor;
  data: string;
  out: string;
  size: number;
  images?: number;
  split?: "train" | "val";
  batchSize?: number;
  dataFormat?: string;
  log: Logger;
}): Promise<ReferenceStatsResult> {
  const fs = new FeatureStats(POOL_DIM);
  const t0 = performance.now();
  let lastLog = t0;
  for await (const b of realImageBatches(o)) {
    const r = await o.extractor.run(b);
    fs.update(r.pool, r.n);
    if (performance.now() - lastLog < 10_000) continue;
    lastLog = performance.now();
    o.log.info(
      { images: fs.count, imagesPerSecond: Math.round((fs.count / ((performance.now() - t0) / 1000)) * 10) / 10 },
      "reference statistics: Inception pass",
    );
  }
  if (fs.count < 2) throw new Error(`--data ${o.data}: ${fs.count} image(s) read, need ≥ 2 for a covariance`);
  const stats = fs.finalize();
  if (uriScheme(o.out) === "file") {
    await saveStatsAtomic(toLocalPath(o.out), stats, o.extractor.weights);
  } else {
    const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-refstats-"));
    try {
      const tmp = path.join(dir, "stats.npz");
      await saveStats(tmp, stats, o.extractor.weights);
      await storageFor(o.out).put(o.out, new Uint8Array(await readFile(tmp)));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  o.log.info({ uri: o.out, images: fs.count, weights: o.extractor.weights }, "reference statistics written");
  return { stats, count: fs.count, uri: o.out, weights: o.extractor.weights };
}

async function saveStatsAtomic(file: string, stats: GaussianStats, weights: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    await saveStats(tmp, stats, weights);
    await rename(tmp, file);
  } finally {
    await rm(tmp, { force: true });
  }
}
