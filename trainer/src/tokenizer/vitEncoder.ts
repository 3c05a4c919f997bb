// MergeVQ docs/model.md §2.2 (R variant): ViT-B patch embedding replacing the CNN — Conv(3→768, kernel 16,
// stride 16, bias) + GroupNorm(768 groups, eps 1e-6, affine). No padding and no positional embedding, so
// the R encoder is permutation-equivariant over patches. The conv is written as patchify + matmul
// (identical result, gradient available on every backend).
// [decision] the patch conv uses the PyTorch default init U(±1/√(3·16·16)) (docs/model.md §2.7 lists only the
// transformer Linear/Conv layers under trunc-normal .02).
import * as tf from "@tensorflow/tfjs";
import { Conv2d, GroupNorm } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { Params } from "../nn/params.ts";
import type { ArchConfig } from "./arch.ts";

export class VitEncoder extends Module {
  readonly patchEmbed: Conv2d;
  readonly patchNorm: GroupNorm;
  readonly patch: number;
  readonly dim: number;

  constructor(cfg: ArchConfig) {
    super("encoder");
    const p = cfg.patchSize;
    const D = cfg.derived.encDim;
    this.patch = p;
    this.dim = D;
    this.patchEmbed = this.add(
      new Conv2d(this.path("patch_embed"), p, p, 3, D, { bias: true, init: "torch", group: "encoder" }),
    );
    this.patchNorm = this.add(new GroupNorm(this.path("patch_norm"), D, "encoder", { groups: D, eps: 1e-6 }));
  }

  /** x [B, H, W, 3] → patch features [B, H/p, W/p, D]. */
  forward(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    const { patch: p, dim: D } = this;
    const [B, H, W, C] = x.shape;
    const h = Math.floor(H / p);
    const w = Math.floor(W / p);
    const xc = tf.slice(x, [0, 0, 0, 0], [B, h * p, w * p, C]); // PyTorch VALID conv drops the remainder
    const patches = tf.reshape(tf.transpose(tf.reshape(xc, [B, h, p, w, p, C]), [0, 1, 3, 2, 4, 5]), [
      B * h * w,
      p * p * C,
    ]);
    // [B, h, p, w, p, C] → [B, h, w, p, p, C] → [B·h·w, p·p·C]; row order (kh, kw, cin) matches the weight layout.
    const emb = this.patchEmbed.addBias(
      P,
      tf.matMul(patches, tf.reshape(P.get(this.patchEmbed.weight), [p * p * C, D])),
    );
    const map = tf.reshape(emb, [B, h, w, D]) as tf.Tensor4D; // [B·h·w, D] → [B, h, w, D]
    return this.patchNorm.forward(P, map);
  }
}
