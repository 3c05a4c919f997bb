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

import * as tf from "@tensorflow/tfjs";

let disabled = false;
export function setFusedKernels(enabled: boolean): void {
  disabled = !enabled;
}
export const fusedKernel = (name: string): boolean => !disabled && tf.getKernel(name, tf.getBackend()) !== undefined;
