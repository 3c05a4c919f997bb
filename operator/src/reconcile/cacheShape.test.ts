// The informer transforms keep every field reconcile reads: planning from lean pods gives the same plan as from
// the pods the apiserver serves, through success, failure, disruption, a failed rendezvous barrier and deletion.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import type { TokenizerTraining } from "../api/v1alpha1/index.ts";
import { cpuAccelerator, makeTokenizerTraining, testContext, withPhase } from "../testing/fixtures.ts";
import { leanPod, leanRun, leanService } from "./cacheShape.ts";
import { planTraining } from "./training.ts";

const ctx = testContext();
const T0 = Date.parse("2026-01-01T00:00:00Z");
const acc = cpuAccelerator();
const plan = (run: TokenizerTraining, pods: V1Pod[], s: number) =>
  planTraining({ now: T0 + s * 1000, run, pods, serviceExists: true, acc }, ctx);

/** A pod as served: the operator's own pod plus what the apiserver and kubelet add. */
const served = (p: V1Pod): V1Pod => ({
  ...p,
  metadata: {
    ...p.metadata,
    uid: "u-1",
    resourceVersion: "42",
    managedFields: [{ manager: "kubelet", operation: "Update", fieldsV1: { "f:status": {} } }],
  },
  spec: { ...p.spec!, nodeName: "node-a" },
});

test("plans from lean pods equal plans from served pods in every pod state reconcile distinguishes", () => {
  let run = makeTokenizerTraining("t").nodes(2).obj();
  const p1 = plan(run, [], 0);
  run = { ...run, status: p1.status as TokenizerTraining["status"] };
  const [a, b] = p1.createPods.map(served) as [V1Pod, V1Pod];
  const report = JSON.stringify({ metrics: { rFID: 2.5 }, artifacts: { checkpointUri: "s3://c/t/final" } });
  const deleted = withPhase(a, "Running");
  deleted.metadata!.deletionTimestamp = new Date(T0 + 3000);
  const scenarios: Record<string, V1Pod[]> = {
    running: [withPhase(a, "Running"), withPhase(b, "Running")],
    succeeded: [withPhase(a, "Succeeded", { message: report }), withPhase(b, "Succeeded")],
    failed: [withPhase(a, "Failed", { exitCode: 137, reason: "OOMKilled" }), withPhase(b, "Running")],
    disrupted: [withPhase(a, "Failed", { disruption: true, podReason: "Evicted" }), withPhase(b, "Running")],
    barrier: [withPhase(a, "Failed", { barrierExit: 3 }), withPhase(b, "Pending")],
    deleted: [deleted, withPhase(b, "Running")],
  };
  for (const [name, pods] of Object.entries(scenarios)) {
    assert.deepEqual(plan(run, pods.map(leanPod), 10), plan(run, pods, 10), name);
  }
});

test("lean objects are a fraction of the served ones and keep identity, labels and owners", () => {
  const run = makeTokenizerTraining("t").nodes(1).obj();
  const pod = served(withPhase(plan(run, [], 0).createPods[0] as V1Pod, "Running"));
  const lean = leanPod(pod);
  assert.ok(JSON.stringify(lean).length < 0.4 * JSON.stringify(pod).length, "pod spec and managedFields dropped");
  assert.equal(lean.metadata?.managedFields, undefined);
  assert.deepEqual(lean.metadata?.labels, pod.metadata?.labels);
  assert.deepEqual(lean.metadata?.ownerReferences, pod.metadata?.ownerReferences);
  assert.equal(lean.spec?.nodeName, "node-a");
  const svc = leanService({
    metadata: { name: "t", namespace: "ns", labels: { a: "b" } },
    spec: { clusterIP: "None" },
  });
  assert.deepEqual(svc, {
    apiVersion: undefined,
    kind: undefined,
    metadata: { name: "t", namespace: "ns", labels: { a: "b" } },
  });
  const applied = {
    ...run,
    metadata: {
      ...run.metadata,
      annotations: { "kubectl.kubernetes.io/last-applied-configuration": JSON.stringify(run), keep: "me" },
    },
  };
  const r = leanRun(applied);
  assert.deepEqual(r.metadata?.annotations, { keep: "me" });
  assert.deepEqual((r as typeof run).spec, run.spec);
});
