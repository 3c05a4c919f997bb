// Evaluation benchmark: FID-Inception features/s on onnxruntime-node (CPU unless a GPU EP is installed) at
// batch 32 and 64, preprocessing throughput, and Fréchet-distance time at d = 2048.
// The Inception model carries RANDOM weights (hack/inception/setup.sh): identical graph and cost to the real
// one, so throughput is representative; the features are not. Every metric's config says so.
//   npx tsx bench/eval.bench.ts          (BENCH_QUICK=1: one timed batch each, no d×d FID)
import { InceptionExtractor, preprocess } from "../trainer/src/eval/inception.ts";
import { FeatureStats, frechetDistance } from "../trainer/src/eval/stats.ts";
import { ensureRandomInception, rng } from "../trainer/src/eval/testing.ts";

const quick = process.env.BENCH_QUICK === "1";
const emit = (metric: string, value: number, unit: string, config: string): void => {
  console.log(JSON.stringify({ bench: "eval", metric, value, unit, backend: "n/a", config }));
};

async function main(): Promise<void> {
  const model = ensureRandomInception();
  const ext = await InceptionExtractor.create({ modelUri: model, maxBatch: 64 });
  const ep = `onnxruntime-node/${ext.executionProvider}`;
  const weights = `weights=${ext.weights}${ext.label}`;
  process.stderr.write(`eval bench: ${ep}, model ${model} (${weights})\n`);
  const r = rng(1);
  for (const batch of [32, 64]) {
    const data = Uint8Array.from({ length: batch * 256 * 256 * 3 }, () => Math.floor(r.uniform() * 256));
    const img = { data, n: batch, height: 256, width: 256 };
    const t0 = performance.now();
    const pre = preprocess(img);
    const preS = (performance.now() - t0) / 1000;
    await ext.runPreprocessed(pre, batch); // warm-up
    const iters = quick ? 1 : 2;
    const t1 = performance.now();
    for (let i = 0; i < iters; i++) await ext.run(img);
    const s = (performance.now() - t1) / 1000;
    const config = `${ep} batch=${batch} 256²→299² ${weights} iters=${iters}`;
    emit(`inception_images_per_s_b${batch}`, (batch * iters) / s, "images/s", config);
    emit(`preprocess_images_per_s_b${batch}`, batch / preS, "images/s", `js bilinear resize batch=${batch}`);
    process.stderr.write(`batch ${batch}: ${((batch * iters) / s).toFixed(1)} images/s (incl. preprocessing)\n`);
  }
  await ext.close();

  // Streaming statistics + FID at d = 2048.
  const d = 2048;
  for (const [n, route] of (quick
    ? [[500, "samples"]]
    : [
        [500, "samples"],
        [3000, "dxd"],
      ]) as [number, string][]) {
    const a = new FeatureStats(d);
    const b = new FeatureStats(d);
    const tu = performance.now();
    for (let s = 0; s < n; s += 100) {
      a.update(
        Float32Array.from({ length: 100 * d }, () => Math.abs(r.normal())),
        100,
      );
      b.update(
        Float32Array.from({ length: 100 * d }, () => Math.abs(r.normal() + 0.1)),
        100,
      );
    }
    const us = (performance.now() - tu) / 1000;
    emit("stats_update_features_per_s", (2 * n) / us, "features/s", `FeatureStats.update d=${d} batch=100 float64`);
    const tf = performance.now();
    const res = frechetDistance(a.finalize(), b.finalize());
    const fs = (performance.now() - tf) / 1000;
    emit(
      `fid_seconds_${route}`,
      fs,
      "s",
      `d=${d} N=${n} per side (${route === "dxd" ? "d×d eigen route, N > d" : "N×N route, N ≤ d"})`,
    );
    process.stderr.write(`FID d=${d} N=${n}: ${fs.toFixed(2)} s (value ${res.fid.toFixed(3)})\n`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
