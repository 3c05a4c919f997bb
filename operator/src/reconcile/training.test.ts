// planTraining: the status/condition state machine, whole-group restart, stall, suspend/resume, TTL, blockers.
// Steps feed each plan's status back in as the next observed status, as the API server would.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import type { TokenizerTraining } from "../api/v1alpha1/index.ts";
import { cpuAccelerator, makeTokenizerTraining, testContext, withPhase } from "../testing/fixtures.ts";
import { getCondition } from "./conditions.ts";
import type { Plan } from "./plan.ts";
import { planTraining, type TrainingObserved } from "./training.ts";

const ctx = testContext();
const T0 = Date.parse("2026-01-01T00:00:00Z");
const acc = cpuAccelerator();

function obs(
  run: TokenizerTraining,
  pods: V1Pod[],
  now: number,
  extra: Partial<TrainingObserved> = {},
): TrainingObserved {
  return { now, run, pods, serviceExists: true, acc, ...extra };
}
const withStatus = (run: TokenizerTraining, plan: Plan): TokenizerTraining => ({
  ...run,
  status: plan.status as TokenizerTraining["status"],
});
const at = (s: number) => T0 + s * 1000;
const iso = (s: number) => new Date(at(s)).toISOString();
const cond = (p: Plan, t: Parameters<typeof getCondition>[1]) => getCondition(p.status.conditions, t);

test("fresh run: admitted, attempt 1, service + all pods created together, phase Pending", () => {
  const run = makeTokenizerTraining("t").nodes(2).obj();
  const p = planTraining({ ...obs(run, [], at(0)), serviceExists: false }, ctx);
  assert.equal(p.status.phase, "Pending");
  assert.equal(p.status.attempt, 1);
  assert.equal(p.status.restartCount, 0);
  assert.equal(p.status.startTime, iso(0));
  assert.equal(p.status.observedGeneration, 1);
  assert.equal(cond(p, "Admitted")?.status, "True");
  assert.equal(p.createService?.metadata?.name, "t");
  assert.deepEqual(
    p.createPods.map((x) => x.metadata!.name),
    ["t-node-0-a1", "t-node-1-a1"],
  );
  assert.deepEqual(
    p.events.map((e) => e.reason),
    ["Admitted", "PodsCreated"],
  );
});

test("Pending → Running → Succeeded with metrics from rank 0's termination message; cleanPodPolicy Running", () => {
  let run = makeTokenizerTraining("t").nodes(2).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const pods = p1.createPods;
  const p2 = planTraining(
    obs(
      run,
      pods.map((x) => withPhase(x, "Running", { created: iso(0) })),
      at(5),
      {
        progress: {
          step: 3,
          totalSteps: 10,
          updatedAt: iso(5),
          lastCheckpoint: "s3://ckpt/t/step-3",
          losses: { loss: 0.5 },
          imagesPerSecond: 12.5,
          etaSeconds: 20,
        },
      },
    ),
    ctx,
  );
  assert.equal(p2.status.phase, "Running");
  assert.equal(cond(p2, "Running")?.status, "True");
  assert.equal(cond(p2, "PodsReady")?.status, "True");
  assert.equal(cond(p2, "Checkpointed")?.status, "True");
  assert.deepEqual(p2.status.progress, {
    step: 3,
    totalSteps: 10,
    percent: "30%",
    imagesPerSecond: 12.5,
    etaSeconds: 20,
    lastUpdated: iso(5),
  });
  assert.equal(p2.status.lastCheckpoint, "s3://ckpt/t/step-3");
  assert.equal(p2.status.metrics?.loss, 0.5);
  assert.ok(p2.requeueAfterMs! > 0, "requeue for the stall check");
  run = withStatus(run, p2);
  const report = JSON.stringify({
    metrics: { rFID: 2.25 },
    artifacts: { checkpointUri: "s3://ckpt/t/final", imageUris: ["s3://ckpt/t/recon.png"] },
    notes: ["random Inception"],
  });
  const done = [withPhase(pods[0], "Succeeded", { message: report }), withPhase(pods[1], "Succeeded")];
  const p3 = planTraining(obs(run, done, at(30)), ctx);
  assert.equal(p3.status.phase, "Succeeded");
  assert.equal(p3.status.completionTime, iso(30));
  assert.equal(p3.status.metrics?.rFID, 2.25);
  assert.equal(p3.status.metricsNote, "random Inception");
  assert.deepEqual(p3.status.artifacts, { checkpointUri: "s3://ckpt/t/final", imageUris: ["s3://ckpt/t/recon.png"] });
  assert.equal(cond(p3, "Succeeded")?.status, "True");
  assert.equal(cond(p3, "Running")?.status, "False");
  assert.deepEqual(p3.deletePods, [], "cleanPodPolicy Running keeps finished pods");
  assert.ok(p3.events.some((e) => e.reason === "MetricsReported"));
});

test("no termination message → metrics.json from S3 is used", () => {
  let run = makeTokenizerTraining("t").nodes(1).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const p = planTraining(
    obs(run, [withPhase(p1.createPods[0], "Succeeded")], at(9), { metricsDoc: { metrics: { rFID: 9 } } }),
    ctx,
  );
  assert.equal(p.status.metrics?.rFID, 9);
});

test("signal exit of one rank: whole group deleted, attempt 2 after all old pods are gone, RESUME_FROM = last checkpoint", () => {
  let run = makeTokenizerTraining("t").nodes(2).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const pods = p1.createPods;
  const p2 = planTraining(
    obs(run, [withPhase(pods[0], "Running"), withPhase(pods[1], "Failed", { exitCode: 143 })], at(10), {
      progress: { step: 5, totalSteps: 10, updatedAt: iso(9), lastCheckpoint: "s3://ckpt/t/step-5" },
    }),
    ctx,
  );
  assert.equal(p2.status.attempt, 2);
  assert.equal(p2.status.restartCount, 1);
  assert.equal(p2.status.phase, "Restarting");
  assert.equal(cond(p2, "Restarting")?.reason, "Signal");
  assert.deepEqual(p2.deletePods.sort(), ["t-node-0-a1", "t-node-1-a1"]);
  assert.deepEqual(p2.createPods, []);
  run = withStatus(run, p2);
  // Old rank 0 still terminating: wait.
  const terminating = {
    ...withPhase(pods[0], "Running"),
    metadata: { ...pods[0].metadata, deletionTimestamp: iso(11) as unknown as Date },
  };
  const p3 = planTraining(obs(run, [terminating], at(12)), ctx);
  assert.deepEqual(p3.createPods, []);
  assert.deepEqual(p3.deletePods, [], "already terminating");
  assert.equal(p3.status.phase, "Restarting");
  // All gone: attempt 2 pods with RESUME_FROM.
  const p4 = planTraining(obs(withStatus(run, p3), [], at(14)), ctx);
  assert.deepEqual(
    p4.createPods.map((x) => x.metadata!.name),
    ["t-node-0-a2", "t-node-1-a2"],
  );
  const env = p4.createPods[1].spec!.containers[0].env!;
  assert.equal(env.find((e) => e.name === "RESUME_FROM")?.value, "s3://ckpt/t/step-5");
  assert.equal(env.find((e) => e.name === "MERGEVQ_ATTEMPT")?.value, "2");
});

test("exits of pods being torn down (older attempt) are never classified", () => {
  let run = makeTokenizerTraining("t").nodes(2).obj();
  run = { ...run, status: { attempt: 2, restartCount: 1, phase: "Restarting", startTime: iso(0) } };
  const old = makeTokenizerTraining("t").nodes(2).obj();
  const oldPods = planTraining(obs(old, [], at(0)), ctx).createPods.map((p) => withPhase(p, "Failed", { exitCode: 1 }));
  const p = planTraining(obs(run, oldPods, at(20)), ctx);
  assert.equal(p.status.phase, "Restarting");
  assert.equal(p.status.restartCount, 1);
  assert.equal(cond(p, "Failed"), undefined);
});

test("OOMKilled and exit 1 fail fast; backoffLimit exceeded fails with its reason; running pods are cleaned", () => {
  for (const [opts, reason] of [
    [{ exitCode: 137, reason: "OOMKilled" }, "OOMKilled"],
    [{ exitCode: 1 }, "ExitCode"],
  ] as const) {
    let run = makeTokenizerTraining("t").nodes(2).obj();
    const p1 = planTraining(obs(run, [], at(0)), ctx);
    run = withStatus(run, p1);
    const p = planTraining(
      obs(run, [withPhase(p1.createPods[0], "Running"), withPhase(p1.createPods[1], "Failed", opts)], at(5)),
      ctx,
    );
    assert.equal(p.status.phase, "Failed");
    assert.equal(cond(p, "Failed")?.reason, reason);
    assert.equal(p.status.attempt, 1);
    assert.deepEqual(p.deletePods, ["t-node-0-a1"], "still-running rank deleted at once");
  }
  let run = makeTokenizerTraining("t").nodes(1).backoffLimit(1).obj();
  run = { ...run, status: { attempt: 2, restartCount: 1, phase: "Running", startTime: iso(0) } };
  const pod = planTraining(obs({ ...run, status: { ...run.status, phase: "Restarting" } }, [], at(1)), ctx)
    .createPods[0];
  const p = planTraining(obs(run, [withPhase(pod, "Failed", { exitCode: 143 })], at(5)), ctx);
  assert.equal(p.status.phase, "Failed");
  assert.equal(cond(p, "Failed")?.reason, "BackoffLimitExceeded");
});

test("preemption restarts without counting", () => {
  let run = makeTokenizerTraining("t").nodes(2).backoffLimit(0).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const p = planTraining(
    obs(
      run,
      [
        withPhase(p1.createPods[0], "Failed", { exitCode: 137, disruption: true }),
        withPhase(p1.createPods[1], "Running"),
      ],
      at(5),
    ),
    ctx,
  );
  assert.equal(p.status.phase, "Restarting");
  assert.equal(p.status.attempt, 2);
  assert.equal(p.status.restartCount, 0);
  assert.equal(cond(p, "Restarting")?.reason, "Preempted");
});

test("stall detection: step unchanged for stallTimeout → restart (Stalled) from the last checkpoint", () => {
  let run = makeTokenizerTraining("t").nodes(1).stallTimeout(60).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const pod = withPhase(p1.createPods[0], "Running");
  const progress = { step: 7, totalSteps: 100, updatedAt: iso(10), lastCheckpoint: "s3://ckpt/t/step-5" };
  const p2 = planTraining(obs(run, [pod], at(10), { progress }), ctx);
  assert.equal(p2.status.phase, "Running");
  run = withStatus(run, p2);
  // The trainer keeps rewriting progress.json with the same step: still a stall.
  const p3 = planTraining(obs(run, [pod], at(60), { progress: { ...progress, updatedAt: iso(60) } }), ctx);
  assert.equal(p3.status.phase, "Running", "not yet");
  run = withStatus(run, p3);
  const p4 = planTraining(obs(run, [pod], at(75), { progress: { ...progress, updatedAt: iso(75) } }), ctx);
  assert.equal(p4.status.phase, "Restarting");
  assert.equal(cond(p4, "Restarting")?.reason, "Stalled");
  assert.equal(p4.status.restartCount, 1);
  assert.deepEqual(p4.deletePods, ["t-node-0-a1"]);
  const p5 = planTraining(obs(withStatus(run, p4), [], at(80)), ctx);
  assert.equal(
    p5.createPods[0].spec!.containers[0].env!.find((e) => e.name === "RESUME_FROM")?.value,
    "s3://ckpt/t/step-5",
  );
  // A step change resets the clock.
  const q = planTraining(obs(run, [pod], at(75), { progress: { ...progress, step: 8, updatedAt: iso(74) } }), ctx);
  assert.equal(q.status.phase, "Running");
});

test("suspend deletes pods and keeps status; resume starts a new uncounted attempt from the checkpoint", () => {
  let run = makeTokenizerTraining("t").nodes(2).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const pods = p1.createPods.map((p) => withPhase(p, "Running"));
  const p2 = planTraining(
    obs(run, pods, at(5), { progress: { step: 4, totalSteps: 9, updatedAt: iso(5), lastCheckpoint: "s3://c/step-4" } }),
    ctx,
  );
  run = withStatus(run, p2);
  const suspended = { ...run, spec: { ...run.spec, runPolicy: { ...run.spec.runPolicy, suspend: true } } };
  const p3 = planTraining(obs(suspended, pods, at(10)), ctx);
  assert.equal(p3.status.phase, "Suspended");
  assert.equal(cond(p3, "Suspended")?.status, "True");
  assert.deepEqual(p3.deletePods.sort(), ["t-node-0-a1", "t-node-1-a1"]);
  assert.equal(p3.status.progress?.step, 4, "status kept");
  const p4 = planTraining(obs(withStatus(suspended, p3), [], at(20)), ctx);
  assert.deepEqual(p4.createPods, [], "still suspended");
  const resumed = withStatus(run, p4);
  const p5 = planTraining(obs(resumed, [], at(30)), ctx);
  assert.equal(p5.status.attempt, 2);
  assert.equal(p5.status.restartCount, 0);
  assert.equal(cond(p5, "Suspended")?.status, "False");
  assert.deepEqual(
    p5.createPods.map((p) => p.metadata!.name),
    ["t-node-0-a2", "t-node-1-a2"],
  );
  assert.equal(p5.createPods[0].spec!.containers[0].env!.find((e) => e.name === "RESUME_FROM")?.value, "s3://c/step-4");
});

test("ttlSecondsAfterFinished: requeue until due, then delete the run; cleanPodPolicy All deletes finished pods", () => {
  let run = makeTokenizerTraining("t").nodes(1).ttl(60).cleanPodPolicy("All").obj();
  run = { ...run, status: { phase: "Succeeded", attempt: 1, completionTime: iso(0) } };
  const pod = withPhase(
    planTraining(obs({ ...run, status: { attempt: 1 } }, [], at(0)), ctx).createPods[0],
    "Succeeded",
  );
  const p1 = planTraining(obs(run, [pod], at(30)), ctx);
  assert.equal(p1.deleteRun, false);
  assert.equal(p1.requeueAfterMs, 30_000);
  assert.deepEqual(p1.deletePods, ["t-node-0-a1"]);
  const p2 = planTraining(obs(run, [], at(61)), ctx);
  assert.equal(p2.deleteRun, true);
});

test("activeDeadlineSeconds exceeded → Failed DeadlineExceeded", () => {
  let run = makeTokenizerTraining("t").nodes(1).deadline(100).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const p = planTraining(obs(run, [withPhase(p1.createPods[0], "Running")], at(101)), ctx);
  assert.equal(p.status.phase, "Failed");
  assert.equal(cond(p, "Failed")?.reason, "DeadlineExceeded");
  assert.deepEqual(p.deletePods, ["t-node-0-a1"]);
});

test("blocker: Admitted=False with the reason, phase Waiting, no pods; recovers when cleared", () => {
  const run = makeTokenizerTraining("t").nodes(2).obj();
  const p1 = planTraining(
    obs(run, [], at(0), {
      blocker: { reason: "SecretNotFound", message: "Secret ns/s3-creds not found" },
      acc: undefined,
    }),
    ctx,
  );
  assert.equal(p1.status.phase, "Waiting");
  assert.equal(cond(p1, "Admitted")?.status, "False");
  assert.equal(cond(p1, "Admitted")?.reason, "SecretNotFound");
  assert.deepEqual(p1.createPods, []);
  assert.equal(p1.requeueAfterMs, 10_000);
  assert.deepEqual(
    p1.events.map((e) => e.type),
    ["Warning"],
  );
  // Same blocker again: no new event (condition unchanged).
  const p2 = planTraining(
    obs(withStatus(run, p1), [], at(10), {
      blocker: { reason: "SecretNotFound", message: "Secret ns/s3-creds not found" },
    }),
    ctx,
  );
  assert.deepEqual(p2.events, []);
  const p3 = planTraining(obs(withStatus(run, p2), [], at(20)), ctx);
  assert.equal(cond(p3, "Admitted")?.status, "True");
  assert.equal(p3.createPods.length, 2);
});

test("a rank missing long after creation counts as deleted under us (uncounted group restart); fresh gaps are refilled", () => {
  let run = makeTokenizerTraining("t").nodes(2).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const only0 = [withPhase(p1.createPods[0], "Pending", { created: iso(0) })];
  const refill = planTraining(obs(run, only0, at(5)), ctx);
  assert.deepEqual(
    refill.createPods.map((p) => p.metadata!.name),
    ["t-node-1-a1"],
  );
  const lost = planTraining(obs(run, [withPhase(p1.createPods[0], "Running", { created: iso(0) })], at(60)), ctx);
  assert.equal(lost.status.attempt, 2);
  assert.equal(lost.status.restartCount, 0);
  assert.equal(cond(lost, "Restarting")?.reason, "PodDeleted");
});

test("gang not formed within gang.timeoutSeconds → GangTimeout restart", () => {
  let run = makeTokenizerTraining("t").nodes(2).set("spec.gang.timeoutSeconds", 60).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const pods = [
    withPhase(p1.createPods[0], "Running", { created: iso(0) }),
    withPhase(p1.createPods[1], "Pending", { created: iso(0) }),
  ];
  assert.equal(planTraining(obs(run, pods, at(30)), ctx).status.phase, "Pending");
  const p = planTraining(obs(run, pods, at(61)), ctx);
  assert.equal(cond(p, "Restarting")?.reason, "GangTimeout");
});

test("gang scheduler volcano: a PodGroup (minMember = nodes) is created with the pods, which reference it", () => {
  const run = makeTokenizerTraining("t")
    .nodes(4)
    .set("spec.gang.scheduler", "volcano")
    .set("spec.gang.queue", "research")
    .obj();
  const p = planTraining(obs(run, [], at(0)), ctx);
  assert.equal(p.createPodGroup?.apiVersion, "scheduling.volcano.sh/v1beta1");
  assert.deepEqual(p.createPodGroup?.spec, { minMember: 4, queue: "research" });
  assert.equal(p.createPodGroup?.metadata?.name, "t-a1");
  for (const pod of p.createPods) {
    assert.equal(pod.spec!.schedulerName, "volcano");
    assert.equal(pod.metadata!.annotations!["scheduling.k8s.io/group-name"], "t-a1");
  }
  const none = planTraining(obs(makeTokenizerTraining("t").nodes(2).obj(), [], at(0)), ctx);
  assert.equal(none.createPodGroup, undefined);
});

test("all pods of a running single-node attempt deleted: attempt 2 resumes from the last checkpoint, not counted", () => {
  let run = makeTokenizerTraining("one").nodes(1).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  const running = p1.createPods.map((x) => withPhase(x, "Running", { created: iso(0) }));
  const progress = { step: 9, totalSteps: 30, updatedAt: iso(5), lastCheckpoint: "s3://ckpt/one/step-9" };
  const p2 = planTraining(obs(run, running, at(5), { progress }), ctx);
  assert.equal(p2.status.phase, "Running");
  run = withStatus(run, p2);
  // The pod is force-deleted: the informer no longer lists it.
  const p3 = planTraining(obs(run, [], at(6), { progress }), ctx);
  assert.equal(p3.status.attempt, 2);
  assert.equal(p3.status.restartCount, 0, "a deleted pod is not the trainer's fault");
  assert.equal(p3.status.phase, "Restarting");
  assert.ok(p3.events.some((e) => e.reason === "PodDeleted"));
  assert.equal(p3.createPods.length, 0);
  run = withStatus(run, p3);
  const p4 = planTraining(obs(run, [], at(7), { progress }), ctx);
  assert.deepEqual(
    p4.createPods.map((x) => x.metadata!.name),
    ["one-node-0-a2"],
  );
  const env = p4.createPods[0].spec!.containers[0].env ?? [];
  assert.equal(env.find((e) => e.name === "RESUME_FROM")?.value, "s3://ckpt/one/step-9");
});

test("a rank's exit 75 (peer failed) waits for the rank that crashed: its SIGKILL (137) decides, a retryable restart", () => {
  let run = makeTokenizerTraining("t").nodes(2).obj();
  const p1 = planTraining(obs(run, [], at(0)), ctx);
  run = withStatus(run, p1);
  run = withStatus(
    run,
    planTraining(
      obs(
        run,
        p1.createPods.map((p) => withPhase(p, "Running")),
        at(5),
      ),
      ctx,
    ),
  );
  const [rank0, rank1] = p1.createPods;
  assert.equal(run.status?.phase, "Running");
  // Rank 1's pod reports first: exit 75. Rank 0 still shows Running in the cache: no decision yet.
  const peerExit = withPhase(rank1, "Failed", { exitCode: 75, finishedAt: iso(20) });
  const waiting = planTraining(obs(run, [withPhase(rank0, "Running"), peerExit], at(21)), ctx);
  assert.deepEqual([waiting.deletePods, waiting.createPods, waiting.status.attempt], [[], [], 1]);
  assert.equal(waiting.status.phase, "Running");
  assert.ok(waiting.requeueAfterMs !== undefined && waiting.requeueAfterMs <= 19_000, `${waiting.requeueAfterMs}`);
  // Rank 0's SIGKILL shows up: that is the cause (Signal, counted), not the peer's 75 and not a permanent failure.
  run = withStatus(run, waiting);
  const killed = withPhase(rank0, "Failed", { exitCode: 137, finishedAt: iso(20) });
  const p = planTraining(obs(run, [killed, peerExit], at(23)), ctx);
  assert.equal(p.status.phase, "Restarting");
  assert.equal(cond(p, "Restarting")?.reason, "Signal");
  assert.match(cond(p, "Restarting")?.message ?? "", /t-node-0-a1 container trainer exited with code 137/);
  assert.deepEqual([p.status.attempt, p.status.restartCount], [2, 1]);
});
