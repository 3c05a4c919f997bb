// Adam (not AdamW) exactly as PyTorch computes it, with explicit, serialisable state (docs/model.md §4.3:
// β = (0.5, 0.9), eps 1e-8, no weight decay). Written by hand instead of tf.train.adam so that the step
// count and bias corrections are plain numbers (bit-identical resume: no float32 running β-power products)
// and the moments are addressable by stable parameter names for checkpoints.
import * as tf from "@tensorflow/tfjs";
import { FUSED_ADAM, fusedKernel } from "../nn/fusedOps.ts";

export interface AdamOptions {
  beta1: number;
  beta2: number;
  eps: number;
}

/** Largest parameter (elements) that NamedAdam updates stacked with its same-shape peers. */
const GROUP_MAX_SIZE = 1 << 15;

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
   *
   * Performance (same float32 operations per element as a per-parameter loop, so bit-identical): small
   * parameters of equal shape are updated together — stacked along a new axis, one elementwise chain,
   * unstacked — and the scalar constants are made once per step. A model with a few hundred parameters but
   * a few dozen distinct shapes then runs ~20 ops per shape instead of ~13 ops + 7 scalar uploads per
   * parameter, which matters on backends where every op has a fixed dispatch cost (tfjs-node: ~10 µs).
   * Parameters above GROUP_MAX_SIZE elements are updated one by one: for them the stack/unstack copies
   * would cost more than the dispatches they save.
   */
  step(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    this.t += 1;
    const { beta1, beta2, eps } = this.opts;
    const bc1 = 1 - beta1 ** this.t;
    const bc2Sqrt = Math.sqrt(1 - beta2 ** this.t);
    const stepSize = lr / bc1;
    // Where the backend has the fused kernel, every parameter with a gradient is updated by one op (same float32
    // operations, bit-identical); the rest take the composed path below.
    const fused = fusedKernel(FUSED_ADAM) ? [...this.params.keys()].filter((n) => grads.get(n)) : [];
    if (fused.length > 0) this.fusedStep(fused, grads, { beta1, beta2, eps, bc2Sqrt, stepSize });
    const done = new Set(fused);
    // Same-shape parameters with / without a gradient, in parameter order.
    const groups = new Map<string, string[]>();
    for (const [name, p] of this.params) {
      if (done.has(name)) continue;
      const key = p.size > GROUP_MAX_SIZE ? `1:${name}` : `${grads.get(name) ? "g" : "-"}${p.shape.join(",")}`;
      const names = groups.get(key);
      if (names) names.push(name);
      else groups.set(key, [name]);
    }
    tf.tidy(() => {
      const c = {
        beta1: tf.scalar(beta1),
        oneMinusBeta1: tf.scalar(1 - beta1),
        beta2: tf.scalar(beta2),
        oneMinusBeta2: tf.scalar(1 - beta2),
        bc2Sqrt: tf.scalar(bc2Sqrt),
        eps: tf.scalar(eps),
        stepSize: tf.scalar(stepSize),
      };
      for (const names of groups.values()) {
        const stacked = (ts: tf.Tensor[]): tf.Tensor => (ts.length === 1 ? ts[0] : tf.stack(ts));
        const unstacked = (t: tf.Tensor): tf.Tensor[] => (names.length === 1 ? [t] : tf.unstack(t));
        const p = stacked(names.map((n) => this.params.get(n) as tf.Variable));
        const m = stacked(names.map((n) => this.m.get(n) as tf.Variable));
        const v = stacked(names.map((n) => this.v.get(n) as tf.Variable));
        const hasGrad = Boolean(grads.get(names[0]));
        const g = hasGrad ? stacked(names.map((n) => grads.get(n) as tf.Tensor)) : null;
        const mNew = g ? tf.add(tf.mul(m, c.beta1), tf.mul(g, c.oneMinusBeta1)) : tf.mul(m, c.beta1);
        const vNew = g ? tf.add(tf.mul(v, c.beta2), tf.mul(tf.square(g), c.oneMinusBeta2)) : tf.mul(v, c.beta2);
        const denom = tf.add(tf.div(tf.sqrt(vNew), c.bc2Sqrt), c.eps);
        const pNew = tf.sub(p, tf.mul(c.stepSize, tf.div(mNew, denom)));
        const [ms, vs, ps] = [unstacked(mNew), unstacked(vNew), unstacked(pNew)];
        names.forEach((n, i) => {
          (this.m.get(n) as tf.Variable).assign(ms[i]);
          (this.v.get(n) as tf.Variable).assign(vs[i]);
          (this.params.get(n) as tf.Variable).assign(ps[i]);
        });
      }
    });
  }

  private fusedStep(
    names: string[],
    grads: ReadonlyMap<string, tf.Tensor>,
    c: { beta1: number; beta2: number; eps: number; bc2Sqrt: number; stepSize: number },
  ): void {
    const inputs: Record<string, tf.Tensor> = {};
    names.forEach((n, i) => {
      inputs[`p${i}`] = this.params.get(n) as tf.Variable;
      inputs[`m${i}`] = this.m.get(n) as tf.Variable;
      inputs[`v${i}`] = this.v.get(n) as tf.Variable;
      inputs[`g${i}`] = grads.get(n) as tf.Tensor;
    });
    // The constants as the composed path's float32 scalars hold them.
    const f = Math.fround;
    const outs = tf.engine().runKernel(FUSED_ADAM, inputs, {
      n: names.length,
      beta1: f(c.beta1),
      beta2: f(c.beta2),
      one_minus_beta1: f(1 - c.beta1),
      one_minus_beta2: f(1 - c.beta2),
      bc2_sqrt: f(c.bc2Sqrt),
      eps: f(c.eps),
      step_size: f(c.stepSize),
    }) as tf.Tensor[];
    const N = names.length;
    names.forEach((n, i) => {
      (this.params.get(n) as tf.Variable).assign(outs[i]);
      (this.m.get(n) as tf.Variable).assign(outs[N + i]);
      (this.v.get(n) as tf.Variable).assign(outs[2 * N + i]);
    });
    tf.dispose(outs);
  }

  dispose(): void {
    for (const x of [...this.m.values(), ...this.v.values()]) x.dispose();
  }
}

/** EMA of named parameters: θ_ema ← θ_ema − (1−decay)(θ_ema − θ) (docs/model.md §4.3, after every micro-batch). */
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
