// Training-loop tests on T0 with a small synthetic ImageNet folder (generated pixels; the real-photo
// convergence test is test/integration/tokenizer-train.test.ts).
import assert from "node:assert/strict";
import { mkdtemp, readFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { Progress } from "../../../common/src/contract.ts";
import { createLogger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { writeSyntheticImageNet } from "../data/testImages.ts";
import { CheckpointError, latestCheckpoint, loadCheckpoint } from "../io/checkpoint.ts";
import { candidateForBatch } from "../tokenizer/candidates.ts";
import { buildTrainer } from "./setup.ts";
import { NonFiniteLossError } from "./tokenizerTrainer.ts";

const log = createLogger({ component: "trainer-test" }, { level: "warn" });
let data = "";
let backend = "";

before(async () => {
  backend = (await selectBackend({ log })).name;
  const root = await mkdtemp(path.join(os.tmpdir(), "mvq-train-data-"));
  await writeSyntheticImageNet(root, 3, 6, "train");
  await writeSyntheticImageNet(root, 3, 2, "val");
  data = root;
});

const TRAIN = {
  batchSize: 2,
  accum: 2,
  logEvery: 100,
  evalImages: 0,
  checkpointInterval: 0,
  progressIntervalSeconds: 0,
};

async function build(
  steps: number,
  extra: Record<string, unknown> = {},
  dirs: { ckpt?: string; status?: string } = {},
) {
  const out = await mkdtemp(path.join(os.tmpdir(), "mvq-train-out-"));
  return buildTrainer({
    model: "T0",
    train: { ...TRAIN, steps, ...extra },
    data,
    out,
    log,
    checkpointDir: dirs.ckpt,
    statusUri: dirs.status,
    backend,
  });
}

function snapshot(b: Awaited<ReturnType<typeof build>>): Map<string, Buffer> {
  const c = b.trainer.toCheckpoint();
  return new Map([...c.tensors].map(([n, t]) => [n, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)]));
}

test("resume is bit-identical: 4 steps straight == 2 + save/load + 2 (T0, accum 2)", async () => {
  const straight = await build(4);
  await straight.trainer.run();
  const a = snapshot(straight);

  const ckptDir = await mkdtemp(path.join(os.tmpdir(), "mvq-train-ckpt-"));
  const first = await build(2, {}, { ckpt: ckptDir });
  await first.trainer.run();
  const uri = await latestCheckpoint(ckptDir);
  assert.ok(uri?.endsWith("step-000000002.ckpt"), String(uri));
  const second = await build(4, {}, { ckpt: ckptDir });
  await second.trainer.resume(uri as string);
  assert.equal(second.trainer.step, 2);
  await second.trainer.run();
  const b = snapshot(second);

  assert.equal(second.trainer.step, 4);
  assert.equal(second.trainer.microStep, straight.trainer.microStep);
  assert.deepEqual(second.trainer.lecam.getState(), straight.trainer.lecam.getState());
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  const prefixes = new Set([...a.keys()].map((k) => k.split("/")[0]));
  assert.deepEqual([...prefixes].sort(), ["adam_d", "adam_g", "d", "ema", "g"]);
  const differing = [...a.keys()].filter((k) => !a.get(k)?.equals(b.get(k) as Buffer));
  assert.deepEqual(differing, [], `tensors differ after resume: ${differing.slice(0, 5).join(", ")}`);
  // training actually changed the weights (the comparison is not vacuous)
  const init = snapshot(await build(4));
  const changed = [...a.keys()].filter((k) => k.startsWith("g/") && !a.get(k)?.equals(init.get(k) as Buffer));
  assert.ok(
    changed.length > 0.9 * [...a.keys()].filter((k) => k.startsWith("g/")).length,
    `only ${changed.length} G tensors changed`,
  );
});

test("NaN guard stops with a clear error, applies no update and keeps the last good checkpoint", async () => {
  const ckptDir = await mkdtemp(path.join(os.tmpdir(), "mvq-train-ckpt-"));
  const statusDir = await mkdtemp(path.join(os.tmpdir(), "mvq-train-status-"));
  const b = await build(5, { checkpointInterval: 1, keepLast: 2 }, { ckpt: ckptDir, status: statusDir });
  const next = b.data.next.bind(b.data);
  let calls = 0;
  b.data.next = async (n: number) => {
    const batch = await next(n);
    if (++calls > 4) {
      // From the 3rd optimiser step on, the images contain a NaN (a corrupt input / diverged model).
      const px = (batch.image.dataSync() as Float32Array).slice();
      px[0] = Number.NaN;
      const poisoned = tf.tensor4d(px, batch.image.shape);
      batch.image.dispose();
      batch.image = poisoned;
    }
    return batch;
  };
  const err = await b.trainer.run().then(
    () => assert.fail("expected NonFiniteLossError"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof NonFiniteLossError, String(err));
  assert.equal(err.step, 2);
  assert.match(err.message, /non-finite loss\/gradient at step 2: .*last good checkpoint: .*step-000000002\.ckpt/);
  assert.equal(b.trainer.step, 2);
  // the live weights are exactly those of the last good checkpoint (no update was applied)
  const ckpt = await loadCheckpoint(ckptDir);
  assert.equal(ckpt.meta.step, 2);
  const live = snapshot(b);
  for (const [n, t] of ckpt.tensors) {
    if (!n.startsWith("g/") && !n.startsWith("d/")) continue;
    assert.ok(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(live.get(n) as Buffer), n);
  }
  const progress = Progress.parse(JSON.parse(await readFile(path.join(statusDir, "progress.json"), "utf8")));
  assert.equal(progress.step, 2);
  assert.equal(progress.totalSteps, 5);
  assert.ok(progress.lastCheckpoint?.endsWith("step-000000002.ckpt"));
  assert.ok(Number.isFinite(progress.losses?.rec));
});

test("a checkpoint with a different architecture is refused with the differing field", async () => {
  const ckptDir = await mkdtemp(path.join(os.tmpdir(), "mvq-train-ckpt-"));
  const a = await build(1, {}, { ckpt: ckptDir });
  await a.trainer.run();
  const other = await build(1, { discriminator: { ndf: 8, nLayers: 2 } });
  await assert.rejects(
    other.trainer.resume(ckptDir),
    (e: Error) => e instanceof CheckpointError && /discriminator\.ndf: checkpoint=16 current=8/.test(e.message),
  );
});

/** The checkpoint's tensor `name` as float64 values. */
function values(b: Awaited<ReturnType<typeof build>>, name: string): Float64Array {
  const t = b.trainer.toCheckpoint().tensors.get(name);
  assert.ok(t, `checkpoint has ${name}`);
  return Float64Array.from(t.data);
}

test("the EMA of a window's last micro-batch is taken after the optimiser step (reference order)", async () => {
  // decay 0.5 makes the order visible: after one step of 2 micro-batches the EMA is (w0 + w1) / 2 when it is
  // updated after the step; updated before it, it would still equal w0.
  const b = await build(1, { emaDecay: 0.5 });
  const name = [...b.trainer.toCheckpoint().tensors.keys()].find((n) => n.startsWith("g/")) as string;
  const w0 = values(b, name);
  await b.trainer.trainStep();
  const w1 = values(b, name);
  const ema = values(b, `ema/${name.slice(2)}`);
  let moved = 0;
  for (let i = 0; i < w0.length; i++) {
    moved = Math.max(moved, Math.abs(w1[i] - w0[i]));
    assert.ok(Math.abs(ema[i] - (w0[i] + w1[i]) / 2) <= 1e-6, `${name}[${i}]: ema ${ema[i]} w0 ${w0[i]} w1 ${w1[i]}`);
  }
  assert.ok(moved > 1e-6, "the step moved the weights");
  b.trainer.dispose();
});

test("the discriminator is not run or stepped while the GAN is off (weight 0, or before discStart)", async () => {
  const off = await build(2, { weights: { generator: 0 } });
  const d0 = values(off, "d/" + [...off.trainer.disc.getWeights().keys()][0]);
  let last = await off.trainer.trainStep();
  last = await off.trainer.trainStep();
  const ck = off.trainer.toCheckpoint();
  assert.equal((ck.meta.adamD as { t: number }).t, 0, "no Adam step on D");
  assert.equal((ck.meta.adamG as { t: number }).t, 2);
  assert.deepEqual(ck.meta.lecam, { emaReal: 0, emaFake: 0 });
  assert.deepEqual(values(off, "d/" + [...off.trainer.disc.getWeights().keys()][0]), d0, "D unchanged");
  assert.equal(last.d_hinge, undefined, "no discriminator loss computed");
  off.trainer.dispose();

  const late = await build(2, { discStart: 1 });
  const dName = "d/" + [...late.trainer.disc.getWeights().keys()][0];
  const before = values(late, dName);
  assert.equal(late.trainer.discriminatorActive(), false);
  await late.trainer.trainStep();
  assert.deepEqual(values(late, dName), before, "step 0 < discStart: D unchanged");
  assert.equal(late.trainer.discriminatorActive(), true);
  const second = await late.trainer.trainStep();
  assert.ok(Number.isFinite(second.d_hinge), "from discStart on D trains");
  assert.notDeepEqual(values(late, dName), before);
  assert.equal((late.trainer.toCheckpoint().meta.adamD as { t: number }).t, 1);
  late.trainer.dispose();
});

test("the keep count K cycles with the batch index within the epoch and restarts every epoch", async () => {
  // 18 training images, batch 2: 9 micro-batches per epoch. Over two epochs the in-epoch index runs 0..8 twice;
  // a global micro-batch counter would run 0..17 and reach other candidates (K 36 from index 13 on).
  const b = await build(18, { accum: 1 });
  const cands = b.modelConfig.derived.candidates;
  const perEpoch = 9;
  assert.equal(b.trainer.stepsPerEpoch, perEpoch);
  const expected = Array.from({ length: 18 }, (_, s) => candidateForBatch(cands, s % perEpoch).K);
  const global = Array.from({ length: 18 }, (_, s) => candidateForBatch(cands, s).K);
  assert.notDeepEqual(expected, global, "the fixture distinguishes the two indexings");
  const got: number[] = [];
  for (let s = 0; s < 18; s++) got.push((await b.trainer.trainStep()).K);
  assert.deepEqual(got, expected);
  b.trainer.dispose();
});
