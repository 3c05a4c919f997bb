// Frozen tokenizer for Stage II: a T0 tokenizer-train checkpoint (one real training step, so EMA ≠ raw weights)
// is rebuilt with its EMA weights, frozen, and encodes exactly like the trainer's EMA model; wrong kinds and
// missing tensors are reported with the checkpoint URI.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { createLogger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { writeSyntheticImageNet } from "../data/testImages.ts";
import type { Checkpoint } from "../io/checkpoint.ts";
import { buildTrainer } from "../train/setup.ts";
import { tokenizerFromCheckpoint } from "./frozen.ts";

const log = createLogger({ component: "frozen-tokenizer-test" }, { level: "warn" });
let ckpt: Checkpoint;
let built: Awaited<ReturnType<typeof buildTrainer>>;

before(async () => {
  const backend = (await selectBackend({ log })).name;
  const data = await mkdtemp(path.join(os.tmpdir(), "mvq-frozen-data-"));
  await writeSyntheticImageNet(data, 2, 4, "train");
  await writeSyntheticImageNet(data, 2, 2, "val");
  built = await buildTrainer({
    model: "T0",
    train: {
      steps: 1,
      batchSize: 2,
      accum: 1,
      emaDecay: 0.5,
      logEvery: 100,
      evalImages: 0,
      checkpointInterval: 0,
      progressIntervalSeconds: 0,
    },
    data,
    out: await mkdtemp(path.join(os.tmpdir(), "mvq-frozen-out-")),
    log,
    backend,
  });
  await built.trainer.run();
  ckpt = built.trainer.toCheckpoint();
});

test("installs the EMA weights, freezes them and encodes like the trainer's EMA model", async () => {
  const { tokenizer, weights, step } = tokenizerFromCheckpoint(ckpt, "mem://t0");
  assert.equal(weights, "ema");
  assert.equal(step, 1);
  let differs = 0;
  for (const [name, v] of tokenizer.getWeights()) {
    const ema = ckpt.tensors.get(`ema/${name}`);
    const raw = ckpt.tensors.get(`g/${name}`);
    assert.ok(ema && raw, name);
    assert.deepEqual(v.dataSync(), ema.data, `${name} must hold the EMA weights`);
    if (raw.data.some((x, i) => x !== ema.data[i])) differs++;
    assert.equal(v.trainable, false, `${name} must be frozen`);
  }
  assert.ok(differs > 0, "after a training step with EMA decay 0.5 some EMA weights differ from the raw ones");
  const x = tf.randomUniform([2, 32, 32, 3], -1, 1, "float32", 7) as tf.Tensor4D;
  const L = tokenizer.config.derived.L;
  const mine = tokenizer.encode(x, L, { training: false });
  const theirs = await built.trainer.withEmaWeights(async () =>
    built.model.encode(x, L, { training: false }).indices.arraySync(),
  );
  assert.deepEqual(mine.indices.arraySync(), theirs);
  tf.dispose([x, mine.z, mine.zq, mine.indices, mine.source, mine.groups, mine.sizes, mine.cls]);
  tokenizer.dispose();
});

test("rejects other checkpoint kinds and missing tensors, naming the URI and tensor", () => {
  assert.throws(
    () => tokenizerFromCheckpoint({ ...ckpt, kind: "ar-train" }, "s3://b/ar.ckpt"),
    /s3:\/\/b\/ar\.ckpt: not a tokenizer checkpoint \(kind "ar-train"/,
  );
  const first = [...ckpt.tensors.keys()].find((k) => k.startsWith("g/")) as string;
  const tensors = new Map([...ckpt.tensors].filter(([k]) => k !== first && k !== `ema/${first.slice(2)}`));
  assert.throws(
    () => tokenizerFromCheckpoint({ ...ckpt, tensors }, "file:///x.ckpt"),
    new RegExp(`file:///x\\.ckpt: missing tensor g/${first.slice(2).replaceAll(".", "\\.")}`),
  );
});
