// MergeVQ tokenizer blocks (docs/model.md §2.1 (+ §2.7 initialisation, §11 TF.js mapping, pitfalls 9 and 22):
// GroupNorm(32), LayerNorm, exact GELU, ResBlock, Down/Up convs with depth-to-space (DCR), multi-head
// attention (optionally proportional, returning the keys for the ToMe metric), MLP / MixMLP, LayerScale and
// adaptive GroupNorm. All maps are NHWC; sequences [B, N, C]. Upstream modules followed: taming /
// Open-MAGVIT2 `ResnetBlock`, timm `vision_transformer.Block`, ToMe `tome/patch/timm.py`.
//
// Each block is a Module (trainer/src/nn/module.ts): children declared once in the constructor, under the
// upstream module names (checkpoint keys), and used by the forward. The primitive layers, GroupNorm and the
// gradient kernels live in trainer/src/nn/.
import * as tf from "@tensorflow/tfjs";
import { attentionCore, attentionKeys } from "../nn/attention.ts";
import { groupNormAct } from "../nn/groupNorm.ts";
import { Conv2d, DepthwiseConv3x3, GroupNorm, gelu, LayerNorm, LayerScale, Linear } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import type { ParamGroup, Params } from "../nn/params.ts";

// ───────────────────────────── CNN blocks ─────────────────────────────

/** ResBlock(cin, cout): h = Conv(SiLU(GN(x))) → Conv(SiLU(GN(h))); out = h + shortcut(x). No biases. */
export class ResBlock extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  /** 1×1 conv when the widths differ. */
  readonly ninShortcut: Conv2d | null;

  constructor(name: string, cin: number, cout: number, group: ParamGroup) {
    super(name);
    const conv = { bias: false, init: "torch", group } as const;
    this.norm1 = this.add(new GroupNorm(this.path("norm1"), cin, group));
    this.conv1 = this.add(new Conv2d(this.path("conv1"), 3, 3, cin, cout, conv));
    this.norm2 = this.add(new GroupNorm(this.path("norm2"), cout, group));
    this.conv2 = this.add(new Conv2d(this.path("conv2"), 3, 3, cout, cout, conv));
    this.ninShortcut = cin !== cout ? this.add(new Conv2d(this.path("nin_shortcut"), 1, 1, cin, cout, conv)) : null;
  }

  forward(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    let h = this.conv1.forward(P, this.norm1.silu(P, x)); // [B, H, W, cout]
    h = this.conv2.forward(P, this.norm2.silu(P, h));
    return tf.add(h, this.ninShortcut ? this.ninShortcut.forward(P, x) : x) as tf.Tensor4D;
  }
}

/** Down: Conv3×3 stride 2, padding 1 (symmetric), bias. [B, H, W, C] → [B, H/2, W/2, C]. */
export class Downsample extends Conv2d {
  constructor(name: string, C: number, group: ParamGroup) {
    super(name, 3, 3, C, C, { bias: true, init: "torch", group });
  }

  override forward(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    return super.forward(P, x, 2);
  }
}

/**
 * Depth-to-space ×2 in DCR order (= TF `depthToSpace` NHWC; not PyTorch pixel_shuffle), written with
 * reshape/transpose because tfjs has no DepthToSpace gradient. out[2h+i, 2w+j, c] = in[h, w, (2i+j)·C + c].
 */
export function depthToSpace2(x: tf.Tensor4D): tf.Tensor4D {
  const [B, H, W, C4] = x.shape;
  const C = C4 / 4;
  const y = tf.reshape(x, [B, H, W, 2, 2, C]); // [B, H, W, i, j, C]
  const t = tf.transpose(y, [0, 1, 3, 2, 4, 5]); // [B, H, i, W, j, C]
  return tf.reshape(t, [B, 2 * H, 2 * W, C]); // [B, 2H, 2W, C]
}

/** Upsampler(C): Conv3×3 (C→4C, bias) then depth-to-space ×2. [B, H, W, C] → [B, 2H, 2W, C]. */
export class Upsampler extends Conv2d {
  constructor(name: string, C: number, group: ParamGroup) {
    super(name, 3, 3, C, 4 * C, { bias: true, init: "torch", group });
  }

  override forward(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    return depthToSpace2(super.forward(P, x));
  }
}

// ───────────────────────────── AdaGN (decoder) ─────────────────────────────

/**
 * Conditioning statistics of the unmerged quantized map s [B, S, S, zc] (not detached): per channel
 * μ = mean over S·S and σ = sqrt(unbiased variance + 1e-6). → { sigma, mu } each [B, zc].
 */
export function adaGNStats(s: tf.Tensor4D): { sigma: tf.Tensor2D; mu: tf.Tensor2D } {
  const [B, H, W, C] = s.shape;
  const n = H * W;
  const flat = tf.reshape(s, [B, n, C]); // [B, S·S, zc]
  const mu = tf.mean(flat, 1); // [B, zc]
  const ss = tf.sum(tf.square(tf.sub(flat, tf.expandDims(mu, 1))), 1); // [B, zc]
  const sigma = tf.sqrt(tf.add(tf.div(ss, Math.max(n - 1, 1)), 1e-6));
  return { sigma: sigma as tf.Tensor2D, mu: mu as tf.Tensor2D };
}

/** AdaGN(zc, C): GN32_noaffine(x) · Linear_γ(σ) + Linear_β(μ), broadcast over H, W (PyTorch default init). */
export class AdaGN extends Module {
  readonly gammaFc: Linear;
  readonly betaFc: Linear;

  constructor(name: string, zc: number, C: number, group: ParamGroup) {
    super(name);
    this.gammaFc = this.add(new Linear(this.path("gamma_fc"), zc, C, { init: "torch", group }));
    this.betaFc = this.add(new Linear(this.path("beta_fc"), zc, C, { init: "torch", group }));
  }

  forward(P: Params, x: tf.Tensor4D, cond: { sigma: tf.Tensor2D; mu: tf.Tensor2D }): tf.Tensor4D {
    const [B, , , C] = x.shape;
    const scale = tf.reshape(this.gammaFc.forward(P, cond.sigma), [B, 1, 1, C]);
    const shift = tf.reshape(this.betaFc.forward(P, cond.mu), [B, 1, 1, C]);
    return tf.add(tf.mul(groupNormAct(x, 32, 1e-6, false), scale), shift) as tf.Tensor4D;
  }
}

// ───────────────────────────── transformer blocks ─────────────────────────────

/**
 * Multi-head self-attention (timm layout: qkv output = [q | k | v], each heads × head_dim).
 * `logSizes` [B, N] adds ToMe's proportional-attention bias log s_j over keys.
 * x [B, N, D] → { out [B, N, D], keys() [B, h, N, d_h] (computed on demand: only merging blocks need them) }.
 */
export class Attention extends Module {
  readonly qkv: Linear;
  readonly proj: Linear;
  readonly heads: number;

  constructor(name: string, D: number, heads: number, group: ParamGroup) {
    super(name);
    this.heads = heads;
    this.qkv = this.add(new Linear(this.path("qkv"), D, 3 * D, { init: "vit", group }));
    this.proj = this.add(new Linear(this.path("proj"), D, D, { init: "vit", group }));
  }

  forward(P: Params, x: tf.Tensor3D, logSizes?: tf.Tensor2D): { out: tf.Tensor3D; keys: () => tf.Tensor4D } {
    const qkv = this.qkv.forward(P, x) as tf.Tensor3D; // [B, N, 3D]
    const merged = attentionCore(qkv, this.heads, logSizes); // softmax(QKᵀ/√d_h + log s)·V per head: [B, N, D]
    return { out: this.proj.forward(P, merged) as tf.Tensor3D, keys: () => attentionKeys(qkv, this.heads) };
  }
}

/**
 * MLP D→4D→D with exact GELU (encoder blocks); with `side` (decoder MixMLP) the hidden tokens pass, as a
 * √N×√N grid, through a depthwise 3×3 conv (bias) before the GELU.
 */
export class Mlp extends Module {
  readonly fc1: Linear;
  readonly dwconv: DepthwiseConv3x3 | null;
  readonly fc2: Linear;

  constructor(name: string, D: number, group: ParamGroup, mixDwConv: boolean) {
    super(name);
    this.fc1 = this.add(new Linear(this.path("fc1"), D, 4 * D, { init: "vit", group }));
    this.dwconv = mixDwConv ? this.add(new DepthwiseConv3x3(this.path("dwconv"), 4 * D, "vit", group)) : null;
    this.fc2 = this.add(new Linear(this.path("fc2"), 4 * D, D, { init: "vit", group }));
  }

  /** x [B, N, D] → [B, N, D]; `side` = √N, required with the depthwise conv. */
  forward(P: Params, x: tf.Tensor3D, side?: number): tf.Tensor3D {
    let h = this.fc1.forward(P, x); // [B, N, 4D]
    if (this.dwconv) {
      if (side === undefined) throw new Error(`${this.name}: MixMLP needs the grid side`);
      const [B, N, C] = h.shape as [number, number, number];
      const grid = tf.reshape(h, [B, side, side, C]) as tf.Tensor4D; // [B, N, 4D] → [B, √N, √N, 4D]
      h = tf.reshape(this.dwconv.forward(P, grid), [B, N, C]); // → [B, N, 4D]
    }
    return this.fc2.forward(P, gelu(h)) as tf.Tensor3D;
  }
}

/**
 * Pre-norm ViT block (timm anatomy): x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x))). The encoder runs
 * the two halves with the ToMe merge between them, so they are exposed separately.
 */
export class VitBlock extends Module {
  readonly norm1: LayerNorm;
  readonly attn: Attention;
  readonly ls1: LayerScale;
  readonly norm2: LayerNorm;
  readonly mlp: Mlp;
  readonly ls2: LayerScale;

  constructor(name: string, D: number, heads: number, group: ParamGroup, mixMlp = false) {
    super(name);
    this.norm1 = this.add(new LayerNorm(this.path("norm1"), D, group));
    this.attn = this.add(new Attention(this.path("attn"), D, heads, group));
    this.ls1 = this.add(new LayerScale(this.path("ls1"), D, group));
    this.norm2 = this.add(new LayerNorm(this.path("norm2"), D, group));
    this.mlp = this.add(new Mlp(this.path("mlp"), D, group, mixMlp));
    this.ls2 = this.add(new LayerScale(this.path("ls2"), D, group));
  }

  /** Attention half: → { x + ls1(attn), keys of this block (the ToMe metric) }. */
  attentionResidual(P: Params, x: tf.Tensor3D, logSizes?: tf.Tensor2D): { x: tf.Tensor3D; keys: () => tf.Tensor4D } {
    const { out, keys } = this.attn.forward(P, this.norm1.forward(P, x), logSizes);
    return { x: this.ls1.residual(P, x, out), keys }; // x + ls1(attn)
  }

  /** MLP half: x + ls2(mlp(norm2(x))); `side` for the MixMLP. */
  mlpResidual(P: Params, x: tf.Tensor3D, side?: number): tf.Tensor3D {
    return this.ls2.residual(P, x, this.mlp.forward(P, this.norm2.forward(P, x), side)); // x + ls2(mlp)
  }
}
