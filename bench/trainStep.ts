// The tokenizer train step that issue 8 measures (bench/backend.bench.ts) and profiles
// (hack/tfjs-native/profile.ts): tf.variableGrads of MSE + 0.1·entropy + 0.25·commitment over every tokenizer
// variable, the loss read back, then the trainer's NamedAdam update (β 0.5/0.9, lr 2e-4).
import * as tf from "@tensorflow/tfjs";
import type { MergeVQTokenizer } from "../trainer/src/tokenizer/mergevq.ts";
import { NamedAdam } from "../trainer/src/train/adam.ts";
import { reconLfqLoss } from "../trainer/src/train/backendParity.ts";

/** GR_d32 at 64² (/16 → 4×4 tokens; no merge schedule over 12 blocks reaches a smaller square K: unmerged). */
export const GR_D32_AT_64 = {
  preset: "GR_d32",
  resolution: 64,
  mergeNum: 0,
  candDistribution: null,
  clsViewSize: 48,
} as const;

export interface BenchTrainStep {
  /** The training loss of the fixed batch (caller owns the scalar). */
  lossOf(): tf.Scalar;
  /** Forward + backward ("fwdbwd") or a full optimiser step ("step", default). */
  step(phase?: "step" | "fwdbwd"): void;
  /** Frees the optimiser state (not the tokenizer or the batch). */
  dispose(): void;
}

export function benchTrainStep(tok: MergeVQTokenizer, x: tf.Tensor4D): BenchTrainStep {
  const weights = tok.getWeights();
  const vars = [...weights.values()];
  const adam = new NamedAdam(weights, { beta1: 0.5, beta2: 0.9, eps: 1e-8 });
  const lossOf = (): tf.Scalar => reconLfqLoss(tok, x);
  return {
    lossOf,
    step(phase = "step") {
      const { value, grads } = tf.variableGrads(lossOf, vars);
      value.dataSync();
      value.dispose();
      if (phase === "step") adam.step(new Map([...weights].map(([n, v]) => [n, grads[v.name]])), 2e-4);
      tf.dispose(Object.values(grads));
    },
    dispose: () => adam.dispose(),
  };
}
