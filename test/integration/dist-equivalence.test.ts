// Acceptance (issue 9): "2 ranks × batch b for N steps == 1 rank × batch 2b" (same seed, same data order),
// here with a 2-layer tanh MLP trained with Adam (lr 1e-2) on the tfjs cpu backend. Each rank starts from
// DIFFERENT random weights; broadcastVariables must replace them with rank 0's. The batch loss is a mean, so
// the mean of the two half-batch gradients equals the full-batch gradient up to float32 rounding.
// Tolerance: max |w_ddp − w_ref| ≤ 1e-5 (measured ≈ 6e-8 with |w| ≤ 0.3 after 8 steps). The negative control
// (each rank training alone on its half, no averaging) must miss the reference by > 100× the tolerance.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { killAll, type RankProc, spawnNode, spawnRanks, WORKER } from "../../trainer/src/dist/testing.ts";

const TOLERANCE = 1e-5;
const STEPS = "8";
const B = 8;
const all: RankProc[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), "dist-eq-"));
after(() => {
  killAll(all);
  rmSync(dir, { recursive: true, force: true });
});
const read = (f: string) => readFileSync(path.join(dir, f));
const f32 = (b: Buffer) => new Float32Array(b.buffer, b.byteOffset, b.length / 4);
const maxDiff = (a: Float32Array, b: Float32Array) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe("data-parallel equivalence (real processes)", () => {
  it(`2 ranks × batch ${B} for ${STEPS} Adam steps == 1 rank × batch ${2 * B} (max |Δw| ≤ ${TOLERANCE})`, async () => {
    const common = { DIST_TEST_OUT: dir, DIST_TEST_STEPS: STEPS };
    const ranks = await spawnRanks("mlp", 2, { env: () => ({ ...common, DIST_TEST_BATCH: String(B) }) });
    const ref = spawnNode(WORKER, ["mlp"], { ...common, DIST_TEST_BATCH: String(2 * B), DIST_TEST_TAG: "ref" }, 0);
    all.push(...ranks, ref);
    for (const p of [...ranks, ref]) assert.equal((await p.exited).code, 0, p.stderr);
    const w0 = read("mlp-rank0.bin");
    const w1 = read("mlp-rank1.bin");
    assert.ok(w0.equals(w1), "both ranks must hold bit-identical weights");
    const wRef = f32(read("ref-rank0.bin"));
    const d = maxDiff(f32(w0), wRef);
    process.stderr.write(`max |w_ddp − w_ref| = ${d.toExponential(2)} (tolerance ${TOLERANCE})\n`);
    assert.ok(d <= TOLERANCE, `max |Δw| = ${d}`);
    const dLocal = maxDiff(f32(read("mlp-local-rank0.bin")), wRef);
    assert.ok(dLocal > 100 * TOLERANCE, `negative control too close: ${dLocal}`);
    const losses = await Promise.all([...ranks, ref].map((p) => p.line((o) => typeof o.loss === "number")));
    assert.equal(losses[0].loss, losses[1].loss, "reduced loss must be identical on both ranks");
    assert.ok(Math.abs((losses[0].loss as number) - (losses[2].loss as number)) < 1e-5);
  });
});
