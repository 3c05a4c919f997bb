// Sampling chain (docs/model.md §5.4): CFG combine, temperature, top-k, HF-style top-p, multinomial, seeded RNG.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Rng } from "../util/rng.ts";
import { cfgCombine, multinomial, sampleLogits, softmax, topKFilter, topPFilter } from "./sampling.ts";

const logOf = (p: number[]) => Float64Array.from(p, Math.log);
const kept = (x: Float64Array) => Array.from(x, (v, i) => (Number.isFinite(v) ? i : -1)).filter((i) => i >= 0);

describe("sampling", () => {
  it("cfgCombine = u + s·(c − u); s = 1 gives c, s = 0 gives u", () => {
    const c = [1, 2, 3];
    const u = [0.5, 4, -1];
    assert.deepEqual(Array.from(cfgCombine(c, u, 1)), c);
    assert.deepEqual(Array.from(cfgCombine(c, u, 0)), u);
    assert.deepEqual(Array.from(cfgCombine(c, u, 2)), [1.5, 0, 7]);
  });

  it("top-k keeps the k largest (ties at the k-th kept); 0 or ≥ V is off", () => {
    const x = Float64Array.from([0.1, 3, 2, 2, -1]);
    assert.deepEqual(kept(topKFilter(x, 1)), [1]);
    assert.deepEqual(kept(topKFilter(x, 2)), [1, 2, 3], "tie at the 2nd value keeps both");
    assert.deepEqual(kept(topKFilter(x, 4)), [0, 1, 2, 3]);
    assert.deepEqual(kept(topKFilter(x, 0)), [0, 1, 2, 3, 4]);
    assert.deepEqual(kept(topKFilter(x, 9)), [0, 1, 2, 3, 4]);
  });

  it("top-p keeps the first token whose cumulative mass exceeds p (HF shift) and always the top token", () => {
    const x = logOf([0.1, 0.5, 0.3, 0.1]); // sorted: 1 (.5), 2 (.8), 0/3 (.9, 1.0)
    assert.deepEqual(kept(topPFilter(x, 0.45)), [1], "the top token alone already exceeds 0.45");
    assert.deepEqual(kept(topPFilter(x, 0.6)), [1, 2], "first token crossing 0.6 is kept");
    assert.deepEqual(kept(topPFilter(x, 0.85)), [0, 1, 2], "tie broken by index");
    assert.deepEqual(kept(topPFilter(x, 0.01)), [1]);
    assert.deepEqual(kept(topPFilter(x, 1)), [0, 1, 2, 3]);
  });

  it("multinomial follows the probabilities and never draws a zero-probability entry", () => {
    const p = Float64Array.from([0, 0.25, 0, 0.75]);
    assert.equal(multinomial(p, 0), 1);
    assert.equal(multinomial(p, 0.2499), 1);
    assert.equal(multinomial(p, 0.25), 3);
    assert.equal(multinomial(p, 0.999999), 3);
    const rng = new Rng(1);
    const counts = [0, 0, 0, 0];
    const probs = softmax(logOf([0.1, 0.2, 0.3, 0.4]));
    for (let i = 0; i < 20000; i++) counts[multinomial(probs, rng.uniform())]++;
    for (const [i, c] of counts.entries()) assert.ok(Math.abs(c / 20000 - (i + 1) / 10) < 0.015, `${i}: ${c}`);
  });

  it("sampleLogits: reproducible for a seed, temperature sharpens, top-k 1 = argmax", () => {
    const x = [0.2, 1.5, 1.0, -0.3];
    const draw = (seed: number, t: number, topK?: number) => {
      const rng = new Rng(seed);
      return Array.from({ length: 200 }, () => sampleLogits(x, { temperature: t, topK }, rng));
    };
    assert.deepEqual(draw(5, 1), draw(5, 1));
    assert.notDeepEqual(draw(5, 1), draw(6, 1));
    assert.ok(draw(5, 1, 1).every((v) => v === 1));
    const frac = (a: number[]) => a.filter((v) => v === 1).length / a.length;
    assert.ok(frac(draw(9, 0.2)) > frac(draw(9, 5)), "low temperature picks the top token more often");
    assert.throws(() => sampleLogits(x, { temperature: 0 }, new Rng(1)), /temperature/);
  });
});
