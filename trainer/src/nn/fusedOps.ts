// Names of the fused kernels that a backend may provide (the native tensorflow backend does, with the op library
// hack/tfjs-native/ops/mergevq_ops.cc: trainer/src/backend/nativeKernels.ts registers them). Callers check
// `fusedKernel(name)` and fall back to composed tfjs ops where it is absent; `setFusedKernels(false)` forces
// the fallback (tests compare both).

/** GroupNorm (+ SiLU): inputs x, gamma, beta; attrs groups, eps, silu; outputs y, mean [B, G], rstd [B, G]. */
export const GROUP_NORM_ACT = "MergevqGroupNormAct";
/** Its gradient: inputs dy, x, gamma, beta, mean, rstd; attrs groups, silu; outputs dx, dgamma, dbeta. */
export const GROUP_NORM_ACT_GRAD = "MergevqGroupNormActGrad";
/**
 * One Adam step over N parameters: inputs p0…, m0…, v0…, g0… (N each); attrs n and the float32 constants;
 * outputs p′ (N), m′ (N), v′ (N).
 */
export const FUSED_ADAM = "MergevqAdam";

/** LayerNorm over the last axis: inputs x, gamma, beta; attr eps; outputs y, mean [N], rstd [N]. */
export const LAYER_NORM = "MergevqLayerNorm";
/** Its gradient: inputs dy, x, gamma, mean, rstd; outputs dx, dgamma, dbeta. */
export const LAYER_NORM_GRAD = "MergevqLayerNormGrad";
/** Exact GELU (input x) and its gradient (inputs dy, x). */
export const GELU = "MergevqGelu";
export const GELU_GRAD = "MergevqGeluGrad";
/** x + γ·y with γ [D] over the last axis (a residual through LayerScale): inputs x, y, gamma; output out. */
export const SCALED_RESIDUAL = "MergevqScaledResidual";
/** Its gradient: inputs dout, y, gamma; outputs dy, dgamma (dx is dout). */
export const SCALED_RESIDUAL_GRAD = "MergevqScaledResidualGrad";
/**
 * Attention core after the qkv linear: inputs qkv [B, N, 3D], bias [B, N] (qkv again without bias); attrs heads,
 * scale, hasBias; outputs out [B, N, D] (heads merged), probs [B, h, N, N].
 */
export const ATTENTION = "MergevqAttention";
/** Its gradient: inputs dout, qkv, probs; attrs heads, scale; outputs dqkv, dbias [B, N]. */
export const ATTENTION_GRAD = "MergevqAttentionGrad";
/** x + b over the last axis (inputs x, b: TF's BiasAdd) and its gradient Σ dy over the leading axes (input dy). */
export const BIAS_ADD = "MergevqBiasAdd";
export const BIAS_ADD_GRAD = "MergevqBiasAddGrad";
/**
 * x·w + b over the last axis of x without reshapes: inputs x [..., K], w [K, N] (or a 1×1 conv's [1, 1, K, N]),
 * b [N] (w again when attr hasBias is false); output y [..., N].
 */
export const LINEAR = "MergevqLinear";
/** Its gradient: inputs dy, x, w; attr hasBias; outputs dx, dw, db ([0] without bias). */
export const LINEAR_GRAD = "MergevqLinearGrad";

import * as tf from "@tensorflow/tfjs";

let disabled = false;
export function setFusedKernels(enabled: boolean): void {
  disabled = !enabled;
}
export const fusedKernel = (name: string): boolean => !disabled && tf.getKernel(name, tf.getBackend()) !== undefined;
