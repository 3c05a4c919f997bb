// Data-plane benchmark: decode+augment throughput (per core and all cores), S3 streaming (GetObject →
// tar-stream, what the loader does) vs raw GetObject throughput on the same objects, and loader starvation
// with a simulated training step. JSON lines on stdout, progress on stderr. BENCH_QUICK=1 → smaller sizes.
//
// S3: MERGEVQ_S3_ENDPOINT / AWS_* when set, else a MinIO from the toolchain cache is started and stopped.
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { CreateBucketCommand, GetObjectCommand } from "@aws-sdk/client-s3";
import sharp from "sharp";
import { buildDataset, SOURCES } from "../hack/dataset/build.ts";
import type { MinioServer } from "../test/cluster/minio.ts";
import { testS3 } from "../test/support/s3.ts";
import { decodeRgb, makeViews, type ViewSizes } from "../trainer/src/data/augment.ts";
import { readImageNetSplit } from "../trainer/src/data/imagenet.ts";
import { DataLoader } from "../trainer/src/data/loader.ts";
import { seededRandom } from "../trainer/src/data/random.ts";
import { packImageNet, readTarSamples, type ShardReadResult } from "../trainer/src/data/shards.ts";
import { createS3Client, DEFAULT_RETRY, S3Storage } from "../trainer/src/io/s3.ts";

const QUICK = process.env.BENCH_QUICK === "1";
const emit = (metric: string, value: number, unit: string, config: string) =>
  process.stdout.write(
    `${JSON.stringify({ bench: "data", metric, value: Number(value.toFixed(3)), unit, backend: "n/a", config })}\n`,
  );
const log = (m: string) => process.stderr.write(`[data.bench] ${m}\n`);

async function decodeAugment(files: Buffer[], views: ViewSizes, inFlight: number): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < files.length) {
      const i = next++;
      await makeViews(await decodeRgb(files[i]), views, "train", seededRandom(i));
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return files.length / ((performance.now() - t0) / 1000);
}

async function main() {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "mvq-data-bench-"));
  let minio: MinioServer | undefined;
  try {
    const cores = os.availableParallelism();
    const perClass = QUICK ? 12 : 40;
    const ds256 = await buildDataset({
      size: 256,
      out: path.join(tmp, "ds256"),
      sourceRoot: "/",
      classes: SOURCES.length,
      trainPerClass: perClass,
      valPerClass: 1,
      log: () => {},
    });
    const ds64 = await buildDataset({
      size: 64,
      out: path.join(tmp, "ds64"),
      sourceRoot: "/",
      classes: SOURCES.length,
      trainPerClass: perClass * 4,
      valPerClass: 1,
      log: () => {},
    });

    // 1. Decode + augment (three views), one image in flight with libvips on one thread ≈ one core.
    for (const [name, dir, views] of [
      ["256/224/224", ds256.dir, { recon: 256, teacher: 224, student: 224 }],
      ["64/56/56", ds64.dir, { recon: 64, teacher: 56, student: 56 }],
    ] as const) {
      const files = readImageNetSplit(dir, "train").entries.map((e) => readFileSync(e.path));
      await decodeAugment(files.slice(0, 10), views, 1); // warm-up
      sharp.concurrency(1);
      const one = await decodeAugment(files, views, 1);
      sharp.concurrency(0);
      const all = await decodeAugment(files, views, cores * 2);
      log(
        `${name}: ${one.toFixed(1)} img/s on one core, ${all.toFixed(1)} img/s on ${cores} cores (${files.length} images)`,
      );
      emit("decode_augment_images_per_s_per_core", one, "images/s", `views ${name}, 1 in flight, sharp.concurrency 1`);
      emit("decode_augment_images_per_s_all_cores", all, "images/s", `views ${name}, ${cores} cores`);
      emit("decode_augment_parallel_efficiency", all / (one * cores), "ratio", `views ${name}, ${cores} cores`);
    }

    // 2. S3: raw GetObject vs streamed through the resumable reader + tar parser, same shards.
    const started = await testS3({
      dir: path.join(tmp, "minio"),
      clusterId: `data-bench-${process.pid}`,
      onStart: () => log("starting MinIO"),
    });
    const s3 = started.s3;
    minio = started.minio;
    const client = createS3Client({ ...s3, forcePathStyle: true, retry: DEFAULT_RETRY, requestTimeoutMs: 30_000 });
    const bucket = `bench-${randomBytes(4).toString("hex")}`;
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    const storage = new S3Storage(client);
    const index = await packImageNet(readImageNetSplit(ds256.dir, "train"), `s3://${bucket}/s256`, storage, {
      split: "train",
      samplesPerShard: QUICK ? 30 : 100,
      seed: 0,
    });
    const totalBytes = index.shards.reduce((a, s) => a + s.size, 0);
    const rounds = QUICK ? 2 : 4;
    let rawS = 0;
    let streamS = 0;
    for (let r = 0; r < rounds; r++) {
      let t0 = performance.now();
      for (const s of index.shards) {
        const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: `s256/${s.name}` }));
        for await (const _ of res.Body as Readable) {
          // drain
        }
      }
      rawS += (performance.now() - t0) / 1000;
      t0 = performance.now();
      for (const s of index.shards) {
        const result: ShardReadResult = { samples: 0, truncated: false, incomplete: 0, sha256: "" };
        for await (const _ of readTarSamples(
          storage.getStream(`s3://${bucket}/s256/${s.name}`),
          s.name,
          result,
          s.count,
        )) {
          // samples only
        }
        if (result.truncated || result.sha256 !== s.sha256) throw new Error(`shard ${s.name} read back wrong`);
      }
      streamS += (performance.now() - t0) / 1000;
    }
    const mb = (totalBytes * rounds) / 1e6;
    const cfg = `${index.shards.length} shards, ${(totalBytes / 1e6).toFixed(1)} MB, ${rounds} rounds, MinIO on loopback`;
    log(`raw GET ${(mb / rawS).toFixed(1)} MB/s, streamed+tar ${(mb / streamS).toFixed(1)} MB/s`);
    emit("s3_raw_get_mb_per_s", mb / rawS, "MB/s", cfg);
    emit("s3_stream_tar_mb_per_s", mb / streamS, "MB/s", cfg);
    emit("s3_stream_vs_raw_ratio", rawS / streamS, "ratio", cfg);

    // 3. End-to-end loader from S3 with a simulated training step: starvation.
    const stepMs = 50;
    const loader = new DataLoader({
      source: { kind: "shards", uri: `s3://${bucket}/s256` },
      storage,
      batchSize: 8,
      views: { recon: 64, teacher: 56, student: 56 },
      mode: "train",
      rank: 0,
      worldSize: 1,
      seed: 0,
      epochs: 1,
      prefetchBatches: 4,
    });
    const t0 = performance.now();
    let batches = 0;
    for await (const b of loader) {
      batches++;
      void b;
      await new Promise((r) => setTimeout(r, stepMs));
    }
    const wall = performance.now() - t0;
    const c = loader.counters;
    const lcfg = `S3 shards of 256² JPEGs → views 64/56/56, batch 8, ${stepMs} ms simulated step, prefetch 4, ${batches} batches`;
    log(
      `loader: ${batches} batches, first ${c.firstBatchMs.toFixed(0)} ms, starved ${c.starvationMs.toFixed(0)} ms over ${c.starvedCalls} calls`,
    );
    emit("loader_images_per_s", (c.samples / wall) * 1000, "images/s", lcfg);
    emit("loader_starvation_ms", c.starvationMs, "ms", lcfg);
    emit("loader_starvation_fraction", c.starvationMs / wall, "ratio", lcfg);
    emit("loader_first_batch_ms", c.firstBatchMs, "ms", lcfg);
    client.destroy();
  } finally {
    await minio?.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`data.bench: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
