// The Stage-II CLI as a child process (trainer/src/cli.ts → commands/ar.ts): `ar train` (local flags) and
// `train-ar` (the operator's env contract with file:// URIs), on real photos with a T0 tokenizer checkpoint
// made by the Stage-I trainer in this test.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { FinalReport, Progress } from "../../../common/src/contract.ts";
import { createLogger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { freePort, killAll, loopbackBlock, rendezvousEnv, spawnNode } from "../dist/testing.ts";
import { loadCheckpoint } from "../io/checkpoint.ts";
import { makeT0TokenizerCheckpoint } from "../train/arTesting.ts";
import { ensureTestPhotos } from "../util/testPhotos.ts";

const ROOT = path.resolve(import.meta.dirname, "../../..");
const log = createLogger({ component: "ar-cli-test" }, { level: "warn" });
let photos = "";
let tokenizer = "";

before(async () => {
  await selectBackend({ log });
  photos = ensureTestPhotos().dir;
  tokenizer = await makeT0TokenizerCheckpoint({
    data: photos,
    dir: await mkdtemp(path.join(os.tmpdir(), "ar-cli-tok-")),
    log,
    steps: 1,
  });
});

/** Environment without any contract variable inherited from the caller. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(MERGEVQ_|DATASET_|CHECKPOINT_|RESUME_FROM|TERMINATION_|WORLD_SIZE|NODE_RANK|NPROC_PER_NODE)/.test(k))
      continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ["--import", "tsx", path.join(ROOT, "trainer/src/cli.ts"), ...args], {
    cwd: ROOT,
    env: cleanEnv(env),
    encoding: "utf8",
    timeout: 110_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("ar train (local flags): checkpoint, progress.json, metrics.json with the final report", async () => {
  const out = await mkdtemp(path.join(os.tmpdir(), "ar-cli-local-"));
  const r = cli([
    "ar",
    "train",
    "--tokenizer",
    tokenizer,
    "--data",
    photos,
    "--out",
    out,
    "--steps",
    "4",
    "--batch",
    "4",
    "--data-limit",
    "16",
    "--log-every",
    "2",
  ]);
  assert.equal(r.code, 0, r.stderr);
  // The report is the one stdout line that is not a pino log line (pino may flush after it).
  const reportLine = r.stdout
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{") && !("level" in JSON.parse(l)));
  assert.equal(reportLine.length, 1, r.stdout);
  const report = FinalReport.parse(JSON.parse(reportLine[0]));
  const metrics = FinalReport.parse(JSON.parse(readFileSync(path.join(out, "metrics.json"), "utf8")));
  for (const rep of [report, metrics]) {
    for (const k of ["loss", "loss/pre", "loss/post", "gradNorm", "lr", "tokensPerSecond", "sequencesPerSecond"])
      assert.ok(Number.isFinite(rep.metrics[k]), `metric ${k}`);
    assert.ok(Math.abs(rep.metrics.loss - rep.metrics["loss/pre"] - rep.metrics["loss/post"]) < 1e-4);
    assert.equal(rep.metrics.loss_pre, undefined, "one name per loss term (the operator's loss/<name>)");
    assert.equal(rep.step, 4);
  }
  const ckptUri = report.artifacts?.checkpointUri as string;
  assert.equal(ckptUri, path.join(out, "checkpoints", "step-000000004.ckpt"));
  const ckpt = await loadCheckpoint(ckptUri);
  assert.equal(ckpt.kind, "ar-train");
  const arConfig = ckpt.meta.arConfig as { size: string; numClasses: number; mergeAR: { enabled: boolean } };
  assert.equal(arConfig.size, "tiny");
  assert.equal(arConfig.numClasses, 10, "numClasses defaults to the class folders of --data");
  assert.equal(arConfig.mergeAR.enabled, false);
  assert.ok(
    report.notes?.some((n) => n.includes(tokenizer)),
    "notes name the tokenizer checkpoint",
  );
  assert.ok(
    report.notes?.some((n) => /^backend: /.test(n)),
    "notes name the backend",
  );
  const progress = Progress.parse(JSON.parse(readFileSync(path.join(out, "progress.json"), "utf8")));
  assert.equal(progress.step, 4);
  assert.equal(progress.totalSteps, 4);
  assert.equal(progress.lastCheckpoint, ckptUri);
  assert.deepEqual(Object.keys(progress.losses ?? {}).sort(), ["loss", "loss/post", "loss/pre"]);
  // pino progress lines with throughput and ETA.
  const lines = r.stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const prog = lines.filter((l) => l.msg === "train progress");
  assert.deepEqual(
    prog.map((l) => l.step),
    [2, 4],
  );
  for (const l of prog) for (const k of ["sequencesPerSecond", "tokensPerSecond", "etaSeconds"]) assert.ok(k in l, k);
});

test("train-ar (env contract, file:// URIs, MergeAR): termination message, metrics.json, keep-last, resume", async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), "ar-cli-env-"));
  const ckptDir = `file://${base}/ckpt`;
  const status = `file://${base}/status`;
  const term = path.join(base, "termination-log");
  const env = {
    MERGEVQ_MODEL_CONFIG: JSON.stringify({
      size: "tiny",
      numClasses: 10,
      classDropout: 0.1,
      mergeAR: { enabled: true, window: 2 },
    }),
    MERGEVQ_TRAIN_CONFIG: JSON.stringify({
      steps: 4,
      batchSize: 4,
      gradAccumulation: 1,
      learningRate: 1e-3,
      warmupSteps: 1,
      weightDecay: 0.05,
      gradClip: 1,
      seed: 1,
      logEverySteps: 2,
    }),
    MERGEVQ_TOKENIZER_CHECKPOINT: `file://${tokenizer}`,
    DATASET_URI: `file://${photos}`,
    DATASET_FORMAT: "folder",
    CHECKPOINT_DIR: ckptDir,
    CHECKPOINT_INTERVAL: "2",
    CHECKPOINT_KEEP_LAST: "1",
    MERGEVQ_STATUS_URI: status,
    TERMINATION_MESSAGE_PATH: term,
    MERGEVQ_ATTEMPT: "1",
    MERGEVQ_RUN: "default/ar-test",
    WORLD_SIZE: "1",
  };
  const r = cli(["train-ar"], env);
  assert.equal(r.code, 0, r.stderr);
  const msg = FinalReport.parse(JSON.parse(readFileSync(term, "utf8")));
  assert.equal(msg.artifacts?.checkpointUri, `${ckptDir}/step-000000004.ckpt`);
  assert.ok(Number.isFinite(msg.metrics.loss) && Number.isFinite(msg.metrics.tokensPerSecond));
  assert.ok(msg.notes?.some((n) => n.includes(`file://${tokenizer}`) && /EMA/.test(n)));
  assert.ok(msg.notes?.some((n) => /MergeAR on \(window 2, 4 merge tokens\)/.test(n)));
  const metrics = FinalReport.parse(JSON.parse(readFileSync(path.join(base, "status", "metrics.json"), "utf8")));
  assert.deepEqual(metrics.metrics, msg.metrics);
  // keep-last 1: only the final checkpoint remains.
  assert.deepEqual(
    readdirSync(path.join(base, "ckpt")).filter((f) => f.endsWith(".ckpt")),
    ["step-000000004.ckpt"],
  );
  const ckpt = await loadCheckpoint(`${ckptDir}/step-000000004.ckpt`);
  assert.equal((ckpt.meta.arConfig as { mergeAR: { numMergeTokens: number } }).mergeAR.numMergeTokens, 4);
  assert.deepEqual((ckpt.meta.trainConfig as { accum: number; lr: number }).lr, 1e-3);

  // Operator restart with RESUME_FROM and a longer run: continues from step 4 to 6.
  const r2 = cli(["train-ar"], {
    ...env,
    MERGEVQ_TRAIN_CONFIG: JSON.stringify({ steps: 6, batchSize: 4, learningRate: 1e-3, seed: 1, logEverySteps: 2 }),
    RESUME_FROM: `${ckptDir}/step-000000004.ckpt`,
    MERGEVQ_ATTEMPT: "2",
  });
  assert.equal(r2.code, 0, r2.stderr);
  const msg2 = FinalReport.parse(JSON.parse(readFileSync(term, "utf8")));
  assert.equal(msg2.step, 6);
  assert.equal(msg2.artifacts?.checkpointUri, `${ckptDir}/step-000000006.ckpt`);
  assert.ok(msg2.notes?.some((n) => n.startsWith(`resumed from ${ckptDir}/step-000000004.ckpt`)));

  // A corrupt RESUME_FROM fails (exit 1) naming the variable.
  const bad = path.join(base, "bad.ckpt");
  writeFileSync(bad, "MVQCKPT1 truncated");
  const r3 = cli(["train-ar"], { ...env, RESUME_FROM: `file://${bad}` });
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, /RESUME_FROM file:\/\/.*bad\.ckpt: /);
  assert.ok(existsSync(term));
});

test("config errors exit 2 and name the variable or flag", () => {
  const r1 = cli(["train-ar"], {
    MERGEVQ_MODEL_CONFIG: JSON.stringify({ size: "tiny", numClasses: 10, mergeAR: { enabled: true, window: 0 } }),
    MERGEVQ_TRAIN_CONFIG: JSON.stringify({ steps: 2 }),
    MERGEVQ_TOKENIZER_CHECKPOINT: tokenizer,
    DATASET_URI: photos,
    CHECKPOINT_DIR: os.tmpdir(),
  });
  assert.equal(r1.code, 2);
  assert.match(r1.stderr, /MERGEVQ_MODEL_CONFIG: mergeAR\.window/);
  const r2 = cli(["train-ar"], {
    MERGEVQ_MODEL_CONFIG: JSON.stringify({ size: "tiny" }),
    MERGEVQ_TRAIN_CONFIG: JSON.stringify({ steps: 2, learningRat: 1 }),
    MERGEVQ_TOKENIZER_CHECKPOINT: tokenizer,
    DATASET_URI: photos,
    CHECKPOINT_DIR: os.tmpdir(),
  });
  assert.equal(r2.code, 2);
  assert.match(r2.stderr, /MERGEVQ_TRAIN_CONFIG: unknown field\(s\): learningRat/);
  const r3 = cli(["ar", "train", "--data", photos, "--out", os.tmpdir(), "--steps", "1"]);
  assert.equal(r3.code, 2);
  assert.match(r3.stderr, /--tokenizer is required \(or set MERGEVQ_TOKENIZER_CHECKPOINT/);
  const r4 = cli([
    "ar",
    "train",
    "--tokenizer",
    "/nonexistent/tok.ckpt",
    "--data",
    photos,
    "--out",
    os.tmpdir(),
    "--steps",
    "1",
  ]);
  assert.equal(r4.code, 2);
  assert.match(r4.stderr, /--tokenizer \/nonexistent\/tok\.ckpt: cannot load the tokenizer checkpoint/);
  const r5 = cli(["tokenizer", "fly"]);
  assert.equal(r5.code, 2, "tokenizer CLI behaviour unchanged");
  assert.match(r5.stderr, /unknown command "tokenizer fly"/);
});

test("train-ar with WORLD_SIZE 2 (two rank processes, real process group): rank 0 reports, data states of both ranks checkpointed", async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), "ar-cli-ddp-"));
  const term = path.join(base, "termination-log");
  const env = {
    MERGEVQ_MODEL_CONFIG: JSON.stringify({ size: "tiny", numClasses: 10, mergeAR: { enabled: true, window: 2 } }),
    MERGEVQ_TRAIN_CONFIG: JSON.stringify({ steps: 3, batchSize: 2, learningRate: 1e-3, seed: 2, logEverySteps: 1 }),
    MERGEVQ_TOKENIZER_CHECKPOINT: tokenizer,
    DATASET_URI: photos,
    CHECKPOINT_DIR: `file://${base}/ckpt`,
    CHECKPOINT_INTERVAL: "0",
    MERGEVQ_STATUS_URI: `file://${base}/status`,
    TERMINATION_MESSAGE_PATH: term,
    MERGEVQ_ATTEMPT: "1",
  };
  const ip = loopbackBlock();
  const port = await freePort(ip(0));
  const procs = [0, 1].map((r) =>
    spawnNode(
      path.join(ROOT, "trainer/src/cli.ts"),
      ["train-ar"],
      { ...cleanEnv(env), ...rendezvousEnv({ nnodes: 2, nodeRank: r, masterAddr: ip(0), port, podIp: ip(r) }) },
      r,
    ),
  );
  try {
    const codes = await Promise.all(procs.map((p) => p.exited));
    assert.deepEqual(
      codes.map((c) => c.code),
      [0, 0],
      procs.map((p) => p.stderr.slice(-1500)).join("\n---\n"),
    );
  } finally {
    killAll(procs);
  }
  const msg = FinalReport.parse(JSON.parse(readFileSync(term, "utf8")));
  assert.equal(msg.step, 3);
  assert.ok(Number.isFinite(msg.metrics.loss));
  const ckpt = await loadCheckpoint(msg.artifacts?.checkpointUri as string);
  assert.equal(ckpt.meta.worldSize, 2);
  const byRank = ckpt.meta.dataByRank as { order: number[] }[];
  assert.equal(byRank.length, 2);
  // The ranks read disjoint halves of the image list.
  const common = byRank[0].order.filter((i) => byRank[1].order.includes(i));
  assert.equal(common.length, 0);
});

test("SIGTERM to one of two ranks (pod deletion): both stop at one step boundary, rank 0 checkpoints that step, exit 143; the next attempt resumes from it", async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), "ar-cli-sigterm-"));
  const env = (steps: number, extra: Record<string, string> = {}) => ({
    MERGEVQ_MODEL_CONFIG: JSON.stringify({ size: "tiny", numClasses: 10 }),
    MERGEVQ_TRAIN_CONFIG: JSON.stringify({ steps, batchSize: 2, learningRate: 1e-3, seed: 3, logEverySteps: 1 }),
    MERGEVQ_TOKENIZER_CHECKPOINT: tokenizer,
    DATASET_URI: photos,
    CHECKPOINT_DIR: `file://${base}/ckpt`,
    CHECKPOINT_INTERVAL: "0", // no periodic checkpoints: the only one before the end is the SIGTERM one
    MERGEVQ_STATUS_URI: `file://${base}/status`,
    TERMINATION_MESSAGE_PATH: path.join(base, "termination-log"),
    LOG_LEVEL: "info",
    ...extra,
  });
  const start = async (e: Record<string, string>) => {
    const ip = loopbackBlock();
    const port = await freePort(ip(0));
    return [0, 1].map((r) =>
      spawnNode(
        path.join(ROOT, "trainer/src/cli.ts"),
        ["train-ar"],
        { ...cleanEnv(e), ...rendezvousEnv({ nnodes: 2, nodeRank: r, masterAddr: ip(0), port, podIp: ip(r) }) },
        r,
      ),
    );
  };
  const first = await start(env(10_000, { MERGEVQ_ATTEMPT: "1" }));
  let stoppedAt = -1;
  try {
    await first[0].line((o) => o.msg === "train progress" && Number(o.step) >= 3);
    first[1].child.kill("SIGTERM"); // what the kubelet does to a deleted pod
    const codes = await Promise.all(first.map((p) => p.exited));
    assert.deepEqual(
      codes.map((c) => c.code),
      [143, 143],
      first.map((p) => p.stderr.slice(-1500)).join("\n---\n"),
    );
    const stop = await first[0].line((o) => o.msg === "SIGTERM: checkpoint saved, stopping");
    stoppedAt = Number(stop.step);
    const stop1 = await first[1].line((o) => o.msg === "SIGTERM: checkpoint saved, stopping");
    assert.equal(Number(stop1.step), stoppedAt, "both ranks stop at the same step");
  } finally {
    killAll(first);
  }
  assert.ok(stoppedAt >= 3 && stoppedAt < 10_000, `stopped at ${stoppedAt}`);
  const progress = Progress.parse(JSON.parse(readFileSync(path.join(base, "status/progress.json"), "utf8")));
  assert.equal(progress.step, stoppedAt);
  assert.match(progress.lastCheckpoint ?? "", new RegExp(`step-${String(stoppedAt).padStart(9, "0")}\\.ckpt$`));
  const ckpt = await loadCheckpoint(progress.lastCheckpoint as string);
  assert.equal(ckpt.meta.step, stoppedAt);
  assert.equal((ckpt.meta.dataByRank as unknown[]).length, 2, "the SIGTERM checkpoint holds both ranks' data states");
  assert.ok(!existsSync(path.join(base, "termination-log")), "a stopped attempt writes no final report");

  // The operator's next attempt: RESUME_FROM = progress.json's lastCheckpoint, runs to the end.
  const second = await start(
    env(stoppedAt + 2, { MERGEVQ_ATTEMPT: "2", RESUME_FROM: progress.lastCheckpoint as string }),
  );
  try {
    const codes = await Promise.all(second.map((p) => p.exited));
    assert.deepEqual(
      codes.map((c) => c.code),
      [0, 0],
      second.map((p) => p.stderr.slice(-1500)).join("\n---\n"),
    );
  } finally {
    killAll(second);
  }
  const msg = FinalReport.parse(JSON.parse(readFileSync(path.join(base, "termination-log"), "utf8")));
  assert.equal(msg.step, stoppedAt + 2);
});

test("CHECKPOINT_SAVE_ON_SIGTERM=false: SIGTERM ends the run at once without a checkpoint", async () => {
  const base = await mkdtemp(path.join(os.tmpdir(), "ar-cli-nosigterm-"));
  const p = spawnNode(
    path.join(ROOT, "trainer/src/cli.ts"),
    ["train-ar"],
    cleanEnv({
      MERGEVQ_MODEL_CONFIG: JSON.stringify({ size: "tiny", numClasses: 10 }),
      MERGEVQ_TRAIN_CONFIG: JSON.stringify({ steps: 10_000, batchSize: 2, seed: 3, logEverySteps: 1 }),
      MERGEVQ_TOKENIZER_CHECKPOINT: tokenizer,
      DATASET_URI: photos,
      CHECKPOINT_DIR: `file://${base}/ckpt`,
      CHECKPOINT_INTERVAL: "0",
      CHECKPOINT_SAVE_ON_SIGTERM: "false",
      MERGEVQ_STATUS_URI: `file://${base}/status`,
      MERGEVQ_ATTEMPT: "1",
      LOG_LEVEL: "info",
    }),
  );
  try {
    await p.line((o) => o.msg === "train progress" && Number(o.step) >= 2);
    p.child.kill("SIGTERM");
    const { code } = await p.exited;
    assert.equal(code, 143);
  } finally {
    killAll([p]);
  }
  assert.ok(!existsSync(path.join(base, "ckpt")) || readdirSync(path.join(base, "ckpt")).length === 0);
});
