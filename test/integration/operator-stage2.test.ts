// Stage II under the operator with the REAL trainer (no stand-in scripts), proving failure recovery end to end
// on the local cluster (real apiserver + node agent running pods as processes + MinIO):
//   1. A real T0 TokenizerTraining (2 steps, no rFID) reaches Succeeded; an ARTraining created at the same time
//      waits for it (TokenizerNotReady), then trains (tiny, MergeAR, 120 steps, checkpoint every 10 to s3://).
//   2. Once the AR run is Running and status.lastCheckpoint is set, its trainer process is killed (SIGTERM to the
//      pod's process group, found through the node agent's /pods endpoint → exit 143). The operator starts
//      attempt 2 (restart counted, reason Signal) whose pod carries RESUME_FROM = status.lastCheckpoint; the
//      trainer logs that it resumed at that step (> 0) and trains only the remaining steps; the run ends
//      Succeeded at 120 steps with a finite loss and its final checkpoint on S3 — bit-identical (all tensors,
//      optimiser state included) to an uninterrupted twin ARTraining trained side by side: resume is exact.
//   3. A 2-shard SamplingJob (8 samples) on that model: shard 1's trainer is SIGTERMed as soon as its process
//      exists (while the container runs, before it can write any output); the operator
//      retries only shard 1 (attempt 2), shard 0 keeps its single pod and its npz on S3 is not rewritten
//      (same ETag and LastModified), and the reduce step reports gFID/IS labelled [random-inception].
// Data: the real-photo folder (debphotos10, ImageNet layout) read in place by the pods (they run on this host).
// Why a SIGTERM to the process and not SIGKILL or a pod deletion: the node agent reports an unexplained SIGKILL
// as OOMKilled (fail fast, by design), and a pod deletion is an uncounted PodDeleted restart (covered by the kind
// tier and operator/src/reconcile/training.test.ts), not the counted Signal restart this test is about.
// SIGTERM is what a preempted or evicted container gets; the AR run turns saveOnSigterm off so that this SIGTERM
// behaves like a crash (no checkpoint at the signal).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, test } from "node:test";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { REPO_ROOT } from "../../operator/src/testing/fixtures.ts";
import { BUCKET, condition, eventually, Harness, type Obj } from "../../operator/src/testing/itest.ts";
import { decodeCheckpoint } from "../../trainer/src/io/checkpoint.ts";
import { ensureTestPhotos } from "../../trainer/src/util/testPhotos.ts";

const AR_STEPS = 120;
const AR_INTERVAL = 10;
const h = new Harness();
let photos = "";
let arCheckpoint = "";
const t0 = Date.now();
const say = (m: string) => process.stderr.write(`[stage2 ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`);

before(async () => {
  photos = ensureTestPhotos().dir;
  await h.setup("op-s2");
  h.startOperator({ LEADER_ELECTION: "false", PROGRESS_POLL_SECONDS: "1" });
});
after(() => h.teardown());

const s3uri = (name: string) => `s3://${BUCKET}/${h.ns.name}/${name}`;
const key = (uri: string) => uri.replace(`s3://${BUCKET}/`, "");

/** The node agent's view of a pod's processes (`GET $MERGEVQ_NODE_AGENT_URL/pods`). */
async function agentPids(pod: string): Promise<number[]> {
  const url = process.env.MERGEVQ_NODE_AGENT_URL;
  if (!url) throw new Error("MERGEVQ_NODE_AGENT_URL is not set (run under hack/with-cluster.sh)");
  const list = (await (await fetch(`${url}/pods`)).json()) as { key: string; phase: string; pids: number[] }[];
  return list.find((p) => p.key === `${h.ns.name}/${pod}`)?.pids ?? [];
}

/** SIGTERM the process group of every container of `pod` (the trainer does not trap it: exit 143). */
async function killPod(pod: string): Promise<void> {
  const pids = await agentPids(pod);
  assert.ok(pids.length > 0, `no processes for ${pod}`);
  for (const pid of pids) process.kill(-pid, "SIGTERM");
}

async function podLog(pod: string): Promise<Obj[]> {
  const text = await h.core.readNamespacedPodLog({ name: pod, namespace: h.ns.name, container: "trainer" });
  return String(text)
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Obj);
}

async function head(uri: string): Promise<{ etag: string; modified: number }> {
  const r = await h.s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key(uri) }));
  return { etag: r.ETag ?? "", modified: r.LastModified?.getTime() ?? 0 };
}

/** Thrown inside a poll() callback: stop polling and fail now. */
class Fatal extends Error {}

/** Poll until `fn` returns a value; a Fatal error ends it at once, other errors are retried until the timeout. */
async function poll<T>(fn: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      if (e instanceof Fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms (${String(last ?? "")})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function loadCkpt(uri: string) {
  const r = await h.s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key(uri) }));
  return decodeCheckpoint(await r.Body!.transformToByteArray(), uri);
}
const bytesOf = (d: ArrayBufferView | undefined) =>
  d ? Buffer.from(d.buffer, d.byteOffset, d.byteLength) : Buffer.alloc(0);

const podEnv = (p: Obj, name: string): string | undefined =>
  (p.spec.containers[0].env as { name: string; value?: string }[]).find((e) => e.name === name)?.value;

test("ARTraining on a real tokenizer: trainer killed after a checkpoint → attempt 2 resumes from it and finishes", async () => {
  const tt = {
    apiVersion: "mergevq.ai/v1alpha1",
    kind: "TokenizerTraining",
    metadata: { name: "tok" },
    spec: {
      model: { preset: "T0" },
      dataset: { uri: photos, format: "folder" },
      training: { steps: 2, batchSize: 4, logEverySteps: 1 },
      evaluation: { enabled: false },
      checkpoint: { uri: s3uri("tok") },
      s3: { secretRef: { name: "s3-creds" }, endpoint: h.env.s3.endpoint },
    },
  };
  const ar = {
    apiVersion: "mergevq.ai/v1alpha1",
    kind: "ARTraining",
    metadata: { name: "ar" },
    spec: {
      tokenizerRef: { name: "tok" },
      model: { size: "tiny", numClasses: 10, mergeAR: { enabled: true, window: 2 } },
      dataset: { uri: photos, format: "folder" },
      training: { steps: AR_STEPS, batchSize: 8, logEverySteps: 5 },
      // saveOnSigterm off: the SIGTERM below stands in for a crash (see the header), which must resume from the last
      // periodic checkpoint. The SIGTERM checkpoint itself is tested in trainer/src/commands/ar.test.ts and test/kind/.
      checkpoint: { uri: s3uri("ar"), intervalSteps: AR_INTERVAL, keepLast: 10, saveOnSigterm: false },
      s3: { secretRef: { name: "s3-creds" }, endpoint: h.env.s3.endpoint },
    },
  };
  // The same run without a failure, side by side: resume must be exact (same final weights, bit for bit).
  const ref = structuredClone(ar);
  ref.metadata.name = "ar-ref";
  ref.spec.checkpoint.uri = s3uri("ar-ref");
  // All at once: the AR runs must wait for their tokenizer.
  await h.create("ARTraining", ar);
  await h.create("ARTraining", ref);
  await h.create("TokenizerTraining", tt);
  const waiting = await eventually(
    async () => {
      const o = await h.get("ARTraining", "ar");
      return o?.status?.phase === "Waiting" ? o : undefined;
    },
    { timeoutMs: 30_000, message: "ARTraining Waiting" },
  );
  assert.equal(condition(waiting, "Admitted")?.reason, "TokenizerNotReady");

  const tok = await h.waitPhase("TokenizerTraining", "tok", "Succeeded", 120_000);
  const tokCkpt = tok.status.artifacts?.checkpointUri as string;
  assert.match(tokCkpt, new RegExp(`^${s3uri("tok")}/step-0+2\\.ckpt$`));
  say(`tokenizer Succeeded: ${tokCkpt}`);

  // Attempt 1 running with a reported checkpoint → kill its trainer.
  // The trainer writes progress.json at most every 5 s, so the first reported checkpoint shows up ≈5 s in.
  const running = await poll(
    async () => {
      const o = await h.get("ARTraining", "ar");
      if (o?.status?.phase === "Failed" || o?.status?.phase === "Succeeded")
        throw new Fatal(`AR ended before the kill: ${JSON.stringify(o.status)}`);
      return o?.status?.phase === "Running" && o.status.attempt === 1 && o.status.lastCheckpoint ? o : undefined;
    },
    120_000,
    "AR Running with a checkpoint",
  );
  const seenCkpt = running.status.lastCheckpoint as string;
  assert.match(seenCkpt, new RegExp(`^${s3uri("ar")}/step-\\d{9}\\.ckpt$`));
  const pod1 = (await h.pods("ar")).find((p) => p.metadata?.name === "ar-node-0-a1");
  assert.ok(pod1, "attempt-1 pod");
  assert.equal(podEnv(pod1 as Obj, "MERGEVQ_TOKENIZER_CHECKPOINT"), tokCkpt);
  assert.equal(podEnv(pod1 as Obj, "RESUME_FROM"), undefined);
  const killedAt = Date.now();
  await killPod("ar-node-0-a1");
  say(`killed ar-node-0-a1 at progress step ${running.status.progress?.step}; lastCheckpoint ${seenCkpt}`);

  // Attempt 2: RESUME_FROM = the checkpoint in status when the operator restarted the group.
  const restarted = await eventually(
    async () => {
      const o = await h.get("ARTraining", "ar");
      return (o?.status?.attempt ?? 0) >= 2 ? o : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 100, message: "AR attempt 2" },
  );
  assert.equal(restarted.status.restartCount, 1);
  assert.equal(condition(restarted, "Restarting")?.reason, "Signal");
  const pod2 = await eventually(async () => (await h.pods("ar")).find((p) => p.metadata?.name === "ar-node-0-a2"), {
    timeoutMs: 30_000,
    message: "attempt-2 pod",
  });
  const resumeFrom = podEnv(pod2 as Obj, "RESUME_FROM") ?? "";
  assert.equal(resumeFrom, restarted.status.lastCheckpoint, "RESUME_FROM is the checkpoint the operator recorded");
  const resumeStep = Number(/step-(\d+)\.ckpt$/.exec(resumeFrom)?.[1]);
  assert.ok(resumeStep >= Number(/step-(\d+)\.ckpt$/.exec(seenCkpt)?.[1]), `${resumeFrom} older than ${seenCkpt}`);
  assert.ok(resumeStep > 0 && resumeStep < AR_STEPS && resumeStep % AR_INTERVAL === 0, `resume step ${resumeStep}`);
  assert.equal(podEnv(pod2 as Obj, "MERGEVQ_ATTEMPT"), "2");

  const done = await h.waitPhase("ARTraining", "ar", "Succeeded", 150_000);
  say(
    `AR Succeeded ${((Date.now() - killedAt) / 1000).toFixed(1)} s after the kill: ${JSON.stringify(done.status.metrics)}`,
  );
  assert.equal(done.status.attempt, 2);
  assert.equal(done.status.progress?.step, AR_STEPS);
  assert.ok(Number.isFinite(done.status.metrics?.loss) && done.status.metrics.loss > 0, "finite loss");
  arCheckpoint = done.status.artifacts?.checkpointUri ?? "";
  assert.equal(arCheckpoint, `${s3uri("ar")}/step-${String(AR_STEPS).padStart(9, "0")}.ckpt`);
  assert.ok((await head(arCheckpoint)).etag, "final AR checkpoint on S3");

  // The attempt-2 trainer resumed at that step (not 0) and trained only the remaining steps.
  const lines = await podLog("ar-node-0-a2");
  const resumed = lines.find((l) => l.msg === "resumed from checkpoint");
  assert.ok(resumed, "attempt 2 logged no resume");
  assert.equal(resumed.step, resumeStep);
  assert.equal(resumed.checkpoint, resumeFrom);
  const steps = lines.filter((l) => l.msg === "train progress").map((l) => l.step as number);
  assert.ok(steps.length > 0 && Math.min(...steps) > resumeStep, `attempt 2 progress steps ${steps}`);
  assert.equal(Math.max(...steps), AR_STEPS);
  const saved = lines.filter((l) => l.msg === "checkpoint saved").map((l) => l.step as number);
  assert.ok(
    saved.every((s) => s > resumeStep),
    `attempt 2 re-saved a checkpoint at or before ${resumeStep}: ${saved}`,
  );
  // Exact resume: the uninterrupted twin ends with bit-identical weights and optimiser state, and the same loss.
  const twin = await h.waitPhase("ARTraining", "ar-ref", "Succeeded", 120_000);
  assert.equal(twin.status.attempt, 1);
  assert.equal(twin.status.metrics.loss, done.status.metrics.loss);
  const a = await loadCkpt(arCheckpoint);
  const b = await loadCkpt(twin.status.artifacts.checkpointUri);
  assert.equal(a.meta.step, AR_STEPS);
  assert.deepEqual([...a.tensors.keys()].sort(), [...b.tensors.keys()].sort());
  assert.ok(a.tensors.has("model/merge_embedding.weight"), "a MergeAR checkpoint");
  const differ = [...a.tensors].filter(([n, t]) => !bytesOf(t.data).equals(bytesOf(b.tensors.get(n)?.data)));
  assert.deepEqual(
    differ.map(([n]) => n),
    [],
    "tensors differ between the resumed and the uninterrupted run",
  );
  // The operator told the story: a counted Signal restart from the checkpoint, then completion.
  const reasons = (await h.events("ar")).map((e) => e.reason);
  for (const r of ["CheckpointReported", "Signal", "Completed"])
    assert.ok(reasons.includes(r), `event ${r}: ${reasons}`);
  assert.deepEqual(
    (await h.pods("ar")).map((p) => p.metadata?.name),
    ["ar-node-0-a2"],
    "the attempt-1 pod is gone",
  );
});

test("SamplingJob: a killed shard is retried alone, the other shard's output is reused, gFID/IS reported", async () => {
  assert.ok(arCheckpoint, "needs the ARTraining of the previous test");
  const reference = s3uri("val-stats-32.npz");
  // Reference statistics of the held-out photos at the tokenizer resolution (32²), with the same generated
  // random-weight Inception the reduce pod uses (this host's model cache).
  await new Promise<void>((resolve, reject) =>
    execFile(
      process.execPath,
      [
        "--import",
        "tsx",
        path.join(REPO_ROOT, "trainer/src/cli.ts"),
        "eval",
        "reference-stats",
        "--data",
        path.join(photos, "val"),
        "--out",
        reference,
        "--size",
        "32",
        "--images",
        "64",
      ],
      { cwd: REPO_ROOT, env: { ...process.env, LOG_LEVEL: "warn" }, timeout: 120_000 },
      (err, _out, stderr) => (err ? reject(new Error(`reference-stats: ${err.message}\n${stderr}`)) : resolve()),
    ),
  );
  say(`reference statistics at ${reference}`);

  await h.create("SamplingJob", {
    apiVersion: "mergevq.ai/v1alpha1",
    kind: "SamplingJob",
    metadata: { name: "sj" },
    spec: {
      modelRef: { name: "ar" },
      sampling: { numSamples: 8, shards: 2, batchSize: 4 },
      evaluation: { referenceStatsUri: reference },
      checkpoint: { uri: s3uri("sj") },
      s3: { secretRef: { name: "s3-creds" }, endpoint: h.env.s3.endpoint },
    },
  });
  // Kill shard 1 as soon as its container runs (it cannot have finished: start-up alone takes ~1 s).
  const pids = await eventually(() => agentPids("sj-shard-1-a1").then((p) => (p.length ? p : undefined)), {
    timeoutMs: 60_000,
    intervalMs: 50,
    message: "shard 1 process",
  });
  for (const pid of pids) process.kill(-pid, "SIGTERM");
  const killedAt = Date.now();
  say("killed sj-shard-1-a1");

  // Shard 0's output as first published (before shard 1's retry can run to completion).
  const out0 = `${s3uri("sj")}/shards/0.npz`;
  const out1 = `${s3uri("sj")}/shards/1.npz`;
  const first0 = await eventually(() => head(out0).catch(() => undefined), {
    timeoutMs: 60_000,
    intervalMs: 100,
    message: "shard 0 output",
  });

  const done = await h.waitPhase("SamplingJob", "sj", "Succeeded", 120_000);
  say(`SamplingJob Succeeded: ${JSON.stringify(done.status.metrics)}`);
  const shards = done.status.shards as Obj[];
  assert.deepEqual(
    shards.map((s) => [s.index, s.phase, s.attempts, s.outputUri]),
    [
      [0, "Succeeded", 1, out0],
      [1, "Succeeded", 2, out1],
    ],
  );
  // Only shard 1 was retried: one pod for shard 0 (attempt 1), shard 1's attempt 2 succeeded.
  const pods = (await h.pods("sj")).map((p) => [p.metadata?.name, p.status?.phase]);
  assert.ok(
    pods.some(([n, ph]) => n === "sj-shard-1-a2" && ph === "Succeeded"),
    `pods ${JSON.stringify(pods)}`,
  );
  assert.deepEqual(
    pods.filter(([n]) => String(n).startsWith("sj-shard-0")).map(([n]) => n),
    ["sj-shard-0-a1"],
  );
  const shardEvents = (await h.events("sj")).filter((e) => e.reason === "ShardFailed").map((e) => e.message ?? "");
  assert.equal(shardEvents.length, 1, JSON.stringify(shardEvents));
  assert.match(shardEvents[0], /^shard 1 failed \(Signal\); retrying as attempt 2/);
  // Shard 0's npz was not regenerated; shard 1's was written by the retry.
  assert.deepEqual(await head(out0), first0, "shard 0 output rewritten");
  assert.ok((await head(out1)).modified >= Math.floor(killedAt / 1000) * 1000, "shard 1 output predates its retry");
  const log1 = await podLog("sj-shard-1-a2");
  assert.ok(
    log1.some((l) => l.msg === "shard written" && l.samples === 4),
    "shard 1 attempt 2 generated its 4 samples",
  );

  // Reduce: gFID / IS over all 8 samples, labelled as random-Inception numbers.
  const m = done.status.metrics as Record<string, number>;
  const gfid = m["gFID[random-inception]"];
  const is = m["IS[random-inception]"];
  assert.ok(Number.isFinite(gfid) && gfid >= 0, `gFID ${JSON.stringify(m)}`);
  assert.ok(is >= 1 - 1e-9 && is <= 1008, `IS ${is}`);
  assert.equal(m.samples, 8);
  assert.match(done.status.metricsNote ?? "", /random/i, "random Inception weights must be labelled");
});
