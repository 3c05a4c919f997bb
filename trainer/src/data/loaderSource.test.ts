import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { createStorage } from "../io/s3.ts";
import { isShardDataset, valShardsFor } from "./dataset.ts";
import { readImageNetSplit } from "./imagenet.ts";
import { LoaderSource } from "./loaderSource.ts";
import { disposeBatch } from "./localFolder.ts";
import { packImageNet } from "./shards.ts";
import { writeSyntheticImageNet } from "./testImages.ts";

let dir: string;
let shards: string;
before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "mvq-loader-src-"));
  // 3 classes × 10 = 30 images in shards of 4: 8 shards (7 × 4 + 1 × 2), val split at <shards>/val.
  await writeSyntheticImageNet(path.join(dir, "folder"), 3, 10);
  await writeSyntheticImageNet(path.join(dir, "folder"), 3, 2, "val");
  shards = path.join(dir, "shards");
  const opts = { samplesPerShard: 4, seed: 0 };
  await packImageNet(readImageNetSplit(path.join(dir, "folder"), "train"), shards, createStorage(shards), {
    ...opts,
    split: "train",
  });
  const val = path.join(shards, "val");
  await packImageNet(readImageNetSplit(path.join(dir, "folder"), "val"), val, createStorage(val), {
    ...opts,
    split: "val",
  });
});
after(() => rm(dir, { recursive: true, force: true }));

const open = (rank: number, worldSize: number, batchSize = 3) =>
  LoaderSource.open({
    source: { kind: "shards", uri: shards },
    mode: "train",
    batchSize,
    views: { recon: 16, teacher: 12, student: 12 },
    rank,
    worldSize,
    seed: 5,
  });

async function keys(src: LoaderSource, batches: number, n: number): Promise<string[][]> {
  const out: string[][] = [];
  for (let i = 0; i < batches; i++) {
    const b = await src.next(n);
    assert.deepEqual(b.image.shape, [n, 16, 16, 3]);
    assert.deepEqual(b.teacherView?.shape, [n, 12, 12, 3]);
    out.push(b.files);
    disposeBatch(b);
  }
  return out;
}

test("shard datasets are detected and their val split found", async () => {
  assert.equal(await isShardDataset(shards), true);
  assert.equal(await isShardDataset(path.join(dir, "folder")), false);
  assert.equal(await valShardsFor(shards), path.join(shards, "val"));
  assert.equal(await valShardsFor(path.join(shards, "val")), undefined);
});

test("ranks get disjoint samples and the same number of batches per epoch", async () => {
  const [a, b] = await Promise.all([open(0, 2), open(1, 2)]);
  // 8 shards / 2 ranks: worst case 4 shards = 3×4 + 2 = 14 samples → 4 batches of 3 on every rank.
  assert.equal(a.stepsCap, 4);
  assert.equal(b.stepsCap, 4);
  const ka = (await keys(a, 4, 3)).flat();
  const kb = (await keys(b, 4, 3)).flat();
  assert.equal(new Set([...ka, ...kb]).size, 24, "ranks must not share samples within an epoch");
  assert.equal(a.getState().epoch, 0);
  // The next batch starts epoch 1 on both ranks (cap reached).
  await keys(a, 1, 3);
  assert.equal(a.getState().epoch, 1);
  a.close();
  b.close();
});

test("state round trip: a resumed source yields the same samples, also mid-batch", async () => {
  const a = await open(0, 1, 4);
  await keys(a, 2, 3); // 6 samples: 1 batch of 4 + 2 of the next
  const state = a.getState();
  assert.deepEqual(state, { kind: "loader", epoch: 0, batch: 1, offset: 2 });
  const expected = await keys(a, 3, 5);
  const b = await open(0, 1, 4);
  b.setState(state);
  assert.deepEqual(await keys(b, 3, 5), expected);
  a.close();
  b.close();
});

test("indexInEpoch counts the rank's batches within the epoch and restarts at the cap", async () => {
  const a = await open(0, 2);
  const seen: number[] = [];
  for (let i = 0; i < 6; i++) {
    const b = await a.next(3);
    seen.push(b.indexInEpoch as number);
    disposeBatch(b);
  }
  // stepsCap 4 batches of 3 per epoch on each rank (see above).
  assert.deepEqual(seen, [0, 1, 2, 3, 0, 1]);
  a.close();
});
