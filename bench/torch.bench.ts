// TS native vs PyTorch train step (issue 16): the tokenizer step of bench/trainStep.ts on libtensorflow and the
// PyTorch twin of the same model (bench/torch/twin.py), which loads the TS model's initial weights, so both
// compute the same function on the same batch.
//
// Per config: (1) agreement: the loss and every gradient of one batch from both sides, compared with the
// tolerances of the native-vs-wasm backend check (compareSteps); a mismatch fails the bench (exit 1).
// (2) timing, interleaved A B A B… after warm-up: one TS step in this process, then one torch step in the
// twin's process (timed there, excluding the pipe), so load from other processes hits both alike. Torch runs
// on as many threads as libtensorflow's intra-op pool (TF_NUM_INTRAOP_THREADS, default: all cores).
// Reported: images/s per side (median, p25, p75, n) and ts_over_torch = TS images/s ÷ torch images/s.
// Random weights (nothing pretrained is involved: this measures speed).
//
//   make bench BENCH=torch        (BENCH_ROUNDS overrides the rounds; BENCH_TORCH_128=0 skips GR_d32 at 128²)
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { startBackend } from "../trainer/src/backend/select.ts";
import type { TokenizerConfigInput } from "../trainer/src/tokenizer/config.ts";
import { MergeVQTokenizer } from "../trainer/src/tokenizer/mergevq.ts";
import { compareSteps, lcg, reconLfqLoss, type StepResult, T1_PARITY } from "../trainer/src/train/backendParity.ts";
import { benchTrainStep, GR_D32_AT_64 } from "./trainStep.ts";

const here = path.dirname(fileURLToPath(import.meta.url));
const envInt = (name: string, dflt: number): number => {
  const v = process.env[name];
  return v ? Number.parseInt(v, 10) : dflt;
};
const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};
const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.ceil(i)] - s[lo]) * (i - lo);
};

type ModelInput = string | (TokenizerConfigInput & { preset?: string });
interface BenchConfig {
  name: string;
  model: ModelInput;
  batch: number;
  rounds: number;
}

const CONFIGS: BenchConfig[] = [
  { name: "T1", model: "T1", batch: envInt("BENCH_T1_BATCH", 8), rounds: envInt("BENCH_ROUNDS", 20) },
  { name: "GR_d32@64", model: GR_D32_AT_64, batch: envInt("BENCH_GR_BATCH", 4), rounds: envInt("BENCH_ROUNDS", 10) },
  ...(process.env.BENCH_TORCH_128 === "0"
    ? []
    : [
        {
          name: "GR_d32@128",
          model: { ...GR_D32_AT_64, resolution: 128, clsViewSize: 96 },
          batch: envInt("BENCH_GR_BATCH", 4),
          rounds: envInt("BENCH_ROUNDS", 4),
        },
      ]),
];

/** The TS model's parameters (TS layouts, float32) and the batch, in the twin's exchange format. */
function exportModel(dir: string, tok: MergeVQTokenizer, x: tf.Tensor4D, threads: number): string[] {
  const weights = tok.getWeights();
  const entries: Array<{ name: string; shape: number[]; data: Float32Array }> = [];
  for (const [name, v] of weights) entries.push({ name, shape: v.shape, data: v.dataSync() as Float32Array });
  entries.push({ name: "x", shape: x.shape, data: x.dataSync() as Float32Array });
  let offset = 0;
  const tensors = entries.map((e) => {
    const t = { name: e.name, shape: e.shape, offset };
    offset += e.data.length;
    return t;
  });
  const flat = new Float32Array(offset);
  for (const [i, e] of entries.entries()) flat.set(e.data, tensors[i].offset);
  const c = tok.config;
  const config = {
    widths: c.derived.widths,
    numResBlocks: c.numResBlocks,
    numResExtra: c.numResExtra,
    heads: c.derived.encHeads,
    decHeads: c.derived.decHeads,
    numDecBlocks: c.numDecBlocks,
    r: tok.scheduleFor(c.derived.K),
    entropyTemperature: c.entropyTemperature,
    threads,
    params: [...weights.keys()],
  };
  writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ config, tensors }));
  writeFileSync(path.join(dir, "tensors.bin"), new Uint8Array(flat.buffer));
  return [...weights.keys()];
}

/** Loss and gradients of the TS step on x, keyed by parameter name (parameters without gradient omitted). */
function tsLossAndGrads(tok: MergeVQTokenizer, x: tf.Tensor4D): { loss: number; grads: Map<string, Float32Array> } {
  const weights = tok.getWeights();
  const { value, grads } = tf.variableGrads(() => reconLfqLoss(tok, x), [...weights.values()]);
  const out = new Map<string, Float32Array>();
  for (const [name, v] of weights) if (grads[v.name]) out.set(name, grads[v.name].dataSync() as Float32Array);
  const loss = value.dataSync()[0];
  tf.dispose([value, grads]);
  return { loss, grads: out };
}

/** Loss and named gradients of the twin's `check` at one precision. */
function torchLossAndGrads(python: string, dir: string, dtype: "float32" | "float64") {
  const r = spawnSync(python, [path.join(here, "torch", "twin.py"), "check", dir, dtype], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`twin.py check ${dtype} failed (exit ${r.status}):\n${r.stderr}`);
  const info = JSON.parse(r.stdout.trim().split("\n").at(-1) as string) as {
    loss: number;
    grads: Array<{ name: string; size: number }>;
  };
  const flat = new Float32Array(readFileSync(path.join(dir, `torch-grads-${dtype}.bin`)).buffer.slice(0));
  const grads = new Map<string, Float32Array>();
  let off = 0;
  for (const g of info.grads) {
    grads.set(g.name, flat.subarray(off, off + g.size));
    off += g.size;
  }
  return { loss: info.loss, grads };
}

/**
 * Both float32 steps (TS and torch) against the twin in float64. Deep stacks at float32 drift from the exact
 * gradient by rounding alone (GR_d32: 24 transformer blocks, LFQ logits at 4/τ = 400), so the TS step must be
 * within the backend-check tolerances of float64, or no further from it than 2× torch's own float32 step is.
 */
function agreement(python: string, dir: string, tok: MergeVQTokenizer, x: tf.Tensor4D, name: string) {
  const ts = tsLossAndGrads(tok, x);
  const t32 = torchLossAndGrads(python, dir, "float32");
  const t64 = torchLossAndGrads(python, dir, "float64");
  const onlyTs = [...ts.grads.keys()].filter((n) => !t64.grads.has(n));
  const onlyTorch = [...t64.grads.keys()].filter((n) => !ts.grads.has(n));
  if (onlyTs.length || onlyTorch.length) {
    throw new Error(
      `${name}: gradient sets differ (TS only: ${onlyTs.join(", ")}; torch only: ${onlyTorch.join(", ")})`,
    );
  }
  const names = [...ts.grads.keys()];
  const asStep = (s: { loss: number; grads: Map<string, Float32Array> }): StepResult => ({
    loss: s.loss,
    grads: names.map((n) => s.grads.get(n) as Float32Array),
  });
  const ref = asStep(t64);
  const tsVs64 = compareSteps(asStep(ts), ref, T1_PARITY.rtol, T1_PARITY.l2tol);
  const torchVs64 = compareSteps(asStep(t32), ref, T1_PARITY.rtol, T1_PARITY.l2tol);
  const withinRounding = tsVs64.maxRel <= 2 * torchVs64.maxRel && tsVs64.l2Rel <= 2 * torchVs64.l2Rel;
  const problems =
    tsVs64.problems.length === 0 || withinRounding
      ? []
      : tsVs64.problems.map((p) => p.replace(/^grad (\d+)/, (_m, i) => `grad ${names[Number(i)]}`));
  return {
    tsLoss: ts.loss,
    torchLoss: t32.loss,
    exactLoss: t64.loss,
    tensors: names.length,
    tsVs64,
    torchVs64,
    problems,
  };
}

/** The twin's `serve` process: one train step per request, its own timing in the reply. */
class TorchServer {
  private readonly child;
  private readonly lines: AsyncIterator<string>;
  constructor(python: string, dir: string) {
    this.child = spawn(python, [path.join(here, "torch", "twin.py"), "serve", dir], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    this.lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }
  async read(): Promise<Record<string, unknown>> {
    const { value, done } = await this.lines.next();
    if (done) throw new Error("twin.py serve exited");
    return JSON.parse(value) as Record<string, unknown>;
  }
  async step(): Promise<number> {
    this.child.stdin.write("step\n");
    return (await this.read()).s as number;
  }
  close(): void {
    this.child.stdin.end();
  }
}

const emit = (o: Record<string, unknown>): void => {
  console.log(JSON.stringify({ bench: "torch", ...o }));
};

async function main(): Promise<void> {
  if (process.argv[2] === "export") {
    // Profiling aid: `npx tsx bench/torch.bench.ts export T1|GR_d32@64|GR_d32@128 DIR`, then
    // `<venv-torch>/bin/python bench/torch/twin.py profile DIR` (hack/tfjs-native/README.md).
    const cfg = CONFIGS.find((c) => c.name === process.argv[3]);
    if (!cfg || !process.argv[4]) throw new Error(`usage: export ${CONFIGS.map((c) => c.name).join("|")} DIR`);
    await startBackend("tensorflow");
    const tok = new MergeVQTokenizer(cfg.model);
    const res = tok.config.resolution;
    const x = tf.tensor4d(lcg(cfg.batch * res * res * 3, 7), [cfg.batch, res, res, 3]);
    mkdirSync(process.argv[4], { recursive: true });
    exportModel(process.argv[4], tok, x, envInt("TF_NUM_INTRAOP_THREADS", os.cpus().length));
    return;
  }
  const setup = spawnSync(path.join(here, "torch", "setup.sh"), {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (setup.status !== 0) throw new Error("bench/torch/setup.sh failed");
  const python = setup.stdout.trim().split("\n").at(-1) as string;
  const started = await startBackend("tensorflow");
  if (!started.native) throw new Error("the native tfjs backend did not start (run `make setup`)");
  const threads = envInt("TF_NUM_INTRAOP_THREADS", os.cpus().length);
  const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model ?? "?"})`;
  let failed = false;
  for (const cfg of CONFIGS) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "mergevq-twin-"));
    const tok = new MergeVQTokenizer(cfg.model);
    const res = tok.config.resolution;
    const x = tf.tensor4d(lcg(cfg.batch * res * res * 3, 7), [cfg.batch, res, res, 3]);
    const desc = `${cfg.name} ${res}² batch=${cfg.batch}, MSE+0.1·entropy+0.25·commitment, Adam, fp32, random weights, ${threads} threads, ${machine}`;
    try {
      exportModel(dir, tok, x, threads);
      const a = agreement(python, dir, tok, x, cfg.name);
      for (const [backend, c] of [
        ["tensorflow", a.tsVs64],
        ["torch", a.torchVs64],
      ] as const) {
        emit({
          metric: "grad_error_vs_float64",
          value: c.l2Rel,
          unit: "L2 rel",
          max_rel: c.maxRel,
          backend,
          tensors: a.tensors,
          ok: a.problems.length === 0,
          config: desc,
        });
      }
      log(
        `${cfg.name}: loss TS ${a.tsLoss} torch ${a.torchLoss} float64 ${a.exactLoss}; ${a.tensors} gradients vs float64: ` +
          `TS max rel ${a.tsVs64.maxRel.toExponential(2)} L2 ${a.tsVs64.l2Rel.toExponential(2)}, ` +
          `torch max rel ${a.torchVs64.maxRel.toExponential(2)} L2 ${a.torchVs64.l2Rel.toExponential(2)}`,
      );
      if (a.problems.length > 0) {
        log(`${cfg.name}: TS and the torch twin DISAGREE:\n  ${a.problems.slice(0, 20).join("\n  ")}`);
        failed = true;
        continue;
      }
      const step = benchTrainStep(tok, x);
      const server = new TorchServer(python, dir);
      const hello = await server.read();
      const tsT: number[] = [];
      const torchT: number[] = [];
      step.step(); // warm-up both
      await server.step();
      for (let r = 0; r < cfg.rounds; r++) {
        const t0 = performance.now();
        step.step();
        tsT.push((performance.now() - t0) / 1000);
        torchT.push(await server.step());
        log(
          `  ${cfg.name} round ${r + 1}/${cfg.rounds}: TS ${tsT.at(-1)?.toFixed(3)} s, torch ${torchT.at(-1)?.toFixed(3)} s`,
        );
      }
      server.close();
      step.dispose();
      const ips = (ts: number[]) => ts.map((s) => cfg.batch / s);
      const side = (backend: string, xs: number[], extra: Record<string, unknown>) => {
        const v = ips(xs);
        emit({
          metric: "train_step_images_per_s",
          value: quantile(v, 0.5),
          p25: quantile(v, 0.25),
          p75: quantile(v, 0.75),
          n: v.length,
          unit: "img/s",
          backend,
          ...extra,
          config: desc,
        });
        return quantile(v, 0.5);
      };
      const tsIps = side("tensorflow", tsT, {
        libtensorflow: started.native.tensorflow,
        onednn: started.native.oneDnn,
        fused_ops: started.native.fusedOps && "isa" in started.native.fusedOps ? started.native.fusedOps.isa : "off",
      });
      const torchIps = side("torch", torchT, { torch: hello.torch, torch_threads: hello.threads });
      emit({ metric: "ts_over_torch", value: tsIps / torchIps, unit: "x", config: desc });
      log(
        `${cfg.name}: TS ${tsIps.toFixed(2)} img/s, torch ${torchIps.toFixed(2)} img/s → ts_over_torch ${(tsIps / torchIps).toFixed(3)}`,
      );
    } finally {
      tf.dispose(x);
      tok.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (failed) {
    log("torch bench: the twin and the TS model disagree (see above)");
    process.exit(1);
  }
}

await main();
