// The layers both models are built from. Each is a Module (module.ts) that declares its parameters (names,
// shapes, initialisation) in its constructor beside its forward; the values live in a ParamStore (params.ts)
// under dotted names ("<block>.<layer>.weight"). The functional forms below the classes (linear, conv3x3,
// layerNorm, …) take a parameter store and a name and are what the classes run.
import * as tf from "@tensorflow/tfjs";
import {
  BIAS_ADD,
  BIAS_ADD_GRAD,
  fusedKernel,
  GELU,
  GELU_GRAD,
  LAYER_NORM,
  LAYER_NORM_GRAD,
  LINEAR,
  LINEAR_GRAD,
  SCALED_RESIDUAL,
  SCALED_RESIDUAL_GRAD,
} from "./fusedOps.ts";
import { groupNorm, groupNormSilu } from "./groupNorm.ts";
import { conv2dValid, depthwiseConv3x3, matMul2d, pad1 } from "./kernels.ts";
import { Module } from "./module.ts";
import { fnv1a, type Init, ONES, type ParamGroup, type Params, torchDefault, vitWeight, ZEROS } from "./params.ts";

type InitScheme = "torch" | "vit";

/** Weight and bias initialisers of a scheme: "torch" = U(±1/√fan_in) for both, "vit" = trunc-normal .02 and 0. */
const schemeInits = (scheme: InitScheme, fanIn: number): { w: Init; b: Init } =>
  scheme === "torch" ? { w: torchDefault(fanIn), b: torchDefault(fanIn) } : { w: vitWeight, b: ZEROS };

/**
 * Conv2d, weight [kh, kw, Cin, Cout] (+ bias [Cout]). The forward handles the two kernel sizes the models use:
 * 3×3 with symmetric padding 1 (stride 1 or 2) and 1×1 (a matmul over channels); other kernels (the ViT patch
 * embedding) read `weight`/`bias` themselves.
 */
export class Conv2d extends Module {
  readonly weight: string;
  readonly bias: string | null;
  readonly kernel: readonly [number, number];

  constructor(
    name: string,
    kh: number,
    kw: number,
    cin: number,
    cout: number,
    opts: { bias: boolean; init: InitScheme; group: ParamGroup },
  ) {
    super(name);
    const { w, b } = schemeInits(opts.init, cin * kh * kw);
    this.kernel = [kh, kw];
    this.weight = this.param("weight", [kh, kw, cin, cout], w, opts.group);
    this.bias = opts.bias ? this.param("bias", [cout], b, opts.group) : null;
  }

  forward(P: Params, x: tf.Tensor4D, stride = 1): tf.Tensor4D {
    const [kh, kw] = this.kernel;
    if (kh === 1 && kw === 1 && stride === 1) return linear(P, this.name, x, this.bias !== null) as tf.Tensor4D;
    if (kh !== 3 || kw !== 3) throw new Error(`${this.name}: Conv2d.forward supports 1×1 and 3×3 kernels`);
    return conv3x3(P, this.name, x, stride, this.bias !== null);
  }

  /** y + bias over the last axis (identity without a bias), for callers that compute the conv themselves. */
  addBias<T extends tf.Tensor>(P: Params, y: T): T {
    return this.bias === null ? y : biasAdd(y, P.get(this.bias));
  }
}

/** Depthwise 3×3 conv, weight [3, 3, C, 1] + bias [C] (fan_in = 9 for the PyTorch default). */
export class DepthwiseConv3x3 extends Module {
  readonly weight: string;
  readonly bias: string;

  constructor(name: string, C: number, init: InitScheme, group: ParamGroup) {
    super(name);
    const { w, b } = schemeInits(init, 9);
    this.weight = this.param("weight", [3, 3, C, 1], w, group);
    this.bias = this.param("bias", [C], b, group);
  }

  forward(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    return depthwiseConv3x3(x, P.get(this.weight), P.get(this.bias));
  }
}

/**
 * Linear, weight [Cin, Cout] (PyTorch's [out, in] transposed) + optional bias, on the last axis. `init` is a
 * scheme (weight and bias as above) or one initialiser for the weight (then a bias starts at 0).
 */
export class Linear extends Module {
  readonly hasBias: boolean;

  constructor(
    name: string,
    cin: number,
    cout: number,
    opts: { init: InitScheme | Init; group: ParamGroup; bias?: boolean },
  ) {
    super(name);
    const { w, b } = typeof opts.init === "string" ? schemeInits(opts.init, cin) : { w: opts.init, b: ZEROS };
    this.hasBias = opts.bias ?? true;
    this.param("weight", [cin, cout], w, opts.group);
    if (this.hasBias) this.param("bias", [cout], b, opts.group);
  }

  forward(P: Params, x: tf.Tensor): tf.Tensor {
    return linear(P, this.name, x, this.hasBias);
  }
}

/** weight (ones) and bias (zeros) [C] of LayerNorm and GroupNorm. */
abstract class AffineNorm extends Module {
  constructor(name: string, C: number, group: ParamGroup) {
    super(name);
    this.param("weight", [C], ONES, group);
    this.param("bias", [C], ZEROS, group);
  }
}

/** LayerNorm over the last axis (timm default eps 1e-5). */
export class LayerNorm extends AffineNorm {
  forward<T extends tf.Tensor>(P: Params, x: T): T {
    return layerNorm(P, this.name, x);
  }
}

/** GroupNorm on NHWC maps (GN32, eps 1e-6 unless told otherwise); `silu` is SiLU(GN(x)) in one pass. */
export class GroupNorm extends AffineNorm {
  readonly groups: number;
  readonly eps: number;

  constructor(name: string, C: number, group: ParamGroup, opts: { groups?: number; eps?: number } = {}) {
    super(name, C, group);
    this.groups = opts.groups ?? 32;
    this.eps = opts.eps ?? 1e-6;
  }

  forward(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    return groupNorm(P, this.name, x, this.groups, this.eps);
  }

  silu(P: Params, x: tf.Tensor4D): tf.Tensor4D {
    return groupNormSilu(P, this.name, x, this.groups, this.eps);
  }
}

/** LayerScale γ ⊙ x, γ [C] initialised to 1e-5. */
export class LayerScale extends Module {
  constructor(name: string, C: number, group: ParamGroup) {
    super(name);
    this.param("gamma", [C], { kind: "const", value: 1e-5 }, group);
  }

  forward(P: Params, x: tf.Tensor): tf.Tensor {
    return layerScale(P, this.name, x);
  }

  /** residual + γ·y (the block's skip connection through this LayerScale). */
  residual<T extends tf.Tensor>(P: Params, residual: T, y: tf.Tensor): T {
    return scaledResidual(P, this.name, residual, y);
  }
}

/** RMSNorm over the last axis, weight [D] (ones). */
export class RMSNorm extends Module {
  constructor(name: string, D: number, group: ParamGroup) {
    super(name);
    this.param("weight", [D], ONES, group);
  }

  forward<T extends tf.Tensor>(P: Params, x: T): T {
    return rmsNorm(P, this.name, x);
  }
}

/** Embedding table [V, D] at int32 indices (any shape) → [...idx.shape, D]; see `embedding` for the gradient. */
export class Embedding extends Module {
  readonly weight: string;

  constructor(name: string, V: number, D: number, init: Init, group: ParamGroup) {
    super(name);
    this.weight = this.param("weight", [V, D], init, group);
  }

  forward(P: Params, idx: tf.Tensor): tf.Tensor {
    return embedding(P.get(this.weight), idx);
  }
}

// Gradients of the fused kernels (trainer/src/nn/fusedOps.ts), used where a backend provides them.
tf.registerGradient({
  kernelName: GELU,
  inputsToSave: ["x"],
  gradFunc: (dy, [x]) => ({ x: () => tf.engine().runKernel(GELU_GRAD, { dy: dy as tf.Tensor, x }) as tf.Tensor }),
});
tf.registerGradient({
  kernelName: BIAS_ADD,
  gradFunc: (dy) => ({
    x: () => dy as tf.Tensor,
    b: () => tf.engine().runKernel(BIAS_ADD_GRAD, { dy: dy as tf.Tensor }) as tf.Tensor,
  }),
});
tf.registerGradient({
  kernelName: LINEAR,
  inputsToSave: ["x", "w"],
  gradFunc: (dy, [x, w], attrs) => {
    const hasBias = Boolean((attrs as { hasBias?: boolean }).hasBias);
    // One kernel for the three gradients, run here (not lazily in a closure: see groupNorm.ts).
    const [dx, dw, db] = tf
      .engine()
      .runKernel(LINEAR_GRAD, { dy: Array.isArray(dy) ? dy[0] : dy, x, w }, { hasBias }) as tf.Tensor[];
    const grads: Record<string, () => tf.Tensor> = { x: () => dx, w: () => dw };
    if (hasBias) grads.b = () => db;
    else db.dispose();
    return grads;
  },
});
tf.registerGradient({
  kernelName: SCALED_RESIDUAL,
  inputsToSave: ["y", "gamma"],
  gradFunc: (dout, [y, gamma]) => {
    const d = Array.isArray(dout) ? dout[0] : dout;
    const [dy, dGamma] = tf.engine().runKernel(SCALED_RESIDUAL_GRAD, { dout: d, y, gamma }) as tf.Tensor[];
    return { x: () => d, y: () => dy, gamma: () => dGamma };
  },
});
tf.registerGradient({
  kernelName: LAYER_NORM,
  inputsToSave: ["x", "gamma"],
  outputsToSave: [false, true, true],
  gradFunc: (dy, saved) => {
    const [x, gamma, mean, rstd] = saved;
    // One kernel for the three gradients, run here (not lazily in a closure: see groupNorm.ts).
    const [dx, dGamma, dBeta] = tf.engine().runKernel(LAYER_NORM_GRAD, {
      dy: Array.isArray(dy) ? dy[0] : dy,
      x,
      gamma,
      mean,
      rstd,
    }) as tf.Tensor[];
    return { x: () => dx, gamma: () => dGamma, beta: () => dBeta };
  },
});

/** Exact (erf) GELU: 0.5·x·(1 + erf(x/√2)). */
export const gelu = (x: tf.Tensor): tf.Tensor =>
  fusedKernel(GELU)
    ? (tf.engine().runKernel(GELU, { x }) as tf.Tensor)
    : tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));

/** x + b with b [C] over the last axis of x. */
export const biasAdd = <T extends tf.Tensor>(x: T, b: tf.Tensor): T =>
  (fusedKernel(BIAS_ADD) ? tf.engine().runKernel(BIAS_ADD, { x, b }) : tf.add(x, b)) as T;

export const silu = (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(x));

/** LayerNorm over the last axis (timm default eps 1e-5). */
export function layerNorm<T extends tf.Tensor>(P: Params, name: string, x: T, eps = 1e-5): T {
  if (fusedKernel(LAYER_NORM)) {
    return tf.tidy(() => {
      const inputs = { x, gamma: P.get(`${name}.weight`), beta: P.get(`${name}.bias`) };
      return (tf.engine().runKernel(LAYER_NORM, inputs, { eps }) as tf.Tensor[])[0];
    }) as T;
  }
  const { mean, variance } = tf.moments(x, -1, true);
  const y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
  return tf.add(tf.mul(y, P.get(`${name}.weight`)), P.get(`${name}.bias`)) as T;
}

/**
 * Linear on the last axis: [..., Cin] → [..., Cout]. One kernel each way where fused; composed, the input is
 * flattened to 2-D for the matmul.
 */
export function linear(P: Params, name: string, x: tf.Tensor, bias = true): tf.Tensor {
  const w = P.get(`${name}.weight`);
  if (fusedKernel(LINEAR) && x.dtype === "float32") {
    const inputs: tf.NamedTensorMap = bias ? { x, w, b: P.get(`${name}.bias`) } : { x, w };
    return tf.engine().runKernel(LINEAR, inputs, { hasBias: bias }) as tf.Tensor;
  }
  const [cin, cout] = w.shape.length === 4 ? [w.shape[2], w.shape[3]] : w.shape; // 1×1 conv or linear
  const lead = x.shape.slice(0, -1);
  const y = matMul2d(tf.reshape(x, [-1, cin]) as tf.Tensor2D, tf.reshape(w, [cin, cout]) as tf.Tensor2D); // [..., Cin] → [N, Cout]
  return tf.reshape(bias ? biasAdd(y, P.get(`${name}.bias`)) : y, [...lead, cout]); // → [..., Cout]
}

/** Conv 3×3, stride 1 or 2, symmetric padding 1 (PyTorch `padding=1`), optional bias. */
export function conv3x3(P: Params, name: string, x: tf.Tensor4D, stride = 1, bias = true): tf.Tensor4D {
  const w = P.get(`${name}.weight`) as tf.Tensor4D;
  const y = stride === 1 ? conv2dValid(x, w, 1, "same") : conv2dValid(pad1(x), w, stride);
  return bias ? biasAdd(y, P.get(`${name}.bias`)) : y;
}

/** LayerScale: γ ⊙ x (γ initialised to 1e-5). */
export const layerScale = (P: Params, name: string, x: tf.Tensor): tf.Tensor => tf.mul(x, P.get(`${name}.gamma`));

/** A residual through LayerScale: x + γ·y, γ = `${name}.gamma` [D] over the last axis (one kernel where fused). */
export function scaledResidual<T extends tf.Tensor>(P: Params, name: string, x: T, y: tf.Tensor): T {
  const gamma = P.get(`${name}.gamma`);
  return (
    fusedKernel(SCALED_RESIDUAL) ? tf.engine().runKernel(SCALED_RESIDUAL, { x, y, gamma }) : tf.add(x, tf.mul(y, gamma))
  ) as T;
}

/** RMSNorm over the last axis: x / √(mean(x²) + eps) · weight. */
export function rmsNorm<T extends tf.Tensor>(P: Params, name: string, x: T, eps = 1e-5): T {
  const ms = tf.mean(tf.square(x), -1, true);
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), P.get(`${name}.weight`)) as T;
}

/**
 * float32 one-hot. (tfjs-backend-wasm 4.22's OneHot ignores a float32 dtype and writes int32 bit patterns,
 * so build it as int32 and cast.)
 */
export const oneHotF32 = (idx: tf.Tensor, depth: number): tf.Tensor =>
  tf.cast(tf.oneHot(idx as tf.Tensor1D, depth), "float32");

/**
 * Embedding lookup table [V, D] at int32 indices (any shape) → [...idx.shape, D]. The forward is a gather;
 * where the backend has no UnsortedSegmentSum kernel (tfjs-backend-wasm) the table gradient is computed as
 * one_hot(idx)ᵀ·dy instead of tfjs's gather gradient.
 */
export function embedding(table: tf.Tensor, idx: tf.Tensor): tf.Tensor {
  const [V, D] = table.shape as [number, number];
  const flat = tf.reshape(idx, [-1]) as tf.Tensor1D;
  let out: tf.Tensor;
  if (tf.getKernel("UnsortedSegmentSum", tf.getBackend()) !== undefined) {
    out = tf.gather(table, flat);
  } else {
    // Indices go through save(): tensors merely captured by the closure are freed by the caller's tidy
    // before the backward pass runs.
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [t, i, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.GradSaveFunc];
      save([i]);
      return {
        value: tf.gather(t, i),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
          tf.tidy(() => [
            matMul2d(tf.transpose(oneHotF32(saved[0] as tf.Tensor1D, V)) as tf.Tensor2D, dy as tf.Tensor2D), // [V,N]·[N,D]
            tf.zerosLike(saved[0]),
          ]),
      };
    });
    out = f(table, flat);
  }
  return tf.reshape(out, [...idx.shape, D]);
}

/** Training-mode dropout with deterministic per-site seeds (site name + step seed), identity otherwise. */
export interface DropoutCtx {
  training: boolean;
  seed: number;
}

export function dropout(x: tf.Tensor, rate: number, ctx: DropoutCtx, site: string): tf.Tensor {
  if (!ctx.training || rate <= 0) return x;
  return tf.dropout(x, rate, undefined, fnv1a(`${ctx.seed}/${site}`));
}
