import assert from "node:assert/strict";
import { test } from "node:test";
import { ContractConfigError, modelFromContract, trainFromContract } from "./crdConfig.ts";

test("spec.model: preset, imageSize, keepTokens, codebookBits, overrides map onto the trainer config", () => {
  const m = modelFromContract({
    preset: "T1",
    imageSize: 64,
    keepTokens: 25,
    codebookBits: 8,
    evalKeepTokens: [25, 64],
    overrides: { num_res_blocks: 1 },
    teacherUri: "s3://b/teacher.onnx",
  });
  assert.equal(m.resolved.name, "T1");
  assert.equal(m.resolved.resolution, 64);
  assert.equal(m.resolved.zChannels, 8);
  assert.equal(m.resolved.numResBlocks, 1);
  assert.equal(m.resolved.derived.L, 64);
  assert.equal(m.resolved.derived.K, 25); // mergeNum = L − keepTokens
  assert.deepEqual(m.evalKs, [25, 64]);
  assert.deepEqual(m.train, { teacher: "s3://b/teacher.onnx" });
  // Default eval K = the nominal K of the preset.
  assert.deepEqual(modelFromContract({ preset: "T0" }).evalKs, [36]);
});

test("spec.model: variant+size picks the full-size preset", () => {
  assert.equal(modelFromContract({ variant: "GR", size: "d32" }).resolved.name, "GR_d32");
  assert.equal(modelFromContract({ variant: "R", size: "d64" }).resolved.name, "R_vitb_d64");
  assert.throws(() => modelFromContract({ variant: "G", size: "d96" }), /size: variant G has no d96/);
});

test("spec.model: unknown and invalid fields are errors naming the field", () => {
  const bad = (m: unknown, re: RegExp) =>
    assert.throws(
      () => modelFromContract(m),
      (e: Error) => e instanceof ContractConfigError && re.test(e.message),
    );
  bad({ preset: "T0", keepTokenz: 36 }, /MERGEVQ_MODEL_CONFIG: unknown field\(s\): keepTokenz/);
  bad({ preset: "T0", overrides: { chanels: 3 } }, /unknown field\(s\): overrides\.chanels/);
  bad({ preset: "T0", evalKeepTokens: [30] }, /evalKeepTokens: 30 must be a perfect square ≤ 64/);
  bad({ preset: "T0", keepTokens: 100 }, /keepTokens: 100 exceeds the 64 tokens/);
  bad({ preset: "T0", keepTokens: 2 }, /keepTokens: 2 is not a perfect square/);
  bad({ preset: "T1", keepTokens: 49 }, /keepTokens: 49 does not fit this config \(candDistribution: /);
  bad({ preset: "T0", imageSize: 30 }, /imageSize: 30 not divisible by the encoder stride 4/);
  bad({ preset: "T0", variant: "GR", size: "d32" }, /exactly one of preset or variant/);
});

test("spec.training + evaluation map onto train/config.ts; unknown keys are errors", () => {
  const t = trainFromContract({
    steps: 10,
    batchSize: 4,
    gradAccumulation: 2,
    learningRate: 2e-4,
    lrDropSteps: [5],
    seed: 7,
    emaDecay: 0.99,
    logEverySteps: 3,
    evaluation: { enabled: true, numImages: 32, inceptionUri: "s3://b/inc.onnx" },
  });
  assert.deepEqual(t.train, {
    steps: 10,
    batchSize: 4,
    accum: 2,
    lr: 2e-4,
    lrDropSteps: [5],
    lrDropEpochs: [],
    seed: 7,
    emaDecay: 0.99,
    logEvery: 3,
    evalImages: 32,
  });
  assert.equal(t.evaluation.inceptionUri, "s3://b/inc.onnx");
  assert.equal(trainFromContract({ steps: 1, evaluation: { enabled: false, numImages: 8 } }).train.evalImages, 0);
  assert.throws(() => trainFromContract({ steps: 1, lr: 1 }), /MERGEVQ_TRAIN_CONFIG: unknown field\(s\): lr/);
  assert.throws(
    () => trainFromContract({ steps: 1, evaluation: { numimages: 3 } }),
    /evaluation: unknown field\(s\): evaluation\.numimages/,
  );
  assert.throws(() => trainFromContract({ steps: -1 }), /steps: /);
});
