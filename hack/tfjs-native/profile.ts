// Per-kernel profile of the T1 (or GR_d32@64) train step on one backend: tf.profile over PROFILES runs,
// per (kernel[, input shapes]) the minimum over runs (the machine is shared; min filters out stalls).
//   B=tensorflow|wasm BATCH=8 CFG=T1|GR PHASE=step|fwdbwd|forward SHAPES=1 TOP=40 npx tsx hack/tfjs-native/profile.ts
import * as tf from "@tensorflow/tfjs";
import { benchTrainStep, GR_D32_AT_64 } from "../../bench/trainStep.ts";
import { type BackendChoice, startBackend } from "../../trainer/src/backend/select.ts";
import { MergeVQTokenizer } from "../../trainer/src/tokenizer/mergevq.ts";

async function main(): Promise<void> {
  const backend = (process.env.B ?? "tensorflow") as BackendChoice;
  const BATCH = Number(process.env.BATCH ?? 8);
  const phase = process.env.PHASE ?? "step";
  await startBackend(backend);
  const tok = new MergeVQTokenizer(process.env.CFG === "GR" ? (GR_D32_AT_64 as never) : "T1");
  const res = tok.config.resolution;
  const x = tf.randomUniform([BATCH, res, res, 3], -1, 1) as tf.Tensor4D;
  const train = benchTrainStep(tok, x);
  const vars = tok.trainableVariables();
  const step = (): void => {
    if (phase === "forward") {
      tf.tidy(() => {
        train.lossOf().dataSync();
      });
      return;
    }
    train.step(phase === "step" ? "step" : "fwdbwd");
    if (phase === "step") vars[0].dataSync();
  };
  step();
  const walls: number[] = [];
  for (let i = 0; i < 4; i++) {
    const t0 = performance.now();
    step();
    walls.push(performance.now() - t0);
  }
  walls.sort((a, b) => a - b);
  console.error(
    `${backend} ${process.env.CFG ?? "T1"} batch ${BATCH} ${phase}: min ${walls[0].toFixed(1)} median ${walls[2].toFixed(1)} ms`,
  );
  if (process.env.NOPROF) return;
  const best = new Map<string, { n: number; ms: number }>();
  const bucketBest = new Map<string, { n: number; ms: number }>();
  let kernels = 0;
  for (let r = 0; r < Number(process.env.PROFILES ?? 3); r++) {
    const p = await tf.profile(step);
    kernels = p.kernels.length;
    const by = new Map<string, { n: number; ms: number }>();
    const buckets = new Map<string, { n: number; ms: number }>();
    for (const k of p.kernels) {
      if (k.name === "unnamed scope") continue; // customGrad wrapper: its inner kernels are listed too
      const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
      const size = Math.max(0, ...k.inputShapes.map((s) => (s ?? []).reduce((a: number, b: number) => a * b, 1)));
      if (size < Number(process.env.MINSIZE ?? 0) || (/Conv|MatMul/.test(k.name) && process.env.MINSIZE)) continue;
      const key = process.env.SHAPES ? `${k.name} ${JSON.stringify(k.inputShapes)}` : k.name;
      const bk = /Conv|MatMul/.test(k.name) ? "conv/matmul" : size < 1e3 ? "<1e3" : size < 1e5 ? "<1e5" : ">=1e5";
      for (const [m, kk] of [
        [by, key],
        [buckets, bk],
        [buckets, "total"],
      ] as const) {
        const e = m.get(kk) ?? { n: 0, ms: 0 };
        e.n++;
        e.ms += ms;
        m.set(kk, e);
      }
    }
    for (const [src, dst] of [
      [by, best],
      [buckets, bucketBest],
    ]) {
      for (const [k, v] of src) {
        const e = dst.get(k);
        if (!e || v.ms < e.ms) dst.set(k, v);
      }
    }
  }
  console.error(`kernels per step: ${kernels}`);
  for (const [k, v] of bucketBest) console.error(`  bucket ${k}: ${v.n} kernels, ${v.ms.toFixed(1)} ms`);
  for (const [k, v] of [...best].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(process.env.TOP ?? 40))) {
    console.error(`${v.ms.toFixed(1).padStart(8)} ms ${String(v.n).padStart(5)}× ${k}`);
  }
}
main();
