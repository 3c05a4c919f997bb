// MergeVQ tokenizer blocks (docs/model.md §2.1 (+ §2.7 initialisation, §11 TF.js mapping, pitfalls 9 and 22):
// GroupNorm(32), LayerNorm, exact GELU, ResBlock, Down/Up convs with depth-to-space (DCR), multi-head
// attention (optionally proportional, returning the keys for the ToMe metric), MLP / MixMLP, LayerScale and
// adaptive GroupNorm. All maps are NHWC; sequences [B, N, C]. Upstream modules followed: taming /
// Open-MAGVIT2 `ResnetBlock`, timm `vision_transformer.Block`, ToMe `tome/patch/timm.py`.
//
// The primitive layers, GroupNorm and the gradient kernels they use live in trainer/src/nn/.
import * as tf from "@tensorflow/tfjs";
import { groupNormAct, groupNormSilu } from "../nn/groupNorm.ts";
import { depthwiseConv3x3 } from "../nn/kernels.ts";
import {
  conv3x3,
  convSpecs,
  depthwiseSpecs,
  gelu,
  layerScaleSpecs,
  linear,
  linearSpecs,
  normSpecs,
} from "../nn/layers.ts";
import type { ParamGroup, ParamSpec, Params } from "../nn/params.ts";

// ───────────────────────────── CNN blocks ─────────────────────────────

/** ResBlock(cin, cout) parameters (no biases; 1×1 shortcut when widths differ). */
export function resBlockSpecs(name: string, cin: number, cout: number, group: ParamGroup): ParamSpec[] {
  const out = [
    ...normSpecs(`${name}.norm1`, cin, group),
    ...convSpecs(`${name}.conv1`, 3, 3, cin, cout, { bias: false, init: "torch", group }),
    ...normSpecs(`${name}.norm2`, cout, group),
    ...convSpecs(`${name}.conv2`, 3, 3, cout, cout, { bias: false, init: "torch", group }),
  ];
  if (cin !== cout)
    out.push(...convSpecs(`${name}.nin_shortcut`, 1, 1, cin, cout, { bias: false, init: "torch", group }));
  return out;
}

/** h = Conv(SiLU(GN(x))) → Conv(SiLU(GN(h))); out = h + shortcut(x). */
export function resBlock(P: Params, name: string, x: tf.Tensor4D): tf.Tensor4D {
  const cout = P.get(`${name}.conv1.weight`).shape[3];
  let h = conv3x3(P, `${name}.conv1`, groupNormSilu(P, `${name}.norm1`, x), 1, false);
  h = conv3x3(P, `${name}.conv2`, groupNormSilu(P, `${name}.norm2`, h), 1, false);
  const skip = x.shape[3] === cout ? x : (linear(P, `${name}.nin_shortcut`, x, false) as tf.Tensor4D);
  return tf.add(h, skip) as tf.Tensor4D;
}

/** Down: Conv3×3 stride 2, padding 1 (symmetric), bias. [B, H, W, C] → [B, H/2, W/2, C]. */
export const downSpecs = (name: string, C: number, group: ParamGroup): ParamSpec[] =>
  convSpecs(name, 3, 3, C, C, { bias: true, init: "torch", group });
export const downsample = (P: Params, name: string, x: tf.Tensor4D): tf.Tensor4D => conv3x3(P, name, x, 2, true);

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

/** Upsampler(C): Conv3×3 (C→4C, bias) then depth-to-space ×2. */
export const upsamplerSpecs = (name: string, C: number, group: ParamGroup): ParamSpec[] =>
  convSpecs(name, 3, 3, C, 4 * C, { bias: true, init: "torch", group });
export const upsample = (P: Params, name: string, x: tf.Tensor4D): tf.Tensor4D =>
  depthToSpace2(conv3x3(P, name, x, 1, true));

// ───────────────────────────── AdaGN (decoder) ─────────────────────────────

/** AdaGN(zc, C): Linear_γ(σ) and Linear_β(μ), both zc→C with the PyTorch default init. */
export const adaGNSpecs = (name: string, zc: number, C: number, group: ParamGroup): ParamSpec[] => [
  ...linearSpecs(`${name}.gamma_fc`, zc, C, "torch", group),
  ...linearSpecs(`${name}.beta_fc`, zc, C, "torch", group),
];

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

/** GN32_noaffine(x) · Linear_γ(σ) + Linear_β(μ), broadcast over H, W. */
export function adaGN(P: Params, name: string, x: tf.Tensor4D, cond: { sigma: tf.Tensor2D; mu: tf.Tensor2D }) {
  const [B, , , C] = x.shape;
  const scale = tf.reshape(linear(P, `${name}.gamma_fc`, cond.sigma), [B, 1, 1, C]);
  const shift = tf.reshape(linear(P, `${name}.beta_fc`, cond.mu), [B, 1, 1, C]);
  return tf.add(tf.mul(groupNormAct(x, 32, 1e-6, false), scale), shift) as tf.Tensor4D;
}

// ───────────────────────────── transformer blocks ─────────────────────────────

export const attentionSpecs = (name: string, D: number, group: ParamGroup): ParamSpec[] => [
  ...linearSpecs(`${name}.qkv`, D, 3 * D, "vit", group),
  ...linearSpecs(`${name}.proj`, D, D, "vit", group),
];

/**
 * Multi-head self-attention (timm layout: qkv output = [q | k | v], each heads × head_dim).
 * `logSizes` [B, N] adds ToMe's proportional-attention bias log s_j over keys.
 * x [B, N, D] → { out [B, N, D], keys [B, h, N, d_h] }.
 */
export function attention(P: Params, name: string, x: tf.Tensor3D, heads: number, logSizes?: tf.Tensor2D) {
  const [B, N, D] = x.shape;
  const dh = D / heads;
  const qkv = tf.reshape(linear(P, `${name}.qkv`, x), [B, N, 3, heads, dh]); // [B, N, 3, h, d_h]
  const [q, k, v] = tf.unstack(tf.transpose(qkv, [2, 0, 3, 1, 4])); // 3 × [B, h, N, d_h]
  let logits = tf.matMul(tf.mul(q, dh ** -0.5), k, false, true); // [B, h, N, N]
  if (logSizes) logits = tf.add(logits, tf.reshape(logSizes, [B, 1, 1, N]));
  const o = tf.matMul(tf.softmax(logits), v); // [B, h, N, d_h]
  const merged = tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B, N, D]); // [B, N, h·d_h]
  return { out: linear(P, `${name}.proj`, merged) as tf.Tensor3D, keys: k as tf.Tensor4D };
}

/** MLP D→4D→D with exact GELU (encoder blocks). */
export const mlpSpecs = (name: string, D: number, group: ParamGroup, mixDwConv = false): ParamSpec[] => [
  ...linearSpecs(`${name}.fc1`, D, 4 * D, "vit", group),
  ...(mixDwConv ? depthwiseSpecs(`${name}.dwconv`, 4 * D, "vit", group) : []),
  ...linearSpecs(`${name}.fc2`, 4 * D, D, "vit", group),
];

export const mlp = (P: Params, name: string, x: tf.Tensor3D): tf.Tensor3D =>
  linear(P, `${name}.fc2`, gelu(linear(P, `${name}.fc1`, x))) as tf.Tensor3D;

/** MixMLP (decoder): fc1 → tokens as √N×√N grid → depthwise 3×3 (bias) → flatten → GELU → fc2. */
export function mixMlp(P: Params, name: string, x: tf.Tensor3D, side: number): tf.Tensor3D {
  const [B, N] = x.shape;
  const h = linear(P, `${name}.fc1`, x);
  const C = h.shape[2] as number;
  const grid = tf.reshape(h, [B, side, side, C]) as tf.Tensor4D; // [B, N, 4D] → [B, √N, √N, 4D]
  const dw = depthwiseConv3x3(grid, P.get(`${name}.dwconv.weight`), P.get(`${name}.dwconv.bias`));
  const flat = tf.reshape(dw, [B, N, C]); // [B, √N, √N, 4D] → [B, N, 4D]
  return linear(P, `${name}.fc2`, gelu(flat)) as tf.Tensor3D;
}

/** Pre-norm ViT block parameters: norm1/attn/ls1/norm2/mlp/ls2 (timm anatomy). */
export const vitBlockSpecs = (name: string, D: number, group: ParamGroup, mixMlpDw = false): ParamSpec[] => [
  ...normSpecs(`${name}.norm1`, D, group),
  ...attentionSpecs(`${name}.attn`, D, group),
  ...layerScaleSpecs(`${name}.ls1`, D, group),
  ...normSpecs(`${name}.norm2`, D, group),
  ...mlpSpecs(`${name}.mlp`, D, group, mixMlpDw),
  ...layerScaleSpecs(`${name}.ls2`, D, group),
];
