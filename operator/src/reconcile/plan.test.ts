import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import { LABEL } from "./labels.ts";
import { attemptOf, PlanBuilder, rankOf } from "./plan.ts";
import { StatusBuilder } from "./status.ts";

const builder = () => new PlanBuilder(new StatusBuilder(undefined, "2026-01-01T00:00:00.000Z", 1));
const pod = (name: string, extra: Partial<NonNullable<V1Pod["metadata"]>> = {}): V1Pod => ({
  metadata: { name, ...extra },
});

test("PlanBuilder: an empty plan whose status is the StatusBuilder's", () => {
  const pb = builder();
  assert.equal(pb.plan.status, pb.b.s);
  assert.deepEqual(
    { ...pb.plan, status: undefined },
    { status: undefined, createPods: [], deletePods: [], deleteRun: false, events: [] },
  );
  assert.equal(pb.plan.requeueAfterMs, undefined);
});

test("PlanBuilder.requeue: the earliest request wins, rounded, never below 500 ms", () => {
  const pb = builder();
  pb.requeue(30_000);
  assert.equal(pb.plan.requeueAfterMs, 30_000);
  pb.requeue(10_000.4);
  assert.equal(pb.plan.requeueAfterMs, 10_000);
  pb.requeue(60_000);
  assert.equal(pb.plan.requeueAfterMs, 10_000);
  pb.requeue(12);
  assert.equal(pb.plan.requeueAfterMs, 500);
  const first = builder();
  first.requeue(-5);
  assert.equal(first.plan.requeueAfterMs, 500);
});

test("PlanBuilder.del: each name once, pods already being deleted or unnamed skipped", () => {
  const pb = builder();
  pb.del([pod("a"), pod("b"), pod("a"), pod("c", { deletionTimestamp: new Date() }), { metadata: {} }]);
  pb.del([pod("b"), pod("d")]);
  assert.deepEqual(pb.plan.deletePods, ["a", "b", "d"]);
});

test("PlanBuilder.event appends in order", () => {
  const pb = builder();
  pb.event("Normal", "A", "first");
  pb.event("Warning", "B", "second");
  assert.deepEqual(pb.plan.events, [
    { type: "Normal", reason: "A", message: "first" },
    { type: "Warning", reason: "B", message: "second" },
  ]);
});

test("attemptOf / rankOf read the labels (0 / -1 when absent)", () => {
  const p = pod("x", { labels: { [LABEL.attempt]: "3", [LABEL.nodeRank]: "2" } });
  assert.equal(attemptOf(p), 3);
  assert.equal(rankOf(p), 2);
  assert.equal(attemptOf(pod("y")), 0);
  assert.equal(rankOf(pod("y")), -1);
});
