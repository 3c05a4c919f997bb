// Per-layer key/value caches of the incremental decoder (docs/model.md §5.4) with MergeAR's position cache and
// eviction (docs/model.md §5.5 item 4). Tensors are [N, T, D] per layer (post-RoPE keys, values); N = 2B rows under
// CFG batch doubling (rows b and B + b always hold the same tokens, so one bookkeeping list per sample b
// drives both). Every slot of sample b records the raster position (−1 = prefix), LFQ code, group (raster
// position of its group's first occurrence) and duplicate flag of the token it holds; `null` marks a
// padding slot (masked). Eviction nulls duplicate slots; `compact()` then gathers the live slots to the front
// so the cache length (memory, attention cost) is max_b(#live slots of b) — ∝ K + w + prefix.
import * as tf from "@tensorflow/tfjs";
import { type KV, MASK_VALUE } from "./blocks.ts";

export interface Slot {
  /** Raster position of the token (−1: class / Merge-Instruction prefix). */
  pos: number;
  /** Full LFQ index (−1 for prefix slots). */
  code: number;
  /** Raster position of the first occurrence of this token's group. */
  group: number;
  /** Not the first occurrence of its group: evicted once it leaves the recent window. */
  dup: boolean;
}

export class KVCache {
  /** Rows N (B, or 2B under CFG). */
  readonly rows: number;
  /** Samples B (row r holds sample r mod B). */
  readonly samples: number;
  private readonly layers: (KV | undefined)[];
  /** Per sample, one entry per cache slot T (null = padding). */
  private slots: (Slot | null)[][];

  constructor(numLayers: number, rows: number, samples: number) {
    if (rows % samples !== 0) throw new Error(`KVCache: rows ${rows} is not a multiple of samples ${samples}`);
    this.rows = rows;
    this.samples = samples;
    this.layers = Array.from({ length: numLayers }, () => undefined);
    this.slots = Array.from({ length: samples }, () => []);
  }

  /** Slot count T of the tensors (incl. padding). */
  get length(): number {
    return this.slots[0].length;
  }

  /** Live slots of sample b (incl. prefix). */
  liveLength(b: number): number {
    return this.slots[b].reduce((n, s) => n + (s ? 1 : 0), 0);
  }

  maxLiveLength(): number {
    let m = 0;
    for (let b = 0; b < this.samples; b++) m = Math.max(m, this.liveLength(b));
    return m;
  }

  /** Live slots of sample b, in cache order. */
  live(b: number): Slot[] {
    return this.slots[b].filter((s): s is Slot => s !== null);
  }

  get(layer: number): KV | undefined {
    return this.layers[layer];
  }

  /** Append the new positions' K/V [N, t, D] of one layer (the cache keeps its own copies). */
  append(layer: number, kv: KV): void {
    const old = this.layers[layer];
    const next = old
      ? { k: tf.concat([old.k, kv.k], 1) as tf.Tensor3D, v: tf.concat([old.v, kv.v], 1) as tf.Tensor3D }
      : { k: tf.clone(kv.k), v: tf.clone(kv.v) };
    this.layers[layer] = { k: tf.keep(next.k), v: tf.keep(next.v) };
    if (old) {
      old.k.dispose();
      old.v.dispose();
    }
  }

  /** Bookkeeping of the positions just appended: perSample[b] = slots appended for sample b. */
  pushSlots(perSample: Slot[][]): void {
    for (const [b, s] of perSample.entries()) this.slots[b].push(...s);
  }

  /**
   * Additive bias [N, 1, 1, T + extra] for one query that also sees `extra` new positions appended after
   * the cache (0 = visible, MASK_VALUE = padding / evicted).
   */
  bias(extra: number): tf.Tensor4D {
    const T = this.length + extra;
    const data = new Float32Array(this.rows * T);
    for (let r = 0; r < this.rows; r++) {
      const sl = this.slots[r % this.samples];
      for (let t = 0; t < sl.length; t++) if (sl[t] === null) data[r * T + t] = MASK_VALUE;
    }
    return tf.tensor4d(data, [this.rows, 1, 1, T]);
  }

  /** Global duplicate search: the group of a live token slot of sample b holding `code`, or −1. */
  findCode(b: number, code: number): number {
    for (const s of this.slots[b]) if (s && s.pos >= 0 && s.code === code) return s.group;
    return -1;
  }

  /** Drop the slots matching `pred` (per sample); returns how many were dropped over all samples. */
  evict(pred: (s: Slot) => boolean): number {
    let n = 0;
    for (const sl of this.slots) {
      for (let t = 0; t < sl.length; t++) {
        const s = sl[t];
        if (s && pred(s)) {
          sl[t] = null;
          n++;
        }
      }
    }
    return n;
  }

  /**
   * Move live slots to the front (order kept) and shrink T to the longest live list. With `minFree` > 0 this
   * only happens once it frees at least that many slots (evicted slots are masked meanwhile, so deferring
   * the gather changes nothing but memory; it amortises the copy over several steps).
   */
  compact(minFree = 1): void {
    const T = this.length;
    const newT = this.maxLiveLength();
    if (T - newT < Math.max(1, minFree)) return;
    const order = this.slots.map((sl) => sl.flatMap((s, t) => (s ? [t] : [])));
    const flat = new Int32Array(this.rows * newT);
    for (let r = 0; r < this.rows; r++) {
      const o = order[r % this.samples];
      for (let t = 0; t < newT; t++) flat[r * newT + t] = r * T + (t < o.length ? o[t] : 0); // padding: any row, masked
    }
    const idx = tf.tensor1d(flat, "int32");
    for (let l = 0; l < this.layers.length; l++) {
      const kv = this.layers[l];
      if (!kv) continue;
      const g = (x: tf.Tensor3D) =>
        tf.keep(
          tf.tidy(
            () =>
              tf.reshape(tf.gather(tf.reshape(x, [this.rows * T, x.shape[2]]), idx), [
                this.rows,
                newT,
                x.shape[2],
              ]) as tf.Tensor3D,
          ),
        );
      this.layers[l] = { k: g(kv.k), v: g(kv.v) };
      kv.k.dispose();
      kv.v.dispose();
    }
    idx.dispose();
    this.slots = this.slots.map((sl) => {
      const live = sl.filter((s): s is Slot => s !== null);
      return [...live, ...Array<null>(newT - live.length).fill(null)];
    });
  }

  dispose(): void {
    for (const kv of this.layers) {
      kv?.k.dispose();
      kv?.v.dispose();
    }
    this.layers.fill(undefined);
  }
}
