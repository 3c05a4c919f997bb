// Data-parallel order of the local-folder source: ranks with different (per-rank) seeds but the same global
// order seed read disjoint slices whose union is the whole epoch, in every epoch.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { rankSeed } from "../util/rng.ts";
import { disposeBatch, LocalFolderSource } from "./localFolder.ts";
import { writeSyntheticImageNet } from "./testImages.ts";

test("ranks partition every epoch when they share the order seed", async () => {
  await tf.setBackend("cpu");
  const root = await mkdtemp(path.join(os.tmpdir(), "mvq-folder-"));
  await writeSyntheticImageNet(root, 3, 4, "train"); // 12 images
  const ws = 2;
  const open = (rank: number) =>
    LocalFolderSource.open({
      root,
      split: "train",
      size: 16,
      augment: true,
      seed: rankSeed(5, ws, rank),
      orderSeed: 5,
      rank,
      worldSize: ws,
    });
  const ranks = [await open(0), await open(1)];
  const epochs: string[][][] = [[], []];
  for (let e = 0; e < 2; e++) {
    for (const [r, src] of ranks.entries()) {
      const b = await src.next(6);
      epochs[e][r] = b.files;
      disposeBatch(b);
    }
  }
  for (const [e, [a, b]] of epochs.entries()) {
    assert.equal(new Set([...a, ...b]).size, 12, `epoch ${e}: ranks overlap (${a} | ${b})`);
  }
  assert.notDeepEqual(epochs[0][0], epochs[1][0], "each epoch is reshuffled");
});

test("indexInEpoch counts batches within the epoch, restarts each epoch and survives a resume", async () => {
  await tf.setBackend("cpu");
  const root = await mkdtemp(path.join(os.tmpdir(), "mvq-folder-idx-"));
  await writeSyntheticImageNet(root, 3, 4, "train"); // 12 images: 3 batches of 4 per epoch
  const open = () => LocalFolderSource.open({ root, split: "train", size: 16, augment: false, seed: 1 });
  const src = await open();
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    const b = await src.next(4);
    seen.push(b.indexInEpoch as number);
    disposeBatch(b);
  }
  assert.deepEqual(seen, [0, 1, 2, 0, 1]);
  const resumed = await open();
  resumed.setState(src.getState());
  const b = await resumed.next(4);
  assert.equal(b.indexInEpoch, 2);
  disposeBatch(b);
});
