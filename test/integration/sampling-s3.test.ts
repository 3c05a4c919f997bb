// The sampling commands against a REAL MinIO (s3:// checkpoints, CHECKPOINT_DIR, status prefix, reference
// statistics), as child processes with the operator's S3 env: a MergeAR tiny model (random init, labelled
// untrained) sampled with the nominal-K merge token, a retried shard reusing its object, a truncated object
// regenerated, and reduce reading shards + reference from S3 and writing the grid and metrics.json there.
// S3 comes from MERGEVQ_S3_ENDPOINT / AWS_* when set (cluster harness), else a MinIO from the toolchain cache.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { ENV } from "../../common/src/contract.ts";
import { readNpz } from "../../trainer/src/eval/npz.ts";
import { ensureRandomInception } from "../../trainer/src/eval/testing.ts";
import {
  lastReport,
  photoFolder,
  runTrainerCli,
  tinyArCheckpoint,
  tinyTokenizerCheckpoint,
} from "../../trainer/src/sample/testing.ts";
import { type MinioServer, s3Client } from "../cluster/minio.ts";
import { testS3 } from "../support/s3.ts";

const tmp = mkdtempSync(path.join(os.tmpdir(), "mvq-sample-s3-"));
let minio: MinioServer | undefined;
let client: S3Client;
let s3env: Record<string, string>;
const bucket = `sj-${randomBytes(4).toString("hex")}`;
const out = `s3://${bucket}/runs/sj`;
const tokUri = `s3://${bucket}/ckpt/tok.ckpt`;
const arUri = `s3://${bucket}/ckpt/ar.ckpt`;
const refUri = `s3://${bucket}/ref/photos.npz`;
let inception: string;

async function getObject(key: string): Promise<Buffer> {
  const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await (r.Body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray());
}
async function putObject(key: string, body: Uint8Array): Promise<void> {
  await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
}

before(async () => {
  const started = await testS3({ dir: path.join(tmp, "minio"), clusterId: `sample-s3-${process.pid}` });
  const s3 = started.s3;
  minio = started.minio;
  // What runEnv/s3Env give a pod (credentials via env, path-style addressing for MinIO).
  s3env = {
    [ENV.AWS_ENDPOINT_URL]: s3.endpoint,
    [ENV.AWS_REGION]: s3.region,
    AWS_S3_FORCE_PATH_STYLE: "true",
    [ENV.AWS_ACCESS_KEY_ID]: s3.accessKeyId,
    [ENV.AWS_SECRET_ACCESS_KEY]: s3.secretAccessKey,
  };
  client = s3Client(s3);
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  inception = ensureRandomInception();
  await putObject("ckpt/tok.ckpt", tinyTokenizerCheckpoint().bytes);
  await putObject("ckpt/ar.ckpt", tinyArCheckpoint({ tokenizerUri: tokUri, mergeAR: true }));
  photoFolder(path.join(tmp, "photos"), 3, 4);
});

after(async () => {
  client?.destroy();
  await minio?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const sampling = JSON.stringify({
  numSamples: 10,
  shards: 1,
  batchSize: 5,
  cfgScale: 2,
  temperature: 1,
  topK: 100,
  topP: 0.9,
  seed: 1,
  classLabels: [7, 2],
  evaluation: { enabled: true, computeIS: true, referenceStatsUri: refUri },
});
const shardEnv = (attempt: number) => ({
  ...s3env,
  [ENV.TRAIN_CONFIG]: sampling,
  [ENV.MODEL_CHECKPOINT]: arUri,
  [ENV.TOKENIZER_CHECKPOINT]: tokUri,
  [ENV.SHARD_INDEX]: "0",
  [ENV.NUM_SHARDS]: "1",
  [ENV.CHECKPOINT_DIR]: out,
  [ENV.STATUS_URI]: `${out}/status/shards/0`,
  [ENV.ATTEMPT]: String(attempt),
  [ENV.TERMINATION_MESSAGE_PATH]: path.join(tmp, `term-${attempt}`),
});

describe("sampling on S3 (MinIO)", () => {
  let first: Buffer;

  it("sample writes the shard object with MergeAR's nominal-K merge token and progress to S3", async () => {
    const r = await runTrainerCli(["sample"], shardEnv(1));
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const report = lastReport(r.stdout) as { artifacts?: { extra?: { samples?: string } } };
    assert.equal(report.artifacts?.extra?.samples, `${out}/shards/0.npz`);
    first = await getObject("runs/sj/shards/0.npz");
    const local = path.join(tmp, "0.npz");
    writeFileSync(local, first);
    const z = await readNpz(local);
    assert.deepEqual(z.arr_0.shape, [10, 32, 32, 3]);
    assert.deepEqual([...(z.labels.data as Int32Array)], [7, 2, 7, 2, 7, 2, 7, 2, 7, 2]);
    const meta = JSON.parse(Buffer.from(z.mergevq_meta.data as Uint8Array).toString("utf8"));
    assert.equal(meta.generator.mergeAR, true);
    assert.deepEqual(meta.generator.mergeCandidate, { id: 1, K: 36 }); // T0: K ∈ {25, 36, 49, 64}, nominal 36
    assert.equal(meta.topK, 100);
    const progress = JSON.parse((await getObject("runs/sj/status/shards/0/progress.json")).toString());
    assert.equal(progress.step, 10);
    const metrics = JSON.parse((await getObject("runs/sj/status/shards/0/metrics.json")).toString());
    assert.equal(metrics.metrics.samples, 10);
  });

  it("a retry reuses the object; a truncated object is regenerated identically", async () => {
    const again = await runTrainerCli(["sample"], shardEnv(2));
    assert.equal(again.code, 0, again.stderr.slice(-3000));
    assert.match(again.stderr + again.stdout, /already present and valid: reused/);
    await putObject("runs/sj/shards/0.npz", first.subarray(0, first.length - 100));
    const regen = await runTrainerCli(["sample"], shardEnv(3));
    assert.equal(regen.code, 0, regen.stderr.slice(-3000));
    assert.match(regen.stderr + regen.stdout, /existing shard output is invalid .*regenerating/);
    const now = await getObject("runs/sj/shards/0.npz");
    const a = path.join(tmp, "a.npz");
    const b = path.join(tmp, "b.npz");
    writeFileSync(a, first);
    writeFileSync(b, now);
    assert.deepEqual((await readNpz(b, ["arr_0"])).arr_0.data, (await readNpz(a, ["arr_0"])).arr_0.data);
  });

  it("reference-stats and reduce read and write S3", async () => {
    const ref = await runTrainerCli(
      ["eval", "reference-stats", "--data", path.join(tmp, "photos"), "--out", refUri, "--size", "32"],
      { ...s3env, [ENV.INCEPTION_URI]: inception },
    );
    assert.equal(ref.code, 0, ref.stderr.slice(-3000));
    const term = path.join(tmp, "term-reduce");
    const r = await runTrainerCli(["reduce"], {
      ...s3env,
      [ENV.TRAIN_CONFIG]: sampling,
      [ENV.NUM_SHARDS]: "1",
      [ENV.CHECKPOINT_DIR]: out,
      [ENV.STATUS_URI]: `${out}/status`,
      [ENV.INCEPTION_URI]: inception,
      [ENV.TERMINATION_MESSAGE_PATH]: term,
    });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    const metrics = JSON.parse((await getObject("runs/sj/status/metrics.json")).toString());
    assert.ok(metrics.metrics["gFID[random-inception]"] > 0);
    assert.ok(metrics.metrics["IS[random-inception]"] >= 1);
    assert.deepEqual(metrics.artifacts.imageUris, [`${out}/artifacts/samples.png`]);
    const png = await sharp(await getObject("runs/sj/artifacts/samples.png")).metadata();
    assert.equal(png.width, 8 * 32);
    assert.equal(png.height, 2 * 32);
  });
});
