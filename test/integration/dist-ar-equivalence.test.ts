// Acceptance (Stage II): "2 ranks × batch b for N steps == 1 rank × batch 2b" for the AR trainer, with real
// processes (trainer/src/train/arDistEquivalenceWorker.ts → buildARTrainer, openImageSource, joinProcessGroup),
// the tiny AR model with MergeAR on (per-sample K choice, dup masks, label dropout 0.3) on the codes of a T0
// tokenizer checkpoint made here by the Stage-I trainer, tfjs backend as selected (TFJS_BACKEND honoured).
//
// What makes it exact: the per-sample draws (K candidate, label dropout) are keyed by the GLOBAL sample index
// (arData.ts), the local-folder split hands rank r the stream positions ≡ r (mod 2) of one order shared with the
// 1-process run, and the model's dropout is off (training config `dropout: {token: 0, resid: 0}`, not a CRD
// field) because its masks are drawn per micro-batch tensor. The loss is a mean over B·L positions, so the
// mean of the two half-batch gradients is the full-batch gradient up to float32 rounding.
// Images: 4 classes × 4 real photos (trainer/src/util/testPhotos.ts) re-encoded as SQUARE 64×64 PNGs: the
// local-folder source takes a random crop of side = the shorter side, whose offset comes from a per-process RNG;
// for a square image that crop is the whole image whatever the draw, so every process sees the same pixels.
// 16 images, 2b = 8: step 3 reads the second epoch (checks that later epochs are split consistently too).
//
// Checks: (1) data — step for step, rank r's sample j is the reference's sample 2j + r: same file, label, label
// after dropout, K candidate, codes and dup mask (exact); (2) both ranks end bit-identical; (3) max |Δ| between
// the DDP and reference tensors (model weights AND AdamW moments) ≤ TOLERANCE; (4) per-step loss: the mean of
// the two ranks' micro-batch losses and the trainer's rank-averaged loss match the reference (LOSS_RTOL);
// (5) negative controls: rank 0's half trained alone misses by > 100 × TOLERANCE, and training moved the
// weights by > 50 × TOLERANCE (AdamW lr 1e-3: each step moves a weight by at most ≈ 1e-3).
// Tolerance: 1e-5 absolute on every tensor (values up to ≈ 1: RMSNorm weights). Measured max |Δ|: model
// 4.3e-7 (tfjs-node) / 5.7e-7 (wasm) — a few float32 ulps at 1.0 —, AdamW m 1.5e-8 / 1.9e-8, v 2.3e-9 / 3.3e-9;
// controls: local vs ref 3.3e-3 (model), 1.0e-2 (m); ref moved 1.7e-3 from init. Losses: LOSS_RTOL below.
// Runtime on 2 cores: ≈ 7 s with tfjs-node, ≈ 16–25 s with TFJS_BACKEND=wasm (4 processes + a 1-step T0
// tokenizer checkpoint).
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import sharp from "sharp";
import { createLogger } from "../../common/src/logger.ts";
import { selectBackend } from "../../trainer/src/backend/select.ts";
import { listImageFolder } from "../../trainer/src/data/localFolder.ts";
import {
  freePort,
  killAll,
  loopbackBlock,
  type RankProc,
  rendezvousEnv,
  spawnNode,
} from "../../trainer/src/dist/testing.ts";
import { makeT0TokenizerCheckpoint } from "../../trainer/src/train/arTesting.ts";
import { ensureTestPhotos } from "../../trainer/src/util/testPhotos.ts";

const WORKER = path.join(import.meta.dirname, "../../trainer/src/train/arDistEquivalenceWorker.ts");
const TOLERANCE = 1e-5;
/**
 * Relative loss tolerance. A step's loss is a float32 mean of 2b·L = 512 per-position terms (≈ 6.9): summing in
 * another order (two halves of 256, then averaging) errs by up to n·2⁻²⁴ ≈ 3e-5 relative in the worst case,
 * √n·2⁻²⁴ ≈ 1.4e-6 typically. Measured: 3.9e-6 (wasm, step 1), 6.9e-8 (tfjs-node).
 */
const LOSS_RTOL = 2e-5;
const STEPS = 3;
const B = 4;
const CLASSES = 4;
const PER_CLASS = 4;
const L = 64;
const all: RankProc[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), "dist-ar-eq-"));
const log = createLogger({ component: "dist-ar-eq-test" }, { level: "warn" });
let data = "";
let tokenizer = "";

before(async () => {
  await selectBackend({ log });
  const photos = ensureTestPhotos().dir;
  const { files, labels } = await listImageFolder(photos, "train");
  data = path.join(dir, "data");
  const picked = [...new Set(labels)]
    .map((c) => files.filter((_, i) => labels[i] === c).slice(0, PER_CLASS))
    .filter((m) => m.length === PER_CLASS)
    .slice(0, CLASSES);
  assert.equal(picked.length, CLASSES, `the test photos need ${CLASSES} classes with ≥ ${PER_CLASS} images`);
  for (const [c, members] of picked.entries()) {
    const cls = path.join(data, "train", `c${c}`);
    mkdirSync(cls, { recursive: true });
    for (const [i, f] of members.entries())
      await sharp(f)
        .resize(64, 64, { fit: "cover" })
        .png()
        .toFile(path.join(cls, `p${i}.png`));
  }
  tokenizer = await makeT0TokenizerCheckpoint({ data: photos, dir: path.join(dir, "tok"), log, steps: 1 });
});
after(() => {
  killAll(all);
  rmSync(dir, { recursive: true, force: true });
});

interface Out {
  names: string[];
  sizes: number[];
  losses: number[];
  reduced: Record<string, number>;
  backend: string;
  batches: {
    files: string[];
    labels: number[];
    dropped: number[];
    mergeTokens: number[];
    K: number[];
    indices: number[];
    dup: number[];
  }[];
}
const json = (tag: string) => JSON.parse(readFileSync(path.join(dir, `${tag}.json`), "utf8")) as Out;
const bin = (tag: string) => readFileSync(path.join(dir, `${tag}.bin`));
const f32 = (b: Buffer) => new Float32Array(b.buffer, b.byteOffset, b.length / 4);
/** The values of the tensors whose names start with `prefix` (contiguous: names are sorted). */
function section(layout: Out, a: Float32Array, prefix: string): Float32Array {
  let o = 0;
  let start = -1;
  let end = -1;
  layout.names.forEach((n, k) => {
    if (n.startsWith(prefix)) {
      if (start < 0) start = o;
      end = o + layout.sizes[k];
    }
    o += layout.sizes[k];
  });
  assert.ok(start >= 0, `no ${prefix} tensors`);
  return a.subarray(start, end);
}
/** Max |a − b| per checkpoint group (model/, adamw/m/, adamw/v/) and the largest |a| seen. */
function diffs(layout: Out, a: Float32Array, b: Float32Array): { group: Record<string, number>; maxAbs: number } {
  assert.equal(a.length, b.length);
  const group: Record<string, number> = {};
  let o = 0;
  let maxAbs = 0;
  layout.names.forEach((n, k) => {
    const g = n.slice(0, n.lastIndexOf("/") + 1).replace(/^(model\/).*/, "$1");
    for (let i = o; i < o + layout.sizes[k]; i++) {
      group[g] = Math.max(group[g] ?? 0, Math.abs(a[i] - b[i]));
      maxAbs = Math.max(maxAbs, Math.abs(a[i]));
    }
    o += layout.sizes[k];
  });
  return { group, maxAbs };
}

describe("AR data-parallel equivalence (real processes)", () => {
  it(`2 ranks × batch ${B} for ${STEPS} AdamW steps == 1 rank × batch ${2 * B} (MergeAR, max |Δ| ≤ ${TOLERANCE})`, async (t) => {
    const t0 = performance.now();
    const common = {
      AR_EQ_OUT: dir,
      AR_EQ_STEPS: String(STEPS),
      AR_EQ_BATCH: String(B),
      AR_EQ_DATA: data,
      AR_EQ_TOKENIZER: tokenizer,
      AR_EQ_LIMIT: String(CLASSES * PER_CLASS),
    };
    const ip = loopbackBlock();
    const port = await freePort(ip(0));
    const ranks = [0, 1].map((r) =>
      spawnNode(
        WORKER,
        [],
        {
          ...common,
          AR_EQ_MODE: "ddp",
          ...rendezvousEnv({ nnodes: 2, nodeRank: r, masterAddr: ip(0), port, podIp: ip(r) }),
        },
        r,
      ),
    );
    const ref = spawnNode(WORKER, [], { ...common, AR_EQ_MODE: "ref" }, 0);
    const local = spawnNode(WORKER, [], { ...common, AR_EQ_MODE: "local" }, 0);
    all.push(...ranks, ref, local);
    for (const p of [...ranks, ref, local]) assert.equal((await p.exited).code, 0, p.stderr.slice(-4000));
    const seconds = (performance.now() - t0) / 1000;

    // (1) The data: a partition of the reference's global batch, in the same global order, same draws.
    const outs = [json("ddp-rank0"), json("ddp-rank1")];
    const r = json("ref-rank0");
    assert.equal(r.batches.length, STEPS);
    const epoch1 = new Set(r.batches.slice(0, 2).flatMap((x) => x.files));
    assert.equal(epoch1.size, CLASSES * PER_CLASS, "steps 1–2 read every image once (step 3 is epoch 2)");
    let dropped = 0;
    let dupTokens = 0;
    const Ks = new Set<number>();
    for (let s = 0; s < STEPS; s++) {
      const g = r.batches[s];
      assert.equal(g.files.length, 2 * B);
      for (let rk = 0; rk < 2; rk++) {
        const p = outs[rk].batches[s];
        for (let j = 0; j < B; j++) {
          const k = 2 * j + rk;
          const at = `step ${s + 1}, rank ${rk}, sample ${j} ↔ reference sample ${k}`;
          assert.equal(p.files[j], g.files[k], `${at}: file`);
          assert.equal(p.labels[j], g.labels[k], `${at}: label`);
          assert.equal(p.dropped[j], g.dropped[k], `${at}: label after dropout`);
          assert.equal(p.mergeTokens[j], g.mergeTokens[k], `${at}: K candidate`);
          assert.equal(p.K[j], g.K[k], `${at}: K`);
          assert.deepEqual(p.indices.slice(j * L, (j + 1) * L), g.indices.slice(k * L, (k + 1) * L), `${at}: codes`);
          assert.deepEqual(p.dup.slice(j * L, (j + 1) * L), g.dup.slice(k * L, (k + 1) * L), `${at}: dup mask`);
        }
      }
      dropped += g.dropped.filter((x) => x === CLASSES).length;
      dupTokens += g.dup.reduce((a, x) => a + x, 0);
      for (const k of g.K) Ks.add(k);
    }
    // The deterministic draws (seed 5) exercise what the test is about.
    assert.ok(dropped > 0 && dropped < STEPS * 2 * B, `label dropout: ${dropped} of ${STEPS * 2 * B} dropped`);
    assert.ok(Ks.size >= 2 && Math.min(...Ks) < L, `per-sample K: ${[...Ks]}`);
    assert.ok(dupTokens > 0, "MergeAR duplicate positions present");
    // The local control read exactly rank 0's half.
    assert.deepEqual(json("local-rank0").batches, outs[0].batches);

    // (2)–(3) Weights and AdamW state.
    const w0 = bin("ddp-rank0");
    assert.ok(w0.equals(bin("ddp-rank1")), "both ranks must hold bit-identical tensors");
    assert.deepEqual(outs[0].names, r.names);
    const d = diffs(r, f32(w0), f32(bin("ref-rank0")));
    const worst = Math.max(...Object.values(d.group));
    t.diagnostic(
      `backend ${r.backend}; ${seconds.toFixed(1)} s for 4 processes; max |Δ| ddp vs ref: ${Object.entries(d.group)
        .map(([k, v]) => `${k} ${v.toExponential(2)}`)
        .join(", ")} (max |value| ${d.maxAbs.toFixed(3)}, tolerance ${TOLERANCE})`,
    );
    assert.ok(worst <= TOLERANCE, `max |Δ| = ${worst}`);
    assert.ok(
      d.group["model/"] !== undefined && d.group["adamw/m/"] !== undefined && d.group["adamw/v/"] !== undefined,
    );

    // (4) Losses, every step.
    const close = (a: number, b: number) => Math.abs(a - b) <= LOSS_RTOL * Math.abs(b);
    let lossDiff = 0;
    for (let s = 0; s < STEPS; s++) {
      const mean = (outs[0].losses[s] + outs[1].losses[s]) / 2;
      lossDiff = Math.max(lossDiff, Math.abs(mean - r.losses[s]) / r.losses[s]);
      assert.ok(close(mean, r.losses[s]), `step ${s + 1}: ddp ${mean} vs ref ${r.losses[s]}`);
    }
    assert.notEqual(outs[0].losses[STEPS - 1], outs[1].losses[STEPS - 1], "the halves are different data");
    assert.equal(outs[0].reduced.loss, outs[1].reduced.loss, "rank-averaged loss identical on both ranks");
    assert.ok(close(outs[0].reduced.loss, r.reduced.loss), `${outs[0].reduced.loss} vs ${r.reduced.loss}`);
    t.diagnostic(
      `losses ref ${r.losses.map((x) => x.toFixed(5)).join(" ")}; max relative loss diff ${lossDiff.toExponential(2)}`,
    );

    // (5) Negative controls: no averaging (rank 0's half alone), no training (the initial weights).
    const dLocal = diffs(r, f32(bin("local-rank0")), f32(bin("ref-rank0")));
    assert.ok(
      Math.max(...Object.values(dLocal.group)) > 100 * TOLERANCE,
      `negative control (rank 0's half alone) too close: ${JSON.stringify(dLocal.group)}`,
    );
    const refModel = section(r, f32(bin("ref-rank0")), "model/");
    const init = f32(bin("ref-init"));
    assert.equal(init.length, refModel.length);
    let moved = 0;
    for (let i = 0; i < init.length; i++) moved = Math.max(moved, Math.abs(init[i] - refModel[i]));
    assert.ok(moved > 50 * TOLERANCE, `training moved the weights by only ${moved}`);
    t.diagnostic(
      `controls: local vs ref ${JSON.stringify(dLocal.group)}; ref moved ${moved.toExponential(2)} from init`,
    );
  });
});
