// rFID for the tokenizer trainer (docs/model.md §6.1): real = the held-out 256² centre crops fed to the tokenizer,
// fake = their reconstructions (clamped to [-1,1], mapped to [0,1], no uint8 quantisation). Both sets go
// through the same Inception; FID between their streaming Gaussian statistics.
//
// Metric names: `rFID`, `rFID@K=<k>` per token count, with the Inception label appended when the weights
// are not the real TF-FID ones, e.g. `rFID@K=36[random-inception]` (common/src/contract.ts `Metrics`).
import type { Logger } from "../../../common/src/logger.ts";
import { type ImageBatch, type InceptionExtractor, POOL_DIM } from "./inception.ts";
import { FeatureStats, type FrechetResult, frechetDistance, type GaussianStats } from "./stats.ts";

export interface ReconstructionBatch {
  /** Real images (uint8 [0,255], float [0,1], or float [-1,1] with range "symmetric"). */
  original: ImageBatch;
  reconstruction: ImageBatch;
}

export interface RfidResult {
  /** Metric name, e.g. "rFID@K=36[random-inception]". */
  name: string;
  value: number;
  count: number;
  k?: number;
  /** Whether the Inception weights are the real FID ones (label ""). */
  real: boolean;
  detail: FrechetResult;
}

export function rfidMetricName(k: number | undefined, label: string): string {
  return `rFID${k === undefined ? "" : `@K=${k}`}${label}`;
}

/** Feed `images` through the extractor into `stats`. */
async function accumulate(ext: InceptionExtractor, stats: FeatureStats, images: ImageBatch): Promise<void> {
  if (images.n === 0) return;
  const out = await ext.run(images);
  stats.update(out.pool, out.n);
}

/**
 * rFID of one reconstruction pass. `realStats` (statistics of the same originals from an earlier pass) skips
 * re-extracting the originals; the batches must still carry them (their count is checked).
 */
export async function computeRfid(
  batches: AsyncIterable<ReconstructionBatch>,
  opts: { extractor: InceptionExtractor; k?: number; realStats?: GaussianStats; logger?: Logger },
): Promise<RfidResult & { realStats: GaussianStats; fakeStats: GaussianStats }> {
  const ext = opts.extractor;
  const real = opts.realStats ? undefined : new FeatureStats(POOL_DIM);
  const fake = new FeatureStats(POOL_DIM);
  let originals = 0;
  const t0 = performance.now();
  for await (const b of batches) {
    if (b.original.n !== b.reconstruction.n) {
      throw new Error(`rFID: batch has ${b.original.n} originals but ${b.reconstruction.n} reconstructions`);
    }
    if (real) await accumulate(ext, real, b.original);
    await accumulate(ext, fake, { ...b.reconstruction, range: b.reconstruction.range ?? "symmetric" });
    originals += b.original.n;
  }
  if (opts.realStats?.count !== undefined && opts.realStats.count !== originals) {
    throw new Error(`rFID: realStats cover ${opts.realStats.count} images, this pass had ${originals}`);
  }
  const realStats = opts.realStats ?? (real as FeatureStats).finalize();
  const fakeStats = fake.finalize();
  const detail = frechetDistance(realStats, fakeStats);
  const name = rfidMetricName(opts.k, ext.label);
  opts.logger?.info(
    { metric: name, value: detail.fid, images: originals, seconds: (performance.now() - t0) / 1000, ...detail },
    `${name} = ${detail.fid.toFixed(4)} over ${originals} images${ext.label ? ` (${ext.label}: not a real FID)` : ""}`,
  );
  return { name, value: detail.fid, count: originals, k: opts.k, real: ext.label === "", detail, realStats, fakeStats };
}

/**
 * One rFID per token count K (docs/model.md §6.3: e.g. R family K ∈ {36, 64, 100, 144, 256}). `passFor(k)` yields the
 * held-out originals and their reconstructions with K tokens (EMA weights, fixed K). The originals'
 * statistics are computed on the first pass and reused. Returns metrics ready for `FinalReport.metrics`.
 */
export async function computeRfidPerK(
  ks: number[],
  passFor: (k: number) => AsyncIterable<ReconstructionBatch>,
  opts: { extractor: InceptionExtractor; logger?: Logger },
): Promise<{ metrics: Record<string, number>; results: RfidResult[]; notes: string[] }> {
  let realStats: GaussianStats | undefined;
  const results: RfidResult[] = [];
  for (const k of ks) {
    const r = await computeRfid(passFor(k), { ...opts, k, realStats });
    realStats = r.realStats;
    results.push({ name: r.name, value: r.value, count: r.count, k: r.k, real: r.real, detail: r.detail });
  }
  const metrics = Object.fromEntries(results.map((r) => [r.name, r.value]));
  return { metrics, results, notes: inceptionNotes(opts.extractor) };
}

/** Notes for `FinalReport.notes` explaining a labelled metric. */
export function inceptionNotes(ext: InceptionExtractor): string[] {
  if (ext.label === "") return [];
  if (ext.isRandom) {
    return [
      `Inception weights are RANDOMLY generated (${ext.modelPath}); metrics suffixed ${ext.label} are not FID/IS. ` +
        "Set MERGEVQ_INCEPTION_URI to a model converted by hack/inception/convert_pt_inception.py.",
    ];
  }
  return [`Inception model ${ext.modelPath} has no provenance metadata; metrics suffixed ${ext.label}.`];
}
