// Incremental KV-cached decoding vs the full training forward (docs/model.md §10 "Stage-II tiny" / "MergeAR tiny"):
// teacher-forced logits agree position by position (a) without MergeAR and (b) with MergeAR where the
// decoder evicts duplicates and the forward masks them (masking ≡ eviction); CFG scale 1 = conditional
// logits; seeded sampling is reproducible and produces valid LFQ indices.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { ARDecoder, generate } from "./generate.ts";
import { GPT } from "./gpt.ts";
import { dupFromCodes, visible } from "./mergeAR.ts";
import { randomizeWeights, sequencesWithDuplicates, tinyConfig } from "./testing.ts";

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

/** Teacher-force `codes` [B, L] through the decoder; returns max |Δ| against the forward logits per head. */
function compareTeacherForced(
  model: GPT,
  codes: Int32Array,
  labels: number[],
  mergeTokens: number[] | undefined,
  evict: boolean,
) {
  const cfg = model.config;
  const B = labels.length;
  const L = cfg.L;
  const vPre = 2 ** cfg.preBits;
  const vPost = 2 ** cfg.postBits;
  const dup = cfg.mergeAR.enabled && evict ? tf.tensor2d(dupFromCodes(codes, B, L), [B, L]) : undefined;
  const fwd = model.forward(
    {
      labels: tf.tensor1d(labels, "int32"),
      indices: tf.tensor2d(codes, [B, L], "int32"),
      mergeTokens: mergeTokens ? tf.tensor1d(mergeTokens, "int32") : undefined,
      dup,
    },
    { training: false },
  );
  const fPre = fwd.logitsPre.dataSync();
  const fPost = fwd.logitsPost.dataSync();
  const dec = new ARDecoder(model, { labels, mergeTokens, cfg: false, evict });
  let dPre = 0;
  let dPost = 0;
  try {
    for (let s = 0; s < L; s++) {
      dec.advance();
      const lp = dec.headPre();
      const tok = Int32Array.from({ length: B }, (_, b) => codes[b * L + s]);
      const lq = dec.headPost(Int32Array.from(tok, (t) => t % vPre));
      for (let b = 0; b < B; b++) {
        dPre = Math.max(
          dPre,
          maxAbsDiff(lp.subarray(b * vPre, (b + 1) * vPre), fPre.subarray((b * L + s) * vPre, (b * L + s + 1) * vPre)),
        );
        dPost = Math.max(
          dPost,
          maxAbsDiff(
            lq.subarray(b * vPost, (b + 1) * vPost),
            fPost.subarray((b * L + s) * vPost, (b * L + s + 1) * vPost),
          ),
        );
      }
      if (evict && s > 0) {
        // The live cache of the query that just ran is exactly the set the training mask lets it see.
        const q = s - 1;
        for (let b = 0; b < B; b++) {
          const live = dec
            .liveSlots(b)
            .filter((x) => x.pos >= 0)
            .map((x) => x.pos);
          const want = Array.from({ length: q + 1 }, (_, j) => j).filter((j) =>
            visible(q, j, dupFromCodes(codes.subarray(b * L, (b + 1) * L), 1, L)[j] === 1, cfg.mergeAR.window),
          );
          assert.deepEqual(live, want, `live cache of sample ${b} at query ${q}`);
        }
      }
      dec.commit(tok);
    }
    return { dPre, dPost, evicted: dec.evicted, maxCacheLength: dec.maxCacheLength, fwd };
  } finally {
    dec.dispose();
    dup?.dispose();
  }
}

describe("AR generation", () => {
  before(async () => {
    await selectBackend({ requested: process.env.TFJS_BACKEND ?? "wasm" });
  });

  it("(a) without MergeAR: teacher-forced KV-cached logits = full forward logits (≤ 1e-4)", () => {
    const model = new GPT(tinyConfig());
    randomizeWeights(model, 11);
    const { codes } = sequencesWithDuplicates(2, 64, 64, 10, 5);
    const r = compareTeacherForced(model, codes, [3, 10], undefined, false);
    assert.ok(r.dPre <= 1e-4 && r.dPost <= 1e-4, `max |Δ| pre ${r.dPre} post ${r.dPost}`);
    assert.equal(r.evicted, 0);
    assert.equal(r.maxCacheLength, 1 + 63, "no eviction: [C] + L − 1 tokens");
    r.fwd.logitsPre.dispose();
    r.fwd.logitsPost.dispose();
    model.dispose();
  });

  it("(b) MergeAR: duplicate-masked forward = decoding with duplicate detection + KV eviction (≤ 1e-4)", () => {
    const model = new GPT(tinyConfig({ mergeAR: true, window: 2 }));
    randomizeWeights(model, 12);
    const B = 2;
    const L = 64;
    const { codes } = sequencesWithDuplicates(B, L, 12, 10, 6);
    const r = compareTeacherForced(model, codes, [1, 10], [2, 0], true);
    assert.ok(r.dPre <= 1e-4 && r.dPost <= 1e-4, `max |Δ| pre ${r.dPre} post ${r.dPost}`);
    const dups = dupFromCodes(codes, B, L);
    // Every duplicate among tok_0..tok_{L−2} (the fed tokens) that is older than the window is evicted once.
    let expectEvicted = 0;
    for (let b = 0; b < B; b++) for (let j = 0; j < L - 1 - 2 - 1; j++) expectEvicted += dups[b * L + j];
    assert.equal(r.evicted, expectEvicted);
    assert.ok(r.evicted > 50, `evictions happen (${r.evicted})`);
    assert.ok(r.maxCacheLength <= 2 + 12 + 2 + 1, `cache ≤ prefix + K + w + 1, got ${r.maxCacheLength}`);
    // Non-vacuous: the mask changes the logits (same model without dup flags differs).
    const plain = model.forward(
      {
        labels: tf.tensor1d([1, 10], "int32"),
        indices: tf.tensor2d(codes, [B, L], "int32"),
        mergeTokens: tf.tensor1d([2, 0], "int32"),
      },
      { training: false },
    );
    assert.ok(maxAbsDiff(plain.logitsPre.dataSync(), r.fwd.logitsPre.dataSync()) > 1e-2, "masking matters");
    tf.dispose([plain.logitsPre, plain.logitsPost, r.fwd.logitsPre, r.fwd.logitsPost]);
    model.dispose();
  });

  it("CFG with scale 1 equals the conditional logits; doubled rows carry the null class", () => {
    const model = new GPT(tinyConfig({ L: 16 }));
    randomizeWeights(model, 13);
    const labels = [4, 7];
    const cond = new ARDecoder(model, { labels, cfg: false, evict: false });
    const both = new ARDecoder(model, { labels, cfg: true, evict: false });
    const nullOnly = new ARDecoder(model, { labels: [10, 10], cfg: false, evict: false });
    const vPre = 16;
    let maxDiff = 0;
    let maxUncondDiff = 0;
    let maxCondVsUncond = 0;
    for (let s = 0; s < 16; s++) {
      for (const d of [cond, both, nullOnly]) d.advance();
      const c = cond.headPre();
      const cu = both.headPre();
      const u = nullOnly.headPre();
      const tok = [s * 37 + 5, s * 11 + 900].map((t) => t % 1024);
      for (const d of [cond, both, nullOnly]) d.headPost(tok.map((t) => t % vPre));
      for (let b = 0; b < 2; b++) {
        for (let v = 0; v < vPre; v++) {
          const cc = cu[b * vPre + v];
          const uu = cu[(2 + b) * vPre + v];
          maxDiff = Math.max(maxDiff, Math.abs(uu + 1 * (cc - uu) - c[b * vPre + v]));
          maxUncondDiff = Math.max(maxUncondDiff, Math.abs(uu - u[b * vPre + v]));
          maxCondVsUncond = Math.max(maxCondVsUncond, Math.abs(cc - uu));
        }
      }
      for (const d of [cond, both, nullOnly]) d.commit(tok);
    }
    for (const d of [cond, both, nullOnly]) d.dispose();
    assert.ok(maxDiff <= 1e-5, `u + 1·(c − u) vs conditional: ${maxDiff}`);
    assert.ok(maxUncondDiff <= 1e-5, `unconditional half = null-class rows: ${maxUncondDiff}`);
    assert.ok(maxCondVsUncond > 1e-3, "conditional and unconditional rows differ");
    model.dispose();
  });

  it("sampling is reproducible for a seed, differs across seeds, and yields indices in [0, 2^bits)", () => {
    const model = new GPT(tinyConfig({ mergeAR: true, L: 16 }));
    randomizeWeights(model, 14, 0.3);
    const o = {
      labels: [0, 5, 10],
      mergeTokens: [0, 1, 3],
      cfgScale: [1.5, 1.5] as [number, number],
      temperature: 1,
      seed: 7,
    };
    const a = generate(model, o);
    const b = generate(model, o);
    const c = generate(model, { ...o, seed: 8 });
    assert.equal(a.B, 3);
    assert.equal(a.L, 16);
    assert.equal(a.indices.length, 3 * 16);
    assert.deepEqual(Array.from(a.indices), Array.from(b.indices));
    assert.notDeepEqual(Array.from(a.indices), Array.from(c.indices));
    for (const v of [...a.indices, ...c.indices]) assert.ok(Number.isInteger(v) && v >= 0 && v < 1024, `index ${v}`);
    assert.ok(a.stats.seconds > 0);
    assert.ok(a.stats.maxCacheLength <= 2 + 15);
    // top-k 1 is greedy: deterministic whatever the seed.
    const g1 = generate(model, { ...o, topK: 1, seed: 1 });
    const g2 = generate(model, { ...o, topK: 1, seed: 2 });
    assert.deepEqual(Array.from(g1.indices), Array.from(g2.indices));
    model.dispose();
  });

  it("MergeAR generation evicts sampled duplicates (greedy on a repetitive model) and frees every tensor", () => {
    const model = new GPT(tinyConfig({ mergeAR: true, window: 2 }));
    randomizeWeights(model, 15, 0.05); // near-uniform attention: greedy decoding repeats codes
    const before = tf.memory().numTensors;
    const r = generate(model, { labels: [1, 2], mergeTokens: [0, 1], cfgScale: 1.5, temperature: 1, topK: 1, seed: 3 });
    const noEvict = generate(model, {
      labels: [1, 2],
      mergeTokens: [0, 1],
      cfgScale: 1.5,
      temperature: 1,
      topK: 1,
      seed: 3,
      evict: false,
    });
    assert.equal(tf.memory().numTensors, before, "no leaked tensors");
    const dups = dupFromCodes(r.indices, 2, 64).reduce((a, x) => a + x, 0);
    assert.ok(dups > 0, "greedy decoding repeats codes");
    assert.ok(
      r.stats.evicted > 0 && r.stats.maxCacheLength < noEvict.stats.maxCacheLength,
      JSON.stringify([r.stats, noEvict.stats]),
    );
    assert.equal(noEvict.stats.evicted, 0);
    assert.equal(noEvict.stats.maxCacheLength, 2 + 63);
    model.dispose();
  });
});
