// Child process for test/integration/dist-*.test.ts and bench/allreduce.bench.ts: joins the process group
// from the rendezvous env and runs one scenario. Results go to files under DIST_TEST_OUT; progress lines
// (JSON) to stdout. Exit code 0 only when the scenario completed.
//
//   tsx trainer/src/dist/testWorker.ts <rendezvous|collectives|loop|mlp|bench> [--local-rank N]
import { writeFileSync } from "node:fs";
import path from "node:path";
import type * as TF from "@tensorflow/tfjs";
import { EXIT_CODE } from "../../../common/src/contract.ts";
import { initProcessGroup, type ProcessGroup } from "./processGroup.ts";
import { testData } from "./testing.ts";
import { isPeerFailure } from "./transport.ts";

const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`);
const out = (name: string) => path.join(process.env.DIST_TEST_OUT ?? ".", name);
const bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const int = (name: string, d: number) => (process.env[name] ? Number(process.env[name]) : d);

async function collectives(pg: ProcessGroup): Promise<void> {
  const n = int("DIST_TEST_N", 100_003);
  const mean = await pg.allReduceMean(testData(pg.rank, n));
  writeFileSync(out(`allreduce-rank${pg.rank}.bin`), bytes(mean));
  const root = pg.worldSize - 1;
  const arrays =
    pg.rank === root ? [testData(1000, 70_000), testData(1001, 3)] : [new Float32Array(70_000), new Float32Array(3)];
  await pg.broadcast(arrays, root);
  writeFileSync(out(`broadcast-rank${pg.rank}.bin`), Buffer.concat(arrays.map((a) => Buffer.from(bytes(a)))));
  const sc = await pg.allReduceScalars([pg.rank, 1], "sum");
  say({ rank: pg.rank, scalars: sc });
}

async function loop(pg: ProcessGroup): Promise<void> {
  const x = testData(pg.rank, int("DIST_TEST_N", 1 << 20));
  for (let i = 0; ; i++) {
    await pg.allReduceMean(x);
    if (i === 2) say({ rank: pg.rank, looping: true });
  }
}

async function mlp(pg: ProcessGroup): Promise<void> {
  const tf = await import("@tensorflow/tfjs");
  const { averageGradients, broadcastVariables, allReduceLosses } = await import("./ddp.ts");
  await tf.setBackend("cpu");
  const [D, H, O] = [16, 32, 4];
  const steps = int("DIST_TEST_STEPS", 8);
  const b = int("DIST_TEST_BATCH", 8); // per rank
  const G = b * pg.worldSize;
  const init = (seed: number, shape: number[], scale: number) =>
    tf.mul(
      tf.tensor(
        testData(
          seed,
          shape.reduce((a, c) => a * c, 1),
        ),
        shape,
      ),
      scale / 4,
    );
  // Initial weights differ per rank on purpose: broadcastVariables must make them equal to rank 0's.
  const build = (prefix: string) =>
    new Map<string, TF.Variable>([
      ["b1", tf.variable(tf.zeros([H]), true, `${prefix}b1`)],
      ["b2", tf.variable(tf.zeros([O]), true, `${prefix}b2`)],
      ["w1", tf.variable(init(10 + pg.rank, [D, H], 1 / Math.sqrt(D)), true, `${prefix}w1`)],
      ["w2", tf.variable(init(20 + pg.rank, [H, O], 1 / Math.sqrt(H)), true, `${prefix}w2`)],
    ]);
  const vars = build("ddp/");
  await broadcastVariables(pg, vars);
  const local = build("local/"); // negative control: same start (copied below), no gradient averaging
  for (const [k, v] of local) v.assign(vars.get(k) as TF.Variable);
  const optDdp = tf.train.adam(0.01);
  const optLocal = tf.train.adam(0.01);
  // Global batch of step s: G rows; rank r uses rows [r·b, (r+1)·b) — the same data order as 1 rank × G.
  const batch = (s: number) => {
    const X = tf.tensor(testData(5000 + s, G * D), [G, D]);
    const Y = tf.tensor(testData(9000 + s, G * O), [G, O]);
    const lo = pg.worldSize === 1 ? 0 : pg.rank * b;
    return { x: tf.slice(X, [lo, 0], [b, D]), y: tf.slice(Y, [lo, 0], [b, O]) };
  };
  const lossOf = (m: Map<string, TF.Variable>, x: TF.Tensor, y: TF.Tensor) => {
    const h = tf.tanh(tf.add(tf.matMul(x as TF.Tensor2D, m.get("w1") as TF.Tensor2D), m.get("b1") as TF.Tensor));
    const p = tf.add(tf.matMul(h, m.get("w2") as TF.Tensor2D), m.get("b2") as TF.Tensor);
    return tf.mean(tf.square(tf.sub(p, y))) as TF.Scalar;
  };
  let lastLoss = 0;
  for (let s = 0; s < steps; s++) {
    const { x, y } = batch(s);
    const { value, grads } = tf.variableGrads(() => lossOf(vars, x, y), [...vars.values()]);
    const byName = new Map([...vars].map(([k, v]) => [k, grads[v.name]]));
    const avg = await averageGradients(pg, byName, { disposeInputs: true });
    optDdp.applyGradients([...vars].map(([k, v]) => ({ name: v.name, tensor: avg.get(k) as TF.Tensor })));
    tf.dispose([...avg.values()]);
    lastLoss = (await allReduceLosses(pg, { loss: (await value.data())[0] })).loss;
    value.dispose();
    const l = tf.variableGrads(() => lossOf(local, x, y), [...local.values()]);
    optLocal.applyGradients(Object.entries(l.grads).map(([name, tensor]) => ({ name, tensor })));
    tf.dispose(Object.values(l.grads));
    tf.dispose([l.value, x, y]);
  }
  const flat = (m: Map<string, TF.Variable>) =>
    Buffer.concat(
      [...m.keys()].sort().map((k) => Buffer.from(bytes((m.get(k) as TF.Variable).dataSync() as Float32Array))),
    );
  const tag = process.env.DIST_TEST_TAG ?? "mlp";
  writeFileSync(out(`${tag}-rank${pg.rank}.bin`), flat(vars));
  writeFileSync(out(`${tag}-local-rank${pg.rank}.bin`), flat(local));
  say({ rank: pg.rank, loss: lastLoss });
}

/**
 * All-reduce throughput for each size in DIST_BENCH_SIZES_MB, in place (`inPlace: true`, no output
 * allocation) and returning a new array; rank 0 prints one JSON line per (size, variant).
 */
async function bench(pg: ProcessGroup): Promise<void> {
  const sizes = (process.env.DIST_BENCH_SIZES_MB ?? "1,16,64").split(",").map(Number);
  const iters = int("DIST_BENCH_ITERS", 5);
  for (const mb of sizes) {
    const x = testData(pg.rank, (mb << 20) / 4);
    for (const inPlace of [true, false]) {
      await pg.allReduceMean(x, { inPlace }); // warm-up
      await pg.barrier();
      const t0 = performance.now();
      for (let i = 0; i < iters; i++) await pg.allReduceMean(x, { inPlace });
      const s = (performance.now() - t0) / 1000 / iters;
      if (pg.isMain) say({ sizeMB: mb, inPlace, seconds: s, GBps: x.byteLength / s / 1e9 });
    }
  }
}

const mode = process.argv[2];
try {
  const pg = await initProcessGroup({
    configHash: process.env.DIST_TEST_HASH ?? "test",
    step: int("DIST_TEST_STEP", 0),
    bucketBytes: process.env.DIST_TEST_BUCKET ? Number(process.env.DIST_TEST_BUCKET) : undefined,
  });
  say({
    rank: pg.rank,
    worldSize: pg.worldSize,
    localRank: pg.localRank,
    ready: true,
    cuda: process.env.CUDA_VISIBLE_DEVICES ?? null,
    podIp: process.env.MERGEVQ_POD_IP ?? null,
    ...pg.neighbours,
  });
  if (mode === "collectives") await collectives(pg);
  else if (mode === "loop") await loop(pg);
  else if (mode === "mlp") await mlp(pg);
  else if (mode === "bench") await bench(pg);
  else if (mode !== "rendezvous") throw new Error(`unknown mode ${mode}`);
  await pg.close();
  process.exit(0);
} catch (e) {
  const err = e as Error & { code?: string };
  process.stderr.write(`${JSON.stringify({ error: err.message, code: err.code ?? null })}\n`);
  process.exit(isPeerFailure(e) ? EXIT_CODE.PEER_FAILED : EXIT_CODE.FAILED);
}
