// docs/model.md §1, §2.3, §2.8, §10: presets, exact r schedules, candidate cycles and parameter counts.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ZodError } from "zod";
import { candidateForBatch, candidateTable } from "./candidates.ts";
import { PRESETS, resolveConfig } from "./config.ts";
import { mergeSchedule, parseRRaw, tokensAfterBlocks } from "./tome.ts";

// docs/model.md §2.3 table (n = 12): L→K, r̄, r list.
const TABLE: [number, number, number, number[]][] = [
  [256, 144, 10, [12, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 5]],
  [256, 121, 12, [14, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6]],
  [256, 169, 8, [8, 11, 10, 9, 9, 8, 7, 6, 6, 5, 4, 4]],
  [256, 196, 5, [12, 6, 6, 5, 5, 5, 4, 4, 4, 3, 3, 3]],
  [256, 225, 3, [4, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2]],
  [256, 100, 13, [24, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7]],
  [256, 64, 16, [29, 22, 21, 19, 18, 16, 15, 13, 12, 10, 9, 8]],
  [256, 49, 18, [23, 25, 23, 22, 20, 18, 17, 15, 13, 12, 10, 9]],
  [256, 81, 15, [22, 20, 19, 18, 16, 15, 14, 13, 11, 10, 9, 8]],
  [256, 36, 19, [25, 26, 24, 23, 21, 19, 18, 16, 14, 13, 11, 10]],
  [1024, 256, 64, [101, 90, 84, 78, 72, 66, 61, 55, 49, 43, 37, 32]],
  [1024, 225, 67, [95, 94, 88, 82, 76, 70, 64, 58, 52, 46, 40, 34]],
  [1024, 289, 62, [89, 87, 81, 76, 70, 64, 59, 53, 47, 42, 36, 31]],
  [1024, 324, 59, [85, 82, 77, 72, 66, 61, 56, 51, 45, 40, 35, 30]],
  [1024, 361, 56, [80, 78, 73, 68, 63, 58, 53, 48, 43, 38, 33, 28]],
  [1024, 400, 52, [83, 73, 68, 63, 59, 54, 49, 44, 40, 35, 30, 26]],
  [1024, 441, 49, [73, 68, 64, 59, 55, 51, 46, 42, 38, 33, 29, 25]],
  [1024, 484, 45, [67, 63, 59, 55, 51, 47, 43, 39, 35, 31, 27, 23]],
  [1024, 529, 42, [59, 59, 55, 51, 47, 43, 40, 36, 32, 28, 24, 21]],
  [1024, 576, 38, [54, 53, 50, 46, 43, 39, 36, 32, 29, 25, 22, 19]],
  [1024, 196, 69, [108, 96, 90, 84, 78, 72, 65, 59, 53, 47, 41, 35]],
];

describe("merge schedule (docs/model.md §2.3)", () => {
  for (const [L, K, rBar, r] of TABLE) {
    it(`${L}→${K}: r̄ ${rBar}, r = [${r}]`, () => {
      const s = mergeSchedule(L - K, 12);
      assert.equal(s.rBar, rBar);
      assert.deepEqual(s.r, r);
      assert.equal(tokensAfterBlocks(L, s.r).at(-1), K);
    });
  }
  it("token counts after each block match the spec rows", () => {
    assert.deepEqual(
      tokensAfterBlocks(256, mergeSchedule(112, 12).r),
      [244, 230, 217, 205, 194, 184, 175, 167, 160, 154, 149, 144],
    );
    assert.deepEqual(
      tokensAfterBlocks(256, mergeSchedule(192, 12).r),
      [227, 205, 184, 165, 147, 131, 116, 103, 91, 81, 72, 64],
    );
    assert.deepEqual(
      tokensAfterBlocks(1024, mergeSchedule(768, 12).r),
      [923, 833, 749, 671, 599, 533, 472, 417, 368, 325, 288, 256],
    );
  });
  it("uses the step-first float64 rule (differs from multiply-first for r̄ = 50, n = 12)", () => {
    const raw = parseRRaw(50, 12);
    const mulFirst = Array.from({ length: 12 }, (_, l) => Math.trunc(75 + ((25 - 75) * l) / 11));
    assert.notDeepEqual(raw, mulFirst);
    const step = (25 - 75) / 11;
    assert.deepEqual(
      raw,
      Array.from({ length: 12 }, (_, l) => Math.trunc(75 + step * l)),
    );
  });
  it("merge_num 0 gives all zeros; the remainder can make r_0 smaller (256→169)", () => {
    assert.deepEqual(mergeSchedule(0, 4).r, [0, 0, 0, 0]);
    assert.equal(parseRRaw(8, 12)[0], 12);
    assert.equal(mergeSchedule(87, 12).r[0], 8);
  });
  it("T0 and T2 candidate schedules (docs/model.md §10)", () => {
    const t0 = candidateTable(64, 28, 4, "gaussian-4");
    assert.deepEqual(
      t0.map((c) => [c.K, c.r]),
      [
        [25, [15, 11, 8, 5]],
        [36, [10, 8, 6, 4]],
        [49, [6, 4, 3, 2]],
        [64, [0, 0, 0, 0]],
      ],
    );
    assert.deepEqual(tokensAfterBlocks(64, t0[1].r), [54, 46, 40, 36]);
    const t2 = candidateTable(256, 192, 4, "gaussian-4");
    assert.deepEqual(
      t2.map((c) => [c.K, c.r]),
      [
        [49, [78, 60, 43, 26]],
        [64, [72, 56, 40, 24]],
        [81, [66, 51, 36, 22]],
        [100, [59, 45, 32, 20]],
      ],
    );
    assert.deepEqual(tokensAfterBlocks(256, t2[1].r), [184, 128, 88, 64]);
  });
  it("per-layer cap on the 28×28 CLS pass of T2 (196 tokens) ends at 15/17/22 tokens", () => {
    const t2 = candidateTable(256, 192, 4, "gaussian-4");
    assert.deepEqual(
      t2.slice(0, 3).map((c) => tokensAfterBlocks(196, c.r).at(-1)),
      [15, 17, 22],
    );
  });
});

describe("keep-count candidates and the deterministic cycle (docs/model.md §2.3)", () => {
  const cases: [string, Record<number, number>][] = [
    ["GR_d64", { 121: 12, 144: 67, 169: 12, 196: 3, 225: 3, 256: 3 }],
    ["R_vitb_d64", { 49: 12, 64: 67, 81: 12, 100: 3, 121: 3, 144: 3 }],
    ["G_d64", { 225: 11, 256: 61, 289: 11, 324: 3, 361: 3, 400: 3, 441: 3, 484: 3, 529: 2 }],
    ["G_d32", { 225: 12, 256: 62, 289: 12, 324: 3, 361: 3, 400: 3, 441: 3, 484: 2 }],
    ["T0", { 25: 13, 36: 71, 49: 13, 64: 3 }],
    ["T2", { 49: 13, 64: 71, 81: 13, 100: 3 }],
  ];
  for (const [name, counts] of cases) {
    it(`${name} frequencies per 100 batches`, () => {
      assert.deepEqual(resolveConfig(name).derived.cycle, counts);
    });
  }
  it("selection is a pure function of the in-epoch batch index", () => {
    const c = resolveConfig("T0").derived.candidates;
    assert.equal(candidateForBatch(c, 0).K, 25);
    assert.equal(candidateForBatch(c, 13).K, 36);
    assert.equal(candidateForBatch(c, 113).K, 36);
    assert.equal(candidateForBatch(c, 99).K, 64);
    assert.equal(c.at(-1)?.cumulative, 1);
  });
});

describe("parameter counts (docs/model.md §2.8, ±0.1 M)", () => {
  const expected: Record<string, [number, number]> = {
    GR_d32: [42.7, 52.0],
    GR_d64: [69.5, 83.4],
    GR_d96: [155.1, 187.2],
    G_d32: [40.0, 51.4],
    G_d64: [65.0, 82.8],
    R_vitb_d64: [99.8, 83.4],
  };
  for (const [name, [enc, dec]] of Object.entries(expected)) {
    it(`${name}: encoder ${enc} M (incl. CLS head), decoder ${dec} M`, () => {
      const p = resolveConfig(name).derived.paramCounts;
      assert.ok(Math.abs((p.encoder + p.clsHead) / 1e6 - enc) <= 0.1, `encoder ${(p.encoder + p.clsHead) / 1e6}`);
      assert.ok(Math.abs(p.decoder / 1e6 - dec) <= 0.1, `decoder ${p.decoder / 1e6}`);
    });
  }
  it("T0: ≈0.40 M encoder with the 10-way head, ≈0.62 M decoder (docs/model.md §10)", () => {
    const p = resolveConfig("T0").derived.paramCounts;
    assert.ok(Math.abs((p.encoder + p.clsHead) / 1e6 - 0.4) < 0.01);
    assert.ok(Math.abs(p.decoder / 1e6 - 0.62) < 0.01);
  });
});

describe("config schema", () => {
  it("every preset validates and has the spec's nominal K", () => {
    const K: Record<string, number> = {
      GR_d32: 144,
      GR_d64: 144,
      GR_d96: 144,
      G_d32: 256,
      G_d64: 256,
      R_vitb_d64: 64,
      T0: 36,
      T1: 36,
      T2: 64,
    };
    for (const name of Object.keys(PRESETS)) assert.equal(resolveConfig(name).derived.K, K[name], name);
  });
  it("derived widths: d32 → 384, d64 → 512, d96 → 768; R encoder 768 / decoder 512 with 8 heads", () => {
    assert.equal(resolveConfig("GR_d32").derived.encDim, 384);
    assert.equal(resolveConfig("G_d64").derived.L, 1024);
    assert.equal(resolveConfig("GR_d96").derived.encDim, 768);
    const r = resolveConfig("R_vitb_d64").derived;
    assert.deepEqual([r.encDim, r.encHeads, r.decDim, r.decHeads, r.clsTokens], [768, 12, 512, 8, 196]);
  });
  it("overrides merge into a preset", () => {
    const c = resolveConfig({ preset: "T0", seed: 7, train: { batchSize: 4 } });
    assert.equal(c.seed, 7);
    assert.equal(c.train.batchSize, 4);
    assert.equal(c.train.lr, 2e-4);
    assert.equal(c.zChannels, 10);
  });
  it("rejects a non-square K, a width that is not a multiple of 32, and a cap-hitting schedule", () => {
    assert.throws(() => resolveConfig({ preset: "T0", mergeNum: 30, candDistribution: null }), ZodError);
    assert.throws(() => resolveConfig({ preset: "T0", ch: 48 }), ZodError);
    // L = 16, K = 4, n = 2 gives r [9, 3] which violates the 50 % cap (docs/model.md §10 caution).
    assert.throws(
      () => resolveConfig({ preset: "T0", resolution: 16, mergeNum: 12, numAttBlocks: 2, candDistribution: null }),
      /hits the per-layer cap/,
    );
    assert.throws(() => resolveConfig("T9"), /unknown tokenizer preset/);
  });
});
