// Run lifecycle against the real local cluster: stall detection, suspend/resume, TTL, deletion cascade, and the
// pipeline TokenizerTraining → ARTraining → SamplingJob (shard retry + reduce → gFID/IS in status).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fakeTrainerScript, makeARTraining, makeSamplingJob } from "../../operator/src/testing/fixtures.ts";
import { BUCKET, condition, eventually, Harness } from "../../operator/src/testing/itest.ts";

const h = new Harness();

before(async () => {
  await h.setup("op-life");
  h.startOperator();
});
after(() => h.teardown());

test("stall detection: a trainer that stops reporting progress is restarted (Stalled) from its last checkpoint", async () => {
  await h.create(
    "TokenizerTraining",
    h.fakeTT("stall", { FAKE_STEPS: "4", FAKE_STALL_AT_STEP: "2", FAKE_STALL_ATTEMPT: "1" }, 1).stallTimeout(5).raw_(),
  );
  const done = await h.waitPhase("TokenizerTraining", "stall", "Succeeded", 60_000);
  assert.equal(done.status.attempt, 2);
  assert.equal(done.status.restartCount, 1);
  const ev = (await h.events("stall")).find((e) => e.reason === "Stalled");
  assert.ok(ev, "Stalled event");
  const seen = await h.readS3Json(`${h.ns.name}/stall/status/env-rank0-a2.json`);
  assert.equal(seen?.RESUME_FROM, `s3://${BUCKET}/${h.ns.name}/stall/step-2`);
});

test("suspend deletes the pods and keeps status; resume starts attempt 2 from the checkpoint and finishes", async () => {
  await h.create("TokenizerTraining", h.fakeTT("susp", { FAKE_STEPS: "40", FAKE_STEP_MS: "200" }).raw_());
  await eventually(async () => ((await h.get("TokenizerTraining", "susp"))?.status?.progress?.step ?? 0) >= 2, {
    timeoutMs: 60_000,
    message: "progress reported",
  });
  await h.patchSpec("TokenizerTraining", "susp", { runPolicy: { suspend: true } });
  const s = await h.waitPhase("TokenizerTraining", "susp", "Suspended", 30_000);
  assert.equal(condition(s, "Suspended")?.status, "True");
  assert.ok(s.status.lastCheckpoint, "status kept");
  await eventually(async () => (await h.pods("susp")).length === 0, { timeoutMs: 30_000, message: "pods deleted" });
  await h.patchSpec("TokenizerTraining", "susp", { runPolicy: { suspend: false } });
  const done = await h.waitPhase("TokenizerTraining", "susp", "Succeeded", 90_000);
  assert.equal(done.status.attempt, 2);
  assert.equal(done.status.restartCount, 0, "resume is not a counted restart");
  assert.equal(condition(done, "Suspended")?.status, "False");
  const seen = await h.readS3Json(`${h.ns.name}/susp/status/env-rank0-a2.json`);
  assert.match(seen?.RESUME_FROM ?? "", /\/susp\/step-\d+$/);
});

test("ttlSecondsAfterFinished deletes the finished run and its pods", async () => {
  await h.create("TokenizerTraining", h.fakeTT("ttl", { FAKE_STEPS: "1" }, 1).ttl(2).cleanPodPolicy("All").raw_());
  await h.waitPhase("TokenizerTraining", "ttl", "Succeeded", 60_000);
  await eventually(async () => (await h.get("TokenizerTraining", "ttl")) === undefined, {
    timeoutMs: 30_000,
    message: "run deleted by TTL",
  });
  await eventually(async () => (await h.pods("ttl")).length === 0, { timeoutMs: 30_000, message: "pods gone" });
});

test("deleting a running run deletes its pods and Service", async () => {
  await h.create("TokenizerTraining", h.fakeTT("del", { FAKE_STEPS: "200", FAKE_STEP_MS: "200" }).raw_());
  await h.waitPhase("TokenizerTraining", "del", "Running", 60_000);
  assert.equal((await h.pods("del")).length, 2);
  await h.delete("TokenizerTraining", "del");
  await eventually(async () => (await h.pods("del")).length === 0, {
    timeoutMs: 40_000,
    message: "pods of deleted run gone",
  });
  await eventually(
    async () => {
      try {
        await h.core.readNamespacedService({ namespace: h.ns.name, name: "del" });
        return false;
      } catch {
        return true;
      }
    },
    { timeoutMs: 30_000, message: "service gone" },
  );
});

test("pipeline: ARTraining waits for its tokenizer; SamplingJob shards retry individually, then reduce writes gFID/IS", async () => {
  const script = fakeTrainerScript();
  const ns = h.ns.name;
  // The consumers exist first: they must wait (Admitted=False) until their references succeed.
  await h.create(
    "ARTraining",
    makeARTraining("ar", "tok")
      .namespace(ns)
      .checkpointUri(`s3://${BUCKET}/${ns}/ar`)
      .set("spec.dataset.uri", `s3://${BUCKET}/dataset`)
      .s3("s3-creds", h.env.s3.endpoint)
      .image("docker.io/library/node:20")
      .command(["node", "-e", script])
      .env({ FAKE_STEPS: "2", FAKE_STEP_MS: "200" })
      .raw_(),
  );
  await h.create(
    "SamplingJob",
    makeSamplingJob("sj", "ar", 3)
      .namespace(ns)
      .checkpointUri(`s3://${BUCKET}/${ns}/sj`)
      .s3("s3-creds", h.env.s3.endpoint)
      .image("docker.io/library/node:20")
      .command(["node", "-e", script])
      // Shard 1 is killed (143) in its first attempt; the reduce step reports fixed metrics.
      .env({ FAKE_STEPS: "2", FAKE_STEP_MS: "100", FAKE_FAIL: "1:1:0:143", FAKE_GFID: "4.25", FAKE_IS: "123.5" })
      .raw_(),
  );
  const waiting = await eventually(async () => {
    const o = await h.get("ARTraining", "ar");
    return condition(o ?? {}, "Admitted")?.reason === "TokenizerNotFound" ? o : undefined;
  });
  assert.equal(waiting.status.phase, "Waiting");
  assert.equal((await h.pods("ar")).length, 0);
  await h.create("TokenizerTraining", h.fakeTT("tok", { FAKE_STEPS: "2" }, 1).raw_());
  const ar = await h.waitPhase("ARTraining", "ar", "Succeeded", 90_000);
  assert.equal(condition(ar, "Admitted")?.status, "True");
  const arEnv = await h.readS3Json(`${ns}/ar/status/env-rank0-a1.json`);
  assert.equal(arEnv?.MERGEVQ_TOKENIZER_CHECKPOINT, `s3://${BUCKET}/${ns}/tok/final`);

  const sj = await h.waitPhase("SamplingJob", "sj", "Succeeded", 90_000);
  assert.equal(sj.status.metrics.gFID, 4.25);
  assert.equal(sj.status.metrics.IS, 123.5);
  const shards = sj.status.shards as Array<{ index: number; phase: string; attempts: number; outputUri: string }>;
  assert.deepEqual(
    shards.map((s) => [s.index, s.phase, s.attempts]),
    [
      [0, "Succeeded", 1],
      [1, "Succeeded", 2],
      [2, "Succeeded", 1],
    ],
  );
  assert.equal(shards[2].outputUri, `s3://${BUCKET}/${ns}/sj/shards/2.npz`);
  const shardEnv = await h.readS3Json(`${ns}/sj/status/shards/1/env-rank1-a2.json`);
  assert.equal(shardEnv?.MERGEVQ_MODEL_CHECKPOINT, `s3://${BUCKET}/${ns}/ar/final`);
  assert.equal(shardEnv?.MERGEVQ_TOKENIZER_CHECKPOINT, `s3://${BUCKET}/${ns}/tok/final`);
  assert.ok(await h.readS3Json(`${ns}/sj/status/env-reduce-a1.json`), "reduce step ran");
});
