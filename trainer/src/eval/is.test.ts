import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { InceptionScoreAccumulator, inceptionScore } from "./is.ts";
import { writeNpz } from "./npz.ts";
import { rng, runPython } from "./testing.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "is-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function randomLogits(n: number, c: number, seed: number, temp: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n * c }, () => r.normal() * temp);
}

describe("Inception Score", () => {
  it("matches a numpy implementation (10 splits, uneven split sizes)", async () => {
    const n = 257;
    const c = 40;
    const logits = randomLogits(n, c, 1, 3);
    const p = path.join(dir, "logits.npz");
    await writeNpz(p, { logits: { shape: [n, c], data: logits } });
    const ref = JSON.parse(runPython("fid_reference.py", ["is", p])) as { mean: number; std: number };
    const ours = inceptionScore(logits, n);
    assert.ok(Math.abs(ours.mean - ref.mean) < 1e-9 * ref.mean, `${ours.mean} vs ${ref.mean}`);
    assert.ok(Math.abs(ours.std - ref.std) < 1e-7 * Math.max(ref.std, 1e-3), `${ours.std} vs ${ref.std}`);
    assert.ok(ours.mean >= 1 && ours.mean <= c);
  });

  it("streaming (expectedCount) and buffered accumulation agree for any batching", () => {
    const n = 103;
    const c = 12;
    const logits = randomLogits(n, c, 2, 2);
    const streaming = new InceptionScoreAccumulator({ expectedCount: n });
    const buffered = new InceptionScoreAccumulator();
    let i = 0;
    for (const b of [5, 50, 1, 47]) {
      streaming.update(logits.subarray(i * c, (i + b) * c), b);
      buffered.update(logits.subarray(i * c, (i + b) * c), b);
      i += b;
    }
    const a = streaming.result();
    const b = buffered.result();
    assert.equal(a.count, n);
    assert.ok(Math.abs(a.mean - b.mean) < 1e-6 * a.mean, `${a.mean} vs ${b.mean}`);
  });

  it("is 1 for identical predictions and ≈ number of classes for confident, balanced ones", () => {
    const n = 160; // 16 per split = 2 per class: p(y) uniform in every split
    const c = 8;
    const same = new Float32Array(n * c).map((_, i) => (i % c) * 0.1);
    assert.ok(Math.abs(inceptionScore(same, n).mean - 1) < 1e-9);
    const confident = new Float32Array(n * c);
    for (let r = 0; r < n; r++) confident[r * c + (r % c)] = 60;
    const s = inceptionScore(confident, n).mean;
    assert.ok(s > c - 1e-6 && s <= c + 1e-9, String(s));
  });

  it("rejects wrong counts", () => {
    const a = new InceptionScoreAccumulator({ expectedCount: 20 });
    a.update(new Float32Array(15 * 4), 15);
    assert.throws(() => a.result(), /expectedCount/);
    assert.throws(() => inceptionScore(new Float32Array(5 * 4), 5), /expectedCount 5 < splits 10/);
  });
});
