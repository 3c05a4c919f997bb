// Adversarial part of Stage I (docs/model.md §4.1–4.2, pitfall 10):
// - PatchGAN discriminator (pix2pix NLayer; `ndf`, `n_layers`; BatchNorm in train mode, i.e. batch
//   statistics in every pass; real and fake go through separate forward calls).
// - hinge D loss, non-saturating G loss on the per-sample mean patch logit.
// - LeCam regulariser with EMAs of the mean real/fake logits (decay 0.999), EMAs updated BEFORE the
//   regulariser is computed and treated as constants.
// - adoptWeight (disc_start gate; 0 in all configs). The adaptive (gradient-norm ratio) weight of VQGAN is
//   NOT used by MergeVQ (gen_loss_weight is set), so it is deliberately not implemented.
//
// Running BN statistics are not kept: upstream only uses them for the validation D loss, which this
// trainer does not compute (docs/model.md §4.2 decision: LeCam EMAs update only in training steps).
import * as tf from "@tensorflow/tfjs";
import { conv2dValid } from "../nn/kernels.ts";
import type { Rng } from "../util/rng.ts";

export interface PatchGanConfig {
  ndf: number;
  nLayers: number;
  inChannels?: number;
}

interface ConvSpec {
  name: string;
  cin: number;
  cout: number;
  stride: number;
  bias: boolean;
  bn: boolean;
  act: boolean;
}

function layerSpecs(cfg: PatchGanConfig): ConvSpec[] {
  const { ndf, nLayers } = cfg;
  const cin0 = cfg.inChannels ?? 3;
  const specs: ConvSpec[] = [{ name: "conv0", cin: cin0, cout: ndf, stride: 2, bias: true, bn: false, act: true }];
  let mult = 1;
  for (let n = 1; n < nLayers; n++) {
    const prev = mult;
    mult = Math.min(2 ** n, 8);
    specs.push({ name: `conv${n}`, cin: ndf * prev, cout: ndf * mult, stride: 2, bias: false, bn: true, act: true });
  }
  const prev = mult;
  mult = Math.min(2 ** nLayers, 8);
  specs.push({
    name: `conv${nLayers}`,
    cin: ndf * prev,
    cout: ndf * mult,
    stride: 1,
    bias: false,
    bn: true,
    act: true,
  });
  specs.push({ name: `conv${nLayers + 1}`, cin: ndf * mult, cout: 1, stride: 1, bias: true, bn: false, act: false });
  return specs;
}

export class PatchGanDiscriminator {
  private readonly vars = new Map<string, tf.Variable>();
  private readonly specs: ConvSpec[];

  /**
   * Init as upstream: conv weights N(0, 0.02), BN γ N(1, 0.02), β 0; the two conv biases (first and last)
   * keep the PyTorch default U(±1/√fan_in).
   */
  constructor(
    readonly config: PatchGanConfig,
    rng: Rng,
  ) {
    this.specs = layerSpecs(config);
    for (const s of this.specs) {
      const k = 16 * s.cin * s.cout;
      this.add(`disc/${s.name}/kernel`, tf.tensor4d(rng.normalArray(k, 0, 0.02), [4, 4, s.cin, s.cout]));
      if (s.bias) {
        const b = 1 / Math.sqrt(16 * s.cin);
        this.add(`disc/${s.name}/bias`, tf.tensor1d(rng.uniformArray(s.cout, -b, b)));
      }
      if (s.bn) {
        this.add(`disc/${s.name}/bn/gamma`, tf.tensor1d(rng.normalArray(s.cout, 1, 0.02)));
        this.add(`disc/${s.name}/bn/beta`, tf.zeros([s.cout]));
      }
    }
  }

  private add(name: string, init: tf.Tensor): void {
    this.vars.set(name, tf.variable(init, true));
    init.dispose();
  }

  /** Trainable variables in a fixed order. */
  trainableVariables(): tf.Variable[] {
    return [...this.vars.values()];
  }

  /** Named weights (stable names, independent of tf's global variable registry). */
  getWeights(): Map<string, tf.Tensor> {
    return new Map([...this.vars.entries()]);
  }

  setWeights(weights: Map<string, tf.Tensor>): void {
    for (const [name, v] of this.vars) {
      const w = weights.get(name);
      if (!w) throw new Error(`discriminator weight ${name} missing`);
      if (w.shape.join() !== v.shape.join())
        throw new Error(`discriminator weight ${name}: shape [${w.shape}] != [${v.shape}]`);
      v.assign(w);
    }
  }

  /** Patch logits `[B,h,w,1]` for NHWC images. Train-mode BN (batch statistics, eps 1e-5). */
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      let h: tf.Tensor4D = x;
      for (const s of this.specs) {
        const kernel = this.vars.get(`disc/${s.name}/kernel`) as tf.Variable as unknown as tf.Tensor4D;
        // conv2dValid: native conv where the backend has its filter gradient, else an equivalent (wasm).
        h = conv2dValid(
          tf.pad(h, [
            [0, 0],
            [1, 1],
            [1, 1],
            [0, 0],
          ]),
          kernel,
          s.stride,
        );
        if (s.bias) h = tf.add(h, this.vars.get(`disc/${s.name}/bias`) as tf.Variable) as tf.Tensor4D;
        if (s.bn) {
          const { mean, variance } = tf.moments(h, [0, 1, 2]);
          h = tf.batchNorm<tf.Rank.R4>(
            h,
            mean as tf.Tensor1D,
            variance as tf.Tensor1D,
            this.vars.get(`disc/${s.name}/bn/beta`) as tf.Variable as unknown as tf.Tensor1D,
            this.vars.get(`disc/${s.name}/bn/gamma`) as tf.Variable as unknown as tf.Tensor1D,
            1e-5,
          );
        }
        if (s.act) h = tf.leakyRelu(h, 0.2);
      }
      return h;
    });
  }

  /** Output patch grid side for a square input. */
  outputSize(inputSize: number): number {
    let s = inputSize;
    for (const spec of this.specs) s = Math.floor((s + 2 - 4) / spec.stride) + 1;
    return s;
  }

  parameterCount(): number {
    let n = 0;
    for (const v of this.vars.values()) n += v.size;
    return n;
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
  }
}

/** `hinge = ½(mean relu(1 − D(x)) + mean relu(1 + D(x̂)))`. */
export function hingeDLoss(logitsReal: tf.Tensor, logitsFake: tf.Tensor): tf.Scalar {
  return tf.tidy(
    () =>
      tf.mul(
        0.5,
        tf.add(tf.mean(tf.relu(tf.sub(1, logitsReal))), tf.mean(tf.relu(tf.add(1, logitsFake)))),
      ) as tf.Scalar,
  );
}

/** Non-saturating G loss: `mean_b softplus(−mean_{patches} D(x̂)_b)`. */
export function nonSaturatingGLoss(logitsFake: tf.Tensor4D): tf.Scalar {
  return tf.tidy(() => tf.mean(tf.softplus(tf.neg(tf.mean(logitsFake, [1, 2, 3])))) as tf.Scalar);
}

/** `adopt_weight`: 0 before `threshold` steps, else `weight` (disc_start = 0 in every config). */
export function adoptWeight(weight: number, step: number, threshold: number, value = 0): number {
  return step < threshold ? value : weight;
}

/** LeCam regulariser state: EMAs of the mean real and fake logits (decay 0.999, init 0). */
export class LeCamEma {
  constructor(
    public emaReal = 0,
    public emaFake = 0,
    readonly decay = 0.999,
  ) {}

  /** Update the EMAs with this batch's mean logits (plain numbers; no gradient). */
  update(meanReal: number, meanFake: number): void {
    this.emaReal = this.emaReal * this.decay + meanReal * (1 - this.decay);
    this.emaFake = this.emaFake * this.decay + meanFake * (1 - this.decay);
  }

  /** `mean(relu(D(x) − e_f)²) + mean(relu(e_r − D(x̂))²)` with the current EMAs as constants. */
  regulariser(logitsReal: tf.Tensor, logitsFake: tf.Tensor): tf.Scalar {
    return tf.tidy(
      () =>
        tf.add(
          tf.mean(tf.square(tf.relu(tf.sub(logitsReal, this.emaFake)))),
          tf.mean(tf.square(tf.relu(tf.sub(this.emaReal, logitsFake)))),
        ) as tf.Scalar,
    );
  }

  getState(): { emaReal: number; emaFake: number } {
    return { emaReal: this.emaReal, emaFake: this.emaFake };
  }
  setState(s: { emaReal: number; emaFake: number }): void {
    this.emaReal = s.emaReal;
    this.emaFake = s.emaFake;
  }
}
