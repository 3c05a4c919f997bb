// MergeVQ tokenizer end to end on the tiny configs (docs/model.md §10 checks) on the wasm backend: shapes,
// merged count = K for every candidate, unmerge = gather-by-group, straight-through gradient reaching
// conv_in, every trainable variable receiving a gradient, no tensor leaks, seeded weights, stable names.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { selectBackend } from "../backend/select.ts";
import { MergeVQTokenizer } from "./mergevq.ts";
import { unmerge, unmergeByGather } from "./unmerge.ts";

const image = (B: number, side: number, seed: number) =>
  tf.randomUniform([B, side, side, 3], -1, 1, "float32", seed) as tf.Tensor4D;

describe("MergeVQTokenizer", () => {
  before(async () => {
    await selectBackend({ requested: process.env.TFJS_BACKEND ?? "wasm" });
  });

  it("decode(encode(x)) shapes for T0, T1, T2 and merged count = K for every candidate of T0 and T2", () => {
    for (const name of ["T0", "T1", "T2"]) {
      const m = new MergeVQTokenizer(name);
      const { resolution: R, zChannels: d } = m.config;
      const { L } = m.config.derived;
      const x = image(2, R, 1);
      const Ks = name === "T1" ? [m.config.derived.K] : m.config.derived.candidates.map((c) => c.K);
      for (const K of Ks) {
        const enc = m.encode(x, K, { training: false });
        assert.deepEqual(enc.zq.shape, [2, K, d], `${name} K ${K}`);
        assert.deepEqual(enc.source.shape, [2, K, L]);
        assert.deepEqual(enc.indices.shape, [2, K]);
        tf.tidy(() => {
          assert.deepEqual(Array.from(tf.sum(enc.sizes, 1).dataSync()), [L, L], "token mass preserved");
          assert.ok(tf.all(tf.equal(tf.sum(enc.source, 1), 1)).dataSync()[0], "columns of S sum to 1");
          const a = unmerge(enc.zq, enc.source);
          assert.equal(
            tf.max(tf.abs(tf.sub(a, unmergeByGather(enc.zq, enc.groups)))).dataSync()[0],
            0,
            "Sᵀ·Z = gather",
          );
        });
        const recon = m.decode(enc.zq, enc.source);
        assert.deepEqual(recon.shape, [2, R, R, 3]);
        tf.dispose([recon, ...Object.values(enc).filter((v): v is tf.Tensor => v instanceof tf.Tensor)]);
        tf.dispose(Object.values(enc.losses));
      }
      x.dispose();
      m.dispose();
    }
  });

  it("R variant (ViT patch embedding, tiny): shapes, and decodeIndices(full grid) = decode at K = L", () => {
    const m = new MergeVQTokenizer({
      preset: "T0",
      name: "R-tiny",
      variant: "R",
      encoder: "vit",
      vitDim: 64,
      patchSize: 4,
    });
    assert.ok(m.getWeights().has("encoder.patch_embed.weight"));
    const x = image(2, 32, 11);
    const enc = m.encode(x, 36, { training: false });
    assert.deepEqual(enc.zq.shape, [2, 36, 10]);
    const recon = m.decode(enc.zq, enc.source);
    assert.deepEqual(recon.shape, [2, 32, 32, 3]);
    const full = m.encode(x, 64, { training: false }); // K = L: identity source, raster order
    const a = m.decode(full.zq, full.source);
    const b = m.decodeIndices(full.indices);
    assert.ok(tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]) < 1e-4);
    tf.dispose(
      [x, recon, a, b, ...Object.values(enc), ...Object.values(full)].filter(
        (t): t is tf.Tensor => t instanceof tf.Tensor,
      ),
    );
    tf.dispose([...Object.values(enc.losses), ...Object.values(full.losses)]);
    m.dispose();
  });

  it("CLS pass on the student view applies the per-layer cap (T2: 196 tokens, K = 49)", () => {
    const m = new MergeVQTokenizer("T2");
    const v = image(2, 28, 2);
    const cls = m.encodeCls(v, 49);
    assert.deepEqual(cls.shape, [2, 10]);
    assert.ok(Number.isFinite(cls.dataSync()[0]));
    tf.dispose([v, cls]);
    assert.throws(() => m.encode(image(1, 32, 3), 50), /perfect square/);
    assert.deepEqual(
      [0, 12, 13, 84, 97, 113].map((b) => m.kForBatch(b)),
      [49, 49, 64, 81, 100, 64],
    );
    m.dispose();
  });

  it("forward/backward on T0: every trainable variable gets a non-zero gradient, no tensor leaks", () => {
    const m = new MergeVQTokenizer("T0");
    const x = image(2, 32, 4);
    const v = image(2, 28, 5);
    const target = tf.randomNormal([2, 10], 0, 1, "float32", 6);
    const n0 = tf.memory().numTensors;
    const out = m.forward(x, { clsView: v });
    assert.deepEqual(out.recon.shape, [2, 32, 32, 3]);
    assert.deepEqual(out.cls.shape, [2, 10]);
    tf.dispose(Object.values(out.losses));
    tf.dispose(Object.values(out).filter((t): t is tf.Tensor => t instanceof tf.Tensor));
    assert.equal(tf.memory().numTensors, n0, "forward leaks no tensors");

    const { value, grads } = tf.variableGrads(() => {
      const o = m.forward(x, { clsView: v });
      const rec = tf.mean(tf.abs(tf.sub(o.recon, x)));
      const cls = tf.mean(tf.square(tf.sub(o.cls, target)));
      return tf.addN([rec, tf.mul(o.losses.entropy, 0.1), tf.mul(o.losses.commitment, 0.25), cls]) as tf.Scalar;
    }, m.trainableVariables());
    assert.ok(Number.isFinite(value.dataSync()[0]));
    const vars = m.trainableVariables();
    assert.equal(Object.keys(grads).length, vars.length);
    const zero = Object.entries(grads).filter(([, g]) => tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]) === 0);
    assert.deepEqual(
      zero.map(([n]) => n),
      [],
      "variables without gradient",
    );
    tf.dispose([value, ...Object.values(grads)]);
    assert.equal(tf.memory().numTensors, n0, "training step leaks no tensors");
    tf.dispose([x, v, target]);
    m.dispose();
  });

  it("straight-through gradient of the reconstruction alone reaches conv_in and the input image", () => {
    const m = new MergeVQTokenizer("T0");
    const x = image(2, 32, 7);
    const convIn = m.getWeights().get("encoder.conv_in.weight")!;
    const { grads } = tf.variableGrads(() => {
      const o = m.forward(x, { training: false }); // no entropy/commitment: only the STE path reaches the encoder
      return tf.mean(tf.abs(tf.sub(o.recon, x))) as tf.Scalar;
    }, [convIn]);
    const g = grads[convIn.name];
    assert.ok(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]) > 0, "conv_in gradient is non-zero");
    const gx = tf.grad((xi: tf.Tensor) =>
      tf.tidy(() => tf.sum(m.forward(xi as tf.Tensor4D, { training: false }).recon)),
    )(x);
    // recon depends on x only through the quantizer (straight-through) path.
    assert.ok(tf.tidy(() => tf.max(tf.abs(gx)).dataSync()[0]) > 0, "input gradient is non-zero");
    tf.dispose([x, g, gx]);
    m.dispose();
  });

  it("same seed → same weights; other seed → different; names stable; setWeights round-trips", () => {
    const a = new MergeVQTokenizer("T0");
    const b = new MergeVQTokenizer("T0");
    const c = new MergeVQTokenizer({ preset: "T0", seed: 1 });
    const wa = a.getWeights();
    const wb = b.getWeights();
    const wc = c.getWeights();
    assert.deepEqual([...wa.keys()], [...wb.keys()]);
    for (const n of [
      "encoder.conv_in.weight",
      "encoder.down.2.block.0.nin_shortcut.weight",
      "encoder.blocks.3.attn.qkv.weight",
      "encoder.cls_token",
      "encoder.quant_conv.weight",
      "cls_head.fc3.weight",
      "decoder.pos_conv.weight",
      "decoder.blocks.0.mlp.dwconv.weight",
      "decoder.up.2.adanorm.gamma_fc.weight",
      "decoder.up.1.upsample.weight",
      "decoder.conv_out.bias",
    ]) {
      assert.ok(wa.has(n), `missing ${n}`);
    }
    let maxDiffSame = 0;
    let anyDiffOther = false;
    for (const [n, t] of wa) {
      maxDiffSame = Math.max(
        maxDiffSame,
        tf.tidy(() => tf.max(tf.abs(tf.sub(t, wb.get(n)!))).dataSync()[0]),
      );
      if (!n.endsWith(".bias") && tf.tidy(() => tf.max(tf.abs(tf.sub(t, wc.get(n)!))).dataSync()[0]) > 0)
        anyDiffOther = true;
    }
    assert.equal(maxDiffSame, 0);
    assert.ok(anyDiffOther);
    assert.equal(a.paramCount(), a.config.derived.paramCounts.total);
    a.setWeights(wc);
    assert.equal(
      tf.tidy(
        () =>
          tf
            .max(tf.abs(tf.sub(wa.get("encoder.blocks.0.mlp.fc1.weight")!, wc.get("encoder.blocks.0.mlp.fc1.weight")!)))
            .dataSync()[0],
      ),
      0,
    );
    assert.throws(() => a.setWeights(new Map()), /missing/);
    a.dispose();
    b.dispose();
    c.dispose();
  });
});
