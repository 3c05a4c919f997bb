// TF.js backend benchmark: 1024² matmul GFLOP/s and the T1 and GR_d32@64 tokenizer (random weights) train-step
// images/s on every backend that starts in this process (tensorflow = native tfjs-node when built, wasm,
// cpu), plus speedup_vs_wasm ratios measured in the same run. When the wasm backend runs multi-threaded,
// a child process measures the single-threaded wasm matmul too (wasm_threads_speedup).
//   npx tsx bench/backend.bench.ts        (BENCH_QUICK=1: 512² matmul, batch 2, T1 only)
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { type BackendChoice, nativeCandidates, startBackend } from "../trainer/src/backend.ts";
import { MergeVQTokenizer } from "../trainer/src/tokenizer/mergevq.ts";

const quick = process.env.BENCH_QUICK === "1";
const N = quick ? 512 : 1024;
const BATCH = quick ? 2 : 4;
const emit = (metric: string, value: number, unit: string, backend: string, config: string): void => {
  console.log(JSON.stringify({ bench: "backend", metric, value, unit, backend, config }));
};
const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};

/** Median seconds of `reps` runs of f (after one warm-up). */
function timeIt(f: () => void, reps: number): number {
  f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    f();
    ts.push((performance.now() - t0) / 1000);
  }
  ts.sort((a, b) => a - b);
  return ts[Math.floor(ts.length / 2)];
}

function matmulGflops(backend: string): number {
  const a = tf.randomNormal([N, N]);
  const b = tf.randomNormal([N, N]);
  const reps = backend === "cpu" ? 2 : backend === "tensorflow" ? 20 : 5;
  // dataSync inside the timed region forces completion; the result is disposed directly (returning a typed
  // array from tf.tidy would make tidy walk its million indices, which costs more than the matmul itself).
  const s = timeIt(() => {
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
  }, reps);
  tf.dispose([a, b]);
  return (2 * N ** 3) / s / 1e9;
}

/** The two train-step configs of issue 8: T1 and GR_d32 at 64² (/16 → 4×4 tokens; no merge schedule over 12
 *  blocks reaches a smaller square K, so it runs unmerged, as in bench/tokenizer.bench.ts). */
const TRAIN_CONFIGS = {
  T1: "T1",
  "GR_d32@64": { preset: "GR_d32", resolution: 64, mergeNum: 0, candDistribution: null, clsViewSize: 48 },
} as const;
type TrainConfigName = keyof typeof TRAIN_CONFIGS;

function trainStep(backend: string, name: TrainConfigName): number {
  const tok = new MergeVQTokenizer(TRAIN_CONFIGS[name] as ConstructorParameters<typeof MergeVQTokenizer>[0]);
  const res = tok.config.resolution;
  const x = tf.randomUniform([BATCH, res, res, 3], -1, 1) as tf.Tensor4D;
  const vars = tok.trainableVariables();
  const opt = tf.train.adam(2e-4, 0.5, 0.9);
  const step = (): void => {
    const loss = opt.minimize(
      () => {
        const out = tok.forward(x, { training: true });
        return tf.addN([
          tf.losses.meanSquaredError(x, out.recon),
          tf.mul(out.losses.entropy, 0.1),
          tf.mul(out.losses.commitment, 0.25),
        ]) as tf.Scalar;
      },
      true,
      vars,
    );
    loss?.dataSync();
    loss?.dispose();
  };
  const reps = backend === "tensorflow" ? 3 : 2;
  const s = timeIt(step, reps);
  opt.dispose();
  x.dispose();
  tok.dispose();
  return BATCH / s;
}

async function main(): Promise<void> {
  if (process.env.BENCH_BACKEND_CHILD === "wasm-matmul") {
    await startBackend("wasm");
    console.log(JSON.stringify({ gflops: matmulGflops("wasm") }));
    return;
  }
  const configs = (process.env.BENCH_QUICK ? ["T1"] : Object.keys(TRAIN_CONFIGS)) as TrainConfigName[];
  const results: Record<string, { matmul?: number; train: Partial<Record<TrainConfigName, number>>; note: string }> =
    {};
  const { candidates, absent } = nativeCandidates();
  const order: BackendChoice[] = ["tensorflow", "wasm", "cpu"];
  for (const choice of order) {
    let note: string;
    try {
      const s = await startBackend(choice);
      note = s.native
        ? `tfjs-node (${s.native.source}) libtensorflow ${s.native.tensorflow}`
        : s.wasm
          ? `wasm ${s.wasm.simd ? "SIMD" : "scalar"} ${s.wasm.threads} thread(s)`
          : "pure JS";
    } catch (e) {
      log(`${choice}: not available (${(e as Error).message.split("\n")[0]})`);
      if (choice === "tensorflow" && candidates.length === 0) log(`  native absent: ${absent.join("; ")}`);
      continue;
    }
    const r: { matmul?: number; train: Partial<Record<TrainConfigName, number>>; note: string } = { note, train: {} };
    r.matmul = matmulGflops(choice);
    emit(`matmul_${N}_gflops`, r.matmul, "GFLOP/s", choice, `${N}x${N} float32, ${note}`);
    log(`${choice} (${note}): matmul ${N}² ${r.matmul.toFixed(2)} GFLOP/s`);
    // The pure-JS cpu backend needs minutes per train step: it is benchmarked on matmul only.
    for (const cfg of choice === "cpu" ? [] : configs) {
      const ips = trainStep(choice, cfg);
      r.train[cfg] = ips;
      emit(
        "train_step_images_per_s",
        ips,
        "images/s",
        choice,
        `${cfg} 64² batch=${BATCH} Adam, random weights, ${note}`,
      );
      log(`${choice}: ${cfg} train step ${ips.toFixed(2)} images/s (batch ${BATCH})`);
    }
    results[choice] = r;
  }
  const wasm = results.wasm;
  for (const [b, r] of Object.entries(results)) {
    if (!wasm || b === "wasm") continue;
    if (r.matmul && wasm.matmul) {
      emit("matmul_speedup_vs_wasm", r.matmul / wasm.matmul, "x", b, `${N}² matmul, ${r.note} vs ${wasm.note}`);
    }
    for (const cfg of configs) {
      const mine = r.train[cfg];
      const ref = wasm.train[cfg];
      if (!mine || !ref) continue;
      emit("train_step_speedup_vs_wasm", mine / ref, "x", b, `${cfg} batch=${BATCH}, ${r.note} vs ${wasm.note}`);
      log(`${b}: ${(mine / ref).toFixed(1)}× wasm on the ${cfg} train step`);
    }
  }
  // Multi-threaded wasm vs the stock single-threaded SIMD build (child process: one wasm module per process).
  if (wasm?.matmul && !wasm.note.includes(" 1 thread")) {
    const child = spawnSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url)], {
      env: { ...process.env, BENCH_BACKEND_CHILD: "wasm-matmul", TFJS_WASM_THREADS: "1" },
      encoding: "utf8",
    });
    const line = child.stdout.split("\n").find((l) => l.startsWith("{"));
    if (line) {
      const single = (JSON.parse(line) as { gflops: number }).gflops;
      emit(
        `matmul_${N}_gflops`,
        single,
        "GFLOP/s",
        "wasm",
        `${N}x${N} float32, wasm SIMD 1 thread (TFJS_WASM_THREADS=1)`,
      );
      emit("wasm_threads_speedup", wasm.matmul / single, "x", "wasm", `${N}² matmul, ${wasm.note} vs 1 thread`);
      log(`wasm 1 thread: ${single.toFixed(2)} GFLOP/s → threads speedup ${(wasm.matmul / single).toFixed(2)}×`);
    } else {
      log(`wasm 1-thread child failed: ${child.stderr.slice(-500)}`);
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
