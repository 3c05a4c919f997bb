// Worker for test/integration/dist-tokenizer.test.ts: trains the T0 tokenizer for DIST_EQ_STEPS optimiser
// steps on a FIXED global batch sequence and writes its final state, so the test can compare
//   ddp   — WORLD_SIZE 2 (rendezvous env from the test), rank r trains on rows [r·b, (r+1)·b) of each global
//           batch of 2b images, through the real process group (broadcast, gradient averaging, LeCam reduce);
//   ref   — one process, batch 2b (the whole global batch);
//   local — one process, batch b, rows [r·b, (r+1)·b) (no averaging: the negative control).
// The global batches are the held-out photos of the dataset in file order, centre crops (no augmentation),
// with teacher/student views, so every process sees exactly the same pixels. Two batch-coupled terms are
// switched off because a rank computes them over its own micro-batch (as upstream DDP does), so they are not
// the same function of the global batch (documented in tokenizerTrainer.ts):
//   - the LFQ codebook-entropy term (entropy of the batch-mean code distribution): batchMaximizationWeight 0;
//   - the generator's GAN term (weights.generator 0): the PatchGAN discriminator uses BatchNorm with batch
//     statistics, so D(x̂) depends on which images share the micro-batch. D itself still trains (hinge +
//     LeCam, gradients averaged), it just does not feed G; the test compares the G weights.
// Everything else (L1, perceptual, per-sample entropy, commitment, CLS alignment) stays on.
//
// env: DIST_EQ_OUT (dir), DIST_EQ_MODE ddp|ref|local, DIST_EQ_STEPS, DIST_EQ_BATCH (b), DIST_EQ_DATA (photo
//      folder), DIST_EQ_SLICE (local mode: which half), plus the rendezvous env for ddp.
// Output: <out>/<mode>-rank<r>.bin = the checkpoint tensors (g/, d/, ema/, adam_*) as float32 in sorted-name
//         order, <out>/<mode>-rank<r>.json = {names, sizes, losses}.
import { writeFileSync } from "node:fs";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { createLogger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { type BatchSource, disposeBatch, LocalFolderSource, type TrainBatch } from "../data/localFolder.ts";
import { rankFromEnv } from "../data/rank.ts";
import { configHash, initProcessGroup } from "../dist/processGroup.ts";
import { buildTrainer } from "./setup.ts";

const env = process.env;
const mode = env.DIST_EQ_MODE ?? "ref";
const steps = Number(env.DIST_EQ_STEPS ?? 3);
const b = Number(env.DIST_EQ_BATCH ?? 4);
const out = env.DIST_EQ_OUT as string;
const dataDir = env.DIST_EQ_DATA as string;
const { rank, worldSize } = rankFromEnv();
const slice = mode === "ddp" ? rank : mode === "local" ? Number(env.DIST_EQ_SLICE ?? 0) : 0;
const perProcess = mode === "ref" ? 2 * b : b;
const log = createLogger({ component: "dist-eq", rank }, { level: (env.LOG_LEVEL as "info") ?? "warn" });

/** Rows [slice·n, (slice+1)·n) of each global batch of 2b fixed images. */
class SlicedSource implements BatchSource {
  readonly dataErrors: Record<string, number> = {};
  private step = 0;
  constructor(private readonly global: LocalFolderSource) {}
  get size() {
    return this.global.size;
  }
  get epochSize() {
    return 1_000_000;
  }
  async next(n: number): Promise<TrainBatch> {
    if (n !== perProcess) throw new Error(`asked for ${n} images, expected ${perProcess}`);
    const g = await this.global.next(2 * b);
    this.step++;
    const start = mode === "ref" ? 0 : slice * b;
    const cut = <T extends tf.Tensor4D | undefined>(t: T): T =>
      (t ? tf.slice(t, [start, 0, 0, 0], [n, -1, -1, -1]) : undefined) as T;
    const res: TrainBatch = {
      image: cut(g.image),
      teacherView: cut(g.teacherView),
      studentView: cut(g.studentView),
      labels: g.labels.slice(start, start + n),
      files: g.files.slice(start, start + n),
    };
    disposeBatch(g);
    return res;
  }
  getState() {
    return { epoch: 0, step: this.step };
  }
  setState() {}
}

async function main(): Promise<void> {
  await selectBackend({ log });
  const model = { preset: "T0", train: { batchMaximizationWeight: 0 } };
  const trainCfg = {
    steps,
    batchSize: perProcess,
    accum: 1,
    lr: 1e-3,
    weights: { generator: 0 },
    eps: Number(env.DIST_EQ_EPS ?? 1e-4),
    seed: 3,
    logEvery: 1,
    evalImages: 0,
    checkpointInterval: 0,
    progressIntervalSeconds: 0,
  };
  const global = await LocalFolderSource.open({
    root: dataDir,
    split: "val",
    size: 32,
    teacherSize: 28,
    studentSize: 28,
    augment: false,
    seed: 0,
  });
  const pgWorld = mode === "ddp" ? worldSize : 1;
  const built = await buildTrainer({
    model,
    train: trainCfg,
    data: dataDir,
    out: path.join(out, `${mode}-${slice}`),
    log,
    rank: mode === "ddp" ? rank : 0,
    worldSize: pgWorld,
    source: new SlicedSource(global),
  });
  const trainer = built.trainer;
  if (mode === "ddp") {
    const pg = await initProcessGroup({
      configHash: configHash({ model, trainCfg, b }),
      step: 0,
      log,
      silenceTimeoutMs: 120_000,
    });
    trainer.attachProcessGroup(pg);
    await trainer.syncFromRank0();
    const losses = await trainer.run();
    await pg.close();
    dump(trainer.toCheckpoint().tensors, losses);
  } else {
    const losses = await trainer.run();
    dump(trainer.toCheckpoint().tensors, losses);
  }
}

function dump(tensors: Map<string, { data: Float32Array | ArrayLike<number> }>, losses: Record<string, number>): void {
  const names = [...tensors.keys()].sort();
  const parts = names.map((n) => Float32Array.from(tensors.get(n)?.data as ArrayLike<number>));
  const total = parts.reduce((a, p) => a + p.length, 0);
  const all = new Float32Array(total);
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  const tag = `${mode}-rank${mode === "ddp" ? rank : slice}`;
  writeFileSync(path.join(out, `${tag}.bin`), Buffer.from(all.buffer));
  writeFileSync(path.join(out, `${tag}.json`), JSON.stringify({ names, sizes: parts.map((p) => p.length), losses }));
  process.stdout.write(`${JSON.stringify({ done: tag, losses })}\n`);
}

main().then(
  () => process.exit(0),
  (e: Error) => {
    process.stderr.write(`dist-eq worker failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
