// GPT on the tiny configs (docs/model.md §5.2, §10): shapes, initial loss ln 2^p + ln 2^(z−p) (zero heads), gradient
// flow through the zero-initialised heads, causality with and without MergeAR masking, seeded dropout,
// weight names + checkpoint round trip.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { decodeCheckpoint, encodeCheckpoint } from "../io/checkpoint.ts";
import { embedding } from "../nn/layers.ts";
import { type ARBatch, crossEntropy, dropLabels, GPT, gptCheckpointTensors, gptFromCheckpoint } from "./gpt.ts";
import { dupFromCodes } from "./mergeAR.ts";
import { randomizeWeights, sequencesWithDuplicates, tinyConfig } from "./testing.ts";

const batch = (
  codes: Int32Array,
  B: number,
  L: number,
  opts: { labels?: number[]; merge?: number[]; dup?: boolean } = {},
): ARBatch => ({
  labels: tf.tensor1d(opts.labels ?? Array.from({ length: B }, (_, i) => i % 11), "int32"),
  indices: tf.tensor2d(codes, [B, L], "int32"),
  mergeTokens: opts.merge ? tf.tensor1d(opts.merge, "int32") : undefined,
  dup: opts.dup ? tf.tensor2d(dupFromCodes(codes, B, L), [B, L]) : undefined,
});

const maxAbs = (a: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(a)).dataSync()[0]);

describe("GPT", () => {
  before(async () => {
    await selectBackend({ requested: process.env.TFJS_BACKEND ?? "wasm" });
  });

  it("forward shapes; zero heads give loss ln 16 + ln 64; parameter names follow upstream", () => {
    const model = new GPT(tinyConfig({ mergeAR: true }));
    const { codes } = sequencesWithDuplicates(3, 64, 20, 10, 1);
    const b = batch(codes, 3, 64, { merge: [0, 1, 3], dup: true });
    const f = model.forward(b, { training: false });
    assert.deepEqual(f.logitsPre.shape, [3, 64, 16]);
    assert.deepEqual(f.logitsPost.shape, [3, 64, 64]);
    const l = model.loss(b, { training: true, seed: 1 });
    assert.ok(Math.abs(l.loss.dataSync()[0] - (Math.log(16) + Math.log(64))) < 1e-5);
    assert.ok(Math.abs(l.pre.dataSync()[0] - Math.log(16)) < 1e-5);
    const names = [...model.getWeights().keys()];
    for (const n of [
      "cls_embedding.embedding_table.weight",
      "merge_embedding.weight",
      "layers.1.attention.wqkv.weight",
      "factorized_blocks.0.feed_forward.w3.weight",
      "norm.weight",
      "heads.1.weight",
    ]) {
      assert.ok(names.includes(n), n);
    }
    assert.deepEqual(model.getWeights().get("cls_embedding.embedding_table.weight")?.shape, [11, 64]);
    assert.equal(model.paramCount(), 171_392);
    assert.throws(() => model.forward({ ...b, mergeTokens: undefined }, { training: false }), /mergeTokens/);
    tf.dispose([
      f.logitsPre,
      f.logitsPost,
      l.loss,
      l.pre,
      l.post,
      b.labels,
      b.indices,
      b.mergeTokens as tf.Tensor,
      b.dup as tf.Tensor,
    ]);
    model.dispose();
  });

  it("gradients: only the zero-init heads move on step 1; after one SGD step every variable has a gradient", () => {
    const model = new GPT(tinyConfig({ mergeAR: true, L: 16 }));
    const { codes } = sequencesWithDuplicates(2, 16, 6, 10, 2);
    const b = batch(codes, 2, 16, { merge: [1, 2], dup: true });
    const vars = model.trainableVariables();
    const lossFn = () => model.loss(b, { training: true, seed: 3 }).loss;
    const g1 = tf.variableGrads(lossFn, vars);
    for (const v of vars) {
      const isHead = v.name.endsWith("heads.0.weight") || v.name.endsWith("heads.1.weight");
      const m = maxAbs(g1.grads[v.name]);
      if (isHead) assert.ok(m > 1e-4, `${v.name} head gradient ${m}`);
      else assert.equal(m, 0, `${v.name}: zero heads block every upstream gradient on the first step`);
    }
    new tf.SGDOptimizer(1.0).applyGradients(g1.grads);
    tf.dispose([g1.value, ...Object.values(g1.grads)]);
    const g2 = tf.variableGrads(lossFn, vars);
    for (const v of vars) assert.ok(maxAbs(g2.grads[v.name]) > 0, `${v.name} receives a gradient after one step`);
    assert.ok(g2.value.dataSync()[0] < Math.log(16) + Math.log(64), "the step lowered the loss");
    tf.dispose([
      g2.value,
      ...Object.values(g2.grads),
      b.labels,
      b.indices,
      b.mergeTokens as tf.Tensor,
      b.dup as tf.Tensor,
    ]);
    model.dispose();
  });

  for (const mergeAR of [false, true]) {
    it(`causality${mergeAR ? " with MergeAR masking" : ""}: changing token j leaves pre logits ≤ j and post logits < j unchanged`, () => {
      const model = new GPT(tinyConfig({ mergeAR }));
      randomizeWeights(model, 21);
      const L = 64;
      const { codes } = sequencesWithDuplicates(1, L, 16, 10, 3);
      const j = 30;
      const dupFlags = tf.tensor2d(dupFromCodes(codes, 1, L), [1, L]); // same flags for both runs
      const run = (c: Int32Array) => {
        const b = batch(c, 1, L, { merge: mergeAR ? [2] : undefined });
        const f = model.forward({ ...b, dup: mergeAR ? dupFlags : undefined }, { training: false });
        const out = { pre: f.logitsPre.arraySync()[0], post: f.logitsPost.arraySync()[0] };
        tf.dispose([f.logitsPre, f.logitsPost, b.labels, b.indices, b.mergeTokens as tf.Tensor]);
        return out;
      };
      const a = run(codes);
      const changed = Int32Array.from(codes);
      changed[j] = (codes[j] + 517) % 1024; // new pre and post bits
      const c = run(changed);
      const diff = (x: number[], y: number[]) => Math.max(...x.map((v, i) => Math.abs(v - y[i])));
      for (let n = 0; n < L; n++) {
        if (n <= j) assert.ok(diff(a.pre[n], c.pre[n]) < 1e-5, `pre logits at ${n}`);
        if (n < j) assert.ok(diff(a.post[n], c.post[n]) < 1e-5, `post logits at ${n}`);
      }
      assert.ok(diff(a.post[j], c.post[j]) > 1e-3, "post logits at j see pre_j (teacher forcing)");
      assert.ok(diff(a.pre[j + 1], c.pre[j + 1]) > 1e-3, "position j + 1 sees token j");
      dupFlags.dispose();
      model.dispose();
    });
  }

  it("dropout: seeded in training mode (same seed same loss, other seed differs), off in eval mode", () => {
    const model = new GPT(tinyConfig({ L: 16 }));
    randomizeWeights(model, 5);
    const { codes } = sequencesWithDuplicates(2, 16, 16, 10, 4);
    const b = batch(codes, 2, 16);
    const loss = (training: boolean, seed?: number) => {
      const l = model.loss(b, { training, seed });
      const v = l.loss.dataSync()[0];
      tf.dispose([l.loss, l.pre, l.post]);
      return v;
    };
    assert.equal(loss(true, 1), loss(true, 1));
    assert.notEqual(loss(true, 1), loss(true, 2));
    assert.equal(loss(false, 1), loss(false, 2));
    assert.notEqual(loss(true, 1), loss(false));
    tf.dispose([b.labels, b.indices]);
    model.dispose();
  });

  it("checkpoint round trip via gptFromCheckpoint; wrong kind / missing tensors are rejected", () => {
    const cfg = tinyConfig({ mergeAR: true, L: 16 });
    const model = new GPT(cfg);
    randomizeWeights(model, 6);
    const ckpt = decodeCheckpoint(
      encodeCheckpoint({ kind: "ar-train", meta: { arConfig: cfg }, tensors: gptCheckpointTensors(model) }),
    );
    const back = gptFromCheckpoint(ckpt, "mem://ckpt");
    assert.deepEqual(back.config, cfg);
    for (const [n, v] of model.getWeights()) {
      assert.deepEqual(Array.from(back.getWeights().get(n)?.dataSync() ?? []), Array.from(v.dataSync()), n);
    }
    assert.throws(() => gptFromCheckpoint({ ...ckpt, kind: "tokenizer-train" }, "x"), /expected "ar-train"/);
    const missing = new Map(ckpt.tensors);
    missing.delete("model/norm.weight");
    assert.throws(() => gptFromCheckpoint({ ...ckpt, tensors: missing }, "x"), /model\/norm.weight/);
    assert.throws(() => gptFromCheckpoint({ ...ckpt, meta: {} }, "x"), /arConfig/);
    back.dispose();
    model.dispose();
  });

  it("crossEntropy matches a host computation; the embedding gradient scatters dy into the looked-up rows", () => {
    const logits = tf.randomNormal([2, 3, 5], 0, 2, "float32", 9) as tf.Tensor3D;
    const targets = [4, 0, 2, 1, 1, 3];
    const l = logits.arraySync().flat();
    const want =
      l.reduce((a, row, i) => a + Math.log(row.reduce((s, v) => s + Math.exp(v), 0)) - row[targets[i]], 0) / 6;
    const got = crossEntropy(logits, tf.tensor2d(targets, [2, 3], "int32")).dataSync()[0];
    assert.ok(Math.abs(got - want) < 1e-5, `${got} vs ${want}`);
    const table = tf.variable(tf.randomNormal([5, 3], 0, 1, "float32", 1));
    const g = tf.variableGrads(
      () =>
        tf.sum(
          tf.mul(
            embedding(table, tf.tensor2d([1, 1, 4, 0], [2, 2], "int32")),
            tf.tensor3d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]),
          ),
        ) as tf.Scalar,
      [table],
    );
    assert.deepEqual(g.grads[table.name].arraySync(), [
      [10, 11, 12],
      [5, 7, 9],
      [0, 0, 0],
      [0, 0, 0],
      [7, 8, 9],
    ]);
    tf.dispose([logits, table, g.value, ...Object.values(g.grads)]);
  });

  it("forward and loss free their intermediates; dropLabels maps to the null class with probability p", () => {
    const model = new GPT(tinyConfig({ L: 16 }));
    const { codes } = sequencesWithDuplicates(2, 16, 16, 10, 4);
    const b = batch(codes, 2, 16);
    const n0 = tf.memory().numTensors;
    const l = model.loss(b, { training: true, seed: 1 });
    assert.equal(tf.memory().numTensors, n0 + 3);
    tf.dispose([l.loss, l.pre, l.post, b.labels, b.indices]);
    let i = 0;
    const u = [0.05, 0.5, 0.09, 0.1, 0.99];
    assert.deepEqual(Array.from(dropLabels([1, 2, 3, 4, 5], model.config, () => u[i++])), [10, 2, 10, 4, 5]);
    model.dispose();
  });
});
