// Pipeline: reference resolution (ARTraining → tokenizer, SamplingJob → model + tokenizer) and the SamplingJob
// shard fan-out with per-shard retry, idempotent outputs and the reduce step.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import type { SamplingJob } from "../api/v1alpha1/index.ts";
import { makeARTraining, makeSamplingJob, makeTokenizerTraining, testContext, withPhase } from "../testing/fixtures.ts";
import { resolveAccelerator } from "./accelerator.ts";
import { getCondition } from "./conditions.ts";
import {
  planSampling,
  type RefLookup,
  resolveSamplingInputs,
  resolveTokenizerForAR,
  type SamplingObserved,
} from "./pipeline.ts";
import type { Plan } from "./plan.ts";

const ctx = testContext();
const T0 = Date.parse("2026-01-01T00:00:00Z");
const at = (s: number) => T0 + s * 1000;
const acc = (() => {
  const r = resolveAccelerator({ vendor: "cpu" }, {}, 1);
  assert.ok(r.ok);
  return r.value;
})();

const tokDone = makeTokenizerTraining("tok")
  .status({ phase: "Succeeded", artifacts: { checkpointUri: "s3://ckpt/tok/final" } })
  .obj();
const arDone = makeARTraining("ar", "tok")
  .status({ phase: "Succeeded", artifacts: { checkpointUri: "s3://ckpt/ar/final" } })
  .obj();

function lookupOf(...runs: Array<{ kind: string; metadata: { namespace?: string; name?: string } }>): RefLookup {
  return (kind, ns, name) =>
    runs.find(
      (r) => r.kind === kind && r.metadata.namespace === ns && r.metadata.name === name,
    ) as ReturnType<RefLookup>;
}

test("ARTraining waits for its tokenizer: not found → TokenizerNotFound, running → TokenizerNotReady, done → checkpoint", () => {
  const ar = makeARTraining("ar", "tok").obj();
  const none = resolveTokenizerForAR(ar, lookupOf());
  assert.equal(none.ok ? "" : none.blocker.reason, "TokenizerNotFound");
  const running = makeTokenizerTraining("tok").status({ phase: "Running" }).obj();
  const r2 = resolveTokenizerForAR(ar, lookupOf(running));
  assert.equal(r2.ok ? "" : r2.blocker.reason, "TokenizerNotReady");
  assert.match(r2.ok ? "" : r2.blocker.message, /Running/);
  const r3 = resolveTokenizerForAR(ar, lookupOf(tokDone));
  assert.deepEqual(r3, { ok: true, checkpointUri: "s3://ckpt/tok/final" });
});

test("SamplingJob inputs: model checkpoint + tokenizer defaulting to the model's tokenizerRef", () => {
  const sj = makeSamplingJob("s", "ar").obj();
  const r = resolveSamplingInputs(sj, lookupOf(arDone, tokDone));
  assert.deepEqual(r, { ok: true, model: "s3://ckpt/ar/final", tokenizer: "s3://ckpt/tok/final" });
  const notReady = resolveSamplingInputs(
    sj,
    lookupOf(makeARTraining("ar").status({ phase: "Running" }).obj(), tokDone),
  );
  assert.equal(notReady.ok ? "" : notReady.blocker.reason, "ModelNotReady");
});

function obs(run: SamplingJob, pods: V1Pod[], now: number): SamplingObserved {
  return { now, run, pods, acc, modelCheckpoint: "s3://ckpt/ar/final", tokenizerCheckpoint: "s3://ckpt/tok/final" };
}
const next = (run: SamplingJob, p: Plan): SamplingJob => ({ ...run, status: p.status as SamplingJob["status"] });

test("fan-out: one pod per shard; a failed shard retries alone; outputs recorded; reduce computes gFID/IS", () => {
  let run = makeSamplingJob("s", "ar", 3).obj();
  const p1 = planSampling(obs(run, [], at(0)), ctx);
  assert.deepEqual(
    p1.createPods.map((p) => p.metadata!.name),
    ["s-shard-0-a1", "s-shard-1-a1", "s-shard-2-a1"],
  );
  assert.equal(p1.status.phase, "Pending");
  run = next(run, p1);
  const [s0, s1, s2] = p1.createPods;
  // Shard 1 is killed by a signal: retried as attempt 2, the others untouched.
  const p2 = planSampling(
    obs(
      run,
      [withPhase(s0, "Succeeded"), withPhase(s1, "Failed", { exitCode: 137 }), withPhase(s2, "Running")],
      at(10),
    ),
    ctx,
  );
  assert.deepEqual(
    p2.createPods.map((p) => p.metadata!.name),
    ["s-shard-1-a2"],
  );
  assert.deepEqual(p2.deletePods, ["s-shard-1-a1"]);
  const sh = p2.status.shards!;
  assert.deepEqual(
    sh.map((s) => [s.index, s.phase, s.attempts]),
    [
      [0, "Succeeded", 1],
      [1, "Pending", 2],
      [2, "Running", 1],
    ],
  );
  assert.equal(sh[0].outputUri, "s3://ckpt/s/shards/0.npz");
  assert.equal(p2.status.progress?.percent, "33%");
  assert.equal(p2.status.phase, "Running");
  run = next(run, p2);
  const s1b = p2.createPods[0];
  const p3 = planSampling(
    obs(run, [withPhase(s0, "Succeeded"), withPhase(s1b, "Succeeded"), withPhase(s2, "Succeeded")], at(20)),
    ctx,
  );
  assert.equal(p3.status.phase, "Reducing");
  assert.deepEqual(
    p3.createPods.map((p) => p.metadata!.name),
    ["s-reduce-a1"],
  );
  run = next(run, p3);
  const reduce = withPhase(p3.createPods[0], "Succeeded", {
    message: JSON.stringify({ metrics: { gFID: 3.1, IS: 250 } }),
  });
  const p4 = planSampling(
    obs(run, [withPhase(s0, "Succeeded"), withPhase(s1b, "Succeeded"), withPhase(s2, "Succeeded"), reduce], at(30)),
    ctx,
  );
  assert.equal(p4.status.phase, "Succeeded");
  assert.equal(p4.status.metrics?.gFID, 3.1);
  assert.equal(p4.status.metrics?.IS, 250);
  assert.equal(getCondition(p4.status.conditions, "Succeeded")?.status, "True");
  assert.deepEqual(p4.createPods, []);
});

test("a shard failing past backoffLimit fails the job; a permanent exit fails fast", () => {
  let run = makeSamplingJob("s", "ar", 2).backoffLimit(1).obj();
  const p1 = planSampling(obs(run, [], at(0)), ctx);
  run = next(run, p1);
  const p2 = planSampling(
    obs(run, [withPhase(p1.createPods[0], "Failed", { exitCode: 143 }), withPhase(p1.createPods[1], "Running")], at(5)),
    ctx,
  );
  run = next(run, p2);
  const retry = p2.createPods[0];
  const p3 = planSampling(
    obs(run, [withPhase(retry, "Failed", { exitCode: 143 }), withPhase(p1.createPods[1], "Running")], at(9)),
    ctx,
  );
  assert.equal(p3.status.phase, "Failed");
  assert.equal(getCondition(p3.status.conditions, "Failed")?.reason, "BackoffLimitExceeded");
  assert.ok(p3.deletePods.includes("s-shard-1-a1"), "running shard cleaned up");
  let r2 = makeSamplingJob("s", "ar", 2).obj();
  const q1 = planSampling(obs(r2, [], at(0)), ctx);
  r2 = next(r2, q1);
  const q2 = planSampling(obs(r2, [withPhase(q1.createPods[0], "Failed", { exitCode: 1 })], at(3)), ctx);
  assert.equal(getCondition(q2.status.conditions, "Failed")?.reason, "ShardFailed");
});

test("evaluation disabled: success once all shards finished, no reduce pod", () => {
  let run = makeSamplingJob("s", "ar", 1).set("spec.evaluation.enabled", false).obj();
  const p1 = planSampling(obs(run, [], at(0)), ctx);
  run = next(run, p1);
  const p2 = planSampling(obs(run, [withPhase(p1.createPods[0], "Succeeded")], at(5)), ctx);
  assert.equal(p2.status.phase, "Succeeded");
  assert.deepEqual(p2.createPods, []);
});

test("blocked on the model: Waiting with ModelNotReady, no pods", () => {
  const run = makeSamplingJob("s", "ar", 2).obj();
  const p = planSampling(
    { now: at(0), run, pods: [], blocker: { reason: "ModelNotReady", message: "ARTraining ns/ar is Running" } },
    ctx,
  );
  assert.equal(p.status.phase, "Waiting");
  assert.equal(getCondition(p.status.conditions, "Admitted")?.reason, "ModelNotReady");
  assert.deepEqual(p.createPods, []);
});
