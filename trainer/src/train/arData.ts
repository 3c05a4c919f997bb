// Stage-II data (docs/model.md §5.1, §5.3, §5.5 item 1): image batches (with class labels) → codes of the FROZEN
// tokenizer in eval mode (training: false), tokenised on the fly, → AR training batches.
//
//   images     the Stage-I sources, reused: a local ImageNet-layout folder → LocalFolderSource (resize shorter
//              side + random crop at the tokenizer's resolution, no flip; rank split), tar shards (s3:// or a
//              local index.json) → LoaderSource (the data plane's streaming loader; rank split, equal
//              batches per rank). Labels = class-folder index / shard label.
//   codes      without MergeAR: K = L (merge_num 0, released-code behaviour): indices [B, L] in raster order.
//              with MergeAR: per sample a candidate K is drawn from the tokenizer's candidate set with the
//              candidate weights (one seeded draw per (seed, GLOBAL sample index), see below); samples sharing
//              a K are encoded together; the K kept indices are expanded to the L raster positions through
//              `groups` (index of each raster position's kept token): full_j = kept[groups_j]; dup_j = 1 iff
//              raster position j is not the first raster position of its group; mergeTokens = candidate id
//              (index into the tokenizer's candidate table).
//   labels     dropped to the null class (= numClasses) with probability classDropout, one seeded draw per
//              (seed, GLOBAL sample index).
//
// Keying of the per-sample random choices (K candidate, label dropout). Sample j of micro-batch m on rank r of
// W (per-rank batch B) has the global sample index g = (m·B + j)·W + r, and its draws are a pure function of
// (purpose, seed, g). The local-folder source hands rank r the stream positions ≡ r (mod W) of one permutation
// shared by all ranks (orderSeed = the global seed), so rank r's c-th sample IS stream position c·W + r with
// c = m·B + j: g is the sample's position in the global stream, and the W ranks × batch B read, step for step,
// a partition of exactly the samples (and draws) that 1 rank × batch W·B reads — the data-parallel
// equivalence test (test/integration/dist-ar-equivalence.test.ts) checks this sample by sample. (Exact while
// every rank's epoch has the same length, i.e. the image count is a multiple of W; the tar-shard loader
// assigns whole shards to ranks, where g is just a unique key per sample read.) Before this keying the draws
// came from one stream per (seed, rank, micro-batch), which gave rank 0's samples different draws from the
// same samples in a 1-process run. The image order is the image source's checkpointed state and m is the
// global micro-batch index (step·accum + a), so a resumed run draws exactly the same batches.
import * as tf from "@tensorflow/tfjs";
import type { ARBatch } from "../ar/gpt.ts";
import { isShardDataset } from "../data/dataset.ts";
import { LoaderSource } from "../data/loaderSource.ts";
import { type BatchSource, type DataSourceState, disposeBatch, LocalFolderSource } from "../data/localFolder.ts";
import { fnv1a } from "../nn/params.ts";
import type { Candidate } from "../tokenizer/candidates.ts";
import type { MergeVQTokenizer } from "../tokenizer/mergevq.ts";
import { Rng, rankSeed } from "../util/rng.ts";

/**
 * Global sample index of local sample `j` of micro-batch `micro` on `rank` of `worldSize`, with per-rank batch
 * `batchSize`: (micro·batchSize + j)·worldSize + rank (the sample's position in the global stream; header).
 */
export function globalSampleIndex(
  micro: number,
  batchSize: number,
  j: number,
  rank: number,
  worldSize: number,
): number {
  return (micro * batchSize + j) * worldSize + rank;
}

/** One uniform in [0, 1) for (purpose, seed, global sample index): the same whichever rank reads the sample. */
export function sampleUniform(purpose: string, seed: number, index: number): number {
  return new Rng(fnv1a(`${purpose}/${seed}/${index}`) * 2048 + (index % 2048)).uniform();
}

/** Per-sample uniforms for `purpose` at the given global sample indices. */
export function sampleUniforms(purpose: string, seed: number, indices: readonly number[]): Float64Array {
  return Float64Array.from(indices, (g) => sampleUniform(purpose, seed, g));
}

/** Per-sample candidate ids drawn with the candidates' weights, one uniform per sample. */
export function chooseCandidates(cands: readonly Candidate[], uniforms: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let b = 0; b < uniforms.length; b++) {
    const u = uniforms[b];
    let acc = 0;
    let id = cands.length - 1;
    for (let i = 0; i < cands.length; i++) {
      acc += cands[i].weight;
      if (u < acc) {
        id = i;
        break;
      }
    }
    out.push(id);
  }
  return out;
}

/** Replace label i by `nullClass` iff uniforms[i] < p (one uniform per sample). */
export function dropLabels(
  labels: ArrayLike<number>,
  nullClass: number,
  p: number,
  uniforms: ArrayLike<number>,
): Int32Array {
  if (uniforms.length !== labels.length)
    throw new Error(`dropLabels: ${uniforms.length} uniforms for ${labels.length} labels`);
  const out = new Int32Array(labels.length);
  for (let i = 0; i < labels.length; i++) out[i] = p > 0 && uniforms[i] < p ? nullClass : labels[i];
  return out;
}

/**
 * Expand K kept indices per sample to L raster positions via `groups` ([B·L], kept-token index of each
 * position). dup_j = 1 iff j is not the first raster position of its group.
 */
export function expandMerged(
  kept: ArrayLike<number>,
  groups: ArrayLike<number>,
  B: number,
  K: number,
  L: number,
): { indices: Int32Array; dup: Float32Array } {
  const indices = new Int32Array(B * L);
  const dup = new Float32Array(B * L);
  const seen = new Uint8Array(K);
  for (let b = 0; b < B; b++) {
    seen.fill(0);
    for (let j = 0; j < L; j++) {
      const g = groups[b * L + j];
      if (g < 0 || g >= K) throw new Error(`expandMerged: group ${g} at sample ${b}, position ${j} outside [0, ${K})`);
      indices[b * L + j] = kept[b * K + g];
      if (seen[g]) dup[b * L + j] = 1;
      seen[g] = 1;
    }
  }
  return { indices, dup };
}

export interface TokenizedBatch {
  /** Full-length raster codes [B·L] (LFQ index, LSB-first). */
  indices: Int32Array;
  /** Duplicate flags [B·L] (all 0 without MergeAR). */
  dup: Float32Array;
  /** Kept-token count per sample. */
  K: number[];
}

/**
 * Encode images with the frozen tokenizer (eval mode) at per-sample candidate ids (null → K = L for all) and
 * expand to raster sequences.
 */
export function tokenizeImages(
  tokenizer: MergeVQTokenizer,
  images: tf.Tensor4D,
  candidateIds: readonly number[] | null,
): TokenizedBatch {
  const B = images.shape[0];
  const { L, candidates } = tokenizer.config.derived;
  const kOf = (b: number) => (candidateIds ? candidates[candidateIds[b]].K : L);
  const indices = new Int32Array(B * L);
  const dup = new Float32Array(B * L);
  const K = Array.from({ length: B }, (_, b) => kOf(b));
  for (const k of [...new Set(K)].sort((a, b) => a - b)) {
    const members = K.map((kk, b) => (kk === k ? b : -1)).filter((b) => b >= 0);
    const [kept, groups] = tf.tidy(() => {
      const x = members.length === B ? images : (tf.gather(images, tf.tensor1d(members, "int32")) as tf.Tensor4D);
      const e = tokenizer.encode(x, k, { training: false });
      return [e.indices.dataSync(), e.groups.dataSync()];
    });
    const ex = expandMerged(kept, groups, members.length, k, L);
    members.forEach((b, i) => {
      indices.set(ex.indices.subarray(i * L, (i + 1) * L), b * L);
      dup.set(ex.dup.subarray(i * L, (i + 1) * L), b * L);
    });
  }
  return { indices, dup, K };
}

export interface ARDataOptions {
  /** Image + label source (rank-sharded). */
  images: BatchSource;
  tokenizer: MergeVQTokenizer;
  mergeAR: boolean;
  /** Real classes (labels must be < numClasses); the null class is numClasses. */
  numClasses: number;
  classDropout: number;
  /** Global training seed. */
  seed: number;
  rank: number;
  /** Number of ranks (default 1): part of the global sample index that keys the per-sample draws. */
  worldSize?: number;
}

export interface ARStepBatch {
  batch: ARBatch;
  /** Kept-token count per sample (L for every sample without MergeAR). */
  K: number[];
  /** Labels before dropout. */
  labels: Int32Array;
  dispose(): void;
}

export class ARDataSource {
  constructor(readonly opts: ARDataOptions) {}

  get epochSize(): number {
    return this.opts.images.epochSize;
  }
  get dataErrors(): Record<string, number> {
    return this.opts.images.dataErrors;
  }
  getState(): DataSourceState {
    return this.opts.images.getState();
  }
  setState(s: DataSourceState): void {
    this.opts.images.setState(s);
  }
  close(): void {
    this.opts.images.close?.();
  }

  /**
   * The AR batch for global micro-batch index `microStep` (= step·accum + a). The K choice and label dropout of
   * sample j are keyed by its global sample index (globalSampleIndex; header).
   */
  async next(batchSize: number, microStep: number): Promise<ARStepBatch> {
    const o = this.opts;
    const img = await o.images.next(batchSize);
    try {
      for (const l of img.labels) {
        if (l < 0 || l >= o.numClasses)
          throw new Error(
            `dataset label ${l} is outside [0, model.numClasses = ${o.numClasses}) (raise model.numClasses to the number of classes in the dataset)`,
          );
      }
      const g = Array.from({ length: batchSize }, (_, j) =>
        globalSampleIndex(microStep, batchSize, j, o.rank, o.worldSize ?? 1),
      );
      const cands = o.mergeAR
        ? chooseCandidates(o.tokenizer.config.derived.candidates, sampleUniforms("mergear-k", o.seed, g))
        : null;
      const t = tokenizeImages(o.tokenizer, img.image, cands);
      const dropped = dropLabels(img.labels, o.numClasses, o.classDropout, sampleUniforms("label-dropout", o.seed, g));
      const { L } = o.tokenizer.config.derived;
      const batch: ARBatch = {
        labels: tf.tensor1d(dropped, "int32"),
        indices: tf.tensor2d(t.indices, [batchSize, L], "int32"),
      };
      if (cands) {
        batch.mergeTokens = tf.tensor1d(cands, "int32");
        batch.dup = tf.tensor2d(t.dup, [batchSize, L], "float32");
      }
      return {
        batch,
        K: t.K,
        labels: Int32Array.from(img.labels),
        dispose: () => disposeARBatch(batch),
      };
    } finally {
      disposeBatch(img);
    }
  }
}

export function disposeARBatch(b: ARBatch): void {
  b.labels.dispose();
  b.indices.dispose();
  b.mergeTokens?.dispose();
  b.dup?.dispose();
}

/**
 * Open the training image source for Stage II: local folder (random crops at `size`, no flip, rank split)
 * or tar shards (s3:// or local index.json; DATASET_FORMAT overrides). Same sources as the tokenizer trainer.
 */
export async function openImageSource(o: {
  data: string;
  format?: string;
  size: number;
  batchSize: number;
  seed: number;
  rank: number;
  worldSize: number;
  limit?: number;
}): Promise<{ source: BatchSource; describe: Record<string, unknown> }> {
  if (await isShardDataset(o.data, o.format)) {
    // The loader's seed is the GLOBAL seed: it fixes the epoch's shard permutation, which the ranks split.
    const source = await LoaderSource.open({
      source: { kind: "shards", uri: o.data },
      mode: "train",
      batchSize: o.batchSize,
      views: { recon: o.size },
      rank: o.rank,
      worldSize: o.worldSize,
      seed: o.seed,
    });
    return { source, describe: { shards: o.data, batchesPerEpoch: source.stepsCap } };
  }
  // LocalFolderSource splits each epoch's permutation by position (i % world = rank), so only a permutation
  // shared by all ranks makes the rank slices a partition of the images: orderSeed = the GLOBAL seed (every
  // epoch's order is a function of (orderSeed, epoch) alone — the same on every rank and in a 1-process run).
  // The crop RNG is per rank (as setup.ts does for the tokenizer), so ranks do not repeat each other's crops.
  // (Before: seed = the global seed and no orderSeed — the first permutation was shared, but later epochs were
  // drawn from the crop RNG, whose state depends on how many crops the process took, i.e. on the rank split.)
  const folder = await LocalFolderSource.open({
    root: o.data,
    split: "train",
    size: o.size,
    augment: true,
    seed: rankSeed(o.seed, o.worldSize, o.rank),
    orderSeed: o.seed,
    rank: o.rank,
    worldSize: o.worldSize,
    limit: o.limit,
  });
  return {
    source: folder,
    describe: { folder: o.data, trainImages: folder.files.length, classes: folder.classes.length },
  };
}
