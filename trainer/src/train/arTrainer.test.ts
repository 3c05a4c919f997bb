// Stage-II training loop on real photographs (trainer/src/util/testPhotos.ts) with genuine tokenizer codes:
// a T0 tokenizer trained for 2 steps by the Stage-I trainer (arTesting.ts), the "tiny" AR model.
import assert from "node:assert/strict";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { createLogger } from "../../../common/src/logger.ts";
import { gptFromCheckpoint } from "../ar/gpt.ts";
import { selectBackend } from "../backend/select.ts";
import { CheckpointError, latestCheckpoint, loadCheckpoint } from "../io/checkpoint.ts";
import { resolveConfig } from "../tokenizer/config.ts";
import { MergeVQTokenizer } from "../tokenizer/mergevq.ts";
import { ensureTestPhotos } from "../util/testPhotos.ts";
import { ARConfigError, parseARModelSpec, parseARTrainConfig } from "./arConfig.ts";
import { buildARTrainer } from "./arSetup.ts";
import { makeT0TokenizerCheckpoint } from "./arTesting.ts";
import { dropoutSeed } from "./arTrainer.ts";

const log = createLogger({ component: "ar-trainer-test" }, { level: "warn" });
let photos = "";
let tokenizerUri = "";
let backend = "";

before(async () => {
  backend = (await selectBackend({ log })).name;
  photos = ensureTestPhotos().dir;
  const dir = await mkdtemp(path.join(os.tmpdir(), "ar-test-tok-"));
  tokenizerUri = await makeT0TokenizerCheckpoint({ data: photos, dir, log, steps: 2 });
});

function build(o: {
  steps: number;
  dropout?: { token?: number; resid?: number };
  mergeAR?: boolean;
  accum?: number;
  ckpt?: string;
  interval?: number;
  lr?: number;
  images?: number;
  tokenizer?: Parameters<typeof buildARTrainer>[0]["tokenizer"];
  status?: string;
  progressInterval?: number;
}) {
  return buildARTrainer({
    model: parseARModelSpec({ size: "tiny", numClasses: 10, mergeAR: { enabled: o.mergeAR ?? false, window: 2 } }),
    train: parseARTrainConfig({
      steps: o.steps,
      batchSize: 4,
      accum: o.accum ?? 1,
      lr: o.lr ?? 1e-3,
      warmupSteps: 1,
      logEvery: 100,
      checkpointInterval: o.interval ?? 0,
      progressIntervalSeconds: o.progressInterval ?? 0,
      seed: 3,
      dropout: o.dropout,
    }),
    tokenizer: o.tokenizer ?? tokenizerUri,
    data: photos,
    log,
    backend,
    checkpointDir: o.ckpt,
    statusUri: o.status,
    dataLimit: o.images ?? 32,
  });
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test("tiny AR on T0 codes of real photos: the training loss decreases (no MergeAR)", async (t) => {
  const b = await build({ steps: 40, images: 32 });
  const losses: number[] = [];
  const summary = await b.trainer.run({ onStep: (_s, l) => void losses.push(l.loss) });
  const first = mean(losses.slice(0, 5));
  const last = mean(losses.slice(-5));
  t.diagnostic(`backend ${backend}; loss first 5 steps ${first.toFixed(3)} → last 5 ${last.toFixed(3)}`);
  t.diagnostic(`${summary.sequencesPerSecond.toFixed(1)} sequences/s, ${summary.tokensPerSecond.toFixed(0)} tokens/s`);
  // Zero-initialised heads: the first loss is exactly ln(2^4) + ln(2^6) = 10·ln 2.
  assert.ok(Math.abs(losses[0] - 10 * Math.LN2) < 1e-4, `initial loss ${losses[0]}`);
  assert.ok(last < first - 0.4, `loss did not decrease enough: ${first} → ${last}`);
  assert.ok(Math.abs(summary.losses.loss - (summary.losses.loss_pre + summary.losses.loss_post)) < 1e-4);
  assert.ok(summary.tokensPerSecond > 0 && summary.tokensPerSecond === summary.sequencesPerSecond * 64);
  b.trainer.dispose();
  b.model.dispose();
});

test("MergeAR: resume is exact — 6 steps straight == 3 + checkpoint + resume + 3 (accum 2)", async (t) => {
  const snapshot = (c: Awaited<ReturnType<typeof build>>) =>
    new Map(
      [...c.trainer.toCheckpoint().tensors].map(([n, e]) => [
        n,
        Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength),
      ]),
    );
  const straight = await build({ steps: 6, mergeAR: true, accum: 2 });
  const a: number[] = [];
  await straight.trainer.run({ onStep: (_s, l) => void a.push(l.loss) });

  const dir = await mkdtemp(path.join(os.tmpdir(), "ar-test-ckpt-"));
  const first = await build({ steps: 6, mergeAR: true, accum: 2, ckpt: dir, interval: 3 });
  const b: number[] = [];
  await assert.rejects(
    first.trainer.run({
      onStep: (s, l) => {
        b.push(l.loss);
        if (s === 3) throw new Error("simulated preemption");
      },
    }),
    /simulated preemption/,
  );
  const uri = await latestCheckpoint(dir);
  assert.ok(uri?.endsWith("step-000000003.ckpt"), String(uri));
  const second = await build({ steps: 6, mergeAR: true, accum: 2, ckpt: dir, interval: 3 });
  await second.trainer.resume(uri as string);
  assert.equal(second.trainer.step, 3);
  assert.equal(second.trainer.adamw.t, 3);
  await second.trainer.run({ onStep: (_s, l) => void b.push(l.loss) });
  t.diagnostic(`losses straight ${a.map((x) => x.toFixed(4)).join(" ")}`);
  assert.deepEqual(b, a, "per-step losses identical");
  assert.ok(a[5] < a[0], "MergeAR loss decreases over 6 steps");
  const sa = snapshot(straight);
  const sb = snapshot(second);
  assert.deepEqual([...sb.keys()].sort(), [...sa.keys()].sort());
  for (const [n, buf] of sa) assert.ok(buf.equals(sb.get(n) as Buffer), `tensor ${n} differs after resume`);
  assert.ok([...sa.keys()].some((n) => n === "model/merge_embedding.weight"));

  // The final checkpoint is what sampling loads: same weights through gptFromCheckpoint.
  const final = await latestCheckpoint(dir);
  assert.ok(final?.endsWith("step-000000006.ckpt"));
  const ckpt = await loadCheckpoint(final as string);
  assert.equal(ckpt.kind, "ar-train");
  assert.deepEqual((ckpt.meta.tokenizer as { uri: string }).uri, tokenizerUri);
  const g = gptFromCheckpoint(ckpt, final as string);
  assert.deepEqual(g.config, straight.arConfig);
  for (const [n, v] of g.getWeights()) {
    const buf = Buffer.from((v.dataSync() as Float32Array).buffer);
    assert.ok(buf.equals(sa.get(`model/${n}`) as Buffer), `gptFromCheckpoint weight ${n}`);
  }
  g.dispose();
  for (const x of [straight, first, second]) {
    x.trainer.dispose();
    x.model.dispose();
  }
});

test("clear errors: corrupt checkpoint, tokenizer/AR bits mismatch, missing tokenizer, bad configs", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "ar-test-err-"));
  const run = await build({ steps: 1, ckpt: dir });
  await run.trainer.run();
  const uri = (await latestCheckpoint(dir)) as string;
  run.trainer.dispose();
  run.model.dispose();

  // Corrupt: one flipped payload byte fails the SHA-256 check.
  const bytes = await readFile(uri);
  bytes[bytes.length - 100] ^= 0xff;
  const bad = path.join(dir, "corrupt.ckpt");
  await writeFile(bad, bytes);
  const other = await build({ steps: 2 });
  await assert.rejects(
    other.trainer.resume(bad),
    (e: Error) => e instanceof CheckpointError && /SHA-256|checksum|corrupt/i.test(e.message),
  );

  // Same AR checkpoint against a 12-bit tokenizer: bits mismatch, named.
  const cfg12 = resolveConfig({ preset: "T0", zChannels: 12 } as never);
  const t12 = { tokenizer: new MergeVQTokenizer(cfg12), uri: "memory://t0-12bit", step: 0, weights: "raw" as const };
  const mism = await build({ steps: 2, tokenizer: t12 });
  await assert.rejects(
    mism.trainer.resume(uri),
    (e: Error) =>
      e instanceof CheckpointError && /tokenizer\/AR bits mismatch/.test(e.message) && /12 LFQ bits/.test(e.message),
  );
  mism.trainer.dispose();

  // Missing tokenizer checkpoint / not a tokenizer checkpoint.
  await assert.rejects(
    buildARTrainer({
      model: parseARModelSpec({ size: "tiny", numClasses: 10 }),
      train: parseARTrainConfig({ steps: 1 }),
      tokenizer: path.join(dir, "nope.ckpt"),
      tokenizerSource: "MERGEVQ_TOKENIZER_CHECKPOINT",
      data: photos,
      log,
    }),
    (e: Error) =>
      e instanceof ARConfigError && /MERGEVQ_TOKENIZER_CHECKPOINT .*nope\.ckpt: cannot load/.test(e.message),
  );
  await assert.rejects(
    buildARTrainer({
      model: parseARModelSpec({ size: "tiny", numClasses: 10 }),
      train: parseARTrainConfig({ steps: 1 }),
      tokenizer: uri,
      data: photos,
      log,
    }),
    (e: Error) => e instanceof ARConfigError && /not a tokenizer checkpoint/.test(e.message),
  );
  // Resuming a tokenizer checkpoint as an AR checkpoint.
  await assert.rejects(other.trainer.resume(tokenizerUri), (e: Error) =>
    /not an AR training checkpoint/.test(e.message),
  );
  other.trainer.dispose();

  assert.throws(() => parseARTrainConfig({ steps: 5, lrr: 1 }, "MERGEVQ_TRAIN_CONFIG"), /MERGEVQ_TRAIN_CONFIG: .*lrr/);
  assert.throws(() => parseARTrainConfig({ steps: 5, warmupSteps: 6 }), /warmupSteps: must not exceed steps/);
  assert.throws(
    () => parseARModelSpec({ mergeAR: { enabled: true, window: 0 } }, "MERGEVQ_MODEL_CONFIG"),
    /MERGEVQ_MODEL_CONFIG: mergeAR\.window/,
  );
  assert.throws(() => parseARModelSpec({ size: "huge" }), /size/);
  assert.throws(() => parseARTrainConfig({ steps: 1, dropout: { token: 1 } }), /dropout\.token/);
  assert.throws(() => parseARTrainConfig({ steps: 1, dropout: { attn: 0 } }), /dropout.*attn/);
  assert.notEqual(dropoutSeed(0, 0, 1), dropoutSeed(0, 0, 2));
  assert.notEqual(dropoutSeed(0, 0, 1), dropoutSeed(0, 1, 1));
});

test("training-config dropout override (not a CRD field): applied to the model, default 0.1, not architecture", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "ar-test-drop-"));
  const def = await build({ steps: 1 });
  assert.equal(def.arConfig.tokenDropout, 0.1);
  assert.equal(def.arConfig.residDropout, 0.1);
  assert.ok(!def.notes.some((n) => n.includes("dropout overridden")));
  def.trainer.dispose();
  def.model.dispose();
  const off = await build({ steps: 1, dropout: { token: 0 }, ckpt: dir });
  assert.equal(off.arConfig.tokenDropout, 0);
  assert.equal(off.arConfig.residDropout, 0.1, "an absent rate keeps the spec's 0.1");
  assert.equal(off.model.config.tokenDropout, 0);
  assert.ok(off.notes.some((n) => /dropout overridden .*token 0, residual 0\.1/.test(n)));
  await off.trainer.run();
  const uri = (await latestCheckpoint(dir)) as string;
  assert.equal((loadedMeta(await loadCheckpoint(uri)).arConfig as { tokenDropout: number }).tokenDropout, 0);
  // Resuming with other dropout rates is allowed (a training setting, not the architecture).
  const again = await build({ steps: 2, dropout: { token: 0.2, resid: 0 } });
  await again.trainer.resume(uri);
  assert.equal(again.trainer.step, 1);
  for (const x of [off, again]) {
    x.trainer.dispose();
    x.model.dispose();
  }
});

const loadedMeta = (c: Awaited<ReturnType<typeof loadCheckpoint>>) => c.meta as Record<string, unknown>;

test("progress.json names every new checkpoint at once, even inside the progress throttle interval", async (t) => {
  const ckpt = await mkdtemp(path.join(os.tmpdir(), "ar-test-ckpt-"));
  const status = await mkdtemp(path.join(os.tmpdir(), "ar-test-status-"));
  const b = await build({ steps: 4, ckpt, interval: 2, status, progressInterval: 3600 });
  t.after(() => b.trainer.dispose());
  const seen: { step: number; named?: string; latest?: string }[] = [];
  await b.trainer.run({
    onStep: async (step) => {
      const p = JSON.parse(await readFile(path.join(status, "progress.json"), "utf8")) as { lastCheckpoint?: string };
      seen.push({ step, named: p.lastCheckpoint, latest: await latestCheckpoint(ckpt) });
    },
  });
  const at = (s: number) => seen.find((x) => x.step === s);
  assert.ok(at(2)?.latest, "a checkpoint at step 2");
  assert.equal(at(2)?.named, at(2)?.latest, "step 2: progress.json must name the checkpoint just saved");
  assert.equal(at(4)?.named, at(4)?.latest);
  assert.equal(at(3)?.named, at(2)?.latest, "no checkpoint at step 3: progress.json still names step 2's");
});
