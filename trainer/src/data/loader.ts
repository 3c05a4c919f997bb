// The training data loader: ImageNet folders or tar shards (local or streamed from S3) → rank split →
// seeded shuffle buffer → decode + spec views (sharp, in parallel, order-preserving) → NHWC Float32 batches
// in a bounded prefetch queue. Backend-agnostic: no tfjs here; the trainer wraps the arrays in tensors.
//
// Determinism: the items of rank r in epoch e, the shuffle buffer and every crop/flip are pure functions of
// (seed, epoch, rank, sample key), so retries, resumed reads and decode timing never change the batches.
// Robustness: corrupt images, truncated shards and unreadable files are skipped and counted, never thrown.
import { readFile } from "node:fs/promises";
import os from "node:os";
import { PassThrough, type Readable } from "node:stream";
import { createStorage, storageCounters } from "../io/s3.ts";
import type { Storage } from "../io/storage.ts";
import { joinUri } from "../io/uri.ts";
import { CorruptImageError, decodeRgb, makeViews, normaliseInto, type ViewSizes } from "./augment.ts";
import { readImageNetSplit } from "./imagenet.ts";
import { type Rand, seededRandom, shuffleInPlace } from "./random.ts";
import { type RawSample, readShardIndex, readTarSamples, type ShardIndex, type ShardReadResult } from "./shards.ts";

export type DataSource =
  | { kind: "folder"; root: string; split?: string; subsetFile?: string }
  | { kind: "shards"; uri: string };

export interface LoaderOptions {
  source: DataSource;
  batchSize: number;
  views: ViewSizes;
  /** train: random crops/flips, shuffling; val: resize + center crop, file order. */
  mode: "train" | "val";
  rank: number;
  worldSize: number;
  seed: number;
  /** Epochs to produce (default: unbounded). */
  epochs?: number;
  startEpoch?: number;
  /** Shuffle file/shard order and use the shuffle buffer (default: mode === "train"). */
  shuffle?: boolean;
  /** Shuffle buffer size in samples (default 512; 0/1 = off). */
  shuffleBuffer?: number;
  /** Drop the last partial batch of an epoch (default: mode === "train"). */
  dropLast?: boolean;
  /** Cap on batches per epoch, e.g. `stepsPerEpoch()` so every rank takes the same number of steps. */
  maxBatchesPerEpoch?: number;
  /** Bytes of the next shard buffered while the current one is parsed (default 4 MiB). */
  readAheadBytes?: number;
  /** Ready batches kept ahead of the consumer (default 4). */
  prefetchBatches?: number;
  /** Images decoded/augmented in parallel (default: available cores). */
  decodeConcurrency?: number;
  storage?: Storage;
}

export interface Batch {
  epoch: number;
  /** Batch index within the epoch on this rank. */
  index: number;
  size: number;
  labels: Int32Array;
  keys: string[];
  /** [size, R, R, 3], [−1, 1]. */
  image: Float32Array;
  /** [size, T, T, 3], ImageNet mean/std (teacher view). */
  imageAugW?: Float32Array;
  /** [size, S, S, 3], [−1, 1] (student view). */
  imageAugS?: Float32Array;
}

/** Counters for progress/metrics (`Progress.dataErrors` takes the error ones). */
export interface DataCounters {
  samples: number;
  batches: number;
  corruptImages: number;
  unreadableFiles: number;
  truncatedShards: number;
  incompleteSamples: number;
  shardChecksumMismatches: number;
  /** Time the consumer waited on an empty queue after the first batch (ms). */
  starvationMs: number;
  /** Time until the first batch was ready (pipeline warm-up, ms). */
  firstBatchMs: number;
  /** Consumer calls that found the queue empty (after the first batch). */
  starvedCalls: number;
}

export function dataErrors(c: DataCounters): Record<string, number> {
  return {
    corruptImages: c.corruptImages,
    unreadableFiles: c.unreadableFiles,
    truncatedShards: c.truncatedShards,
    incompleteSamples: c.incompleteSamples,
    shardChecksumMismatches: c.shardChecksumMismatches,
    s3RequestRetries: storageCounters.requestRetries,
    s3StreamResumes: storageCounters.streamResumes,
  };
}

/** Bounded FIFO with async push/shift; `close()` ends it, `fail()` makes the consumer throw. */
class BoundedQueue<T> {
  private items: T[] = [];
  private waitingPush: (() => void)[] = [];
  private waitingShift: (() => void)[] = [];
  closed = false;
  error?: Error;
  constructor(readonly capacity: number) {}
  get length() {
    return this.items.length;
  }
  async push(x: T): Promise<boolean> {
    while (this.items.length >= this.capacity && !this.closed) await new Promise<void>((r) => this.waitingPush.push(r));
    if (this.closed) return false;
    this.items.push(x);
    this.waitingShift.shift()?.();
    return true;
  }
  async shift(): Promise<T | undefined> {
    while (this.items.length === 0) {
      if (this.error) throw this.error;
      if (this.closed) return undefined;
      await new Promise<void>((r) => this.waitingShift.push(r));
    }
    const x = this.items.shift() as T;
    this.waitingPush.shift()?.();
    return x;
  }
  close(err?: Error) {
    this.closed = true;
    if (err) this.error = err;
    for (const w of [...this.waitingPush, ...this.waitingShift]) w();
    this.waitingPush = [];
    this.waitingShift = [];
  }
}

async function* shuffleBuffer<T>(src: AsyncIterable<T>, size: number, rnd: Rand): AsyncGenerator<T> {
  if (size <= 1) {
    yield* src;
    return;
  }
  const buf: T[] = [];
  for await (const x of src) {
    if (buf.length < size) {
      buf.push(x);
      continue;
    }
    const j = Math.floor(rnd() * size);
    yield buf[j];
    buf[j] = x;
  }
  yield* shuffleInPlace(buf, rnd);
}

/** Parallel map that yields in input order; `fn` must not reject. */
async function* orderedMap<T, U>(src: AsyncIterable<T>, n: number, fn: (x: T) => Promise<U>): AsyncGenerator<U> {
  const it = src[Symbol.asyncIterator]();
  const window: Promise<U>[] = [];
  let done = false;
  try {
    for (;;) {
      while (!done && window.length < n) {
        const r = await it.next();
        if (r.done) done = true;
        else window.push(fn(r.value));
      }
      const head = window.shift();
      if (!head) return;
      yield await head;
    }
  } finally {
    if (!done) await it.return?.();
  }
}

type Item =
  | { kind: "file"; rel: string; path: string; label: number }
  | { kind: "shard"; name: string; count: number; sha256: string };

interface Prepared {
  key: string;
  label: number;
  image: Buffer;
  imageAugW?: Buffer;
  imageAugS?: Buffer;
}

export class DataLoader implements AsyncIterable<Batch> {
  readonly counters: DataCounters = {
    samples: 0,
    batches: 0,
    corruptImages: 0,
    unreadableFiles: 0,
    truncatedShards: 0,
    incompleteSamples: 0,
    shardChecksumMismatches: 0,
    starvationMs: 0,
    firstBatchMs: 0,
    starvedCalls: 0,
  };
  private readonly storage: Storage;
  private items?: Item[];
  private index?: ShardIndex;
  private queue?: BoundedQueue<Batch>;
  private started = 0;
  private stopped = false;
  /** Last non-decode failure while augmenting (diagnostics). */
  lastPrepareError?: string;

  constructor(readonly opts: LoaderOptions) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1)
      throw new Error(`batchSize must be a positive integer, got ${opts.batchSize}`);
    if (!Number.isInteger(opts.rank) || opts.rank < 0 || opts.rank >= opts.worldSize) {
      throw new Error(`rank ${opts.rank} out of range for worldSize ${opts.worldSize}`);
    }
    this.storage = opts.storage ?? createStorage(opts.source.kind === "shards" ? opts.source.uri : "/");
  }

  private get shuffle() {
    return this.opts.shuffle ?? this.opts.mode === "train";
  }

  /** Load the file list or shard index (done once, lazily). */
  async init(): Promise<void> {
    if (this.items) return;
    const s = this.opts.source;
    if (s.kind === "folder") {
      const split = readImageNetSplit(s.root, s.split, s.subsetFile);
      this.items = split.entries.map((e) => ({ kind: "file", rel: e.rel, path: e.path, label: e.label }));
    } else {
      this.index = await readShardIndex(s.uri, this.storage);
      this.items = this.index.shards.map((x) => ({ kind: "shard", name: x.name, count: x.count, sha256: x.sha256 }));
      if (this.items.length < this.opts.worldSize) {
        throw new Error(
          `${s.uri}: ${this.items.length} shards cannot be split over WORLD_SIZE ${this.opts.worldSize}; repack with smaller shards`,
        );
      }
    }
  }

  /** The items (files or shards) rank `rank` reads in `epoch`: a seeded permutation, then every world-th. */
  async epochItems(epoch: number, rank = this.opts.rank): Promise<Item[]> {
    await this.init();
    const all = [...(this.items as Item[])];
    if (this.shuffle) shuffleInPlace(all, seededRandom(this.opts.seed, "order", epoch));
    return all.filter((_, i) => i % this.opts.worldSize === rank);
  }

  /** Batches every rank can produce in `epoch` (min over ranks, from the file list / shard counts). */
  async stepsPerEpoch(epoch: number): Promise<number> {
    let min = Number.POSITIVE_INFINITY;
    for (let r = 0; r < this.opts.worldSize; r++) {
      const n = (await this.epochItems(epoch, r)).reduce((a, it) => a + (it.kind === "shard" ? it.count : 1), 0);
      min = Math.min(min, Math.floor(n / this.opts.batchSize));
    }
    return min;
  }

  /** Start reading a shard now; up to `readAheadBytes` are buffered before the consumer gets to it. */
  private openShard(name: string): Readable | undefined {
    const uri = joinUri((this.opts.source as { uri: string }).uri.replace(/\/index\.json$/, ""), name);
    try {
      const body = this.storage.getStream(uri);
      const buf = new PassThrough({ highWaterMark: this.opts.readAheadBytes ?? 4 * 1024 * 1024 });
      body.on("error", (e) => buf.destroy(e));
      return body.pipe(buf);
    } catch {
      return undefined;
    }
  }

  private async *samples(items: Item[]): AsyncGenerator<RawSample> {
    let ahead: Readable | undefined;
    try {
      for (let i = 0; i < items.length; i++) {
        const it = items[i];
        if (this.stopped) return;
        if (it.kind === "file") {
          try {
            yield { key: it.rel, jpg: await readFile(it.path), label: it.label, source: it.path };
          } catch {
            this.counters.unreadableFiles++;
          }
          continue;
        }
        const body = ahead ?? this.openShard(it.name);
        // Shard read-ahead: the next shard's GET starts while this one is parsed.
        const next = items[i + 1];
        ahead = next?.kind === "shard" ? this.openShard(next.name) : undefined;
        if (!body) {
          this.counters.truncatedShards++;
          continue;
        }
        const result: ShardReadResult = { samples: 0, truncated: false, incomplete: 0, sha256: "" };
        yield* readTarSamples(body, it.name, result, it.count);
        this.counters.incompleteSamples += result.incomplete;
        if (result.truncated) this.counters.truncatedShards++;
        else if (result.sha256 !== it.sha256) this.counters.shardChecksumMismatches++;
      }
    } finally {
      ahead?.destroy();
    }
  }

  private async prepare(s: RawSample, epoch: number): Promise<Prepared | null> {
    try {
      const img = await decodeRgb(s.jpg);
      const v = await makeViews(
        img,
        this.opts.views,
        this.opts.mode,
        seededRandom(this.opts.seed, "aug", epoch, s.key),
      );
      return { key: s.key, label: s.label, ...v };
    } catch (e) {
      // Decode failures are CorruptImageError; a sharp failure in a later op means the same for this sample.
      if (!(e instanceof CorruptImageError)) this.lastPrepareError = (e as Error).message;
      this.counters.corruptImages++;
      return null;
    }
  }

  private makeBatch(epoch: number, index: number, xs: Prepared[]): Batch {
    const { recon, teacher, student } = this.opts.views;
    const b = xs.length;
    const image = new Float32Array(b * recon * recon * 3);
    const imageAugW = teacher ? new Float32Array(b * teacher * teacher * 3) : undefined;
    const imageAugS = student ? new Float32Array(b * student * student * 3) : undefined;
    xs.forEach((x, i) => {
      normaliseInto(x.image, image, i * recon * recon * 3, "minus1to1");
      if (imageAugW && x.imageAugW && teacher)
        normaliseInto(x.imageAugW, imageAugW, i * teacher * teacher * 3, "imagenet");
      if (imageAugS && x.imageAugS && student)
        normaliseInto(x.imageAugS, imageAugS, i * student * student * 3, "minus1to1");
    });
    return {
      epoch,
      index,
      size: b,
      labels: Int32Array.from(xs.map((x) => x.label)),
      keys: xs.map((x) => x.key),
      image,
      imageAugW,
      imageAugS,
    };
  }

  private async produce(q: BoundedQueue<Batch>): Promise<void> {
    const start = this.opts.startEpoch ?? 0;
    const end = start + (this.opts.epochs ?? Number.POSITIVE_INFINITY);
    const conc = this.opts.decodeConcurrency ?? Math.max(1, os.availableParallelism());
    const dropLast = this.opts.dropLast ?? this.opts.mode === "train";
    for (let epoch = start; epoch < end && !this.stopped; epoch++) {
      const items = await this.epochItems(epoch);
      const bufSize = this.shuffle ? (this.opts.shuffleBuffer ?? 512) : 0;
      const shuffled = shuffleBuffer(
        this.samples(items),
        bufSize,
        seededRandom(this.opts.seed, "buffer", epoch, this.opts.rank),
      );
      let pending: Prepared[] = [];
      let index = 0;
      const cap = this.opts.maxBatchesPerEpoch ?? Number.POSITIVE_INFINITY;
      for await (const p of orderedMap(shuffled, conc, (s) => this.prepare(s, epoch))) {
        if (this.stopped || index >= cap) break;
        if (!p) continue;
        pending.push(p);
        this.counters.samples++;
        if (pending.length === this.opts.batchSize) {
          if (!(await q.push(this.makeBatch(epoch, index++, pending)))) return;
          pending = [];
        }
      }
      if (pending.length && !dropLast && index < cap && !this.stopped) {
        if (!(await q.push(this.makeBatch(epoch, index++, pending)))) return;
      }
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Batch> {
    if (this.queue) throw new Error("a DataLoader can be iterated once");
    const q = new BoundedQueue<Batch>(Math.max(1, this.opts.prefetchBatches ?? 4));
    this.queue = q;
    this.started = performance.now();
    this.produce(q).then(
      () => q.close(),
      (e) => q.close(e as Error),
    );
    let first = true;
    return {
      next: async () => {
        const empty = q.length === 0;
        const t0 = performance.now();
        const b = await q.shift();
        const waited = performance.now() - t0;
        if (first) {
          this.counters.firstBatchMs = performance.now() - this.started;
          first = false;
        } else if (empty && b) {
          this.counters.starvationMs += waited;
          this.counters.starvedCalls++;
        }
        if (!b) return { done: true, value: undefined };
        this.counters.batches++;
        return { done: false, value: b };
      },
      return: async () => {
        this.close();
        return { done: true, value: undefined };
      },
    };
  }

  /** Stop the producer (pending batches are dropped). */
  close(): void {
    this.stopped = true;
    this.queue?.close();
  }
}
