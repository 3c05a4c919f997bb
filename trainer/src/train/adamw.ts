// AdamW for Stage II (docs/model.md §5.3): β = (0.9, 0.95), eps 1e-8, decoupled weight decay, global gradient-norm
// clip. Same conventions as the tokenizer's NamedAdam (adam.ts, left untouched): hand-written PyTorch
// numerics, the step count and bias corrections are plain JS numbers (bit-identical resume), moments keyed
// by stable parameter names for checkpoints.
//
// Weight decay [decision, docs/model.md §5.3]: the INTENDED exemption is kept — tensors with ≥ 2 dims (linear
// weights and embedding tables) decay with `weightDecay`, 1-D tensors (RMSNorm weights) get 0. (Upstream's
// per-step schedule overwrites every group's wd, so it effectively decays the norm weights too.)
// PyTorch order per parameter: p ← p·(1 − lr·wd); m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
// p ← p − (lr/(1−β1^t)) · m / (√v/√(1−β2^t) + eps).
// Clipping (torch.nn.utils.clip_grad_norm_): total = ‖all grads‖₂; when total > maxNorm every gradient is
// scaled by maxNorm/(total + 1e-6).
import * as tf from "@tensorflow/tfjs";
import { globalNorm, ownedVariable } from "./adam.ts";

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Per-parameter decay factor override; default: `weightDecay` for rank ≥ 2, 0 for 1-D (and scalars). */
  decayFor?: (name: string, shape: readonly number[]) => number;
}

export const AR_ADAMW_DEFAULTS = { beta1: 0.9, beta2: 0.95, eps: 1e-8 } as const;

/** Default decay rule: weights/embeddings (≥ 2-D) decay, 1-D tensors (norm weights, biases) do not. */
export function defaultDecay(weightDecay: number): (name: string, shape: readonly number[]) => number {
  return (_name, shape) => (shape.length >= 2 ? weightDecay : 0);
}

export class NamedAdamW {
  /** Number of update steps taken. */
  t = 0;
  readonly m = new Map<string, tf.Variable>();
  readonly v = new Map<string, tf.Variable>();
  /** Weight decay of every parameter (after the 1-D exemption). */
  readonly decay = new Map<string, number>();

  constructor(
    readonly params: ReadonlyMap<string, tf.Variable>,
    readonly opts: AdamWOptions,
  ) {
    const rule = opts.decayFor ?? defaultDecay(opts.weightDecay);
    for (const [name, p] of params) {
      this.m.set(name, ownedVariable(tf.zerosLike(p)));
      this.v.set(name, ownedVariable(tf.zerosLike(p)));
      this.decay.set(name, rule(name, p.shape));
    }
  }

  /** One AdamW update with learning rate `lr` (gradients already clipped / averaged by the caller). */
  step(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    this.t += 1;
    const { beta1, beta2, eps } = this.opts;
    const bc1 = 1 - beta1 ** this.t;
    const bc2Sqrt = Math.sqrt(1 - beta2 ** this.t);
    const stepSize = lr / bc1;
    tf.tidy(() => {
      for (const [name, p] of this.params) {
        const g = grads.get(name);
        const m = this.m.get(name) as tf.Variable;
        const v = this.v.get(name) as tf.Variable;
        const wd = this.decay.get(name) ?? 0;
        const decayed = wd > 0 ? tf.mul(p, 1 - lr * wd) : p;
        const mNew = g ? tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)) : tf.mul(m, beta1);
        const vNew = g ? tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)) : tf.mul(v, beta2);
        m.assign(mNew);
        v.assign(vNew);
        const denom = tf.add(tf.div(tf.sqrt(vNew), bc2Sqrt), eps);
        p.assign(tf.sub(decayed, tf.mul(stepSize, tf.div(mNew, denom))));
      }
    });
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}

/**
 * Global-norm clipping: returns the norm before clipping and the gradients to apply (a new map of new
 * tensors when clipped — the caller disposes them — else the input map itself).
 */
export function clipByGlobalNorm(
  grads: ReadonlyMap<string, tf.Tensor>,
  maxNorm: number | null,
): { norm: number; grads: ReadonlyMap<string, tf.Tensor>; clipped: boolean } {
  const norm = globalNorm(grads.values());
  if (maxNorm === null || !Number.isFinite(norm) || norm <= maxNorm) return { norm, grads, clipped: false };
  const f = maxNorm / (norm + 1e-6);
  return { norm, grads: new Map([...grads].map(([n, g]) => [n, tf.mul(g, f)])), clipped: true };
}
