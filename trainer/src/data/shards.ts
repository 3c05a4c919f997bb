// WebDataset-style tar shards: `<key>.jpg` + `<key>.cls` (label as decimal text) + `<key>.json`
// ({wnid, rel}) per sample, keys `NNNNNN` (global sample index, zero-padded), consecutive within a shard.
// `index.json` next to the shards lists counts, sizes and SHA-256 per shard. Shards are deterministic
// (fixed tar headers, seeded sample order), so packing the same folder twice gives identical bytes.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { Readable } from "node:stream";
import tar from "tar-stream";
import { z } from "zod";
import { HashingTransform, type Storage } from "../io/storage.ts";
import { joinUri } from "../io/uri.ts";
import type { ImageNetSplit } from "./imagenet.ts";
import { seededRandom, shuffleInPlace } from "./random.ts";

export const INDEX_FILE = "index.json";

export const ShardInfo = z.object({
  name: z.string(),
  count: z.number().int().min(0),
  size: z.number().int().min(0),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type ShardInfo = z.infer<typeof ShardInfo>;

export const ShardIndex = z.object({
  format: z.literal("mergevq-wds-v1"),
  split: z.string(),
  numSamples: z.number().int().min(0),
  wnids: z.array(z.string()),
  names: z.record(z.string(), z.string()),
  seed: z.number().int(),
  shards: z.array(ShardInfo),
});
export type ShardIndex = z.infer<typeof ShardIndex>;

export interface RawSample {
  key: string;
  jpg: Buffer;
  label: number;
  /** Shard the sample came from (or the file path for folder sources). */
  source: string;
}

function tarEntry(pack: tar.Pack, name: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry(
      { name, size: data.length, mtime: new Date(0), mode: 0o644, uid: 0, gid: 0, uname: "", gname: "", type: "file" },
      data,
      (err) => (err ? reject(err) : resolve()),
    );
  });
}

/** One shard as bytes. */
export async function packShard(
  samples: { key: string; jpg: Buffer; label: number; meta?: Record<string, unknown> }[],
): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on("data", (c) => chunks.push(c as Buffer));
    pack.on("end", resolve);
    pack.on("error", reject);
  });
  for (const s of samples) {
    await tarEntry(pack, `${s.key}.jpg`, s.jpg);
    await tarEntry(pack, `${s.key}.cls`, Buffer.from(String(s.label)));
    if (s.meta) await tarEntry(pack, `${s.key}.json`, Buffer.from(JSON.stringify(s.meta)));
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export interface PackOptions {
  samplesPerShard: number;
  /** Sample order is shuffled with this seed before sharding so every shard mixes classes. */
  seed: number;
  split: string;
  /** Shard file name prefix (WebDataset convention: `<split>-000000.tar`). */
  prefix?: string;
  onShard?: (info: ShardInfo) => void;
}

/** Pack an ImageNet split into shards under `destUri` (s3:// or file://), index.json written last. */
export async function packImageNet(
  split: ImageNetSplit,
  destUri: string,
  storage: Storage,
  opts: PackOptions,
): Promise<ShardIndex> {
  if (!Number.isInteger(opts.samplesPerShard) || opts.samplesPerShard < 1)
    throw new Error("samplesPerShard must be a positive integer");
  const order = shuffleInPlace([...split.entries], seededRandom("pack", opts.seed));
  const width = Math.max(6, String(order.length - 1).length);
  const nShards = Math.ceil(order.length / opts.samplesPerShard);
  const shardWidth = Math.max(6, String(nShards - 1).length);
  const shards: ShardInfo[] = [];
  for (let s = 0; s < nShards; s++) {
    const part = order.slice(s * opts.samplesPerShard, (s + 1) * opts.samplesPerShard);
    const bytes = await packShard(
      part.map((e, i) => ({
        key: String(s * opts.samplesPerShard + i).padStart(width, "0"),
        jpg: readFileSync(e.path),
        label: e.label,
        meta: { wnid: e.wnid, rel: e.rel },
      })),
    );
    const name = `${opts.prefix ?? opts.split}-${String(s).padStart(shardWidth, "0")}.tar`;
    await storage.put(joinUri(destUri, name), bytes);
    const info = {
      name,
      count: part.length,
      size: bytes.length,
      sha256: createHash("sha256").update(bytes).digest("hex"),
    };
    shards.push(info);
    opts.onShard?.(info);
  }
  const index: ShardIndex = {
    format: "mergevq-wds-v1",
    split: opts.split,
    numSamples: order.length,
    wnids: split.wnids,
    names: split.names,
    seed: opts.seed,
    shards,
  };
  await storage.put(joinUri(destUri, INDEX_FILE), `${JSON.stringify(index, null, 1)}\n`);
  return index;
}

export async function readShardIndex(uri: string, storage: Storage): Promise<ShardIndex> {
  const target = uri.endsWith(".json") ? uri : joinUri(uri, INDEX_FILE);
  return ShardIndex.parse(JSON.parse((await storage.get(target)).toString("utf8")));
}

export interface ShardReadResult {
  samples: number;
  /** True when the tar ended early or held fewer samples than the index says. */
  truncated: boolean;
  /** Samples missing their .jpg or .cls member. */
  incomplete: number;
  /** SHA-256 of the bytes read (only meaningful when not truncated). */
  sha256: string;
  error?: string;
}

/**
 * Stream the samples of one tar shard (WebDataset grouping: consecutive members sharing a key). Never
 * throws for bad input: a truncated or unreadable tar ends the stream and is reported in `result`.
 */
export async function* readTarSamples(
  body: Readable,
  source: string,
  result: ShardReadResult,
  expectedCount?: number,
): AsyncGenerator<RawSample> {
  const hasher = new HashingTransform();
  const extract = tar.extract();
  body.on("error", (e) => hasher.destroy(e));
  hasher.on("error", (e) => extract.destroy(e));
  body.pipe(hasher).pipe(extract);
  let cur: { key: string; jpg?: Buffer; cls?: string } | undefined;
  const flush = function* (): Generator<RawSample> {
    if (!cur) return;
    const label = cur.cls === undefined ? Number.NaN : Number(cur.cls.trim());
    if (cur.jpg && Number.isInteger(label)) {
      result.samples++;
      yield { key: cur.key, jpg: cur.jpg, label, source };
    } else {
      result.incomplete++;
    }
    cur = undefined;
  };
  try {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      const name = entry.header.name;
      const base = name.slice(name.lastIndexOf("/") + 1);
      const dot = base.indexOf(".");
      if (entry.header.type !== "file" || dot <= 0) continue;
      const key = name.slice(0, name.length - (base.length - dot));
      const ext = base.slice(dot + 1).toLowerCase();
      if (cur && cur.key !== key) yield* flush();
      cur ??= { key };
      const data = Buffer.concat(chunks);
      if (ext === "jpg" || ext === "jpeg") cur.jpg = data;
      else if (ext === "cls") cur.cls = data.toString("utf8");
    }
    yield* flush();
  } catch (e) {
    // The member in progress may be cut: drop it rather than guess.
    cur = undefined;
    result.truncated = true;
    result.error = (e as Error).message;
  } finally {
    body.destroy();
  }
  if (expectedCount !== undefined && result.samples + result.incomplete < expectedCount) result.truncated = true;
  result.sha256 = hasher.hash.digest("hex");
}
