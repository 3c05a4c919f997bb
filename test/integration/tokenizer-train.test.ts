// Convergence of the Stage-I training loop on REAL photographs, through the real CLI processes:
//   1. `tokenizer train --steps 0`  → checkpoint at step 0 + held-out eval of the initial weights
//   2. `tokenizer train --steps N`  → auto-resumes from that checkpoint, trains, evaluates (EMA weights)
//   3. `tokenizer reconstruct`      → reconstruction grid PNG
// Asserts: held-out L1 falls by ≥ 50 % from initialisation, codebook usage > 10 %, progress.json /
// metrics.json follow the operator contract, the grid has the expected size.
// Photos: $MERGEVQ_TEST_IMAGES, else the data plane's debphotos10-64 build, else Debian mate-backgrounds
// (see trainer/src/util/testPhotos.ts). The perceptual net and the alignment teacher are GENERATED/RANDOM
// stand-ins (no pretrained weights are available offline); the run's notes say so.
// Short-run settings (documented deviations from the paper recipe, all through --train-config): constant
// lr 1e-3 (measured: 2e-3 is unstable; a ×0.1 drop at 75 % of the run ends higher), EMA decay 0.95 (0.999
// averages over ~1000 steps, longer than this run), no accumulation. Measured on the native backend:
// 500 steps → −48 %, 700 steps needed for the −50 % bar (≈ 6 min on 2 shared cores; wasm ≈ 2.5× slower).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import sharp from "sharp";
import { FinalReport, Progress } from "../../common/src/contract.ts";
import { ensureTestPhotos } from "../../trainer/src/util/testPhotos.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const STEPS = Number(process.env.MERGEVQ_CONVERGENCE_STEPS ?? 700);
const EVAL_K = 36;

function cli(args: string[], env: Record<string, string> = {}): { stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "trainer/src/cli.ts"), ...args], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: "warn", ...env },
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  assert.equal(r.status, 0, `cli ${args.join(" ")} failed (${r.status}):\n${r.stderr.slice(-3000)}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

test(`T0 on real photos: held-out L1 halves within ${STEPS} steps; codebook usage > 10%`, {
  timeout: 20 * 60_000,
}, async () => {
  const photos = ensureTestPhotos();
  console.error(`# photos: ${photos.dir} (${photos.source})`);
  const out = mkdtempSync(path.join(os.tmpdir(), "mvq-converge-"));
  const trainCfg = path.join(out, "train.json");
  writeFileSync(
    trainCfg,
    JSON.stringify({
      lr: 1e-3,
      emaDecay: 0.95,
      accum: 1,
      batchSize: 8,
      evalImages: 64,
      evalK: EVAL_K,
      logEvery: 50,
      checkpointInterval: 100,
      seed: 1,
    }),
  );
  const common = ["--config", "T0", "--data", photos.dir, "--out", out, "--train-config", trainCfg];
  const status = path.join(out, "status");
  const env = { MERGEVQ_STATUS_URI: status };

  cli(["tokenizer", "train", ...common, "--steps", "0"], env);
  const init = FinalReport.parse(JSON.parse(readFileSync(path.join(status, "metrics.json"), "utf8")));
  const l1Init = init.metrics[`l1@K=${EVAL_K}`];
  assert.ok(l1Init > 0.2, `initial L1 ${l1Init} suspiciously low`);

  const t0 = Date.now();
  const run = cli(["tokenizer", "train", ...common, "--steps", String(STEPS)], env);
  const seconds = (Date.now() - t0) / 1000;
  const report = FinalReport.parse(JSON.parse(run.stdout.trim().split("\n").at(-1) as string));
  const l1 = report.metrics[`l1@K=${EVAL_K}`];
  const usage = report.metrics[`codebookUsage@K=${EVAL_K}`];
  console.error(
    `# L1 ${l1Init.toFixed(4)} → ${l1.toFixed(4)} (${((1 - l1 / l1Init) * 100).toFixed(1)}% lower), usage ${(usage * 100).toFixed(1)}%, ${STEPS} steps in ${seconds.toFixed(0)} s`,
  );
  assert.equal(report.step, STEPS);
  assert.ok(l1 <= 0.5 * l1Init, `held-out L1 ${l1} did not fall by 50% from ${l1Init}`);
  assert.ok(usage > 0.1, `codebook usage ${usage} ≤ 10%`);
  assert.ok(
    report.notes?.some((n) => /GENERATED\/RANDOM/.test(n)),
    "generated stand-ins must be labelled",
  );
  assert.match(report.artifacts?.checkpointUri ?? "", new RegExp(`step-0*${STEPS}\\.ckpt$`));

  const progress = Progress.parse(JSON.parse(readFileSync(path.join(status, "progress.json"), "utf8")));
  assert.equal(progress.step, STEPS);
  assert.equal(progress.lastCheckpoint, report.artifacts?.checkpointUri);

  cli(["tokenizer", "reconstruct", ...common, "--images", "4", "--K", String(EVAL_K)]);
  const meta = await sharp(path.join(out, `reconstructions-K${EVAL_K}.png`)).metadata();
  assert.deepEqual([meta.width, meta.height], [64, 128]); // 4 rows of (original | reconstruction), 32² each
});
