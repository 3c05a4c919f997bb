// Adam (not AdamW) exactly as PyTorch computes it, with explicit, serialisable state (spec §4.3:
// β = (0.5, 0.9), eps 1e-8, no weight decay). Written by hand instead of tf.train.adam so that the step
// count and bias corrections are plain numbers (bit-identical resume: no float32 running β-power products)
// and the moments are addressable by stable parameter names for checkpoints.
import * as tf from "@tensorflow/tfjs";

export interface AdamOptions {
  beta1: number;
  beta2: number;
  eps: number;
}

export class NamedAdam {
  /** Number of update steps taken. */
  t = 0;
  readonly m = new Map<string, tf.Variable>();
  readonly v = new Map<string, tf.Variable>();

  constructor(
    readonly params: ReadonlyMap<string, tf.Variable>,
    readonly opts: AdamOptions,
  ) {
    for (const [name, p] of params) {
      this.m.set(name, ownedVariable(tf.zerosLike(p)));
      this.v.set(name, ownedVariable(tf.zerosLike(p)));
    }
  }

  /**
   * One update with learning rate `lr`: m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²;
   * p ← p − (lr/(1−β1^t)) · m / (√v/√(1−β2^t) + eps). Parameters without a gradient keep their value and
   * their moments decay as if g = 0 (PyTorch skips them; with a fixed graph every parameter has a gradient).
   */
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
        const mNew = g ? tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)) : tf.mul(m, beta1);
        const vNew = g ? tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)) : tf.mul(v, beta2);
        m.assign(mNew);
        v.assign(vNew);
        const denom = tf.add(tf.div(tf.sqrt(vNew), bc2Sqrt), eps);
        p.assign(tf.sub(p, tf.mul(stepSize, tf.div(mNew, denom))));
      }
    });
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}

/** EMA of named parameters: θ_ema ← θ_ema − (1−decay)(θ_ema − θ) (spec §4.3, every micro-batch). */
export class NamedEma {
  readonly shadow = new Map<string, tf.Variable>();
  constructor(
    readonly params: ReadonlyMap<string, tf.Tensor>,
    readonly decay: number,
  ) {
    for (const [name, p] of params) this.shadow.set(name, ownedVariable(p.clone()));
  }
  update(): void {
    const a = 1 - this.decay;
    tf.tidy(() => {
      for (const [name, p] of this.params) {
        const s = this.shadow.get(name) as tf.Variable;
        s.assign(tf.sub(s, tf.mul(a, tf.sub(s, p))));
      }
    });
  }
  dispose(): void {
    for (const s of this.shadow.values()) s.dispose();
  }
}

/** Global L2 norm of a set of gradients (a JS number). */
export function globalNorm(grads: Iterable<tf.Tensor>): number {
  return tf.tidy(() => {
    let acc: tf.Tensor = tf.scalar(0);
    for (const g of grads) acc = tf.add(acc, tf.sum(tf.square(g)));
    return Math.sqrt(acc.dataSync()[0]);
  });
}

/** Non-trainable variable initialised from (and taking ownership of) a temporary tensor. */
export function ownedVariable(init: tf.Tensor): tf.Variable {
  const v = tf.variable(init, false);
  init.dispose();
  return v;
}
