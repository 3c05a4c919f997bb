import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { EXIT_CODE } from "../../common/src/contract.ts";
import { createLogger } from "../../common/src/logger.ts";
import { CliError, exitCodeOf, main } from "./cli.ts";
import { DistError } from "./dist/transport.ts";
import { TerminatedBySignal } from "./train/stopSignal.ts";

const log = createLogger({ component: "cli-test" }, { level: "silent" });

test("unknown command and unknown flag are rejected naming them", async () => {
  await assert.rejects(
    main(["tokenizer", "fly"], log),
    (e: Error) => e instanceof CliError && /unknown command "tokenizer fly"/.test(e.message),
  );
  await assert.rejects(
    main(["tokenizer", "train", "--config", "T0", "--bogus", "1"], log),
    (e: Error) => e instanceof CliError && /Unknown option '--bogus'/.test(e.message),
  );
  await assert.rejects(
    main(["tokenizer", "train", "--config", "T0", "--data", "/nonexistent", "--out", "/tmp/x", "--steps", "3x"], log),
    /--steps: expected an integer ≥ 0, got "3x"/,
  );
});

test("--help prints every sub-command's usage and exits 0; no arguments exits 2", () => {
  const cli = path.join(import.meta.dirname, "cli.ts");
  const help = spawnSync(process.execPath, ["--import", "tsx", cli, "--help"], { encoding: "utf8" });
  assert.equal(help.status, 0, help.stderr);
  for (const cmd of [
    "tokenizer",
    "train-tokenizer",
    "ar train",
    "train-ar",
    "sample",
    "reduce",
    "eval reference-stats",
  ])
    assert.ok(help.stdout.includes(cmd), `usage mentions ${cmd}`);
  const none = spawnSync(process.execPath, ["--import", "tsx", cli], { encoding: "utf8" });
  assert.equal(none.status, 2);
});

test("invalid model and training configs name the offending field", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-cli-"));
  const bad = path.join(dir, "model.json");
  await writeFile(bad, JSON.stringify({ preset: "T0", heads: 5 }));
  const base = ["--data", dir, "--out", path.join(dir, "out"), "--backend", "cpu"];
  await assert.rejects(
    main(["tokenizer", "train", "--config", bad, ...base], log),
    (e: Error) => e instanceof CliError && /--config .*model\.json: heads: /.test(e.message),
  );
  await assert.rejects(main(["tokenizer", "train", "--config", "T9", ...base], log), /unknown tokenizer preset "T9"/);
  await writeFile(bad, JSON.stringify({ preset: "T0", chanels: 3, train: { lrr: 1 } }));
  await assert.rejects(
    main(["tokenizer", "train", "--config", bad, ...base], log),
    (e: Error) => e instanceof CliError && /unknown field\(s\): chanels, train\.lrr/.test(e.message),
  );
  const badTrain = path.join(dir, "train.json");
  await writeFile(badTrain, JSON.stringify({ lr: -1, weights: { gan: 1 } }));
  await assert.rejects(
    main(["tokenizer", "train", "--config", "T0", "--train-config", badTrain, ...base], log),
    (e: Error) => /lr: .*too small/i.test(e.message) && /weights: .*unknown field\(s\): gan/.test(e.message),
  );
  const prev = process.env.MERGEVQ_MODEL_CONFIG;
  process.env.MERGEVQ_MODEL_CONFIG = "{not json";
  try {
    await assert.rejects(main(["tokenizer", "train", ...base], log), /MERGEVQ_MODEL_CONFIG: invalid JSON/);
  } finally {
    if (prev === undefined) delete process.env.MERGEVQ_MODEL_CONFIG;
    else process.env.MERGEVQ_MODEL_CONFIG = prev;
  }
});

test("train-tokenizer reads the CRD-shaped env contract and names unknown fields", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-cli-"));
  const saved = { ...process.env };
  try {
    process.env.DATASET_URI = dir;
    process.env.CHECKPOINT_DIR = path.join(dir, "ckpt");
    process.env.MERGEVQ_MODEL_CONFIG = JSON.stringify({ preset: "T0", keepTokenz: 36 });
    process.env.MERGEVQ_TRAIN_CONFIG = JSON.stringify({ steps: 1 });
    await assert.rejects(
      main(["train-tokenizer"], log),
      (e: Error) => e instanceof CliError && /MERGEVQ_MODEL_CONFIG: unknown field\(s\): keepTokenz/.test(e.message),
    );
    process.env.MERGEVQ_MODEL_CONFIG = JSON.stringify({ preset: "T0" });
    process.env.MERGEVQ_TRAIN_CONFIG = JSON.stringify({ steps: 1, gradAccum: 2 });
    await assert.rejects(
      main(["train-tokenizer"], log),
      (e: Error) => e instanceof CliError && /MERGEVQ_TRAIN_CONFIG: unknown field\(s\): gradAccum/.test(e.message),
    );
    process.env.MERGEVQ_TRAIN_CONFIG = JSON.stringify({ steps: 1 });
    process.env.WORLD_SIZE = "2";
    process.env.NODE_RANK = "0";
    await assert.rejects(
      main(["tokenizer", "eval", "--backend", "cpu"], log),
      /only "tokenizer train" runs data-parallel/,
    );
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
});

test("backend check --parity: one JSON report naming the backend, the GPU probe and T1 parity vs wasm; bad sub-command exits 2", () => {
  const ok = spawnSync(
    process.execPath,
    ["--import", "tsx", path.join(import.meta.dirname, "cli.ts"), "backend", "check", "--parity"],
    {
      encoding: "utf8",
      timeout: 240_000,
    },
  );
  assert.equal(ok.status, 0, ok.stderr);
  const report = JSON.parse(ok.stdout.trim().split("\n").pop() ?? "{}") as {
    backend: string;
    ok: boolean;
    gpuDevice?: boolean;
    parity?: { ok: boolean; l2Rel: number };
  };
  assert.equal(report.ok, true);
  assert.ok(["tensorflow", "wasm", "cpu"].includes(report.backend), report.backend);
  if (report.backend === "tensorflow") {
    assert.equal(report.gpuDevice, false, "no GPU on this machine");
    assert.equal(report.parity?.ok, true);
    assert.ok((report.parity?.l2Rel ?? 1) < 2e-3);
  }
  const bad = spawnSync(
    process.execPath,
    ["--import", "tsx", path.join(import.meta.dirname, "cli.ts"), "backend", "nope"],
    { encoding: "utf8" },
  );
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown command: backend nope/);
});

test("exit codes: 75 when another rank took the group down (also as a cause), 1 for this rank's own failures", () => {
  const lost = new DistError("PEER_LOST", "rank 1: rank 0 (ring next): connection closed by the peer", true);
  assert.equal(exitCodeOf(lost), EXIT_CODE.PEER_FAILED);
  assert.equal(exitCodeOf(new Error("train step failed", { cause: lost })), EXIT_CODE.PEER_FAILED);
  assert.equal(exitCodeOf(new DistError("ABORTED", "rank 0: non-finite loss")), EXIT_CODE.FAILED);
  assert.equal(exitCodeOf(new DistError("MEMBERSHIP_MISMATCH", "config hash differs")), EXIT_CODE.FAILED);
  assert.equal(exitCodeOf(new Error("boom")), EXIT_CODE.FAILED);
  assert.equal(exitCodeOf(new CliError("--steps: bad")), EXIT_CODE.USAGE);
  assert.equal(exitCodeOf(new TerminatedBySignal(12, "s3://x")), EXIT_CODE.SIGTERM_CHECKPOINT);
});
