// BatchSource over the data plane's DataLoader (trainer/src/data/loader.ts): tar shards (s3:// or local) or
// ImageNet folders, rank-sharded by GLOBAL rank, decoded in parallel with a bounded prefetch queue.
//
// Equal steps per rank: every epoch is capped at `stepsCap` batches, a lower bound that holds for every epoch's
// shard assignment (each rank gets ⌊n/world⌋ or ⌈n/world⌉ of the n shards, so its sample count is at least the
// sum of the ⌊n/world⌋ smallest shards). Ranks therefore start epochs together and read the same number of
// batches per epoch, and no rank runs out of data while others wait in an all-reduce.
//
// `next(n)` may ask for any n: samples are sliced out of the loader's fixed-size batches (the evaluation asks
// for a short last batch). State = (epoch, batch index, offset in that batch); a resumed source restarts the
// loader at that epoch and skips the consumed batches, which reproduces the same samples and crops because the
// loader's order and augmentation are pure functions of (seed, epoch, rank, sample key).
import * as tf from "@tensorflow/tfjs";
import type { ViewSizes } from "./augment.ts";
import { type Batch, type DataCounters, DataLoader, type DataSource, dataErrors } from "./loader.ts";
import type { BatchSource, DataSourceState, TrainBatch } from "./localFolder.ts";

export interface LoaderSourceOptions {
  source: DataSource;
  mode: "train" | "val";
  /** Loader batch size (samples decoded per queue entry); `next(n)` may still ask for any n. */
  batchSize: number;
  views: ViewSizes;
  rank: number;
  worldSize: number;
  seed: number;
  /** Decode concurrency / prefetch (defaults of the data plane when absent). */
  decodeConcurrency?: number;
  prefetchBatches?: number;
}

export interface LoaderSourceState extends DataSourceState {
  kind: "loader";
  epoch: number;
  /** Batches of `epoch` fully consumed. */
  batch: number;
  /** Samples consumed from batch `batch`. */
  offset: number;
}

export class LoaderSource implements BatchSource {
  readonly size: number;
  private loader!: DataLoader;
  private it!: AsyncIterator<Batch>;
  private cur: Batch | undefined;
  private offset = 0;
  private state: LoaderSourceState = { kind: "loader", epoch: 0, batch: 0, offset: 0 };
  private totalSamples = 0;

  private constructor(
    private readonly opts: LoaderSourceOptions,
    /** Batches per epoch every rank can read. */
    readonly stepsCap: number,
    /** Counters of the loaders opened so far (a resume opens a new one). */
    private readonly past: DataCounters[] = [],
  ) {
    this.size = opts.views.recon;
  }

  static async open(opts: LoaderSourceOptions): Promise<LoaderSource> {
    const probe = new DataLoader({ ...opts, rank: 0, worldSize: opts.worldSize, epochs: 1 });
    await probe.init();
    const cap = await LoaderSource.capFor(probe, opts);
    if (cap < 1) {
      throw new Error(
        `${describe(opts.source)}: too few images for WORLD_SIZE ${opts.worldSize} × batch ${opts.batchSize} (a rank would get no full batch per epoch)`,
      );
    }
    const s = new LoaderSource(opts, cap);
    s.restart(0, 0, 0);
    return s;
  }

  private static async capFor(probe: DataLoader, opts: LoaderSourceOptions): Promise<number> {
    if (opts.mode !== "train") return Number.MAX_SAFE_INTEGER;
    // Sample counts of all items (shards or files); the union over ranks does not depend on the epoch.
    const counts: number[] = [];
    for (let r = 0; r < opts.worldSize; r++)
      for (const it of await probe.epochItems(0, r)) counts.push(it.kind === "shard" ? it.count : 1);
    const per = Math.floor(counts.length / opts.worldSize);
    const smallest = counts.sort((a, b) => a - b).slice(0, per);
    return Math.floor(smallest.reduce((a, b) => a + b, 0) / opts.batchSize);
  }

  private restart(epoch: number, batch: number, offset: number): void {
    if (this.opts.mode === "train" && batch >= this.stepsCap) {
      epoch++;
      batch = 0;
      offset = 0;
    }
    if (this.loader) {
      this.past.push({ ...this.loader.counters });
      this.loader.close();
    }
    this.loader = new DataLoader({
      source: this.opts.source,
      batchSize: this.opts.batchSize,
      views: this.opts.views,
      mode: this.opts.mode,
      rank: this.opts.rank,
      worldSize: this.opts.worldSize,
      seed: this.opts.seed,
      startEpoch: epoch,
      maxBatchesPerEpoch: this.opts.mode === "train" ? this.stepsCap : undefined,
      decodeConcurrency: this.opts.decodeConcurrency,
      prefetchBatches: this.opts.prefetchBatches,
    });
    this.it = this.loader[Symbol.asyncIterator]();
    this.cur = undefined;
    this.offset = 0;
    this.state = { kind: "loader", epoch, batch, offset };
    this.skip = { epoch, batch, offset };
  }

  private skip: { epoch: number; batch: number; offset: number } | undefined;

  /** Samples this rank sees per epoch. */
  get epochSize(): number {
    return this.opts.mode === "train" ? this.stepsCap * this.opts.batchSize : this.totalSamples;
  }

  /** Skipped-input counters over every loader this source opened (all keys, zeros included). */
  get dataErrors(): Record<string, number> {
    const sum = (k: keyof DataCounters) => this.past.reduce((a, c) => a + c[k], this.loader.counters[k]);
    const errs = dataErrors(this.loader.counters);
    for (const k of [
      "corruptImages",
      "unreadableFiles",
      "truncatedShards",
      "incompleteSamples",
      "shardChecksumMismatches",
    ] as const)
      errs[k] = sum(k);
    return errs;
  }

  /** Loader counters (samples, starvation, …) of the current loader. */
  get counters(): DataCounters {
    return this.loader.counters;
  }

  private async nextLoaderBatch(): Promise<Batch> {
    for (;;) {
      const r = await this.it.next();
      if (r.done)
        throw new Error(
          `${describe(this.opts.source)}: the data loader ended (${this.loader.lastPrepareError ?? "no more samples"})`,
        );
      const b = r.value;
      const s = this.skip;
      if (s && (b.epoch < s.epoch || (b.epoch === s.epoch && b.index < s.batch))) continue;
      if (s && b.epoch === s.epoch && b.index === s.batch) this.offset = s.offset;
      else this.offset = 0;
      this.skip = undefined;
      return b;
    }
  }

  async next(n: number): Promise<TrainBatch> {
    const { recon, teacher, student } = this.opts.views;
    const image = new Float32Array(n * recon * recon * 3);
    const tv = teacher ? new Float32Array(n * teacher * teacher * 3) : undefined;
    const sv = student ? new Float32Array(n * student * student * 3) : undefined;
    const labels = new Int32Array(n);
    const files: string[] = [];
    let filled = 0;
    let indexInEpoch: number | undefined;
    while (filled < n) {
      if (!this.cur || this.offset >= this.cur.size) {
        this.cur = await this.nextLoaderBatch();
        this.state = { kind: "loader", epoch: this.cur.epoch, batch: this.cur.index, offset: this.offset };
      }
      // Samples of this epoch consumed before this batch ÷ n (the loader's batches hold opts.batchSize samples).
      indexInEpoch ??= Math.floor((this.cur.index * this.opts.batchSize + this.offset) / n);
      const b = this.cur;
      const take = Math.min(n - filled, b.size - this.offset);
      const copy = (src: Float32Array | undefined, dst: Float32Array | undefined, side: number | undefined) => {
        if (!src || !dst || !side) return;
        const px = side * side * 3;
        dst.set(src.subarray(this.offset * px, (this.offset + take) * px), filled * px);
      };
      copy(b.image, image, recon);
      copy(b.imageAugW, tv, teacher);
      copy(b.imageAugS, sv, student);
      labels.set(b.labels.subarray(this.offset, this.offset + take), filled);
      files.push(...b.keys.slice(this.offset, this.offset + take));
      this.offset += take;
      filled += take;
      this.totalSamples += take;
      this.state =
        this.offset >= b.size
          ? { kind: "loader", epoch: b.epoch, batch: b.index + 1, offset: 0 }
          : { kind: "loader", epoch: b.epoch, batch: b.index, offset: this.offset };
    }
    return {
      image: tf.tensor4d(image, [n, recon, recon, 3]),
      teacherView: tv && teacher ? tf.tensor4d(tv, [n, teacher, teacher, 3]) : undefined,
      studentView: sv && student ? tf.tensor4d(sv, [n, student, student, 3]) : undefined,
      labels,
      files,
      indexInEpoch,
    };
  }

  getState(): LoaderSourceState {
    return { ...this.state };
  }

  setState(s: DataSourceState): void {
    const st = s as Partial<LoaderSourceState>;
    if (st.kind !== "loader" || typeof st.epoch !== "number" || typeof st.batch !== "number") {
      throw new Error(
        `checkpoint data state ${JSON.stringify(s).slice(0, 200)} was not written by the shard/loader source (resume with the same kind of --data)`,
      );
    }
    this.restart(st.epoch, st.batch, st.offset ?? 0);
  }

  close(): void {
    this.loader.close();
  }
}

function describe(s: DataSource): string {
  return s.kind === "shards" ? s.uri : s.root;
}
