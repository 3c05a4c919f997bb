// MergeAR data helpers and the duplicate-masking attention bias (docs/model.md §5.5): the figure's 9-token example,
// dup flags from groups vs codes, unmerge by groups.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { dupFromCodes, dupFromGroups, expandByGroups, spatialBias, visible } from "./mergeAR.ts";

describe("MergeAR", () => {
  before(async () => {
    await selectBackend({ requested: process.env.TFJS_BACKEND ?? "wasm" });
  });

  it("dup flags of the figure's groups P1,P1,P3,P3,P5,P5,P5,P8,P8 and the w = 2 visibility pattern", () => {
    const groups = Int32Array.from([0, 0, 1, 1, 2, 2, 2, 3, 3]);
    const dup = dupFromGroups(groups, 1, 9);
    assert.deepEqual(Array.from(dup), [0, 1, 0, 1, 0, 1, 1, 0, 1]);
    // Query 8 sees itself, 6, 7 (recent) and the first occurrences 0, 2, 4; 1, 3, 5 are evicted.
    const seen = Array.from({ length: 9 }, (_, j) => j).filter((j) => visible(8, j, dup[j] === 1, 2));
    assert.deepEqual(seen, [0, 2, 4, 6, 7, 8]);
  });

  it("dupFromCodes = dupFromGroups when groups have distinct codes; expandByGroups gathers kept codes", () => {
    const groups = Int32Array.from([0, 1, 0, 2, 1, 1, /* sample 2 */ 2, 2, 0, 1, 0, 2]);
    const kept = Int32Array.from([7, 9, 4, /* sample 2 */ 100, 3, 5]);
    const codes = expandByGroups(kept, groups, 2, 3, 6);
    assert.deepEqual(Array.from(codes), [7, 9, 7, 4, 9, 9, 5, 5, 100, 3, 100, 5]);
    assert.deepEqual(Array.from(dupFromCodes(codes, 2, 6)), Array.from(dupFromGroups(groups, 2, 6)));
    assert.throws(
      () => expandByGroups(kept, Int32Array.from([0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 2, 3, 6),
      /out of range/,
    );
  });

  it("spatialBias: causal without dup; with dup, exactly the `visible` rule plus an always-visible prefix", () => {
    const P = 2;
    const n = 8;
    const T = P + n;
    const causal = spatialBias(P, n).arraySync() as number[][][][];
    for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) assert.equal(causal[0][0][q][k] === 0, k <= q);
    const dupFlags = [0, 1, 1, 0, 1, 1, 0, 1, 1, /* 2nd sample */ 0, 0, 0, 0, 1, 1, 1, 1, 0];
    const dup = tf.tensor2d(dupFlags, [2, 9]);
    const bias = spatialBias(P, n, { dup, window: 2 }).arraySync() as number[][][][];
    for (let b = 0; b < 2; b++) {
      for (let q = 0; q < T; q++) {
        for (let k = 0; k < T; k++) {
          const want = k <= q && (k < P || q < P || visible(q - P, k - P, dupFlags[b * 9 + k - P] === 1, 2));
          assert.equal(bias[b][0][q][k] === 0, want, `b ${b} q ${q} k ${k}`);
        }
      }
    }
    dup.dispose();
  });
});
