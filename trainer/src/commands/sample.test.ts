// End to end through the real entry point (trainer/src/cli.ts) as child processes, driven by the operator's
// env contract exactly as desiredShardPod / desiredReducePod set it: a tiny random-init AR checkpoint
// (Stage-II tiny, docs/model.md §10; step 0 = UNTRAINED, clearly labelled) and a T0 tokenizer checkpoint (random init)
// created here, two `sample` shard pods, a retried shard pod that reuses its output, `eval reference-stats`
// on real photos, and `reduce` with the generated RANDOM-weight Inception.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import sharp from "sharp";
import { ENV } from "../../../common/src/contract.ts";
import { readNpz } from "../eval/npz.ts";
import { ensureRandomInception } from "../eval/testing.ts";
import {
  lastReport,
  photoFolder,
  runTrainerCli as run,
  tinyArCheckpoint,
  tinyTokenizerCheckpoint,
} from "../sample/testing.ts";

const tmp = mkdtempSync(path.join(os.tmpdir(), "mvq-sample-cli-"));
after(() => rmSync(tmp, { recursive: true, force: true }));
const out = pathToFileURL(path.join(tmp, "job")).href; // spec.checkpoint.uri
const jobDir = path.join(tmp, "job");
const tokUri = pathToFileURL(path.join(tmp, "tok.ckpt")).href;
const arUri = pathToFileURL(path.join(tmp, "ar.ckpt")).href;
const refUri = pathToFileURL(path.join(tmp, "ref.npz")).href;
let inception: string;
const N = 12;

const samplingJson = (evaluation: Record<string, unknown> = {}) =>
  JSON.stringify({
    numSamples: N,
    shards: 2,
    batchSize: 4,
    cfgScale: 1.5,
    temperature: 1,
    topK: 0,
    topP: 1,
    seed: 7,
    evaluation: { enabled: true, computeIS: true, ...evaluation },
  });

function shardEnv(i: number): Record<string, string> {
  return {
    [ENV.TRAIN_CONFIG]: samplingJson(),
    [ENV.MODEL_CHECKPOINT]: arUri,
    [ENV.TOKENIZER_CHECKPOINT]: tokUri,
    [ENV.SHARD_INDEX]: String(i),
    [ENV.NUM_SHARDS]: "2",
    [ENV.CHECKPOINT_DIR]: out,
    [ENV.STATUS_URI]: `${out}/status/shards/${i}`,
    [ENV.TERMINATION_MESSAGE_PATH]: path.join(tmp, `term-shard-${i}`),
    [ENV.RUN]: "default/sj",
    [ENV.ATTEMPT]: "1",
  };
}

before(() => {
  inception = ensureRandomInception();
  writeFileSync(fileURLToPath(tokUri), tinyTokenizerCheckpoint().bytes);
  writeFileSync(fileURLToPath(arUri), tinyArCheckpoint({ tokenizerUri: tokUri }));
  photoFolder(path.join(tmp, "photos"), 4, 4); // real photos for the reference statistics
});

describe("sampling job end to end (child processes, env contract)", () => {
  const shardBytes: Buffer[] = [];

  it("sample: each shard pod writes its npz, progress.json, metrics.json and the termination message", async () => {
    const [r0, r1] = await Promise.all([run(["sample"], shardEnv(0)), run(["sample"], shardEnv(1))]);
    for (const [i, r] of [r0, r1].entries()) {
      assert.equal(r.code, 0, `shard ${i} failed:\n${r.stderr.slice(-3000)}`);
      const npz = path.join(jobDir, "shards", `${i}.npz`);
      const z = await readNpz(npz, ["arr_0", "labels"]);
      assert.deepEqual(z.arr_0.shape, [6, 32, 32, 3]);
      assert.equal(z.arr_0.dtype, "|u1");
      assert.equal(z.labels.dtype, "<i4");
      // default labels: N spread evenly over the 10 classes, g → ⌊g·10/12⌋
      assert.deepEqual(
        [...(z.labels.data as Int32Array)],
        Array.from({ length: 6 }, (_, j) => Math.floor(((i * 6 + j) * 10) / N)),
      );
      const px = z.arr_0.data as Uint8Array;
      assert.ok(new Set(px).size > 16, "decoded images are not constant");
      shardBytes.push(readFileSync(npz));

      const term = JSON.parse(readFileSync(path.join(tmp, `term-shard-${i}`), "utf8"));
      assert.equal(term.metrics.samples, 6);
      assert.ok(term.metrics.samplesPerSecond > 0);
      assert.equal(term.artifacts.extra.samples, `${out}/shards/${i}.npz`);
      assert.ok(
        term.notes.some((n: string) => /UNTRAINED/.test(n)),
        JSON.stringify(term.notes),
      );
      const status = path.join(jobDir, "status", "shards", String(i));
      const metrics = JSON.parse(readFileSync(path.join(status, "metrics.json"), "utf8"));
      assert.deepEqual(metrics.metrics, term.metrics);
      const progress = JSON.parse(readFileSync(path.join(status, "progress.json"), "utf8"));
      assert.equal(progress.step, 6);
      assert.equal(progress.totalSteps, 6);
      assert.equal(progress.attempt, 1);
      assert.deepEqual(lastReport(r.stdout).metrics, term.metrics);
    }
    // Different shard seeds → different samples.
    assert.notDeepEqual(shardBytes[0].subarray(200, 2000), shardBytes[1].subarray(200, 2000));
  });

  it("sample: a retried shard pod reuses its valid output; a truncated one is regenerated identically", async () => {
    const again = await run(["sample"], { ...shardEnv(0), [ENV.ATTEMPT]: "2" });
    assert.equal(again.code, 0, again.stderr.slice(-3000));
    assert.match(again.stderr + again.stdout, /shard output already present and valid: reused/);
    const npz = path.join(jobDir, "shards", "0.npz");
    assert.deepEqual(readFileSync(npz), shardBytes[0]);
    writeFileSync(npz, shardBytes[0].subarray(0, 5000));
    const regen = await run(["sample"], { ...shardEnv(0), [ENV.ATTEMPT]: "3" });
    assert.equal(regen.code, 0, regen.stderr.slice(-3000));
    assert.match(regen.stderr + regen.stdout, /existing shard output is invalid .*regenerating/);
    const z = await readNpz(npz, ["arr_0"]);
    const orig = path.join(tmp, "orig0.npz");
    writeFileSync(orig, shardBytes[0]);
    assert.deepEqual(z.arr_0.data, (await readNpz(orig, ["arr_0"])).arr_0.data, "generation is deterministic");
  });

  it("sample: configuration errors exit 2 naming the field", async () => {
    const r = await run(["sample"], { ...shardEnv(0), [ENV.TRAIN_CONFIG]: '{"numSamples":12,"shards":2,"cfg":3}' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /MERGEVQ_TRAIN_CONFIG: unknown field\(s\): cfg/);
  });

  it("a pod whose MERGEVQ_STEP names the other step exits 2 naming both", async () => {
    const wrong = await run(["sample"], { ...shardEnv(0), [ENV.STEP]: "reduce" });
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /MERGEVQ_STEP=reduce: this pod is the SamplingJob's "reduce" step but runs "sample"/);
    const invalid = await run(["reduce"], { ...shardEnv(0), [ENV.STEP]: "gather" });
    assert.equal(invalid.code, 2);
    assert.match(invalid.stderr, /MERGEVQ_STEP/);
  });

  it("eval reference-stats + reduce: gFID/IS labelled [random-inception], grid PNG, metrics.json, termination", async () => {
    const ref = await run(
      ["eval", "reference-stats", "--data", path.join(tmp, "photos"), "--out", refUri, "--tokenizer", tokUri],
      { [ENV.INCEPTION_URI]: inception },
    );
    assert.equal(ref.code, 0, ref.stderr.slice(-3000));
    const refReport = lastReport(ref.stdout);
    assert.equal(refReport.metrics.size, 32, "size taken from the tokenizer checkpoint");
    assert.equal(refReport.metrics.images, 16);
    assert.ok(existsSync(fileURLToPath(refUri)));

    const term = path.join(tmp, "term-reduce");
    const r = await run(["reduce"], {
      [ENV.TRAIN_CONFIG]: samplingJson({ referenceStatsUri: refUri }),
      [ENV.MODEL_CHECKPOINT]: arUri,
      [ENV.TOKENIZER_CHECKPOINT]: tokUri,
      [ENV.NUM_SHARDS]: "2",
      [ENV.CHECKPOINT_DIR]: out,
      [ENV.STATUS_URI]: `${out}/status`,
      [ENV.INCEPTION_URI]: inception,
      [ENV.TERMINATION_MESSAGE_PATH]: term,
    });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const report = JSON.parse(readFileSync(term, "utf8"));
    const gfid = report.metrics["gFID[random-inception]"];
    const is = report.metrics["IS[random-inception]"];
    assert.ok(Number.isFinite(gfid) && gfid > 0, `gFID ${gfid}`);
    assert.ok(is >= 1 && is <= 1008, `IS ${is}`);
    assert.equal(report.metrics.samples, N);
    assert.deepEqual(report.artifacts.imageUris, [`${out}/artifacts/samples.png`]);
    assert.ok(report.notes.some((n: string) => /RANDOMLY generated/.test(n)));
    assert.ok(report.notes.some((n: string) => /UNTRAINED/.test(n)));
    const metrics = JSON.parse(readFileSync(path.join(jobDir, "status", "metrics.json"), "utf8"));
    assert.deepEqual(metrics.metrics, report.metrics);
    const png = await sharp(path.join(jobDir, "artifacts", "samples.png")).metadata();
    assert.equal(png.format, "png");
    assert.equal(png.width, 8 * 32); // 12 samples → 8 columns × 2 rows of 32×32
    assert.equal(png.height, 2 * 32);
  });
});
