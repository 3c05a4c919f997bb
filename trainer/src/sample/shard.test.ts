// Shard slicing / labels / seeds (pure), the sampling config contract, and the idempotent shard output:
// a valid npz is reused without opening the generator; truncated, corrupted or foreign outputs are detected,
// logged with the reason and regenerated. The generator here paints deterministic label/seed patterns (the
// AR path is covered end to end by cli.test.ts).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { after, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import { createLogger, type Logger } from "../../../common/src/logger.ts";
import { readNpz } from "../eval/npz.ts";
import { parseSamplingConfig, type SamplingConfig, SamplingConfigError } from "./config.ts";
import {
  batchSeed,
  checkShardFile,
  globalLabel,
  type ImageGenerator,
  type RunShardOptions,
  runShard,
  shardIdentity,
  shardLabels,
  shardSeed,
  shardSlice,
  shardUri,
} from "./shard.ts";

const tmp = mkdtempSync(path.join(os.tmpdir(), "mvq-shard-test-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function capture() {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { log: createLogger({ component: "shard-test" }, { level: "info", destination }), lines };
}

describe("shard slicing, labels and seeds", () => {
  it("splits numSamples as evenly as possible, the first shards taking the remainder", () => {
    assert.deepEqual(
      [0, 1, 2].map((i) => shardSlice(10, 3, i)),
      [
        { index: 0, numShards: 3, start: 0, count: 4 },
        { index: 1, numShards: 3, start: 4, count: 3 },
        { index: 2, numShards: 3, start: 7, count: 3 },
      ],
    );
    for (const [n, s] of [
      [1, 1],
      [7, 7],
      [50_000, 8],
      [1001, 16],
      [13, 5],
    ]) {
      let next = 0;
      const counts: number[] = [];
      for (let i = 0; i < s; i++) {
        const sl = shardSlice(n, s, i);
        assert.equal(sl.start, next, `N=${n} S=${s} shard ${i} must start where ${i - 1} ended`);
        next += sl.count;
        counts.push(sl.count);
      }
      assert.equal(next, n);
      assert.ok(Math.max(...counts) - Math.min(...counts) <= 1);
      assert.ok(
        counts.every((c, i) => i === 0 || c <= counts[i - 1]),
        "non-increasing",
      );
    }
    assert.throws(() => shardSlice(3, 4, 0), /at least shards/);
    assert.throws(() => shardSlice(10, 3, 3), /out of range/);
  });

  it("seeds shard i with seed·shards + i and gives every batch its own seed", () => {
    assert.equal(shardSeed(5, 4, 2), 22);
    assert.equal(shardSeed(0, 1, 0), 0);
    const seen = new Set<number>();
    for (const s of [0, 1, 2, 22, 2147483647 * 4096 + 4095]) {
      for (let b = 0; b < 500; b++) {
        const v = batchSeed(s, b);
        assert.ok(Number.isSafeInteger(v) && v >= 0, `${v}`);
        seen.add(v);
      }
    }
    assert.equal(seen.size, 5 * 500, "no two (shard, batch) pairs share a seed");
    assert.equal(batchSeed(22, 3), batchSeed(22, 3));
  });

  it("spreads labels evenly over all classes by default and cycles classLabels over the global index", () => {
    assert.deepEqual(
      Array.from({ length: 7 }, (_, g) => globalLabel(g, 7, 3)),
      [0, 0, 0, 1, 1, 2, 2],
    );
    const all: number[] = [];
    for (let i = 0; i < 3; i++) all.push(...shardLabels(shardSlice(20, 3, i), 20, 10));
    assert.deepEqual(all, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9]);
    // 50 per class × 1000 classes (sample.py)
    const big = shardLabels(shardSlice(50_000, 8, 3), 50_000, 1000);
    assert.equal(big.length, 6250);
    assert.equal(big[0], Math.floor((18_750 * 1000) / 50_000));
    assert.deepEqual([...shardLabels(shardSlice(5, 2, 0), 5, 10, [3, 1])], [3, 1, 3]);
    assert.deepEqual([...shardLabels(shardSlice(5, 2, 1), 5, 10, [3, 1])], [1, 3]);
    assert.throws(() => shardLabels(shardSlice(5, 1, 0), 5, 10, [3, 10]), /classLabels: 10 is not a class/);
  });
});

describe("sampling config (MERGEVQ_TRAIN_CONFIG)", () => {
  it("applies the CRD defaults and rejects unknown or invalid fields naming them", () => {
    const c = parseSamplingConfig(JSON.stringify({ numSamples: 8 }));
    assert.equal(c.shards, 1);
    assert.equal(c.batchSize, 32);
    assert.equal(c.cfgScale, 1.5);
    assert.deepEqual(c.evaluation, { enabled: true, computeIS: true });
    assert.throws(() => parseSamplingConfig('{"numSamples":8,"cfg":2}'), /unknown field\(s\): cfg/);
    assert.throws(() => parseSamplingConfig('{"numSamples":2,"shards":3}'), /numSamples: numSamples must be at least/);
    assert.throws(
      () => parseSamplingConfig({ numSamples: 4, evaluation: { referenceStats: "x" } }),
      /evaluation\.referenceStats/,
    );
    assert.throws(
      () => parseSamplingConfig("{", "X"),
      (e) => e instanceof SamplingConfigError && /X: invalid JSON/.test(e.message),
    );
  });
});

/** Deterministic "generator": each image a flat colour from (label, seed, position). Counts calls. */
function patternGenerator(
  calls: { opened: number; batches: number },
  size = 8,
  numClasses = 10,
): () => Promise<ImageGenerator> {
  return async () => {
    calls.opened++;
    return {
      height: size,
      width: size,
      numClasses,
      info: { kind: "pattern" },
      async generate(labels: number[], seed: number) {
        calls.batches++;
        const px = size * size * 3;
        const out = new Uint8Array(labels.length * px);
        for (let i = 0; i < labels.length; i++)
          out.fill((labels[i] * 20 + (seed % 97) + i) & 255, i * px, (i + 1) * px);
        return out;
      },
    };
  };
}

describe("runShard: output and idempotent retries", () => {
  const cfg: SamplingConfig = parseSamplingConfig({ numSamples: 11, shards: 2, batchSize: 4, seed: 3 });
  const dir = pathToFileURL(path.join(tmp, "job")).href;
  const status = path.join(tmp, "job", "status", "shards", "0");
  const checkpoints = { model: "file:///ckpt/ar.ckpt", tokenizer: "file:///ckpt/tok.ckpt" };
  const file = path.join(tmp, "job", "shards", "0.npz");
  /** Shard 0 of this 2-shard job under `dir`, painted by the pattern generator; `o` overrides. */
  const run = (calls: { opened: number; batches: number }, log: Logger, o: Partial<RunShardOptions> = {}) =>
    runShard({
      config: cfg,
      index: 0,
      numShards: 2,
      checkpointDir: dir,
      checkpoints,
      openGenerator: patternGenerator(calls),
      log,
      ...o,
    });

  it("writes arr_0 uint8 [N,H,W,3], labels int32 [N] and progress.json", async () => {
    const calls = { opened: 0, batches: 0 };
    const { log } = capture();
    const r = await run(calls, log, { statusUri: status });
    assert.equal(r.uri, shardUri(dir, 0));
    assert.equal(r.uri, `${dir}/shards/0.npz`);
    assert.equal(r.reused, false);
    assert.equal(r.samples, 6);
    assert.deepEqual(calls, { opened: 1, batches: 2 }); // 6 samples in batches of 4
    const z = await readNpz(file);
    assert.deepEqual(z.arr_0.shape, [6, 8, 8, 3]);
    assert.equal(z.arr_0.dtype, "|u1");
    assert.equal(z.labels.dtype, "<i4");
    assert.deepEqual([...(z.labels.data as Int32Array)], [0, 0, 1, 2, 3, 4]); // ⌊g·10/11⌋, g = 0…5
    // image 5 = second of batch 1: label 4, seed batchSeed(3·2+0, 1), position 1
    const img5 = (z.arr_0.data as Uint8Array)[5 * 192];
    assert.equal(img5, (4 * 20 + (batchSeed(6, 1) % 97) + 1) & 255);
    const progress = JSON.parse(readFileSync(path.join(status, "progress.json"), "utf8"));
    assert.equal(progress.step, 6);
    assert.equal(progress.totalSteps, 6);
  });

  it("reuses a valid existing output without opening the generator", async () => {
    const calls = { opened: 0, batches: 0 };
    const { log, lines } = capture();
    const before = readFileSync(file);
    const r = await run(calls, log);
    assert.equal(r.reused, true);
    assert.equal(r.samples, 6);
    assert.ok(r.samplesPerSecond > 0);
    assert.deepEqual(calls, { opened: 0, batches: 0 });
    assert.ok(lines.some((l) => /already present and valid/.test(String(l.msg))));
    assert.deepEqual(readFileSync(file), before);
  });

  for (const [name, damage, reason] of [
    ["a truncated file", () => truncateSync(file, Math.floor(statSync(file).size / 2)), /no end of central directory/],
    [
      "a flipped byte inside the image data",
      () => {
        const b = readFileSync(file);
        b[200] ^= 0xff;
        writeFileSync(file, b);
      },
      /CRC-32 mismatch/,
    ],
    ["an empty object", () => writeFileSync(file, ""), /not a zip file/],
  ] as const) {
    it(`regenerates ${name}, logging the reason`, async () => {
      const good = readFileSync(file);
      damage();
      const identity = shardIdentity(cfg, shardSlice(11, 2, 0), checkpoints);
      const check = await checkShardFile(file, identity);
      assert.equal(check.ok, false);
      assert.match((check as { reason: string }).reason, reason);
      const calls = { opened: 0, batches: 0 };
      const { log, lines } = capture();
      const r = await run(calls, log);
      assert.equal(r.reused, false);
      assert.deepEqual(calls, { opened: 1, batches: 2 });
      const warn = lines.find((l) => /existing shard output is invalid/.test(String(l.msg)));
      assert.ok(warn, "a log line explains the regeneration");
      assert.match(String(warn.reason), reason);
      const z = await readNpz(file, ["arr_0", "labels"]);
      assert.deepEqual(z.arr_0.shape, [6, 8, 8, 3]);
      // Deterministic: the regenerated pixels equal the original ones.
      const again = await readNpz(file, ["arr_0"]);
      const orig = path.join(tmp, "orig.npz");
      writeFileSync(orig, good);
      assert.deepEqual(again.arr_0.data, (await readNpz(orig, ["arr_0"])).arr_0.data);
    });
  }

  it("regenerates an output written by a different job (other seed) and leaves other shards alone", async () => {
    const other = { ...cfg, seed: 4 };
    const calls = { opened: 0, batches: 0 };
    const { log, lines } = capture();
    const r = await run(calls, log, { config: other });
    assert.equal(r.reused, false);
    assert.equal(calls.opened, 1);
    const warn = lines.find((l) => /existing shard output is invalid/.test(String(l.msg)));
    assert.match(String(warn?.reason), /different job: shardSeed is 6, expected 8/);
    // shard 1 of the original job: 5 samples, labels continue at g = 6
    const r1 = await run(calls, log, { index: 1 });
    assert.equal(r1.samples, 5);
    const z = await readNpz(path.join(tmp, "job", "shards", "1.npz"), ["labels"]);
    assert.deepEqual([...(z.labels.data as Int32Array)], [5, 6, 7, 8, 9]);
  });

  it("refuses classLabels outside the model's classes before generating", async () => {
    const calls = { opened: 0, batches: 0 };
    const { log } = capture();
    await assert.rejects(
      run(calls, log, {
        config: { ...cfg, classLabels: [1, 12] },
        checkpointDir: pathToFileURL(path.join(tmp, "job-bad")).href,
      }),
      /classLabels: 12 is not a class of this model \(classes 0…9\)/,
    );
    assert.equal(calls.batches, 0);
  });
});
