// Stage II AR generator micro-benchmark on the running backend (docs/model.md §10 "Stage-II tiny" / "MergeAR tiny",
// random weights — throughput only, no quality):
//   train_step_sequences_per_second   forward + backward + SGD update of the tiny model, B sequences of L = 64
//   generate_tokens_per_second        CFG sampling (batch doubled), tokens of the B samples per second, with and
//                                     without MergeAR eviction (same MergeAR model, evict on/off)
//   generate_max_cache_length         longest live spatial KV cache (incl. prefix) per configuration
//   generate_evicted_per_sample       KV entries evicted per sample
//   generate_speedup_evict            tokens/s with eviction ÷ without (same run); at L = 64 (T0/T1 8×8 grid) and,
//                                     unless BENCH_QUICK, L = 256 (the GR 16×16 grid)
//   npx tsx bench/ar.bench.ts     (BENCH_QUICK=1: fewer steps/samples; TFJS_BACKEND selects the backend)
import * as tf from "@tensorflow/tfjs";
import { generate } from "../trainer/src/ar/generate.ts";
import { GPT } from "../trainer/src/ar/gpt.ts";
import { dupFromCodes } from "../trainer/src/ar/mergeAR.ts";
import { randomizeWeights, sequencesWithDuplicates, tinyConfig } from "../trainer/src/ar/testing.ts";
import { selectBackend } from "../trainer/src/backend/select.ts";

const quick = process.env.BENCH_QUICK === "1";
const emit = (metric: string, value: number, unit: string, backend: string, config: string) =>
  process.stdout.write(
    `${JSON.stringify({ bench: "ar", metric, value: Number(value.toPrecision(4)), unit, backend, config })}\n`,
  );

function trainStep(mergeAR: boolean, backend: string) {
  const B = quick ? 4 : 8;
  const L = 64;
  const steps = quick ? 3 : 8;
  const model = new GPT(tinyConfig({ mergeAR }));
  const { codes } = sequencesWithDuplicates(B, L, 36, 10, 1);
  const batch = {
    labels: tf.tensor1d(
      Array.from({ length: B }, (_, i) => i % 10),
      "int32",
    ),
    indices: tf.tensor2d(codes, [B, L], "int32"),
    mergeTokens: mergeAR
      ? tf.tensor1d(
          Array.from({ length: B }, (_, i) => i % 4),
          "int32",
        )
      : undefined,
    dup: mergeAR ? tf.tensor2d(dupFromCodes(codes, B, L), [B, L]) : undefined,
  };
  const opt = new tf.SGDOptimizer(1e-3);
  const step = (i: number) => {
    const { value, grads } = tf.variableGrads(() => model.loss(batch, { training: true, seed: i }).loss);
    opt.applyGradients(grads);
    value.dataSync();
    tf.dispose([value, ...Object.values(grads)]);
  };
  step(-1); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) step(i);
  const sec = (performance.now() - t0) / 1000 / steps;
  const config = `tiny${mergeAR ? "+mergeAR" : ""} B=${B} L=${L}`;
  emit("train_step_sequences_per_second", B / sec, "sequences/s", backend, config);
  process.stderr.write(`train ${config}: ${(sec * 1000).toFixed(0)} ms/step\n`);
  tf.dispose([batch.labels, batch.indices, batch.mergeTokens ?? [], batch.dup ?? []]);
  opt.dispose();
  model.dispose();
}

function generation(backend: string, L: number) {
  const B = quick ? 2 : 8;
  const model = new GPT(tinyConfig({ mergeAR: true, window: 2, L }));
  // Small weights + greedy top-k 2: the random model repeats codes, so eviction has duplicates to drop.
  randomizeWeights(model, 1, 0.05);
  const labels = Array.from({ length: B }, (_, i) => i % 10);
  const mergeTokens = Array.from({ length: B }, (_, i) => i % 4);
  const run = (evict: boolean) => {
    const o = { labels, mergeTokens, cfgScale: 1.5, temperature: 1, topK: 2, seed: 1, evict };
    generate(model, { ...o, labels: labels.slice(0, 1), mergeTokens: mergeTokens.slice(0, 1) }); // warm-up
    const r = generate(model, o);
    const config = `tiny+mergeAR B=${B} L=${L} cfg evict=${evict}`;
    const tps = (B * r.L) / r.stats.seconds;
    emit("generate_tokens_per_second", tps, "tokens/s", backend, config);
    emit("generate_max_cache_length", r.stats.maxCacheLength, "slots", backend, config);
    emit("generate_evicted_per_sample", r.stats.evicted / B, "entries", backend, config);
    process.stderr.write(`generate ${config}: ${r.stats.seconds.toFixed(2)} s, ${JSON.stringify(r.stats)}\n`);
    return tps;
  };
  const withEvict = run(true);
  const without = run(false);
  emit("generate_speedup_evict", withEvict / without, "ratio", backend, `tiny+mergeAR B=${B} L=${L}`);
  model.dispose();
}

const info = await selectBackend({ requested: process.env.TFJS_BACKEND });
const backend = info.name;
process.stderr.write(`backend ${backend}: ${info.reason}\n`);
trainStep(false, backend);
trainStep(true, backend);
generation(backend, 64); // T0/T1 grid (8×8)
if (!quick) generation(backend, 256); // GR grid (16×16): longer caches, where eviction can pay off
