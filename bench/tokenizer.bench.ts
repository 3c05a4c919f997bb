// Tokenizer training-step benchmark: images/s and achieved GFLOP/s of one full Stage-I training step
// (G step + D step + EMA + Adam) for T1 and GR_d32 at 64×64 on the running backend.
//   npx tsx bench/tokenizer.bench.ts        (BENCH_QUICK=1: fewer timed steps; TFJS_BACKEND selects the backend)
// FLOPs are analytic, from the shapes of every matmul/conv kernel the step executes (forward and backward:
// 2·M·N·K per matmul, 2·out·kh·kw·Cin per conv and its two backprops, depthwise likewise), counted once with
// tf.profile; element-wise ops are not counted. The alignment teacher (onnxruntime) is not counted.
// Data: a small synthetic ImageNet folder (generated pixels) — this measures compute, not decoding.
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { createLogger } from "../common/src/logger.ts";
import { selectBackend } from "../trainer/src/backend/select.ts";
import { writeSyntheticImageNet } from "../trainer/src/data/testImages.ts";
import { buildTrainer } from "../trainer/src/train/setup.ts";

const quick = process.env.BENCH_QUICK === "1";
const log = createLogger({ component: "bench" }, { level: "warn" });

interface KernelInfo {
  name: string;
  inputShapes: number[][];
  outputShapes: number[][];
}

const prod = (s: number[]) => s.reduce((a, b) => a * b, 1);

/** FLOPs of one executed kernel from its shapes (0 for kernels we do not count). */
export function kernelFlops(k: KernelInfo): number {
  const i = k.inputShapes;
  const o = k.outputShapes[0] ?? [];
  switch (k.name) {
    case "BatchMatMul":
    case "_FusedMatMul": {
      // output [..., M, N]; the contraction length is the inner dim shared by the inputs
      const out = prod(o);
      const a = i[0];
      const b = i[1];
      const inner =
        a[a.length - 1] === b[b.length - 2] || a[a.length - 1] === b[b.length - 1] ? a[a.length - 1] : a[a.length - 2];
      return 2 * out * inner;
    }
    case "Conv2D":
    case "FusedConv2D": {
      const [kh, kw, cin] = i[1];
      return 2 * prod(o) * kh * kw * cin;
    }
    case "Conv2DBackpropInput": {
      // inputs (dy, filter): every dy element meets kh·kw·Cin filter taps
      const [kh, kw, cin] = i[1];
      return 2 * prod(i[0]) * kh * kw * cin;
    }
    case "Conv2DBackpropFilter": {
      // inputs (x, dy), output filter [kh, kw, Cin, Cout]
      const [kh, kw, cin] = o;
      return 2 * prod(i[1]) * kh * kw * cin;
    }
    case "DepthwiseConv2dNative":
    case "FusedDepthwiseConv2D": {
      const [kh, kw] = i[1];
      return 2 * prod(o) * kh * kw;
    }
    case "DepthwiseConv2dNativeBackpropInput":
      return 2 * prod(i[0]) * i[1][0] * i[1][1];
    case "DepthwiseConv2dNativeBackpropFilter":
      return 2 * prod(i[1]) * o[0] * o[1];
    default:
      return 0;
  }
}

function emit(metric: string, value: number, unit: string, backend: string, config: string): void {
  process.stdout.write(`${JSON.stringify({ bench: "tokenizer", metric, value, unit, backend, config })}\n`);
}

async function benchConfig(name: string, model: string | Record<string, unknown>, data: string, backend: string) {
  const batch = 4;
  const out = await mkdtemp(path.join(os.tmpdir(), "mvq-bench-"));
  const b = await buildTrainer({
    model,
    train: { steps: 1_000_000, batchSize: batch, accum: 1, logEvery: 1_000_000, evalImages: 0, checkpointInterval: 0 },
    data,
    out,
    log,
    backend,
  });
  await b.trainer.trainStep(); // warm-up (kernel compilation, caches, first decode)
  const prof = await tf.profile(async () => {
    await b.trainer.trainStep();
  });
  const flops = prof.kernels.reduce((s, k) => s + kernelFlops(k as unknown as KernelInfo), 0);
  const steps = quick ? 2 : 5;
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) await b.trainer.trainStep();
  const sec = (performance.now() - t0) / 1000 / steps;
  const params = b.modelConfig.derived.paramCounts.total;
  process.stderr.write(
    `${name}: ${(params / 1e6).toFixed(2)} M params, batch ${batch}, ${(flops / 1e9).toFixed(2)} GFLOP/step, ${sec.toFixed(3)} s/step\n`,
  );
  emit("train_step_images_per_second", batch / sec, "images/s", backend, name);
  emit("train_step_gflop", flops / 1e9, "GFLOP", backend, name);
  emit("train_step_achieved_gflops", flops / 1e9 / sec, "GFLOP/s", backend, name);
  b.trainer.dispose();
  b.model.dispose();
}

async function main() {
  const info = await selectBackend({ log });
  const data = await mkdtemp(path.join(os.tmpdir(), "mvq-bench-data-"));
  await writeSyntheticImageNet(data, 2, 8, "train");
  await benchConfig("T1", "T1", data, info.name);
  // GR_d32 at 64×64: /16 → 4×4 tokens (L 16). No merge schedule over 12 blocks reaches a smaller square K
  // from L = 16 without hitting the per-layer cap, so K = L = 16 (merge_num 0, fixed K); CLS view 48 (3×3).
  await benchConfig(
    "GR_d32@64",
    { preset: "GR_d32", resolution: 64, mergeNum: 0, candDistribution: null, clsViewSize: 48 },
    data,
    info.name,
  );
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${(e as Error).stack}\n`);
  process.exit(1);
});
