// Forward+backward time of the MergeVQ tokenizer generator pass (L1 + LFQ terms + CLS pass) per batch.
// Run: `npx tsx bench/fwdbwd.bench.ts` (env TFJS_BACKEND, BENCH_CONFIGS=T0,T1, BENCH_BATCH=8,
// BENCH_QUICK=1 for one timed iteration). One JSON object per line on stdout (bench format of the repo).
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../trainer/src/backend/select.ts";
import { MergeVQTokenizer } from "../trainer/src/tokenizer/mergevq.ts";

const info = await selectBackend({ requested: process.env.TFJS_BACKEND ?? "wasm" });
const configs = (process.env.BENCH_CONFIGS ?? "T0,T1").split(",");
const batch = Number(process.env.BENCH_BATCH ?? 8);
const iters = process.env.BENCH_QUICK === "1" ? 1 : 3;

for (const name of configs) {
  const m = new MergeVQTokenizer(name);
  const R = m.config.resolution;
  const V = m.config.clsViewSize;
  const x = tf.randomUniform([batch, R, R, 3], -1, 1, "float32", 1) as tf.Tensor4D;
  const v = tf.randomUniform([batch, V, V, 3], -1, 1, "float32", 2) as tf.Tensor4D;
  const step = async () => {
    const t0 = performance.now();
    const { value, grads } = tf.variableGrads(() => {
      const o = m.forward(x, { clsView: v });
      return tf.addN([
        tf.mean(tf.abs(tf.sub(o.recon, x))),
        tf.mul(o.losses.entropy, 0.1),
        tf.mul(o.losses.commitment, 0.25),
        tf.mean(tf.square(o.cls)),
      ]) as tf.Scalar;
    }, m.trainableVariables());
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
    return performance.now() - t0;
  };
  await step(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < iters; i++) times.push(await step());
  times.sort((a, b) => a - b);
  const med = times[Math.floor(times.length / 2)];
  console.error(
    `${name}: batch ${batch} fwd+bwd median ${med.toFixed(0)} ms over ${iters} (${times.map((t) => t.toFixed(0)).join(", ")})`,
  );
  const line = (metric: string, value: number, unit: string) =>
    console.log(
      JSON.stringify({
        bench: "tokenizer-model",
        metric,
        value,
        unit,
        backend: info.name,
        config: `${name}-b${batch}`,
      }),
    );
  line("fwd_bwd_ms_per_batch", Math.round(med), "ms");
  line("fwd_bwd_images_per_s", Number(((batch * 1000) / med).toFixed(2)), "images/s");
  tf.dispose([x, v]);
  m.dispose();
}
