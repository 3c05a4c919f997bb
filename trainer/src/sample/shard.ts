// One shard of a SamplingJob (docs/model.md §5.4, `sample.py` chunks): which samples, labels and seed it owns, how its
// output `<CHECKPOINT_DIR>/shards/<i>.npz` is written, and when an existing output may be reused.
//
// Slicing: numSamples split as evenly as possible over the shards, the first `numSamples mod shards` shards
//   get one extra sample; shard i owns global indices [start, start+count).
// Labels: global index g → classLabels[g mod len] when classLabels is given, else ⌊g·numClasses/numSamples⌋
//   (numSamples spread evenly over all classes in class order, like `sample.py`'s 50 per class × 1000).
// Seeds: shard seed = seed·shards + i (upstream global_seed·num_chunks + chunk_idx); batch b of a shard is
//   generated with batchSeed(shardSeed, b), so a shard's images are a pure function of the job spec, the two
//   checkpoints and the batch size.
// Output npz (np.savez layout, readable by numpy and the ADM evaluator): `arr_0` uint8 [N,H,W,3], `labels`
//   int32 [N] and `mergevq_meta` (uint8 UTF-8 JSON: the identity of the shard + generation info).
// Idempotency: an existing output is reused only when it is a complete zip (every member's CRC-32 checks),
//   its identity (job parameters, shard, checkpoint URIs) equals this run's, and arr_0/labels have the
//   expected shapes and labels. Anything else — truncated upload, corrupt bytes, a different job writing to
//   the same prefix — is logged with the reason and regenerated.
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Logger } from "../../../common/src/logger.ts";
import { listNpz, npzArrayHeader, readNpz, verifyNpz, writeNpz } from "../eval/npz.ts";
import { writeProgressJson } from "../io/status.ts";
import { storageFor } from "../io/storage.ts";
import { joinUri, toLocalPath, uriScheme } from "../io/uri.ts";
import type { SamplingConfig } from "./config.ts";

export const SHARD_FORMAT = "mergevq-samples-v1";
export const META_KEY = "mergevq_meta";
/** Largest npz writeNpz can produce (no zip64). */
const MAX_NPZ_BYTES = 0xfffffffe - (1 << 20);

// ---------------------------------------------------------------------------------------------------------
// Pure slicing / labels / seeds

export interface ShardSlice {
  index: number;
  numShards: number;
  /** First global sample index of the shard. */
  start: number;
  count: number;
}

/** Shard `index` of `numShards` over `numSamples` (first shards take the remainder). */
export function shardSlice(numSamples: number, numShards: number, index: number): ShardSlice {
  if (!Number.isInteger(numSamples) || numSamples < 1) throw new Error(`numSamples must be ≥ 1, got ${numSamples}`);
  if (!Number.isInteger(numShards) || numShards < 1) throw new Error(`shards must be ≥ 1, got ${numShards}`);
  if (numSamples < numShards) throw new Error(`numSamples (${numSamples}) must be at least shards (${numShards})`);
  if (!Number.isInteger(index) || index < 0 || index >= numShards) {
    throw new Error(`shard index ${index} out of range for ${numShards} shards`);
  }
  const base = Math.floor(numSamples / numShards);
  const rem = numSamples % numShards;
  return { index, numShards, start: index * base + Math.min(index, rem), count: base + (index < rem ? 1 : 0) };
}

/** Seed of shard `index`: seed·shards + index. */
export function shardSeed(seed: number, numShards: number, index: number): number {
  return seed * numShards + index;
}

/** Class label of global sample `g`. */
export function globalLabel(
  g: number,
  numSamples: number,
  numClasses: number,
  classLabels?: readonly number[],
): number {
  if (classLabels?.length) return classLabels[g % classLabels.length];
  return Math.floor((g * numClasses) / numSamples);
}

/** Labels of a shard's samples (int32, in sample order). Throws when a class label is out of range. */
export function shardLabels(
  slice: ShardSlice,
  numSamples: number,
  numClasses: number,
  classLabels?: readonly number[],
): Int32Array {
  if (!Number.isInteger(numClasses) || numClasses < 1) throw new Error(`numClasses must be ≥ 1, got ${numClasses}`);
  const bad = classLabels?.find((c) => !Number.isInteger(c) || c < 0 || c >= numClasses);
  if (bad !== undefined) {
    throw new Error(`sampling.classLabels: ${bad} is not a class of this model (classes 0…${numClasses - 1})`);
  }
  const out = new Int32Array(slice.count);
  for (let j = 0; j < slice.count; j++) out[j] = globalLabel(slice.start + j, numSamples, numClasses, classLabels);
  return out;
}

function mix32(x: number): number {
  let z = x >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return (z ^ (z >>> 16)) >>> 0;
}

/** Seed of batch `batch` of a shard: a 52-bit hash of (shardSeed, batch); distinct batches, distinct seeds. */
export function batchSeed(seedOfShard: number, batch: number): number {
  const lo = seedOfShard >>> 0;
  const hi = Math.floor(seedOfShard / 4294967296) >>> 0;
  const a = mix32(lo ^ mix32(hi + 0x9e3779b9) ^ mix32(batch * 2 + 1));
  const b = mix32(a ^ mix32(batch + 0x7f4a7c15) ^ lo);
  return (a & 0xfffff) * 4294967296 + b;
}

/** `<CHECKPOINT_DIR>/shards/<i>.npz` */
export function shardUri(checkpointDir: string, index: number): string {
  return joinUri(checkpointDir, `shards/${index}.npz`);
}

// ---------------------------------------------------------------------------------------------------------
// Shard files

/** What makes two shard outputs interchangeable (compared field by field on reuse). */
export interface ShardIdentity {
  format: typeof SHARD_FORMAT;
  shard: number;
  numShards: number;
  start: number;
  count: number;
  numSamples: number;
  shardSeed: number;
  batchSize: number;
  cfgScale: number;
  temperature: number;
  topK: number;
  topP: number;
  classLabels: number[] | null;
  modelCheckpoint: string;
  tokenizerCheckpoint: string;
}

/** Identity + what the generator reported (stored in `mergevq_meta`). */
export interface ShardMeta extends ShardIdentity {
  numClasses: number;
  height: number;
  width: number;
  seconds: number;
  samplesPerSecond: number;
  createdAt: string;
  /** Free-form generator facts (AR step, MergeAR candidate, …). */
  generator?: Record<string, unknown>;
}

export function shardIdentity(
  cfg: SamplingConfig,
  slice: ShardSlice,
  checkpoints: { model: string; tokenizer: string },
): ShardIdentity {
  return {
    format: SHARD_FORMAT,
    shard: slice.index,
    numShards: slice.numShards,
    start: slice.start,
    count: slice.count,
    numSamples: cfg.numSamples,
    shardSeed: shardSeed(cfg.seed, slice.numShards, slice.index),
    batchSize: cfg.batchSize,
    cfgScale: cfg.cfgScale,
    temperature: cfg.temperature,
    topK: cfg.topK,
    topP: cfg.topP,
    classLabels: cfg.classLabels ?? null,
    modelCheckpoint: checkpoints.model,
    tokenizerCheckpoint: checkpoints.tokenizer,
  };
}

/** Write a shard npz to a local path. */
export async function writeShardNpz(
  file: string,
  images: Uint8Array,
  labels: Int32Array,
  meta: ShardMeta,
): Promise<void> {
  const n = labels.length;
  if (images.length !== n * meta.height * meta.width * 3) {
    throw new Error(`shard npz: ${images.length} bytes is not ${n}×${meta.height}×${meta.width}×3`);
  }
  const m = new Uint8Array(Buffer.from(JSON.stringify(meta)));
  await writeNpz(file, {
    arr_0: { shape: [n, meta.height, meta.width, 3], data: images },
    labels: { shape: [n], data: labels },
    [META_KEY]: { shape: [m.length], data: m },
  });
}

export type ShardCheck = { ok: true; meta: ShardMeta } | { ok: false; reason: string };

/**
 * Is the local npz `file` a complete output of the shard described by `identity`? (Never throws: the reason
 * is returned.) Labels are recomputed from the stored numClasses and compared.
 */
export async function checkShardFile(file: string, identity: ShardIdentity): Promise<ShardCheck> {
  try {
    await verifyNpz(file);
    const names = await listNpz(file);
    for (const n of ["arr_0", "labels", META_KEY])
      if (!names.includes(n)) return { ok: false, reason: `no "${n}" array` };
    const { [META_KEY]: m } = await readNpz(file, [META_KEY]);
    const meta = JSON.parse(Buffer.from(m.data as Uint8Array).toString("utf8")) as ShardMeta;
    for (const [k, v] of Object.entries(identity)) {
      const stored = (meta as unknown as Record<string, unknown>)[k];
      if (JSON.stringify(stored) !== JSON.stringify(v)) {
        return {
          ok: false,
          reason: `written by a different job: ${k} is ${JSON.stringify(stored)}, expected ${JSON.stringify(v)}`,
        };
      }
    }
    const h = await npzArrayHeader(file, "arr_0");
    const want = [identity.count, meta.height, meta.width, 3];
    if (h.dtype !== "|u1" || h.shape.join() !== want.join()) {
      return { ok: false, reason: `arr_0 is ${h.dtype} [${h.shape}], expected |u1 [${want}]` };
    }
    const { labels } = await readNpz(file, ["labels"]);
    const expected = shardLabels(
      { index: identity.shard, numShards: identity.numShards, start: identity.start, count: identity.count },
      identity.numSamples,
      meta.numClasses,
      identity.classLabels ?? undefined,
    );
    if (labels.dtype !== "<i4" || labels.shape.join() !== String(identity.count)) {
      return { ok: false, reason: `labels is ${labels.dtype} [${labels.shape}], expected <i4 [${identity.count}]` };
    }
    const got = labels.data as Int32Array;
    for (let i = 0; i < got.length; i++) {
      if (got[i] !== expected[i]) return { ok: false, reason: `labels[${i}] = ${got[i]}, expected ${expected[i]}` };
    }
    return { ok: true, meta };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/** A local copy of a (possibly remote) object; `cleanup` removes temporary downloads. */
export async function localCopy(uri: string, tmpDir: string): Promise<{ file: string; cleanup: () => Promise<void> }> {
  if (uriScheme(uri) === "file") return { file: toLocalPath(uri), cleanup: async () => {} };
  const file = path.join(tmpDir, `${path.basename(uri)}.${process.pid}.${Date.now()}`);
  await writeFile(file, await storageFor(uri).get(uri));
  return { file, cleanup: () => rm(file, { force: true }) };
}

// ---------------------------------------------------------------------------------------------------------
// Running a shard

/** Produces uint8 HWC images for class labels; created only when a shard must actually be generated. */
export interface ImageGenerator {
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  /** Images [labels.length, H, W, 3] uint8 for these labels, deterministic in `seed`. */
  generate(labels: number[], seed: number): Promise<Uint8Array>;
  /** Facts recorded in the shard meta (AR step, MergeAR candidate, …). */
  readonly info?: Record<string, unknown>;
  /** Notes for the final report (e.g. untrained weights). */
  readonly notes?: string[];
  dispose?(): void;
}

export interface RunShardOptions {
  config: SamplingConfig;
  index: number;
  numShards: number;
  checkpointDir: string;
  checkpoints: { model: string; tokenizer: string };
  /** Prefix for progress.json (already per shard under the operator). */
  statusUri?: string;
  attempt?: number;
  openGenerator: () => Promise<ImageGenerator>;
  log: Logger;
  /** Minimum seconds between progress.json writes (default 2; the first and last are always written). */
  progressIntervalSeconds?: number;
}

export interface ShardResult {
  uri: string;
  samples: number;
  samplesPerSecond: number;
  /** true when a valid existing output was reused. */
  reused: boolean;
  meta: ShardMeta;
  notes: string[];
}

async function writeProgress(statusUri: string | undefined, p: Parameters<typeof writeProgressJson>[1]): Promise<void> {
  if (statusUri) await writeProgressJson(statusUri, p);
}

/** Generate (or reuse) shard `index`'s npz under `<checkpointDir>/shards/`. */
export async function runShard(o: RunShardOptions): Promise<ShardResult> {
  const { config: cfg, log } = o;
  const slice = shardSlice(cfg.numSamples, o.numShards, o.index);
  const identity = shardIdentity(cfg, slice, o.checkpoints);
  const uri = shardUri(o.checkpointDir, o.index);
  const storage = storageFor(uri);
  const tmpDir = os.tmpdir();
  const notes: string[] = [];

  if (await storage.exists(uri)) {
    const copy = await localCopy(uri, tmpDir);
    const check = await checkShardFile(copy.file, identity);
    await copy.cleanup();
    if (check.ok) {
      log.info({ uri, samples: slice.count, shard: o.index }, "shard output already present and valid: reused");
      await writeProgress(o.statusUri, { attempt: o.attempt, step: slice.count, totalSteps: slice.count });
      notes.push(`shard ${o.index}: existing valid output ${uri} reused (not regenerated)`);
      return {
        uri,
        samples: slice.count,
        samplesPerSecond: check.meta.samplesPerSecond,
        reused: true,
        meta: check.meta,
        notes,
      };
    }
    log.warn(
      { uri, reason: check.reason, shard: o.index },
      `existing shard output is invalid (${check.reason}): regenerating`,
    );
  }

  const gen = await o.openGenerator();
  try {
    const { height: H, width: W } = gen;
    const labels = shardLabels(slice, cfg.numSamples, gen.numClasses, cfg.classLabels);
    const px = H * W * 3;
    if (slice.count * px + (1 << 16) > MAX_NPZ_BYTES) {
      throw new Error(
        `shard ${o.index}: ${slice.count} images of ${H}×${W} exceed the 4 GiB npz limit; raise sampling.shards`,
      );
    }
    const images = new Uint8Array(slice.count * px);
    const seed = identity.shardSeed;
    const interval = (o.progressIntervalSeconds ?? 2) * 1000;
    log.info(
      {
        shard: o.index,
        of: o.numShards,
        start: slice.start,
        samples: slice.count,
        seed,
        batchSize: cfg.batchSize,
        H,
        W,
      },
      "generating shard",
    );
    await writeProgress(o.statusUri, { attempt: o.attempt, step: 0, totalSteps: slice.count });
    const t0 = performance.now();
    let lastWrite = Date.now();
    let done = 0;
    for (let b = 0; done < slice.count; b++) {
      const n = Math.min(cfg.batchSize, slice.count - done);
      const batchLabels = Array.from(labels.subarray(done, done + n));
      const out = await gen.generate(batchLabels, batchSeed(seed, b));
      if (out.length !== n * px) throw new Error(`generator returned ${out.length} bytes for ${n} images of ${H}×${W}`);
      images.set(out, done * px);
      done += n;
      const secs = (performance.now() - t0) / 1000;
      const rate = done / Math.max(secs, 1e-9);
      log.info(
        { shard: o.index, done, of: slice.count, samplesPerSecond: Math.round(rate * 100) / 100 },
        "sampling progress",
      );
      if (done === slice.count || Date.now() - lastWrite >= interval) {
        lastWrite = Date.now();
        await writeProgress(o.statusUri, {
          attempt: o.attempt,
          step: done,
          totalSteps: slice.count,
          imagesPerSecond: rate,
          etaSeconds: (slice.count - done) / rate,
        });
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const meta: ShardMeta = {
      ...identity,
      numClasses: gen.numClasses,
      height: H,
      width: W,
      seconds,
      samplesPerSecond: slice.count / Math.max(seconds, 1e-9),
      createdAt: new Date().toISOString(),
      generator: gen.info,
    };
    if (uriScheme(uri) === "file") {
      // Atomic publish: write a temp file next to the target, then rename.
      const target = toLocalPath(uri);
      await mkdir(path.dirname(target), { recursive: true });
      const tmp = `${target}.tmp-${process.pid}-${Date.now()}`;
      try {
        await writeShardNpz(tmp, images, labels, meta);
        await rename(tmp, target);
      } finally {
        await rm(tmp, { force: true });
      }
    } else {
      const tmp = path.join(tmpDir, `shard-${o.index}-${process.pid}-${Date.now()}.npz`);
      try {
        await writeShardNpz(tmp, images, labels, meta);
        await storage.put(uri, new Uint8Array(await readFile(tmp))); // S3 PUT is atomic
      } finally {
        await rm(tmp, { force: true });
      }
    }
    log.info({ uri, samples: slice.count, seconds: Math.round(seconds * 10) / 10 }, "shard written");
    notes.push(...(gen.notes ?? []));
    return { uri, samples: slice.count, samplesPerSecond: meta.samplesPerSecond, reused: false, meta, notes };
  } finally {
    gen.dispose?.();
  }
}
