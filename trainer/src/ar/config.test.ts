// Stage II config resolution and the analytic parameter count (docs/model.md §5.2 table, §10 tiny) checked against
// the spec's published numbers and against the parameters the model actually allocates.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { countParams } from "../nn/params.ts";
import { arParamCount, ffnHiddenDim, resolveARConfig, splitBits } from "./config.ts";
import { arParamSpecs } from "./gpt.ts";
import { tinyConfig } from "./testing.ts";

const model = (size: "tiny" | "B" | "L" | "XL", mergeAR = false) => ({
  size,
  numClasses: 1000,
  classDropout: 0.1,
  mergeAR: { enabled: mergeAR, window: 2 },
});
const gr = { zChannels: 18, L: 256, numCandidates: 6 };

describe("AR config", () => {
  it("B at 18 bits, L = 256, 1000 classes has 343.6 M parameters (±0.1 M); L 804.4 M; XL 1.49 B", () => {
    const B = resolveARConfig(model("B"), gr);
    assert.ok(Math.abs(arParamCount(B) / 1e6 - 343.6) <= 0.1, `B: ${arParamCount(B)}`);
    assert.equal(arParamCount(B), 343_570_432);
    const L = resolveARConfig(model("L"), gr);
    assert.ok(Math.abs(arParamCount(L) / 1e6 - 804.4) <= 0.1, `L: ${arParamCount(L)}`);
    const XL = resolveARConfig(model("XL"), gr);
    assert.ok(Math.abs(arParamCount(XL) / 1e9 - 1.49) <= 0.005, `XL: ${arParamCount(XL)}`);
  });

  it("the analytic count equals the declared parameters (B, B+MergeAR) and tiny is ≈ 0.17 M", () => {
    for (const cfg of [
      resolveARConfig(model("B"), gr),
      resolveARConfig(model("B", true), gr),
      tinyConfig(),
      tinyConfig({ mergeAR: true }),
    ]) {
      assert.equal(countParams(arParamSpecs(cfg)), arParamCount(cfg), `${cfg.size} mergeAR ${cfg.mergeAR.enabled}`);
    }
    assert.equal(arParamCount(tinyConfig()), 171_136);
    assert.equal(arParamCount(tinyConfig({ mergeAR: true })) - arParamCount(tinyConfig()), 4 * 64, "M table: 4 × dim");
  });

  it("derives FFN widths, bit split, grid and MergeAR table size", () => {
    assert.deepEqual(
      [64, 1024, 1280, 1536].map((d, i) => ffnHiddenDim(d, i === 0 ? 32 : 256)),
      [192, 2816, 3584, 4096],
    );
    assert.deepEqual(splitBits(18), { preBits: 6, postBits: 12 });
    assert.deepEqual(splitBits(10), { preBits: 4, postBits: 6 });
    const t = tinyConfig({ mergeAR: true });
    assert.equal(t.gridSide, 8);
    assert.equal(t.ffnHidden, 192);
    assert.deepEqual(t.mergeAR, { enabled: true, window: 2, numMergeTokens: 4 });
    assert.equal(tinyConfig().mergeAR.numMergeTokens, 0);
    const g = resolveARConfig(model("B"), { zChannels: 18, L: 1024, numCandidates: 4 }, 5);
    assert.equal(g.gridSide, 32);
    assert.equal(g.seed, 5);
  });

  it("rejects invalid inputs with the offending field named", () => {
    assert.throws(() => resolveARConfig(model("B"), { ...gr, L: 200 }), /tokenizer.L/);
    assert.throws(() => resolveARConfig({ ...model("B", true), mergeAR: { enabled: true, window: 0 } }, gr), /window/);
    assert.throws(() => resolveARConfig({ ...model("B"), numClasses: 0 }, gr), /numClasses/);
    assert.throws(() => resolveARConfig(model("B", true), { ...gr, numCandidates: 0 }), /numCandidates/);
  });
});
