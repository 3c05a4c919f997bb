import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import { FileStorage } from "../io/storage.ts";
import { readImageNetSplit } from "./imagenet.ts";
import { type Batch, DataLoader, type LoaderOptions } from "./loader.ts";
import { packImageNet, type RawSample, readTarSamples, type ShardReadResult } from "./shards.ts";
import { syntheticJpeg, writeSyntheticImageNet } from "./testImages.ts";

let dir: string;
let root: string;
const storage = new FileStorage();
const CLASSES = 3;
const PER_CLASS = 14; // 42 images

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "mvq-loader-"));
  root = await writeSyntheticImageNet(path.join(dir, "inet"), CLASSES, PER_CLASS);
  await packImageNet(readImageNetSplit(root, "train"), path.join(dir, "shards"), storage, {
    split: "train",
    samplesPerShard: 5,
    seed: 3,
  });
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function collect(opts: LoaderOptions): Promise<{ batches: Batch[]; loader: DataLoader }> {
  const loader = new DataLoader(opts);
  const batches: Batch[] = [];
  for await (const b of loader) batches.push(b);
  return { batches, loader };
}

const base = (o: Partial<LoaderOptions>): LoaderOptions => ({
  source: { kind: "folder", root, split: "train" },
  batchSize: 4,
  views: { recon: 16, teacher: 14, student: 12 },
  mode: "train",
  rank: 0,
  worldSize: 1,
  seed: 7,
  epochs: 1,
  dropLast: false,
  decodeConcurrency: 2,
  ...o,
});

test("labels follow the sorted wnid order and batches have NHWC shapes", async () => {
  const { batches } = await collect(base({}));
  const total = batches.reduce((a, b) => a + b.size, 0);
  assert.equal(total, CLASSES * PER_CLASS);
  for (const b of batches) {
    assert.equal(b.image.length, b.size * 16 * 16 * 3);
    assert.equal(b.imageAugW?.length, b.size * 14 * 14 * 3);
    assert.equal(b.imageAugS?.length, b.size * 12 * 12 * 3);
    for (const [i, k] of b.keys.entries()) assert.equal(b.labels[i], Number(k[8])); // n0000000<c>/…
    assert.ok(b.image.every((v) => v >= -1 && v <= 1));
  }
});

for (const kind of ["folder", "shards"] as const) {
  test(`${kind}: 2 ranks cover an epoch disjointly and completely, for two epochs`, async () => {
    const source =
      kind === "folder"
        ? ({ kind, root, split: "train" } as const)
        : ({ kind, uri: path.join(dir, "shards") } as const);
    for (const epoch of [0, 1]) {
      const keys: string[][] = [];
      for (const rank of [0, 1]) {
        const { batches } = await collect(base({ source, rank, worldSize: 2, startEpoch: epoch, views: { recon: 8 } }));
        assert.ok(batches.every((b) => b.epoch === epoch));
        keys.push(batches.flatMap((b) => b.keys));
      }
      const all = [...keys[0], ...keys[1]];
      assert.equal(new Set(all).size, all.length, "ranks overlap");
      assert.equal(all.length, CLASSES * PER_CLASS, "coverage incomplete");
      assert.ok(keys[0].length > 0 && keys[1].length > 0);
    }
  });
}

test("output is identical across decode concurrency and prefetch settings; epochs reshuffle", async () => {
  const src = { kind: "shards", uri: path.join(dir, "shards") } as const;
  const a = await collect(base({ source: src, epochs: 2, decodeConcurrency: 1, prefetchBatches: 1 }));
  const b = await collect(base({ source: src, epochs: 2, decodeConcurrency: 4, prefetchBatches: 8 }));
  assert.deepEqual(a.batches, b.batches);
  const e0 = a.batches.filter((x) => x.epoch === 0).flatMap((x) => x.keys);
  const e1 = a.batches.filter((x) => x.epoch === 1).flatMap((x) => x.keys);
  assert.deepEqual([...e0].sort(), [...e1].sort());
  assert.notDeepEqual(e0, e1);
});

test("dropLast and maxBatchesPerEpoch bound the epoch; stepsPerEpoch is the min over ranks", async () => {
  const { batches } = await collect(base({ dropLast: true }));
  assert.equal(batches.length, Math.floor((CLASSES * PER_CLASS) / 4));
  assert.ok(batches.every((b) => b.size === 4));
  const l = new DataLoader(
    base({ source: { kind: "shards", uri: path.join(dir, "shards") }, worldSize: 2, rank: 1, dropLast: true }),
  );
  const steps = await l.stepsPerEpoch(0);
  const { batches: capped } = await collect(
    base({
      source: { kind: "shards", uri: path.join(dir, "shards") },
      worldSize: 2,
      rank: 1,
      maxBatchesPerEpoch: steps,
    }),
  );
  assert.equal(capped.length, steps);
});

test("corrupt JPEGs, unreadable files and truncated shards are skipped and counted", async () => {
  const bad = path.join(dir, "bad");
  await writeSyntheticImageNet(bad, 2, 5);
  const victim = path.join(bad, "train", "n00000001", "n00000001_2.JPEG");
  const jpg = readFileSync(victim);
  writeFileSync(victim, jpg.subarray(0, Math.floor(jpg.length * 0.6)));
  writeFileSync(path.join(bad, "train", "n00000000", "n00000000_3.JPEG"), Buffer.from("garbage"));
  const folder = await collect(base({ source: { kind: "folder", root: bad, split: "train" } }));
  assert.equal(folder.loader.counters.corruptImages, 2);
  assert.equal(
    folder.batches.reduce((a, b) => a + b.size, 0),
    8,
  );

  // Corrupt JPEGs inside shards.
  const badShards = path.join(dir, "bad-shards");
  await packImageNet(readImageNetSplit(bad, "train"), badShards, storage, {
    split: "train",
    samplesPerShard: 4,
    seed: 0,
  });
  const inShards = await collect(base({ source: { kind: "shards", uri: badShards } }));
  assert.equal(inShards.loader.counters.corruptImages, 2);
  assert.equal(
    inShards.batches.reduce((a, b) => a + b.size, 0),
    8,
  );

  // A truncated shard (clean images): its tail is lost, the run goes on.
  const cutShards = path.join(dir, "cut-shards");
  const idx = await packImageNet(readImageNetSplit(root, "train"), cutShards, storage, {
    split: "train",
    samplesPerShard: 6,
    seed: 0,
  });
  const victimShard = path.join(cutShards, idx.shards[2].name);
  const tarBytes = readFileSync(victimShard);
  writeFileSync(victimShard, tarBytes.subarray(0, Math.floor(tarBytes.length * 0.55)));
  const s = await collect(base({ source: { kind: "shards", uri: cutShards } }));
  assert.equal(s.loader.counters.truncatedShards, 1);
  assert.equal(s.loader.counters.corruptImages, 0);
  const delivered = s.batches.reduce((a, b) => a + b.size, 0);
  assert.ok(delivered < CLASSES * PER_CLASS && delivered >= CLASSES * PER_CLASS - 6, `delivered ${delivered}`);
});

test("readTarSamples reports a truncated tar and keeps the complete samples before the cut", async () => {
  const idx = JSON.parse(readFileSync(path.join(dir, "shards", "index.json"), "utf8"));
  const bytes = readFileSync(path.join(dir, "shards", idx.shards[0].name));
  const full: ShardReadResult = { samples: 0, truncated: false, incomplete: 0, sha256: "" };
  const all: RawSample[] = [];
  for await (const s of readTarSamples(Readable.from([bytes]), "x", full, idx.shards[0].count)) all.push(s);
  assert.equal(all.length, idx.shards[0].count);
  assert.equal(full.truncated, false);
  assert.equal(full.sha256, idx.shards[0].sha256);
  const cut: ShardReadResult = { samples: 0, truncated: false, incomplete: 0, sha256: "" };
  const part: RawSample[] = [];
  for await (const s of readTarSamples(Readable.from([bytes.subarray(0, 3000)]), "x", cut, idx.shards[0].count))
    part.push(s);
  assert.equal(cut.truncated, true);
  assert.ok(part.length < all.length);
  for (const [i, p] of part.entries()) assert.deepEqual(p, all[i]);
});

test("packing is deterministic", async () => {
  const a = await packImageNet(readImageNetSplit(root, "train"), path.join(dir, "p1"), storage, {
    split: "train",
    samplesPerShard: 7,
    seed: 1,
  });
  const b = await packImageNet(readImageNetSplit(root, "train"), path.join(dir, "p2"), storage, {
    split: "train",
    samplesPerShard: 7,
    seed: 1,
  });
  assert.deepEqual(a, b);
  assert.equal(a.numSamples, CLASSES * PER_CLASS);
  assert.equal(a.shards.length, 6);
});

test("the prefetch queue keeps a slow consumer fed (starvation measured)", async () => {
  const loader = new DataLoader(base({ views: { recon: 8 }, prefetchBatches: 4, epochs: 1, batchSize: 2 }));
  let n = 0;
  for await (const _ of loader) {
    n++;
    await new Promise((r) => setTimeout(r, 40)); // a "training step" much slower than decoding
  }
  assert.equal(n, 21);
  assert.ok(loader.counters.starvationMs < 40, `starved ${loader.counters.starvationMs} ms`);
  assert.ok(loader.counters.firstBatchMs > 0);
});

test("synthetic JPEG helper is deterministic", async () => {
  assert.deepEqual(await syntheticJpeg(1), await syntheticJpeg(1));
});
