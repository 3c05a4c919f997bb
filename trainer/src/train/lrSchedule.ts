// Stage-II learning-rate schedule (docs/model.md §5.3, VAR-style `lr_wd_annealing` with sche_type "lin0", wp0 0.005,
// wpe 0.1) counted in TRUE optimiser steps ([decision]; upstream counts warm-up/horizon in dataloader batches).
// `step` is the 0-based index of the optimiser step about to be applied (0 … totalSteps−1):
//   warm-up   step < W:                  lr = peak · (0.005 + 0.995 · step / W)
//   after:    p = (step − W) / (totalSteps − 1 − W)  (progress over the remaining steps, 0 … 1)
//             p < 0.05:                  lr = peak                                (constant phase)
//             else:                      lr = peak · (0.1 + 0.9 · (1 − p) / 0.95)  (linear, 0.1·peak at the end)
// With no steps after the warm-up (totalSteps − 1 ≤ W) the lr after warm-up is the peak.

export interface ARLrOptions {
  /** Peak learning rate (spec.training.learningRate). */
  peak: number;
  /** Linear warm-up length in optimiser steps. */
  warmupSteps: number;
  /** Total optimiser steps of the run. */
  totalSteps: number;
  /** Warm-up start as a fraction of the peak (VAR wp0). */
  warmupStart?: number;
  /** Final lr as a fraction of the peak (VAR wpe). */
  endFactor?: number;
  /** Fraction of the post-warm-up progress held at the peak (VAR T). */
  constantFraction?: number;
}

export const WARMUP_START = 0.005;
export const END_FACTOR = 0.1;
export const CONSTANT_FRACTION = 0.05;

/** Learning rate for the optimiser step with 0-based index `step`. */
export function arLrAt(o: ARLrOptions, step: number): number {
  const wp0 = o.warmupStart ?? WARMUP_START;
  const wpe = o.endFactor ?? END_FACTOR;
  const T = o.constantFraction ?? CONSTANT_FRACTION;
  const W = o.warmupSteps;
  if (step < W) return o.peak * (wp0 + ((1 - wp0) * step) / W);
  const span = o.totalSteps - 1 - W;
  if (span <= 0) return o.peak;
  const p = Math.min(1, (step - W) / span);
  if (p < T) return o.peak;
  return o.peak * (wpe + ((1 - wpe) * (1 - p)) / (1 - T));
}
