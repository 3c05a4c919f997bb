// Reduce + reference statistics on REAL photographs (trainer/src/util/testPhotos.ts: debphotos10 crops) with
// the generated RANDOM-weight FID Inception (hack/inception/setup.sh; metrics labelled [random-inception]).
// Set A = photos of five subjects, set B = photos of the other five. Set A, written as two shard npz files,
// has gFID ≈ 0 against its own reference statistics and clearly > 0 against B's; IS lies in [1, 1008].
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import sharp from "sharp";
import { createLogger } from "../../../common/src/logger.ts";
import { readImageNetSplit } from "../data/imagenet.ts";
import { packImageNet } from "../data/shards.ts";
import { InceptionExtractor } from "../eval/inception.ts";
import { loadStats, saveStats } from "../eval/stats.ts";
import { ensureRandomInception } from "../eval/testing.ts";
import { FileStorage } from "../io/storage.ts";
import { ensureTestPhotos } from "../util/testPhotos.ts";
import { parseSamplingConfig } from "./config.ts";
import { gridPicks } from "./grid.ts";
import { reduceShards, shuffledSplits } from "./reduce.ts";
import { computeReferenceStats, realImageBatches } from "./referenceStats.ts";
import { type ShardMeta, shardIdentity, shardSlice, writeShardNpz } from "./shard.ts";

const tmp = mkdtempSync(path.join(os.tmpdir(), "mvq-reduce-test-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const lines: Record<string, unknown>[] = [];
const log = createLogger(
  { component: "reduce-test" },
  {
    level: "info",
    destination: new Writable({
      write(c, _e, cb) {
        for (const l of String(c).split("\n").filter(Boolean)) lines.push(JSON.parse(l));
        cb();
      },
    }),
  },
);

const SIZE = 32;
const PER_CLASS = 4;
let model: string;
let extractor: InceptionExtractor;
const setA = path.join(tmp, "A");
const setB = path.join(tmp, "B");
const refA = pathToFileURL(path.join(tmp, "refA.npz")).href;
const refB = path.join(tmp, "refB.npz");
const job = path.join(tmp, "job");
let countA = 0;
/** Reduce the job's 2 shards for gFID only (against `ref`; no IS, no grid). */
const gfidOnly = (ref: string) =>
  reduceShards({
    checkpointDir: job,
    numShards: 2,
    referenceStatsUri: ref,
    inceptionUri: model,
    computeIS: false,
    gridImages: 0,
    log,
  });

/** Copy PER_CLASS photos of each listed class folder into <dst>/train/<class>/. */
function photoSet(src: string, classes: string[], dst: string): void {
  for (const c of classes) {
    const files = readdirSync(path.join(src, c)).sort().slice(0, PER_CLASS);
    mkdirSync(path.join(dst, "train", c), { recursive: true });
    for (const f of files) cpSync(path.join(src, c, f), path.join(dst, "train", c, f));
  }
}

before(async () => {
  model = ensureRandomInception();
  extractor = await InceptionExtractor.create({ modelUri: model, logger: log });
  const photos = ensureTestPhotos();
  const train = existsSync(path.join(photos.dir, "train")) ? path.join(photos.dir, "train") : photos.dir;
  const classes = readdirSync(train, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  assert.ok(classes.length >= 4, `${photos.source}: need ≥ 4 photo folders`);
  const half = Math.floor(classes.length / 2);
  photoSet(train, classes.slice(0, half), setA);
  photoSet(train, classes.slice(half, 2 * half), setB);

  // Set A as two shards of a sampling job (the same centre crops the reference reader produces).
  const images: Uint8Array[] = [];
  for await (const b of realImageBatches({ data: setA, size: SIZE, batchSize: 7 })) images.push(b.data as Uint8Array);
  const all = Buffer.concat(images);
  countA = all.length / (SIZE * SIZE * 3);
  const cfg = parseSamplingConfig({ numSamples: countA, shards: 2 });
  const px = SIZE * SIZE * 3;
  for (let i = 0; i < 2; i++) {
    const sl = shardSlice(countA, 2, i);
    const meta: ShardMeta = {
      ...shardIdentity(cfg, sl, { model: "photos", tokenizer: "photos" }),
      numClasses: 1000,
      height: SIZE,
      width: SIZE,
      seconds: 1,
      samplesPerSecond: 1,
      createdAt: new Date().toISOString(),
    };
    mkdirSync(path.join(job, "shards"), { recursive: true });
    await writeShardNpz(
      path.join(job, "shards", `${i}.npz`),
      new Uint8Array(all.subarray(sl.start * px, (sl.start + sl.count) * px)),
      new Int32Array(sl.count),
      meta,
    );
  }
});
after(() => extractor?.close());

describe("reference statistics", () => {
  it("reads real photos as centre crops at the requested size and saves mu/sigma with the weights tag", async () => {
    assert.ok(countA >= 8, `set A has ${countA} images`);
    const r = await computeReferenceStats({ extractor, data: setA, out: refA, size: SIZE, batchSize: 8, log });
    assert.equal(r.count, countA);
    assert.equal(r.weights, "random");
    const back = await loadStats(path.join(tmp, "refA.npz"));
    assert.equal(back.weights, "random");
    assert.equal(back.dim, 2048);
    assert.deepEqual(back.mu, r.stats.mu);
    assert.deepEqual(back.sigma, r.stats.sigma);
    // --images caps the count; the cap is honoured exactly
    const capped = await computeReferenceStats({ extractor, data: setB, out: refB, size: SIZE, images: 5, log });
    assert.equal(capped.count, 5);
    const rb = await computeReferenceStats({ extractor, data: setB, out: refB, size: SIZE, log });
    assert.equal(rb.count, countA); // same number of photos per subject in both sets
  });
});

describe("reduce over shard npz files", () => {
  it("gFID of a set against its own statistics is ≈ 0, IS ∈ [1, 1008], grid PNG written", async () => {
    const r = await reduceShards({
      checkpointDir: job,
      numShards: 2,
      numSamples: countA,
      referenceStatsUri: refA,
      inceptionUri: model,
      log,
    });
    assert.equal(r.samples, countA);
    assert.equal(r.extractorLabel, "[random-inception]");
    const gfid = r.metrics["gFID[random-inception]"];
    const is = r.metrics["IS[random-inception]"];
    assert.ok(Number.isFinite(gfid) && gfid >= 0 && gfid < 1e-6, `self gFID = ${gfid}`);
    assert.ok(is >= 1 && is <= 1008, `IS = ${is}`);
    assert.ok(r.metrics["ISStd[random-inception]"] >= 0);
    assert.equal(r.metrics.samples, countA);
    // Plain keys repeat the labelled values (printer columns); the note carries the random-weights warning.
    assert.equal(r.metrics.gFID, gfid);
    assert.equal(r.metrics.IS, is);
    assert.ok(r.notes.some((n) => /RANDOMLY generated/.test(n)));
    assert.ok(r.gridUri?.endsWith(path.join("job", "artifacts", "samples.png")));
    const meta = await sharp(r.gridUri as string).metadata();
    const n = Math.min(countA, 64);
    assert.equal(meta.width, Math.min(8, n) * SIZE);
    assert.equal(meta.height, Math.ceil(n / Math.min(8, n)) * SIZE);
  });

  it("gFID against a different photo set is clearly > 0", async () => {
    const self = await gfidOnly(refA);
    const other = await gfidOnly(refB);
    const a = self.metrics["gFID[random-inception]"];
    const b = other.metrics["gFID[random-inception]"];
    assert.ok(b > 1e-3 && b > 1000 * Math.max(a, 1e-9), `gFID vs B = ${b}, vs A = ${a}`);
    assert.equal(other.metrics["IS[random-inception]"], undefined, "computeIS false → no IS");
    assert.equal(other.gridUri, undefined);
  });

  it("reports IS only, with a note, without reference statistics or with statistics of other weights", async () => {
    const r = await reduceShards({ checkpointDir: job, numShards: 2, inceptionUri: model, gridImages: 4, log });
    assert.deepEqual(Object.keys(r.metrics).sort(), [
      "IS",
      "ISStd[random-inception]",
      "IS[random-inception]",
      "samples",
    ]);
    assert.ok(r.notes.some((n) => /referenceStatsUri is not set/.test(n)));
    const real = path.join(tmp, "real-weights.npz");
    const s = await loadStats(path.join(tmp, "refA.npz"));
    await saveStats(real, s, "pt_inception-2015-12-05");
    const m = await reduceShards({
      checkpointDir: job,
      numShards: 2,
      referenceStatsUri: real,
      inceptionUri: model,
      gridImages: 0,
      log,
    });
    assert.equal(m.metrics["gFID[random-inception]"], undefined);
    assert.equal(m.metrics.gFID, undefined);
    assert.ok(
      m.notes.some((n) => /gFID not computed: .*pt_inception-2015-12-05/.test(n)),
      m.notes.join(" | "),
    );
  });

  it("fails naming every missing shard and refuses a sample count that differs from the job's", async () => {
    await assert.rejects(
      reduceShards({ checkpointDir: job, numShards: 4, inceptionUri: model, log }),
      /2 of 4 shard\(s\) unusable: shard 2: .*2\.npz missing; shard 3: .*3\.npz missing/,
    );
    await assert.rejects(
      reduceShards({ checkpointDir: job, numShards: 2, numSamples: countA + 1, inceptionUri: model, log }),
      /hold \d+ samples, sampling.numSamples is/,
    );
  });
});

describe("reference statistics from tar shards", () => {
  it("reads a shard dataset (data-plane loader, val mode, one epoch) and matches the folder statistics", async () => {
    const shards = path.join(tmp, "A-shards");
    await packImageNet(readImageNetSplit(setA, "train"), shards, new FileStorage(), {
      split: "train",
      samplesPerShard: 7,
      seed: 1,
    });
    const refS = path.join(tmp, "refS.npz");
    const r = await computeReferenceStats({ extractor, data: shards, out: refS, size: SIZE, batchSize: 6, log });
    assert.equal(r.count, countA, "every image exactly once");
    // Same photos, (slightly) different resize path: much closer to set A than set B is.
    const toS = await gfidOnly(refS);
    const toB = await gfidOnly(refB);
    const s = toS.metrics["gFID[random-inception]"];
    const b = toB.metrics["gFID[random-inception]"];
    assert.ok(s < b / 2, `gFID vs shard stats ${s}, vs set B ${b}`);
  });
});

describe("reduce helpers", () => {
  it("assigns IS splits by a seeded shuffle (balanced) and picks grid images evenly", () => {
    const s = shuffledSplits(1003, 10, 0);
    const sizes = new Array(10).fill(0);
    for (const x of s) sizes[x]++;
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `${sizes}`);
    // class-ordered input: the first 100 samples must not all land in one split
    assert.ok(new Set(s.subarray(0, 100)).size >= 8);
    assert.deepEqual(shuffledSplits(50, 5, 3), shuffledSplits(50, 5, 3));
    assert.deepEqual(gridPicks(10, 4), [0, 2, 5, 7]);
    assert.deepEqual(gridPicks(3, 64), [0, 1, 2]);
    assert.equal(new Set(gridPicks(50_000, 64)).size, 64);
  });
});
