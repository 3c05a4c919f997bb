// Reduce step of a SamplingJob (docs/model.md §6.2): read every shard npz, run the FID Inception over all samples once,
// and report gFID (against evaluation.referenceStatsUri: npz mu/sigma, pytorch-fid / ADM format or written by
// `eval reference-stats`) and IS (10 splits), plus a sample grid PNG.
//
// IS splits: upstream `combine_npz.py` SHUFFLES the chunks into sample.npz before the evaluator takes 10
// contiguous splits; our shards are in class order, so contiguous splits would each hold a few classes and
// bias IS low. Sample g is therefore assigned to split ⌊π(g)·S/N⌋ for a seeded permutation π (≡ shuffle, then
// contiguous splits), streamed with one accumulator per split. The Fréchet part is order-independent.
// Metric names carry the extractor's label (`gFID[random-inception]` when the Inception weights are the
// generated random ones — then they are NOT FID/IS; a note says so); plain `gFID` / `IS` repeat the values for
// the CRD's printer columns, exactly as the tokenizer reports `rFID` next to its labelled keys.
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Logger } from "../../../common/src/logger.ts";
import { checkReferenceWeights, npzImageBatches } from "../eval/gfid.ts";
import { InceptionExtractor, POOL_DIM } from "../eval/inception.ts";
import { InceptionScoreAccumulator } from "../eval/is.ts";
import { npzArrayHeader, readNpz, verifyNpz } from "../eval/npz.ts";
import { inceptionNotes } from "../eval/rfid.ts";
import { FeatureStats, frechetDistance, loadStats } from "../eval/stats.ts";
import { storageFor } from "../io/storage.ts";
import { joinUri } from "../io/uri.ts";
import { Rng } from "../util/rng.ts";
import { gridPicks, sampleGridPng } from "./grid.ts";
import { localCopy, META_KEY, type ShardMeta, shardUri } from "./shard.ts";

export interface ShardFile {
  index: number;
  uri: string;
  count: number;
  height: number;
  width: number;
  meta?: ShardMeta;
}

export interface ReduceOptions {
  checkpointDir: string;
  numShards: number;
  /** Expected total (spec.sampling.numSamples); checked when given. */
  numSamples?: number;
  referenceStatsUri?: string;
  inceptionUri?: string;
  computeIS?: boolean;
  isSplits?: number;
  /** Seed of the IS split permutation (default 0). */
  seed?: number;
  /** Images in the grid PNG (default 64; 0 = no grid). */
  gridImages?: number;
  batchSize?: number;
  log: Logger;
}

export interface ReduceResult {
  metrics: Record<string, number>;
  notes: string[];
  samples: number;
  shards: ShardFile[];
  gridUri?: string;
  extractorLabel: string;
}

/**
 * Locate and verify all shard outputs (zip CRCs, arr_0 uint8 [N,H,W,3]); throws listing every missing/corrupt
 * shard. Remote (s3) shards are downloaded one at a time and deleted again, so the reduce pod's disk only
 * ever holds one shard (the Inception pass downloads each again).
 */
export async function openShards(checkpointDir: string, numShards: number, tmpDir: string): Promise<ShardFile[]> {
  const out: ShardFile[] = [];
  const problems: string[] = [];
  for (let i = 0; i < numShards; i++) {
    const uri = shardUri(checkpointDir, i);
    if (!(await storageFor(uri).exists(uri))) {
      problems.push(`shard ${i}: ${uri} missing`);
      continue;
    }
    const { file, cleanup } = await localCopy(uri, tmpDir);
    try {
      await verifyNpz(file);
      const h = await npzArrayHeader(file, "arr_0");
      if (h.dtype !== "|u1" || h.shape.length !== 4 || h.shape[3] !== 3) {
        throw new Error(`arr_0 is ${h.dtype} [${h.shape}], expected uint8 [N,H,W,3]`);
      }
      let meta: ShardMeta | undefined;
      try {
        const m = (await readNpz(file, [META_KEY]))[META_KEY];
        meta = JSON.parse(Buffer.from(m.data as Uint8Array).toString("utf8")) as ShardMeta;
      } catch {
        meta = undefined; // a foreign npz (e.g. sample.py output) has no meta: accepted
      }
      out.push({ index: i, uri, count: h.shape[0], height: h.shape[1], width: h.shape[2], meta });
    } catch (e) {
      problems.push(`shard ${i}: ${uri} is invalid (${(e as Error).message})`);
    } finally {
      await cleanup();
    }
  }
  if (problems.length)
    throw new Error(`reduce: ${problems.length} of ${numShards} shard(s) unusable: ${problems.join("; ")}`);
  const [h, w] = [out[0].height, out[0].width];
  const odd = out.find((s) => s.height !== h || s.width !== w);
  if (odd) throw new Error(`reduce: shard ${odd.index} has ${odd.height}×${odd.width} images, shard 0 has ${h}×${w}`);
  return out;
}

/** Split of each global sample: shuffled assignment (see header). */
export function shuffledSplits(n: number, splits: number, seed: number): Uint16Array {
  const perm = new Rng(seed * 7919 + 17).permutation(n);
  const out = new Uint16Array(n);
  for (let g = 0; g < n; g++) out[g] = Math.floor((perm[g] * splits) / n);
  return out;
}

export async function reduceShards(o: ReduceOptions): Promise<ReduceResult> {
  const { log } = o;
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), "mvq-reduce-"));
  let extractor: InceptionExtractor | undefined;
  try {
    const shards = await openShards(o.checkpointDir, o.numShards, tmpDir);
    const N = shards.reduce((a, s) => a + s.count, 0);
    if (o.numSamples !== undefined && N !== o.numSamples) {
      throw new Error(`reduce: the shards hold ${N} samples, sampling.numSamples is ${o.numSamples}`);
    }
    const { height: H, width: W } = shards[0];
    log.info({ shards: shards.length, samples: N, H, W }, "reduce: shards verified");
    const notes: string[] = [];
    const metrics: Record<string, number> = { samples: N };

    const computeIS = o.computeIS ?? true;
    const wantFid = !!o.referenceStatsUri;
    if (wantFid || computeIS) extractor = await InceptionExtractor.create({ modelUri: o.inceptionUri, logger: log });
    const label = extractor?.label ?? "";

    // Reference statistics (checked against the extractor's weights before the long pass).
    let ref: Awaited<ReturnType<typeof loadStats>> | undefined;
    if (wantFid && extractor) {
      const refUri = o.referenceStatsUri as string;
      const copy = await localCopy(refUri, tmpDir);
      ref = await loadStats(copy.file);
      try {
        checkReferenceWeights(ref, extractor, refUri);
      } catch (e) {
        notes.push(`gFID not computed: ${(e as Error).message}`);
        log.error(
          { err: (e as Error).message },
          "reference statistics do not match the Inception weights: gFID skipped",
        );
        ref = undefined;
      }
    } else if (!wantFid) {
      notes.push("gFID not computed: evaluation.referenceStatsUri is not set (IS only)");
    }
    if (N < 2 && ref) {
      notes.push(`gFID not computed: ${N} sample(s), need ≥ 2 for a covariance`);
      ref = undefined;
    }

    const splits = Math.min(o.isSplits ?? 10, N);
    if (computeIS && splits < (o.isSplits ?? 10)) notes.push(`IS over ${splits} split(s) only (${N} samples)`);
    const splitOf = computeIS ? shuffledSplits(N, splits, o.seed ?? 0) : undefined;
    const splitSizes = new Array<number>(splits).fill(0);
    if (splitOf) for (const s of splitOf) splitSizes[s]++;
    const isAcc = splitOf ? splitSizes.map((n) => new InceptionScoreAccumulator({ splits: 1, expectedCount: n })) : [];
    const stats = ref ? new FeatureStats(POOL_DIM) : undefined;

    const picks = gridPicks(N, o.gridImages ?? 64);
    const pickSet = new Map(picks.map((g, k) => [g, k]));
    const gridImages: Uint8Array[] = new Array(picks.length);
    const px = H * W * 3;
    const t0 = performance.now();
    let lastLog = t0;
    let g0 = 0;
    const bs = o.batchSize ?? 32;
    const needInception = !!(extractor && (stats || isAcc.length));
    for (const s of shards) {
      const copy = await localCopy(s.uri, tmpDir);
      let rows = 0;
      // Only the grid needs the pixels when no metric is computed: still one streaming pass.
      for await (const b of npzImageBatches(copy.file, bs)) {
        rows += b.n;
        const data = b.data as Uint8Array;
        for (let r = 0; r < b.n; r++) {
          const k = pickSet.get(g0 + r);
          if (k !== undefined) gridImages[k] = data.slice(r * px, (r + 1) * px);
        }
        if (needInception && extractor) {
          const out = await extractor.run(b);
          stats?.update(out.pool, out.n);
          if (splitOf) {
            const logits = out.logitsUnbiased ?? out.logits;
            if (!logits) throw new Error("IS: the Inception model has no logits output");
            const C = logits.length / out.n;
            for (let r = 0; r < out.n; r++) isAcc[splitOf[g0 + r]].update(logits.subarray(r * C, (r + 1) * C), 1);
          }
        }
        g0 += b.n;
        if (needInception && (g0 === N || performance.now() - lastLog > 10_000)) {
          lastLog = performance.now();
          const secs = (performance.now() - t0) / 1000;
          log.info({ done: g0, of: N, imagesPerSecond: Math.round((g0 / secs) * 10) / 10 }, "reduce: Inception pass");
        }
      }
      await copy.cleanup();
      if (rows !== s.count) throw new Error(`reduce: shard ${s.index} (${s.uri}) changed while reducing`);
    }
    if (g0 !== N) throw new Error(`reduce: read ${g0} samples, headers said ${N}`);

    if (stats && ref) {
      const fid = frechetDistance(stats.finalize(), ref);
      metrics[`gFID${label}`] = fid.fid;
      metrics.gFID = fid.fid; // plain key for the printer column, as `rFID`; notes say when the weights are random
      log.info({ ...fid, reference: o.referenceStatsUri }, `gFID${label} = ${fid.fid.toFixed(4)}`);
    }
    if (splitOf) {
      const scores = isAcc.map((a) => a.result().mean);
      const mean = scores.reduce((a, b) => a + b, 0) / scores.length;
      const std = Math.sqrt(scores.reduce((a, b) => a + (b - mean) ** 2, 0) / scores.length);
      metrics[`IS${label}`] = mean;
      metrics.IS = mean;
      metrics[`ISStd${label}`] = std;
      log.info({ splits, std }, `IS${label} = ${mean.toFixed(3)} ± ${std.toFixed(3)}`);
    }
    if (extractor) notes.push(...inceptionNotes(extractor));

    let gridUri: string | undefined;
    if (picks.length) {
      const { png, layout } = await sampleGridPng(gridImages, H, W);
      gridUri = joinUri(o.checkpointDir, "artifacts/samples.png");
      await storageFor(gridUri).put(gridUri, png);
      log.info({ uri: gridUri, images: picks.length, ...layout }, "sample grid written");
    }
    // Untrained / random generator weights must reach the user.
    const gens = new Set(shards.flatMap((s) => (s.meta?.generator?.untrained ? [s.index] : [])));
    if (gens.size) notes.push("samples come from an UNTRAINED (step 0) AR checkpoint: metrics describe noise");
    return { metrics, notes, samples: N, shards, gridUri, extractorLabel: label };
  } finally {
    await extractor?.close();
    await rm(tmpDir, { recursive: true, force: true });
  }
}
