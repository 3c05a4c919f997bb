// Data plane against a REAL MinIO: shards packed by the CLI and streamed by rank, checkpoints (multipart,
// tamper, writer killed mid-upload), and everything again behind a fault-injecting proxy.
//
// S3 comes from MERGEVQ_S3_ENDPOINT / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION (the cluster
// harness exports them); when unset, this suite starts its own MinIO from the toolchain cache.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  type S3Client,
} from "@aws-sdk/client-s3";
import { buildDataset } from "../../hack/dataset/build.ts";
import { readImageNetSplit } from "../../trainer/src/data/imagenet.ts";
import { type Batch, DataLoader, type LoaderOptions } from "../../trainer/src/data/loader.ts";
import { packImageNet, packShard } from "../../trainer/src/data/shards.ts";
import {
  CheckpointIntegrityError,
  listCheckpoints,
  loadLatest,
  saveCheckpoint,
} from "../../trainer/src/io/checkpointStore.ts";
import { createS3Client, DEFAULT_RETRY, type S3Settings, S3Storage, storageCounters } from "../../trainer/src/io/s3.ts";
import { FileStorage } from "../../trainer/src/io/storage.ts";
import type { MinioServer } from "../cluster/minio.ts";
import { startFaultProxy } from "../support/faultProxy.ts";
import { type S3Endpoint, testS3 } from "../support/s3.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const tmp = mkdtempSync(path.join(os.tmpdir(), "mvq-data-s3-"));
let minio: MinioServer | undefined;
let s3: S3Endpoint;
let client: S3Client;
let bucket: string;
let dataset: string;

const settings = (endpoint: string): S3Settings => ({
  endpoint,
  region: s3.region,
  accessKeyId: s3.accessKeyId,
  secretAccessKey: s3.secretAccessKey,
  forcePathStyle: true,
  retry: { ...DEFAULT_RETRY, maxAttempts: 12, baseDelayMs: 20, maxDelayMs: 500 },
  requestTimeoutMs: 20_000,
});
const childEnv = () => ({
  ...process.env,
  AWS_ENDPOINT_URL: s3.endpoint,
  AWS_REGION: s3.region,
  AWS_ACCESS_KEY_ID: s3.accessKeyId,
  AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
});

before(async () => {
  ({ s3, minio } = await testS3({ dir: path.join(tmp, "minio"), clusterId: `data-s3-${process.pid}` }));
  client = createS3Client(settings(s3.endpoint));
  bucket = `data-${randomBytes(4).toString("hex")}`;
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  // A small subset of the real-photo dataset (4 classes × 30 train crops at 64²).
  dataset = (
    await buildDataset({
      size: 64,
      out: path.join(tmp, "ds"),
      sourceRoot: "/",
      classes: 4,
      trainPerClass: 30,
      valPerClass: 4,
      log: () => {},
    })
  ).dir;
});

after(async () => {
  client?.destroy();
  await minio?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const loaderOpts = (o: Partial<LoaderOptions>): LoaderOptions => ({
  source: { kind: "shards", uri: `s3://${bucket}/shards` },
  batchSize: 8,
  views: { recon: 32, teacher: 28, student: 28 },
  mode: "train",
  rank: 0,
  worldSize: 1,
  seed: 11,
  epochs: 1,
  dropLast: false,
  decodeConcurrency: 2,
  shuffleBuffer: 32,
  ...o,
});

async function run(o: Partial<LoaderOptions>): Promise<{ batches: Batch[]; loader: DataLoader }> {
  const loader = new DataLoader(loaderOpts(o));
  const batches: Batch[] = [];
  for await (const b of loader) batches.push(b);
  return { batches, loader };
}

function cli(args: string[], input?: Buffer): { stdout: string } {
  const stdout = execFileSync(
    process.execPath,
    ["--import", "tsx", path.join(ROOT, "trainer/src/cli.ts"), "data", ...args],
    {
      env: childEnv(),
      input,
      encoding: "utf8",
      cwd: ROOT,
    },
  );
  return { stdout };
}

describe("shards on S3", { concurrency: false }, () => {
  let reference: Batch[][] = [];

  test("the pack CLI uploads shards + index; 2 ranks stream disjoint, complete epochs; S3 == local bytes", async () => {
    const out = JSON.parse(
      cli(["pack", dataset, `s3://${bucket}/shards`, "--samples-per-shard", "16", "--seed", "5"]).stdout,
    );
    assert.equal(out.samples, 120);
    assert.equal(out.shards, 8);
    const local = await packImageNet(
      readImageNetSplit(dataset, "train"),
      path.join(tmp, "local-shards"),
      new FileStorage(),
      {
        split: "train",
        samplesPerShard: 16,
        seed: 5,
      },
    );
    const s3Index = JSON.parse(
      (await (
        await client.send(new GetObjectCommand({ Bucket: bucket, Key: "shards/index.json" }))
      ).Body?.transformToString()) ?? "",
    );
    assert.deepEqual(s3Index, local);

    const storage = new S3Storage(client);
    for (const epoch of [0, 1]) {
      const perRank: Batch[][] = [];
      for (const rank of [0, 1]) perRank.push((await run({ rank, worldSize: 2, startEpoch: epoch, storage })).batches);
      const keys = perRank.map((bs) => bs.flatMap((b) => b.keys));
      const all = [...keys[0], ...keys[1]];
      assert.equal(new Set(all).size, all.length, "ranks overlap");
      assert.equal(all.length, 120, "epoch not covered");
      // Each rank gets exactly the samples of its shards (4 of the 8; one shard holds only 8 samples).
      for (const rank of [0, 1]) {
        const items = await new DataLoader(loaderOpts({ rank, worldSize: 2, storage })).epochItems(epoch);
        assert.equal(items.length, 4);
        assert.equal(
          keys[rank].length,
          items.reduce((a, it) => a + (it.kind === "shard" ? it.count : 0), 0),
        );
      }
      // Label balance survives the shard split: every class shows up on both ranks.
      for (const bs of perRank) assert.equal(new Set(bs.flatMap((b) => [...b.labels])).size, 4);
      if (epoch === 0) reference = perRank;
    }
    const fromLocal = await run({
      rank: 1,
      worldSize: 2,
      source: { kind: "shards", uri: path.join(tmp, "local-shards") },
    });
    assert.deepEqual(fromLocal.batches, reference[1]);
  });

  test("behind a fault-injecting proxy the loader delivers identical batches", async () => {
    const proxy = await startFaultProxy({
      target: s3.endpoint,
      rates: { error5xx: 0.15, reset: 0.1, cutBody: 0.35 },
      seed: 3,
      cutMinBytes: 2048,
    });
    const faulty = createS3Client(settings(proxy.url));
    const before = { ...storageCounters };
    try {
      const res = await run({ rank: 1, worldSize: 2, storage: new S3Storage(faulty) });
      assert.deepEqual(res.batches, reference[1]);
      assert.equal(res.loader.counters.truncatedShards, 0);
      assert.equal(res.loader.counters.shardChecksumMismatches, 0);
    } finally {
      faulty.destroy();
      await proxy.close();
    }
    assert.ok(proxy.stats.injected5xx + proxy.stats.resets > 0, JSON.stringify(proxy.stats));
    assert.ok(proxy.stats.cutBodies > 0, JSON.stringify(proxy.stats));
    assert.ok(storageCounters.requestRetries > before.requestRetries, "no SDK retries observed");
    assert.ok(storageCounters.streamResumes > before.streamResumes, "no Range resumes observed");
  });

  test("a corrupt JPEG and a truncated shard on S3 are skipped and counted", async () => {
    const split = readImageNetSplit(dataset, "train");
    const samples = split.entries
      .slice(0, 12)
      .map((e, i) => ({ key: String(i).padStart(6, "0"), jpg: readFileSync(e.path), label: e.label }));
    samples[2] = { ...samples[2], jpg: samples[2].jpg.subarray(0, 300) };
    const a = await packShard(samples.slice(0, 6));
    const b = await packShard(samples.slice(6));
    const cut = b.subarray(0, Math.floor(b.length * 0.5));
    const sha = (x: Buffer) => createHash("sha256").update(x).digest("hex");
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: "bad/train-0.tar", Body: a }));
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: "bad/train-1.tar", Body: cut }));
    const index = {
      format: "mergevq-wds-v1",
      split: "train",
      numSamples: 12,
      wnids: split.wnids,
      names: split.names,
      seed: 0,
      shards: [
        { name: "train-0.tar", count: 6, size: a.length, sha256: sha(a) },
        { name: "train-1.tar", count: 6, size: b.length, sha256: sha(b) },
      ],
    };
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: "bad/index.json", Body: JSON.stringify(index) }));
    const res = await run({
      source: { kind: "shards", uri: `s3://${bucket}/bad` },
      storage: new S3Storage(client),
      shuffle: false,
    });
    assert.equal(res.loader.counters.corruptImages, 1);
    assert.equal(res.loader.counters.truncatedShards, 1);
    const delivered = res.batches.flatMap((x) => x.keys);
    assert.ok(!delivered.includes("000002"));
    assert.deepEqual(delivered.slice(0, 5), ["000000", "000001", "000003", "000004", "000005"]);
    assert.ok(delivered.length >= 5 && delivered.length < 11, `delivered ${delivered.length}`);
  });
});

describe("checkpoints on S3", { concurrency: false }, () => {
  test("multipart round trip is exact; retention keeps the last 2", async () => {
    const dir = `s3://${bucket}/ckpt-rt`;
    const big = randomBytes(12 * 1024 * 1024 + 17); // > 2 parts of 5 MiB
    const storage = new S3Storage(client, 5 * 1024 * 1024);
    const saved = await saveCheckpoint(dir, 100, big, { storage, keepLast: 2 });
    assert.equal(saved.size, big.length);
    await saveCheckpoint(dir, 200, randomBytes(1000), { storage, keepLast: 2 });
    await saveCheckpoint(dir, 300, randomBytes(1000), { storage, keepLast: 2 });
    assert.deepEqual(
      (await listCheckpoints(dir, { storage })).map((r) => r.step),
      [200, 300],
    );
    await saveCheckpoint(`s3://${bucket}/ckpt-rt2`, 1, big, { storage });
    const ck = await loadLatest(`s3://${bucket}/ckpt-rt2`, { storage });
    assert.equal(ck?.step, 1);
    assert.ok(ck?.bytes.equals(big));
  });

  test("a tampered checkpoint is refused and the previous one is used", async () => {
    const dir = `s3://${bucket}/ckpt-tamper`;
    const storage = new S3Storage(client);
    const good = randomBytes(50_000);
    await saveCheckpoint(dir, 1, good, { storage });
    const second = randomBytes(50_000);
    await saveCheckpoint(dir, 2, second, { storage });
    second[12345] ^= 1;
    await client.send(
      new PutObjectCommand({ Bucket: bucket, Key: "ckpt-tamper/step-000000002/checkpoint.bin", Body: second }),
    );
    const refused: Error[] = [];
    const ck = await loadLatest(dir, { storage, onReject: (_u, e) => refused.push(e) });
    assert.equal(ck?.step, 1);
    assert.ok(ck?.bytes.equals(good));
    assert.ok(refused[0] instanceof CheckpointIntegrityError);
    assert.match(refused[0].message, /SHA-256/);
    // The CLI reports the refusal on stderr and loads step 1.
    const out = JSON.parse(cli(["ckpt-load", dir]).stdout);
    assert.equal(out.step, 1);
    assert.equal(out.rejected.length, 1);
  });

  test("'latest' never points to a partial upload when the writer is killed mid-upload", async () => {
    const dir = `s3://${bucket}/ckpt-kill`;
    const storage = new S3Storage(client);
    const first = randomBytes(30_000);
    await saveCheckpoint(dir, 1, first, { storage });
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(ROOT, "trainer/src/cli.ts"), "data", "ckpt-save", dir, "2", "-"],
      {
        env: childEnv(),
        cwd: ROOT,
        stdio: ["pipe", "pipe", "pipe"],
      },
    );
    let exited = false;
    child.on("exit", () => {
      exited = true;
    });
    child.stdin.on("error", () => {});
    // Feed 1 MiB every 30 ms until at least one multipart part has landed at MinIO, then SIGKILL.
    let sent = 0;
    const deadline = Date.now() + 60_000;
    let partsSeen = 0;
    after(() => {
      if (!exited) child.kill("SIGKILL");
    });
    while (Date.now() < deadline && !exited) {
      child.stdin.write(randomBytes(1024 * 1024));
      sent += 1;
      await new Promise((r) => setTimeout(r, 30));
      // MinIO lists multipart uploads only for an exact object key.
      const ups = await client.send(
        new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: "ckpt-kill/step-000000002/checkpoint.bin" }),
      );
      for (const u of ups.Uploads ?? []) {
        const parts = await client.send(new ListPartsCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
        partsSeen = Math.max(partsSeen, parts.Parts?.length ?? 0);
      }
      if (partsSeen > 0) break;
    }
    assert.ok(partsSeen > 0, `no multipart part uploaded after ${sent} MiB (child exited: ${exited})`);
    child.kill("SIGKILL");
    await new Promise((r) => (exited ? r(null) : child.once("exit", r)));
    const latest = JSON.parse(
      (await (
        await client.send(new GetObjectCommand({ Bucket: bucket, Key: "ckpt-kill/latest.json" }))
      ).Body?.transformToString()) ?? "",
    );
    assert.equal(latest.step, 1);
    const refs = await listCheckpoints(dir, { storage });
    assert.deepEqual(
      refs.filter((r) => r.complete).map((r) => r.step),
      [1],
    );
    const ck = await loadLatest(dir, { storage });
    assert.equal(ck?.step, 1);
    assert.ok(ck?.bytes.equals(first));
  });

  test("behind a fault-injecting proxy, checkpoint save + load still round-trips exactly", async () => {
    const proxy = await startFaultProxy({
      target: s3.endpoint,
      rates: { error5xx: 0.15, reset: 0.1, cutBody: 0.5 },
      seed: 9,
    });
    const faulty = createS3Client(settings(proxy.url));
    try {
      const storage = new S3Storage(faulty, 5 * 1024 * 1024);
      const dir = `s3://${bucket}/ckpt-faults`;
      const blobs = [randomBytes(11 * 1024 * 1024), randomBytes(200_000)];
      await saveCheckpoint(dir, 1, blobs[0], { storage, keepLast: 1 });
      await saveCheckpoint(dir, 2, blobs[1], { storage, keepLast: 1 });
      const ck = await loadLatest(dir, { storage });
      assert.equal(ck?.step, 2);
      assert.ok(ck?.bytes.equals(blobs[1]));
      await saveCheckpoint(`s3://${bucket}/ckpt-faults-big`, 7, blobs[0], { storage });
      for (let i = 0; i < 3; i++) {
        const big = await loadLatest(`s3://${bucket}/ckpt-faults-big`, { storage });
        assert.ok(big?.bytes.equals(blobs[0]));
      }
    } finally {
      faulty.destroy();
      await proxy.close();
    }
    assert.ok(proxy.stats.injected5xx + proxy.stats.resets > 0, JSON.stringify(proxy.stats));
    assert.ok(proxy.stats.cutBodies > 0, JSON.stringify(proxy.stats));
  });
});
