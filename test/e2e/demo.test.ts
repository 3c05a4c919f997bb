// e2e: the `make demo` flow with smaller step counts. The chart installs the operator as a pod (run by the node
// agent under the chart's ServiceAccount — proving its RBAC is sufficient), the real-photo dataset is packed into
// tar shards on S3, and a 2-node × 1-process TokenizerTraining trains across both pods, checkpoints to S3 (rank 0
// only), computes rFID and reports it in status with a reconstruction grid PNG.
// Sizing: the demo example (T1 at 64², batch 8 per rank, 4 evaluation Ks) with 12 steps and 32 held-out images;
// measured ≈45 s on the 2-core dev box with a warm cluster (about 15 s of it training, ~10 s rFID).
// Asserted: Succeeded; progress step = steps; rFID (plain key) finite and ≥ 0 with the random-Inception note;
// both pods logged step lines of a 2-rank world up to the last step, each from a single rank; "checkpoint saved"
// twice (interval + end) in exactly one pod and never in the other; the status checkpoint exists on S3;
// progress.json carries zero data-error counters; the grid PNG is 8 images wide and 1 + #K rows tall.
// The runs read the generated random-weight Inception from S3 (evaluation.inceptionUri): under kind the pods do
// not share this machine's model cache. Stage II (same flow as the demo, smaller): an ARTraining (tiny, MergeAR) referencing the trained tokenizer and a
// 2-shard SamplingJob referencing the ARTraining, both applied before the AR run can start (chained by reference).
// Asserted: AR Succeeded at its step count with a finite loss and its checkpoint on S3; both shards Succeeded with
// their npz outputs on S3; gFID (random-Inception label) finite ≥ 0 and IS in [1, classes]; the sample grid PNG
// decodes to the expected size.
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import * as k8s from "@kubernetes/client-node";
import sharp from "sharp";
import { Progress } from "../../common/src/contract.ts";
import {
  createRun,
  demoEnv,
  download,
  ensureReferenceStats,
  ensureS3Secret,
  installOperator,
  loadExample,
  prepareData,
  publishRandomInception,
  watchRun,
} from "../../hack/demo/flow.ts";
import { createStorage } from "../../trainer/src/io/s3.ts";
import { loadKubeConfig, makeNamespace, type TestNamespace } from "../cluster/testenv.ts";
import { run } from "../support/kubectl.ts";

const STEPS = Number(process.env.MERGEVQ_E2E_STEPS ?? 12);
const AR_STEPS = 6;
const SAMPLES = 16;

describe("make demo flow (short)", () => {
  let kc: k8s.KubeConfig;
  let ns: TestNamespace;
  let dataset = "";
  let inception = "";
  let tokenizerDone = false;
  const release = "mergevq-e2e";

  before(async () => {
    kc = loadKubeConfig();
    const env = demoEnv();
    if (process.env.MERGEVQ_E2E_OPERATOR !== "installed")
      installOperator(env, { release, namespace: "mergevq-e2e-system" });
    ns = await makeNamespace(kc, "e2e");
    await ensureS3Secret(kc, ns.name);
  });

  after(async () => {
    await ns?.cleanup();
    if (process.env.MERGEVQ_E2E_OPERATOR !== "installed")
      run("helm", ["uninstall", release, "-n", "mergevq-e2e-system", "--wait"]);
  });

  it("operator deployed by Helm becomes ready", () => {
    const r = run("kubectl", ["-n", "mergevq-e2e-system", "rollout", "status", "deploy", "--timeout=120s"], {
      timeoutMs: 130_000,
    });
    assert.equal(r.status, 0, r.stderr + r.stdout);
  });

  it("trains a 2-node TokenizerTraining to Succeeded with rFID, checkpoint and a reconstruction grid", async () => {
    dataset = await prepareData({ size: 64 });
    // Pods get the Inception from S3: under kind they do not share this machine's model cache.
    inception = await publishRandomInception();
    const tt = loadExample("tokenizer-training-demo.yaml");
    const runPrefix = `s3://mergevq-runs/e2e-${ns.name}`;
    tt.metadata = { name: "demo-e2e", namespace: ns.name };
    tt.spec.dataset.uri = dataset;
    tt.spec.training.steps = STEPS;
    tt.spec.training.logEverySteps = 2;
    tt.spec.checkpoint = { ...tt.spec.checkpoint, uri: runPrefix, intervalSteps: Math.ceil(STEPS / 2) };
    tt.spec.evaluation = { ...tt.spec.evaluation, numImages: 32, inceptionUri: inception };
    tt.spec.runPolicy = { ...tt.spec.runPolicy, cleanPodPolicy: "None" };
    await createRun(kc, ns.name, tt);

    const { status } = await watchRun(kc, ns.name, "TokenizerTraining", "demo-e2e", {
      timeoutMs: 25 * 60_000,
      print: (l) => process.stderr.write(`${l}\n`),
    });
    assert.equal(status.phase, "Succeeded", JSON.stringify(status.conditions));
    assert.equal(status.progress?.step, STEPS);
    assert.ok(Number.isFinite(status.metrics?.rFID), `rFID missing: ${JSON.stringify(status.metrics)}`);
    assert.ok((status.metrics?.rFID ?? -1) >= 0);
    assert.match(status.metricsNote ?? "", /random/i, "random Inception weights must be labelled");
    assert.match(status.artifacts?.checkpointUri ?? "", /^s3:\/\/mergevq-runs\//);

    // Both ranks trained (logs of both pods show step lines of THIS world size); only rank 0 wrote checkpoints.
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const pods = await core.listNamespacedPod({ namespace: ns.name });
    const ranks = pods.items.filter(
      (p) => p.metadata?.labels?.["mergevq.ai/run"] === "demo-e2e" || p.metadata?.name?.startsWith("demo-e2e-node-"),
    );
    assert.equal(ranks.length, 2, `expected 2 rank pods, got ${ranks.map((p) => p.metadata?.name)}`);
    const saves: number[] = [];
    for (const p of ranks) {
      const logs = run("kubectl", ["-n", ns.name, "logs", p.metadata?.name ?? ""]);
      assert.equal(logs.status, 0, logs.stderr);
      const lines = logs.stdout
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as { rank?: number; step?: number; worldSize?: number; msg?: string });
      const steps = lines.filter((l) => l.msg === "train progress" && l.worldSize === 2).map((l) => l.step);
      assert.ok(steps.includes(STEPS), `no step lines up to ${STEPS} in ${p.metadata?.name}: ${steps}`);
      assert.equal(new Set(lines.map((l) => l.rank).filter((r) => r !== undefined)).size, 1);
      saves.push(lines.filter((l) => l.msg === "checkpoint saved").length);
    }
    // Checkpoints at intervalSteps and at the end, all by one rank (rank 0), none by the other.
    assert.deepEqual([...saves].sort(), [0, 2], `checkpoint saves per pod: ${saves}`);
    const objects = await createStorage(runPrefix).list(runPrefix);
    const ckpts = objects.filter((o) => /step-\d{9}\.ckpt$/.test(o.uri)).map((o) => o.uri);
    assert.ok(ckpts.length >= 1, `no checkpoints under ${runPrefix}: ${objects.map((o) => o.uri)}`);
    assert.ok(ckpts.includes(status.artifacts?.checkpointUri ?? ""), "status checkpoint must exist on S3");

    // progress.json (rank 0) reports the data plane's skipped-input counters (none for this clean dataset).
    const progress = Progress.parse(
      JSON.parse((await createStorage(runPrefix).get(`${runPrefix}/status/progress.json`)).toString("utf8")),
    );
    assert.equal(progress.step, STEPS);
    assert.equal(progress.dataErrors?.corruptImages, 0, JSON.stringify(progress.dataErrors));
    assert.equal(progress.dataErrors?.truncatedShards, 0);

    // The reconstruction grid decodes to a PNG of the expected size.
    const grid = status.artifacts?.imageUris?.[0];
    assert.ok(grid, "no reconstruction grid in status.artifacts.imageUris");
    const file = await download(grid, path.join(mkdtempSync(path.join(os.tmpdir(), "e2e-")), "grid.png"));
    const meta = await sharp(file).metadata();
    assert.equal(meta.format, "png");
    assert.ok((meta.width ?? 0) >= 64 && (meta.height ?? 0) >= 64, `grid ${meta.width}x${meta.height}`);
    // Top row: originals; one row of reconstructions per evaluation K; 8 images per row.
    const rows = 1 + (tt.spec.model.evalKeepTokens?.length ?? 1);
    assert.equal(meta.height, rows * 64);
    assert.equal(meta.width, 8 * 64);
    tokenizerDone = true;
  });

  it("chains an ARTraining (MergeAR) and a 2-shard SamplingJob by reference to gFID/IS and a sample grid", async () => {
    assert.ok(tokenizerDone, "needs the TokenizerTraining of the previous test");
    const prefix = `s3://mergevq-runs/e2e-${ns.name}`;
    const ar = loadExample("artraining-demo.yaml");
    ar.metadata = { name: "demo-e2e-ar", namespace: ns.name };
    ar.spec.tokenizerRef = { name: "demo-e2e" };
    ar.spec.dataset.uri = dataset;
    ar.spec.training = { ...ar.spec.training, steps: AR_STEPS, batchSize: 4, logEverySteps: 2 };
    ar.spec.checkpoint = { ...ar.spec.checkpoint, uri: `${prefix}-ar`, intervalSteps: AR_STEPS };
    const sj = loadExample("samplingjob-demo.yaml");
    sj.metadata = { name: "demo-e2e-sj", namespace: ns.name };
    sj.spec.modelRef = { name: "demo-e2e-ar" };
    sj.spec.sampling = { ...sj.spec.sampling, numSamples: SAMPLES, shards: 2, batchSize: 8 };
    const reference = `${prefix}-val-stats.npz`; // computed with the same (S3) Inception the reduce pod uses
    sj.spec.evaluation = { ...sj.spec.evaluation, referenceStatsUri: reference, inceptionUri: inception };
    sj.spec.checkpoint = { ...sj.spec.checkpoint, uri: `${prefix}-sj` };
    await ensureReferenceStats(`${dataset}/val`, reference, 64, inception);
    // The SamplingJob goes in first: it must wait for the ARTraining, which itself waits for nothing (tokenizer done).
    await createRun(kc, ns.name, sj);
    await createRun(kc, ns.name, ar);
    const print = (l: string) => process.stderr.write(`${l}\n`);

    const arDone = await watchRun(kc, ns.name, "ARTraining", "demo-e2e-ar", { timeoutMs: 15 * 60_000, print });
    assert.equal(arDone.status.phase, "Succeeded", JSON.stringify(arDone.status.conditions));
    assert.equal(arDone.status.progress?.step, AR_STEPS);
    assert.ok(
      Number.isFinite(arDone.status.metrics?.loss),
      `AR loss missing: ${JSON.stringify(arDone.status.metrics)}`,
    );
    const arCkpt = arDone.status.artifacts?.checkpointUri ?? "";
    assert.match(arCkpt, /^s3:\/\/mergevq-runs\/.*-ar\//);
    assert.ok(await createStorage(arCkpt).head(arCkpt), `AR checkpoint ${arCkpt} must exist on S3`);

    const sjDone = await watchRun(kc, ns.name, "SamplingJob", "demo-e2e-sj", { timeoutMs: 15 * 60_000, print });
    const st = sjDone.status as typeof sjDone.status & {
      shards?: { index: number; phase: string; outputUri?: string }[];
    };
    assert.equal(st.phase, "Succeeded", JSON.stringify(st.conditions));
    assert.deepEqual([st.progress?.step, st.progress?.totalSteps], [2, 2], "progress counts shards");
    assert.deepEqual(
      (st.shards ?? []).map((x) => [x.index, x.phase]),
      [
        [0, "Succeeded"],
        [1, "Succeeded"],
      ],
    );
    for (const shard of st.shards ?? []) {
      const uri = shard.outputUri ?? "";
      assert.match(uri, /\.npz$/);
      assert.ok(await createStorage(uri).head(uri), `shard output ${uri} must exist on S3`);
    }
    const gfid = Object.entries(st.metrics ?? {}).find(([k]) => k.startsWith("gFID"));
    const is = Object.entries(st.metrics ?? {}).find(([k]) => k.startsWith("IS"));
    assert.ok(gfid && Number.isFinite(gfid[1]) && gfid[1] >= 0, `gFID missing: ${JSON.stringify(st.metrics)}`);
    assert.ok(is && is[1] >= 1 - 1e-9 && is[1] <= 1008, `IS out of range: ${JSON.stringify(st.metrics)}`);
    assert.match(`${gfid[0]} ${st.metricsNote ?? ""}`, /random/i, "random Inception weights must be labelled");

    const grid = st.artifacts?.imageUris?.[0];
    assert.ok(grid, "no sample grid in status.artifacts.imageUris");
    const file = await download(grid, path.join(mkdtempSync(path.join(os.tmpdir(), "e2e-")), "samples.png"));
    const meta = await sharp(file).metadata();
    assert.equal(meta.format, "png");
    // Up to 64 samples, 8 per row (trainer/src/sample/grid.ts).
    assert.equal(meta.width, 8 * 64);
    assert.equal(meta.height, Math.ceil(SAMPLES / 8) * 64);
  });
});
