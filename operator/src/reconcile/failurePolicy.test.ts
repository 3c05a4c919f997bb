// Failure classification table (operator-design §6) and the backoff / stall / deadline arithmetic.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { withPhase } from "../testing/fixtures.ts";
import {
  type Classification,
  classifyPod,
  deadline,
  decide,
  firstFailure,
  isStalled,
  PEER_FAILURE_GRACE_MS,
} from "./failurePolicy.ts";

/** firstFailure when no peer-failure wait is expected. */
const settled = (pods: V1Pod[]): Classification | undefined => {
  const c = firstFailure(pods);
  assert.ok(!c || !("waitMs" in c), `unexpected wait: ${JSON.stringify(c)}`);
  return c as Classification | undefined;
};
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
  const c = settled([late, withPhase(pod("ok"), "Running"), early]);
  assert.equal(c?.pod, "early");
  assert.equal(c?.reason, "Signal");
  assert.equal(settled([withPhase(pod(), "Running")]), undefined);
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
  const c = settled([
    withPhase(pod("rank0"), "Failed", { exitCode: 143, finishedAt: "2026-01-01T00:01:00Z" }),
    deleting(withPhase(pod("rank1"), "Failed", { exitCode: 143, finishedAt: "2026-01-01T00:01:01Z" })),
  ]);
  assert.deepEqual([c?.reason, c?.counted, c?.action, c?.pod], ["PodDeleted", false, "restart", "rank1"]);
  // Still terminating (grace period): decided at once, so the other ranks get their SIGTERM too.
  const running = settled([withPhase(pod("rank0"), "Running"), deleting(withPhase(pod("rank1"), "Running"))]);
  assert.equal(running?.reason, "PodDeleted");
  // An eviction (DisruptionTarget) says more than "deleted".
  const evicted = settled([deleting(withPhase(pod("rank0"), "Failed", { exitCode: 143, disruption: true }))]);
  assert.equal(evicted?.reason, "Preempted");
  // A deleted pod that already succeeded is not a failure.
  assert.equal(settled([deleting(withPhase(pod("done"), "Succeeded"))]), undefined);
});

test("exit 75 (a peer failed) is secondary: the rank that failed first is classified, whatever the order", () => {
  const peer = (name: string, at: string) => withPhase(pod(name), "Failed", { exitCode: 75, finishedAt: at });
  assert.deepEqual(
    (({ action, counted, reason }) => ({ action, counted, reason }))(classifyPod(peer("p", "2026-01-01T00:00:00Z"))),
    { action: "restart", counted: true, reason: "PeerFailed" },
  );
  const now = Date.parse("2026-01-01T00:01:00Z");
  // Rank 0 SIGKILLed (137) but its pod reported after rank 1's exit 75: a counted Signal restart, not PeerFailed.
  const killed = withPhase(pod("rank0"), "Failed", { exitCode: 137, finishedAt: "2026-01-01T00:00:02Z" });
  const c = firstFailure([peer("rank1", "2026-01-01T00:00:01Z"), killed], now);
  assert.ok(c && !("waitMs" in c));
  assert.deepEqual([c.reason, c.pod, c.action], ["Signal", "rank0", "restart"]);
  // A permanent root cause (exit 1 on rank 0) fails the run even though its peer's 75 came first.
  const broken = withPhase(pod("rank0"), "Failed", { exitCode: 1, finishedAt: "2026-01-01T00:00:02Z" });
  const f = firstFailure([peer("rank1", "2026-01-01T00:00:01Z"), broken], now);
  assert.ok(f && !("waitMs" in f));
  assert.deepEqual([f.reason, f.action], ["ExitCode", "fail"]);
});

test("exit 75 alone: wait for the root cause while a rank runs, then a counted PeerFailed restart", () => {
  const t = Date.parse("2026-01-01T00:00:00Z");
  const peer = withPhase(pod("rank1"), "Failed", { exitCode: 75, finishedAt: "2026-01-01T00:00:00Z" });
  const alive = withPhase(pod("rank0"), "Running");
  const pending = firstFailure([peer, alive], t + 5_000);
  assert.deepEqual(pending, { waitMs: PEER_FAILURE_GRACE_MS - 5_000 });
  const late = firstFailure([peer, alive], t + PEER_FAILURE_GRACE_MS + 1);
  assert.ok(late && !("waitMs" in late));
  assert.deepEqual([late.reason, late.counted, late.action], ["PeerFailed", true, "restart"]);
  assert.match(late.message, /exited with code 75: a peer rank took the process group down.*within 20 s/);
  // Every rank exited 75 (e.g. a partition): nobody left to wait for, restart at once.
  const both = firstFailure(
    [peer, withPhase(pod("rank0"), "Failed", { exitCode: 75, finishedAt: "2026-01-01T00:00:00Z" })],
    t + 1_000,
  );
  assert.ok(both && !("waitMs" in both));
  assert.equal(both.reason, "PeerFailed");
  assert.match(both.message, /none still running/);
});
