import assert from "node:assert/strict";
import { test } from "node:test";
import { freshDocuments, lossMetrics } from "./status.ts";

test("freshDocuments drops progress/metrics written before the run existed (reused checkpoint.uri)", () => {
  const docs = {
    progress: { step: 40, totalSteps: 100, updatedAt: "2026-11-29T10:00:00Z", lastCheckpoint: "s3://b/old/step-40" },
    metricsDoc: { metrics: { rFID: 3 }, updatedAt: "2026-11-29T10:05:00Z" },
  };
  const fresh = freshDocuments(docs, "2026-11-29T11:00:00Z");
  assert.equal(fresh.progress, undefined);
  assert.equal(fresh.metricsDoc, undefined);
  const kept = freshDocuments(docs, "2026-11-29T09:00:00Z");
  assert.equal(kept.progress?.step, 40);
  assert.equal(kept.metricsDoc?.metrics.rFID, 3);
  // Same second as creation (creationTimestamp has 1 s resolution) is still this run's.
  assert.ok(freshDocuments(docs, "2026-11-29T10:00:00Z").progress);
  // Unknown creation time: nothing is dropped.
  assert.ok(freshDocuments(docs, undefined).progress);
});

test("lossMetrics namespaces training losses so they cannot collide with evaluation metrics", () => {
  assert.deepEqual(lossMetrics({ loss: 0.5, rec: 0.2, "train/g": 1, rFID: 7 }), {
    loss: 0.5,
    "loss/rec": 0.2,
    "train/g": 1,
    "loss/rFID": 7,
  });
});
