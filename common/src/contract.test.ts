import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ENV, FinalReport, Progress, SamplingStep, TERMINATION_MESSAGE_LIMIT, terminationMessage } from "./contract.ts";

describe("contract", () => {
  it("round-trips a final report through the termination message", () => {
    const report = { metrics: { rFID: 12.5, "rFID@K=36": 13.1 }, artifacts: { checkpointUri: "s3://b/run/ckpt-300" } };
    assert.deepEqual(FinalReport.parse(JSON.parse(terminationMessage(report))), report);
  });
  it("shrinks an oversized report below the 4 KiB kubelet limit, keeping metrics and checkpoint", () => {
    const report = {
      metrics: { rFID: 1 },
      artifacts: { checkpointUri: "s3://b/c", imageUris: Array.from({ length: 200 }, (_, i) => `s3://b/img-${i}.png`) },
    };
    const msg = terminationMessage(report);
    assert.ok(Buffer.byteLength(msg) <= TERMINATION_MESSAGE_LIMIT);
    const parsed = FinalReport.parse(JSON.parse(msg));
    assert.equal(parsed.metrics.rFID, 1);
    assert.equal(parsed.artifacts?.checkpointUri, "s3://b/c");
  });
  it("rejects a progress document without a step", () => {
    assert.equal(Progress.safeParse({ totalSteps: 3, updatedAt: "x" }).success, false);
  });
  it("MERGEVQ_STEP takes exactly sample or reduce", () => {
    assert.equal(ENV.STEP, "MERGEVQ_STEP");
    assert.equal(SamplingStep.parse("sample"), "sample");
    assert.equal(SamplingStep.parse("reduce"), "reduce");
    for (const bad of ["", "train", "Sample", "eval"]) assert.equal(SamplingStep.safeParse(bad).success, false);
  });
});
