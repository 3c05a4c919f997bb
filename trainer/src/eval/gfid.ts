// gFID / IS for sampling runs (docs/model.md §6.2): generated samples (e.g. sample.npz `arr_0`, uint8 [N,256,256,3])
// against reference statistics (pytorch-fid / ADM npz `mu`,`sigma`, or statistics computed here from a
// reference image set). Metric names `gFID`, `IS`, with `[random-inception]` appended for random weights.
//
// Caveat for real numbers: ADM's VIRTUAL_imagenet256_labeled.npz statistics came from the TF graph of the
// same 2015-12-05 Inception weights; pytorch-fid's port (what this ONNX model is) agrees closely but not
// bit-exactly with TF (pytorch-fid README: small deviations). For paper-comparable numbers use ADM's
// evaluator offline; for tracking runs this path is self-consistent.
import type { Logger } from "../../../common/src/logger.ts";
import { type ImageBatch, type InceptionExtractor, POOL_DIM } from "./inception.ts";
import { type InceptionScore, InceptionScoreAccumulator } from "./is.ts";
import { iterateNpzRows, npzArrayHeader } from "./npz.ts";
import { inceptionNotes } from "./rfid.ts";
import {
  FeatureStats,
  type FrechetResult,
  frechetDistance,
  type GaussianStats,
  loadStats,
  type StoredStats,
} from "./stats.ts";

export interface GfidResult {
  metrics: Record<string, number>;
  notes: string[];
  gfid: number;
  is: InceptionScore;
  count: number;
  detail: FrechetResult;
  stats: GaussianStats;
}

/** Stream NHWC uint8 images out of an npz member (default `arr_0`, the ADM / sample.py layout). */
export async function* npzImageBatches(path: string, batchSize = 32, name = "arr_0"): AsyncGenerator<ImageBatch> {
  for await (const arr of iterateNpzRows(path, name, batchSize)) {
    if (arr.shape.length !== 4 || arr.shape[3] !== 3) {
      throw new Error(`${path}:${name}: expected [N,H,W,3] images, got [${arr.shape}]`);
    }
    if (!(arr.data instanceof Uint8Array) && !(arr.data instanceof Float32Array)) {
      throw new Error(`${path}:${name}: images must be uint8 or float32 (got ${arr.dtype})`);
    }
    yield { data: arr.data, n: arr.shape[0], height: arr.shape[1], width: arr.shape[2] };
  }
}

/** Number of rows of an npz member, from its .npy header (gives IS its `expectedCount`). */
export async function npzRowCount(path: string, name = "arr_0"): Promise<number> {
  const h = await npzArrayHeader(path, name);
  if (h.shape.length === 0) throw new Error(`${path}:${name}: scalar, not an image array`);
  return h.shape[0];
}

/** Statistics of an image stream (e.g. a reference image set) through the extractor. */
export async function imageStats(ext: InceptionExtractor, images: AsyncIterable<ImageBatch>): Promise<GaussianStats> {
  const s = new FeatureStats(POOL_DIM);
  for await (const b of images) {
    const out = await ext.run(b);
    s.update(out.pool, out.n);
  }
  return s.finalize();
}

/**
 * Check that reference statistics match the extractor's weights: statistics saved by `saveStats` carry the
 * weights kind; external files (pytorch-fid/ADM) are assumed to be from the real TF-FID weights and are
 * refused for a random/unverified extractor (the number would be meaningless).
 */
export function checkReferenceWeights(ref: StoredStats, ext: InceptionExtractor, where: string): void {
  const refWeights = ref.weights ?? "pt_inception-2015-12-05 (assumed: no mergevq_weights tag)";
  const compatible = ref.weights === undefined ? ext.label === "" : ref.weights === ext.weights;
  if (!compatible) {
    throw new Error(
      `${where}: reference statistics were computed with Inception weights "${refWeights}", the extractor has "${ext.weights}"`,
    );
  }
}

/**
 * gFID and IS of generated samples against reference statistics (`reference`: GaussianStats or an npz path).
 * `expectedCount` enables fully streaming IS (otherwise softmax rows are buffered).
 */
export async function computeGfid(opts: {
  extractor: InceptionExtractor;
  samples: AsyncIterable<ImageBatch>;
  reference: StoredStats | string;
  expectedCount?: number;
  isSplits?: number;
  logger?: Logger;
}): Promise<GfidResult> {
  const ext = opts.extractor;
  const ref = typeof opts.reference === "string" ? await loadStats(opts.reference) : opts.reference;
  checkReferenceWeights(ref, ext, typeof opts.reference === "string" ? opts.reference : "reference");
  const stats = new FeatureStats(POOL_DIM);
  const isAcc = new InceptionScoreAccumulator({ splits: opts.isSplits ?? 10, expectedCount: opts.expectedCount });
  const t0 = performance.now();
  for await (const b of opts.samples) {
    const out = await ext.run(b);
    stats.update(out.pool, out.n);
    const logits = out.logitsUnbiased ?? out.logits;
    if (!logits) throw new Error("gFID: the Inception model has no logits output (needed for IS)");
    isAcc.update(logits, out.n);
  }
  const sampleStats = stats.finalize();
  const detail = frechetDistance(sampleStats, ref);
  const is = isAcc.result();
  const metrics = { [`gFID${ext.label}`]: detail.fid, [`IS${ext.label}`]: is.mean };
  opts.logger?.info(
    { metrics, isStd: is.std, samples: stats.count, seconds: (performance.now() - t0) / 1000 },
    `gFID${ext.label} = ${detail.fid.toFixed(4)}, IS${ext.label} = ${is.mean.toFixed(3)} ± ${is.std.toFixed(3)} over ${stats.count} samples`,
  );
  return { metrics, notes: inceptionNotes(ext), gfid: detail.fid, is, count: stats.count, detail, stats: sampleStats };
}
