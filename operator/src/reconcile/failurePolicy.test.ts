// Failure classification table (operator-design §6) and the backoff / stall / deadline arithmetic.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { withPhase } from "../testing/fixtures.ts";
import { classifyPod, deadline, decide, firstFailure, isStalled } from "./failurePolicy.ts";

const pod = (name = "p"): V1Pod => ({ metadata: { name, labels: {} }, spec: { containers: [{ name: "trainer" }] } });

test("classification table: first matching rule wins", () => {
  const cases: Array<{ name: string; pod: V1Pod; action: string; counted: boolean; reason: string }> = [
    {
      name: "OOMKilled (137)",
      pod: withPhase(pod(), "Failed", { exitCode: 137, reason: "OOMKilled" }),
      action: "fail",
      counted: true,
      reason: "OOMKilled",
    },
    {
      name: "exit 1",
      pod: withPhase(pod(), "Failed", { exitCode: 1 }),
      action: "fail",
      counted: true,
      reason: "ExitCode",
    },
    {
      name: "exit 127",
      pod: withPhase(pod(), "Failed", { exitCode: 127 }),
      action: "fail",
      counted: true,
      reason: "ExitCode",
    },
    {
      name: "exit 128",
      pod: withPhase(pod(), "Failed", { exitCode: 128 }),
      action: "restart",
      counted: true,
      reason: "Signal",
    },
    {
      name: "exit 143 (SIGTERM)",
      pod: withPhase(pod(), "Failed", { exitCode: 143 }),
      action: "restart",
      counted: true,
      reason: "Signal",
    },
    {
      name: "exit 255",
      pod: withPhase(pod(), "Failed", { exitCode: 255 }),
      action: "restart",
      counted: true,
      reason: "Signal",
    },
    {
      name: "DisruptionTarget beats exit code",
      pod: withPhase(pod(), "Failed", { exitCode: 1, disruption: true }),
      action: "restart",
      counted: false,
      reason: "Preempted",
    },
    {
      name: "Evicted",
      pod: withPhase(pod(), "Failed", { exitCode: 137, podReason: "Evicted" }),
      action: "restart",
      counted: false,
      reason: "Preempted",
    },
    {
      name: "NodeLost (with DisruptionTarget)",
      pod: withPhase(pod(), "Failed", { exitCode: 137, podReason: "NodeLost", disruption: true }),
      action: "restart",
      counted: false,
      reason: "NodeFailure",
    },
    {
      name: "barrier timeout",
      pod: withPhase(pod(), "Failed", { exitCode: 0, barrierExit: 3 }),
      action: "restart",
      counted: true,
      reason: "RendezvousTimeout",
    },
  ];
  for (const c of cases) {
    const got = classifyPod(c.pod);
    assert.deepEqual(
      { action: got.action, counted: got.counted, reason: got.reason },
      { action: c.action, counted: c.counted, reason: c.reason },
      c.name,
    );
  }
});

test("only the earliest failure of an attempt is classified", () => {
  const early = withPhase(pod("early"), "Failed", { exitCode: 143, finishedAt: "2026-01-01T00:01:00Z" });
  const late = withPhase(pod("late"), "Failed", { exitCode: 1, finishedAt: "2026-01-01T00:02:00Z" });
  const c = firstFailure([late, withPhase(pod("ok"), "Running"), early]);
  assert.equal(c?.pod, "early");
  assert.equal(c?.reason, "Signal");
  assert.equal(firstFailure([withPhase(pod(), "Running")]), undefined);
});

test("backoffLimit counts only counted restarts", () => {
  const sig = { action: "restart" as const, counted: true, reason: "Signal" as const, message: "m" };
  assert.equal(decide(sig, 0, 1).kind, "restart");
  const over = decide(sig, 1, 1);
  assert.equal(over.kind, "fail");
  assert.equal(over.reason, "BackoffLimitExceeded");
  assert.match(over.message, /Signal/);
  assert.equal(decide({ ...sig, counted: false, reason: "Preempted" }, 99, 1).kind, "restart");
  assert.equal(decide({ ...sig, action: "fail", reason: "ExitCode" }, 0, 5).kind, "fail");
  assert.equal(decide(sig, 0, 0).kind, "fail", "backoffLimit 0: no restarts");
});

test("stall: no step change for stallTimeout since max(running since, last step change)", () => {
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(isStalled({ now: t0 + 59_000, stallTimeoutSeconds: 60, runningSince: t0 }), false);
  assert.equal(isStalled({ now: t0 + 61_000, stallTimeoutSeconds: 60, runningSince: t0 }), true);
  assert.equal(
    isStalled({ now: t0 + 61_000, stallTimeoutSeconds: 60, runningSince: t0, lastStepChange: t0 + 30_000 }),
    false,
  );
  // A step change from an older attempt does not extend a new attempt's clock past its start.
  assert.equal(
    isStalled({ now: t0 + 61_000, stallTimeoutSeconds: 60, runningSince: t0, lastStepChange: t0 - 600_000 }),
    true,
  );
  assert.equal(isStalled({ now: t0, stallTimeoutSeconds: 60 }), false, "not running → no stall");
});

test("activeDeadlineSeconds", () => {
  const now = Date.parse("2026-01-01T00:10:00Z");
  assert.deepEqual(deadline("2026-01-01T00:00:00Z", 600, now), { exceeded: true, leftMs: 0 });
  assert.deepEqual(deadline("2026-01-01T00:00:00Z", 601, now), { exceeded: false, leftMs: 1000 });
  assert.equal(deadline(undefined, 10, now).exceeded, false);
  assert.equal(deadline("2026-01-01T00:00:00Z", undefined, now).exceeded, false);
});

test("a pod of the attempt being deleted wins over the 143 exits its SIGTERM causes: PodDeleted, not counted", () => {
  const deleting = (p: V1Pod): V1Pod => ({ ...p, metadata: { ...p.metadata, deletionTimestamp: new Date() } });
  // kubectl delete of rank 1: both ranks checkpoint and exit 143; rank 0 (not deleted) finished first.
  const c = firstFailure([
    withPhase(pod("rank0"), "Failed", { exitCode: 143, finishedAt: "2026-01-01T00:01:00Z" }),
    deleting(withPhase(pod("rank1"), "Failed", { exitCode: 143, finishedAt: "2026-01-01T00:01:01Z" })),
  ]);
  assert.deepEqual([c?.reason, c?.counted, c?.action, c?.pod], ["PodDeleted", false, "restart", "rank1"]);
  // Still terminating (grace period): decided at once, so the other ranks get their SIGTERM too.
  const running = firstFailure([withPhase(pod("rank0"), "Running"), deleting(withPhase(pod("rank1"), "Running"))]);
  assert.equal(running?.reason, "PodDeleted");
  // An eviction (DisruptionTarget) says more than "deleted".
  const evicted = firstFailure([deleting(withPhase(pod("rank0"), "Failed", { exitCode: 143, disruption: true }))]);
  assert.equal(evicted?.reason, "Preempted");
  // A deleted pod that already succeeded is not a failure.
  assert.equal(firstFailure([deleting(withPhase(pod("done"), "Succeeded"))]), undefined);
});
