// MergeVQ spec §2.1 "Primitive blocks" (+ §2.7 initialisation, §11 TF.js mapping, pitfalls 9 and 22):
// GroupNorm(32), LayerNorm, exact GELU, ResBlock, Down/Up convs with depth-to-space (DCR), multi-head
// attention (optionally proportional, returning the keys for the ToMe metric), MLP / MixMLP, LayerScale and
// adaptive GroupNorm. All maps are NHWC; sequences [B, N, C]. Upstream modules followed: taming /
// Open-MAGVIT2 `ResnetBlock`, timm `vision_transformer.Block`, ToMe `tome/patch/timm.py`.
//
// Gradients on the wasm backend: tfjs-backend-wasm registers no Conv2DBackpropFilter and no depthwise
// backprop kernels, and its transposed matmuls / Conv2DBackpropInput are slow, so `conv2dValid`,
// `matMul2d` and `depthwiseConv3x3` pick, per backend, the native ops or equivalent formulations whose
// gradients use only fast forward kernels (see `setConvGradMode`).
import * as tf from "@tensorflow/tfjs";
import {
  type Init,
  ONES,
  type ParamGroup,
  type ParamSpec,
  type Params,
  torchDefault,
  vitWeight,
  ZEROS,
} from "../nn/params.ts";

// ───────────────────────────── convolution / matmul cores ─────────────────────────────

export type ConvGradMode = "auto" | "native" | "manual";
let convGradMode: ConvGradMode = "auto";

/**
 * "auto": on the wasm backend use the manual formulations (its Conv2DBackpropInput and transposed
 * BatchMatMul are naive, ~10× slower than its XNNPACK forward kernels, and it has no
 * Conv2DBackpropFilter / depthwise backprop kernels at all); native tfjs gradients elsewhere.
 * "native"/"manual" force one path (tests compare them on the cpu backend).
 */
export function setConvGradMode(mode: ConvGradMode): void {
  convGradMode = mode;
}

function manualGrad(kernel?: string): boolean {
  if (convGradMode !== "auto") return convGradMode === "manual";
  const backend = tf.getBackend();
  return backend === "wasm" || (kernel !== undefined && tf.getKernel(kernel, backend) === undefined);
}

/**
 * x [N, K] · w [K, O] → [N, O]. Manual gradient with explicit transposes instead of transposed matmuls:
 * dx = dy·wᵀ, dw = xᵀ·dy (or (dyᵀ·x)ᵀ, transposing whichever activation is narrower).
 */
export function matMul2d(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  if (!manualGrad()) return tf.matMul(x, w);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, wi, save] = args as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    save([xi, wi]);
    return {
      value: tf.matMul(xi, wi) as tf.Tensor2D,
      // tf.tidy: tfjs keeps every tensor created during backprop until the gradient call ends, so
      // temporaries of manual gradients must be freed here to keep peak memory at the native level.
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
          const dx = tf.matMul(dy, tf.transpose(ws)); // [N, O]·[O, K]
          const dw =
            xs.shape[1] <= dy.shape[1]
              ? tf.matMul(tf.transpose(xs), dy) // [K, N]·[N, O]
              : tf.transpose(tf.matMul(tf.transpose(dy), xs)); // ([O, N]·[N, K])ᵀ
          return [dx, dw];
        }),
    };
  });
  return f(x, w) as tf.Tensor2D;
}

/** Insert stride−1 zeros between the rows/columns of dy: [B, Ho, Wo, C] → [B, (Ho−1)s+1, (Wo−1)s+1, C]. */
function dilate(dy: tf.Tensor4D, s: number): tf.Tensor4D {
  if (s === 1) return dy;
  const [B, ho, wo, c] = dy.shape;
  const z = tf.pad(tf.reshape(dy, [B, ho, 1, wo, 1, c]), [
    [0, 0],
    [0, 0],
    [0, s - 1],
    [0, 0],
    [0, s - 1],
    [0, 0],
  ]); // [B, Ho, s, Wo, s, C]: dy at offset 0 of every s×s cell
  return tf.slice(
    tf.reshape(z, [B, ho * s, wo * s, c]),
    [0, 0, 0, 0],
    [B, (ho - 1) * s + 1, (wo - 1) * s + 1, c],
  ) as tf.Tensor4D;
}

/**
 * dW of a VALID conv: per tap (i, j), dyᵀ·x_ij summed over (b, y, x). → [kh, kw, Cin, Cout]. Strided
 * convs use the dilated dy with contiguous slices (wasm's StridedSlice is slow).
 */
function convFilterGrad(x: tf.Tensor4D, dyIn: tf.Tensor4D, kh: number, kw: number, stride: number): tf.Tensor4D {
  const dy = dilate(dyIn, stride);
  const [B, , , cin] = x.shape;
  const [, ho, wo, cout] = dy.shape;
  const dyT = tf.transpose(tf.reshape(dy, [B * ho * wo, cout])); // [Cout, B·Ho·Wo]
  const taps: tf.Tensor[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      const xs = tf.slice(x, [0, i, j, 0], [B, ho, wo, cin]);
      taps.push(tf.matMul(dyT, tf.reshape(xs, [B * ho * wo, cin]))); // [Cout, Cin]
    }
  }
  // [kh·kw, Cout, Cin] → [kh·kw, Cin, Cout] → [kh, kw, Cin, Cout]
  return tf.reshape(tf.transpose(tf.stack(taps), [0, 2, 1]), [kh, kw, cin, cout]);
}

/**
 * dx of a VALID conv as a forward conv: dilate dy by the stride, pad by k−1 (plus the rows/columns the
 * forward never read), convolve with the spatially flipped, in/out-swapped kernel.
 */
function convInputGrad(dy: tf.Tensor4D, w: tf.Tensor4D, xShape: number[], stride: number): tf.Tensor4D {
  const [, ho, wo] = dy.shape;
  const [kh, kw] = w.shape;
  const d = dilate(dy, stride);
  const remH = xShape[1] - ((ho - 1) * stride + kh);
  const remW = xShape[2] - ((wo - 1) * stride + kw);
  const dp = tf.pad(d, [
    [0, 0],
    [kh - 1, kh - 1 + remH],
    [kw - 1, kw - 1 + remW],
    [0, 0],
  ]);
  const wf = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D; // [kh, kw, Cout, Cin], flipped
  return tf.conv2d(dp as tf.Tensor4D, wf, 1, "valid");
}

/**
 * 2-D convolution. "valid": callers pad explicitly (PyTorch's symmetric padding for strided convs);
 * "same": stride 1 with an odd kernel, i.e. symmetric padding (k−1)/2 without materialising the pad.
 * x [B, H, W, Cin], w [kh, kw, Cin, Cout] → [B, Ho, Wo, Cout].
 */
export function conv2dValid(
  x: tf.Tensor4D,
  w: tf.Tensor4D,
  stride = 1,
  padding: "valid" | "same" = "valid",
): tf.Tensor4D {
  if (padding === "same" && (stride !== 1 || w.shape[0] % 2 === 0 || w.shape[1] % 2 === 0)) {
    throw new Error("conv2d: 'same' is only used for stride 1 and odd kernels (symmetric padding)");
  }
  if (!manualGrad("Conv2DBackpropFilter")) return tf.conv2d(x, w, stride, padding);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, wi, save] = args as [tf.Tensor4D, tf.Tensor4D, tf.GradSaveFunc];
    save([xi, wi]);
    return {
      value: tf.conv2d(xi, wi, stride, padding),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor4D];
          const [kh, kw] = ws.shape;
          if (padding === "same") {
            const wf = tf.transpose(tf.reverse(ws, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D; // flipped, [kh, kw, Cout, Cin]
            const ph = (kh - 1) / 2;
            const pw = (kw - 1) / 2;
            const xp = tf.pad(xs, [
              [0, 0],
              [ph, ph],
              [pw, pw],
              [0, 0],
            ]) as tf.Tensor4D;
            return [tf.conv2d(dy, wf, 1, "same"), convFilterGrad(xp, dy, kh, kw, 1)];
          }
          return [convInputGrad(dy, ws, xs.shape, stride), convFilterGrad(xs, dy, kh, kw, stride)];
        }),
    };
  });
  return f(x, w) as tf.Tensor4D;
}

const pad1 = (x: tf.Tensor4D): tf.Tensor4D =>
  tf.pad(x, [
    [0, 0],
    [1, 1],
    [1, 1],
    [0, 0],
  ]);

/** Σ over the 9 taps of slice(xp, i, j) ⊙ w[i, j, :]: xp [B, H+2, W+2, C], w [3, 3, C, 1] → [B, H, W, C]. */
function shiftedSum3x3(xp: tf.Tensor4D, w: tf.Tensor): tf.Tensor4D {
  const [B, Hp, Wp, C] = xp.shape;
  const w2 = tf.reshape(w, [9, C]); // [3·3, C]
  let acc: tf.Tensor | null = null;
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      const tap = tf.reshape(tf.slice(w2, [i * 3 + j, 0], [1, C]), [1, 1, 1, C]);
      const term = tf.mul(tf.slice(xp, [0, i, j, 0], [B, Hp - 2, Wp - 2, C]), tap);
      acc = acc ? tf.add(acc, term) : term;
    }
  }
  return acc as tf.Tensor4D;
}

/**
 * Depthwise 3×3 conv, stride 1, symmetric padding 1, with bias. x [B, H, W, C], w [3, 3, C, 1], b [C].
 * Manual path: forward and input gradient are shifted sums (the latter with the flipped kernel over dy
 * padded by 2), filter gradient Σ_{b,y,x} xp_ij ⊙ dy — only slice/pad/mul/sum kernels.
 */
export function depthwiseConv3x3(x: tf.Tensor4D, w: tf.Tensor, b: tf.Tensor): tf.Tensor4D {
  const xp = pad1(x); // [B, H+2, W+2, C]
  if (!manualGrad("DepthwiseConv2dNativeBackpropFilter")) {
    return tf.add(tf.depthwiseConv2d(xp, w as tf.Tensor4D, 1, "valid"), b) as tf.Tensor4D;
  }
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, wi, save] = args as [tf.Tensor4D, tf.Tensor, tf.GradSaveFunc];
    save([xi, wi]);
    return {
      value: tf.tidy(() => shiftedSum3x3(xi, wi)),
      gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [xs, ws] = saved as [tf.Tensor4D, tf.Tensor];
          const [B, H, W, C] = dy.shape;
          const dyp = tf.pad(dy, [
            [0, 0],
            [2, 2],
            [2, 2],
            [0, 0],
          ]) as tf.Tensor4D; // [B, H+4, W+4, C]
          const dxp = shiftedSum3x3(dyp, tf.reverse(ws, [0, 1])); // [B, H+2, W+2, C]
          const taps: tf.Tensor[] = [];
          for (let i = 0; i < 3; i++) {
            for (let j = 0; j < 3; j++)
              taps.push(tf.sum(tf.mul(tf.slice(xs, [0, i, j, 0], [B, H, W, C]), dy), [0, 1, 2]));
          }
          return [dxp, tf.reshape(tf.stack(taps), [3, 3, C, 1])];
        }),
    };
  });
  return tf.add(f(xp, w), b) as tf.Tensor4D;
}

// ───────────────────────────── parameter declarations ─────────────────────────────

type InitScheme = "torch" | "vit";

/** Conv weight [kh, kw, Cin, Cout] (+ bias [Cout]); "torch" = U(±1/√fan_in) for both, "vit" = tn(.02)/0. */
export function convSpecs(
  name: string,
  kh: number,
  kw: number,
  cin: number,
  cout: number,
  opts: { bias: boolean; init: InitScheme; group: ParamGroup },
): ParamSpec[] {
  const fanIn = cin * kh * kw;
  const wInit: Init = opts.init === "torch" ? torchDefault(fanIn) : vitWeight;
  const bInit: Init = opts.init === "torch" ? torchDefault(fanIn) : ZEROS;
  const out: ParamSpec[] = [{ name: `${name}.weight`, shape: [kh, kw, cin, cout], init: wInit, group: opts.group }];
  if (opts.bias) out.push({ name: `${name}.bias`, shape: [cout], init: bInit, group: opts.group });
  return out;
}

/** Depthwise conv weight [3, 3, C, 1] + bias [C] (fan_in = 9 for the PyTorch default). */
export function depthwiseSpecs(name: string, C: number, init: InitScheme, group: ParamGroup): ParamSpec[] {
  return [
    { name: `${name}.weight`, shape: [3, 3, C, 1], init: init === "torch" ? torchDefault(9) : vitWeight, group },
    { name: `${name}.bias`, shape: [C], init: init === "torch" ? torchDefault(9) : ZEROS, group },
  ];
}

/** Linear weight [Cin, Cout] (PyTorch [out, in] transposed) + bias. */
export function linearSpecs(name: string, cin: number, cout: number, init: InitScheme, group: ParamGroup): ParamSpec[] {
  return convSpecs(name, 1, 1, cin, cout, { bias: true, init, group }).map((s) =>
    s.name.endsWith(".weight") ? { ...s, shape: [cin, cout] } : s,
  );
}

export function normSpecs(name: string, C: number, group: ParamGroup): ParamSpec[] {
  return [
    { name: `${name}.weight`, shape: [C], init: ONES, group },
    { name: `${name}.bias`, shape: [C], init: ZEROS, group },
  ];
}

export function layerScaleSpecs(name: string, C: number, group: ParamGroup): ParamSpec[] {
  return [{ name: `${name}.gamma`, shape: [C], init: { kind: "const", value: 1e-5 }, group }];
}

// ───────────────────────────── elementwise / norms ─────────────────────────────

/** Exact (erf) GELU: 0.5·x·(1 + erf(x/√2)). */
export const gelu = (x: tf.Tensor): tf.Tensor => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));

export const silu = (x: tf.Tensor): tf.Tensor => tf.mul(x, tf.sigmoid(x));

/**
 * GroupNorm over contiguous channel groups of an NHWC map, biased variance (PyTorch), autodiff version
 * (reference for tests). [B, H, W, C] → [B, H, W, G, C/G] → moments over (H, W, C/G) → back.
 */
export function groupNormAutodiff(x: tf.Tensor4D, groups: number, eps: number, gamma?: tf.Tensor, beta?: tf.Tensor) {
  const [B, H, W, C] = x.shape;
  const xg = tf.reshape(x, [B, H, W, groups, C / groups]); // [B, H, W, G, C/G]
  const { mean, variance } = tf.moments(xg, [1, 2, 4], true);
  let y = tf.reshape(tf.mul(tf.sub(xg, mean), tf.rsqrt(tf.add(variance, eps))), [B, H, W, C]);
  if (gamma) y = tf.mul(y, gamma);
  if (beta) y = tf.add(y, beta);
  return y as tf.Tensor4D;
}

export type GroupNormMode = "auto" | "groupAxes" | "contiguous";
let groupNormMode: GroupNormMode = "auto";

/**
 * Which GroupNorm reduction layout runs. "groupAxes": statistics as means over the axes (H, W, C/G) of the
 * [B, H, W, G, C/G] view (the reference formulation; bit-identical to earlier releases). "contiguous": the
 * same formulas with every reduction split into contiguous steps — per-channel sums over H·W, then over
 * the C/G channels of a group — and the backward's group means derived from the per-channel sums that dγ
 * and dβ need anyway (3 full-size passes fewer). Same math, float32 rounding differs (~1e-6 relative).
 * "auto": "contiguous" on the native tensorflow backend, whose Mean over non-adjacent axes is 4–6× slower
 * than two contiguous reductions (e.g. 0.7 ms vs 0.13 ms for [8, 32, 32, 32, 2]) and also casts its input
 * first; "groupAxes" elsewhere (on wasm the split is slower for C/G = 1 maps: its axis-1 reduction transposes).
 */
export function setGroupNormMode(mode: GroupNormMode): void {
  groupNormMode = mode;
}

/**
 * GroupNorm(groups) over contiguous channel groups of an NHWC map with biased variance (PyTorch), optional
 * affine γ, β [C] (pass both or neither), analytic gradient; see `setGroupNormMode` for the two layouts.
 */
export function groupNormRaw(x: tf.Tensor4D, groups: number, eps: number, gamma?: tf.Tensor, beta?: tf.Tensor) {
  const C = x.shape[3];
  if (C % groups !== 0) throw new Error(`GroupNorm: ${C} channels not divisible by ${groups} groups`);
  const contiguous = groupNormMode === "auto" ? tf.getBackend() === "tensorflow" : groupNormMode === "contiguous";
  return contiguous
    ? groupNormContiguous(x, groups, eps, gamma, beta)
    : groupNormGroupAxes(x, groups, eps, gamma, beta);
}

/**
 * The "groupAxes" layout (reference). GroupNorm with an analytic gradient (tf.customGrad): the forward keeps the centred map x − μ and the
 * per-group r = 1/√(var + eps) for the backward (the same size as keeping x, and the backward does not
 * recompute the statistics: 4 full-size passes fewer); the other temporaries are freed immediately, instead
 * of the ~6 intermediates autodiff keeps alive until backprop ends. x̂ = (x − μ)·r, y = γ·x̂ + β;
 * dx = r·(g − mean_grp(g) − x̂·mean_grp(g·x̂)) with g = γ·dy; dγ = Σ dy·x̂; dβ = Σ dy.
 * Without γ and β (AdaGN's GN_noaffine) the affine step and its gradients are skipped (×1 and +0 are exact).
 */
function groupNormGroupAxes(x: tf.Tensor4D, groups: number, eps: number, gamma?: tf.Tensor, beta?: tf.Tensor) {
  const [B, H, W, C] = x.shape;
  const cg = C / groups;
  const axes = [1, 2, 4];
  const affine = gamma !== undefined || beta !== undefined;
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xi, gi, bi] = args as tf.Tensor[];
    const value = tf.tidy(() => {
      const xg = tf.reshape(xi, [B, H, W, groups, cg]); // [B, H, W, G, C/G]
      const centered = tf.sub(xg, tf.mean(xg, axes, true)); // − μ [B, 1, 1, G, 1]
      const r = tf.rsqrt(tf.add(tf.mean(tf.square(centered), axes, true), eps)); // [B, 1, 1, G, 1]
      save(affine ? [centered, r, gi] : [centered, r]);
      if (!affine) return tf.reshape(tf.mul(centered, r), [B, H, W, C]);
      const scale = tf.mul(r, tf.reshape(gi, [1, 1, 1, groups, cg]));
      return tf.add(tf.reshape(tf.mul(centered, scale), [B, H, W, C]), bi); // → [B, H, W, C]
    });
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [centered, r, gs] = saved;
          const xhat = tf.mul(centered, r); // [B, H, W, G, C/G]
          const dyg = tf.reshape(dy, [B, H, W, groups, cg]);
          const g = affine ? tf.mul(dyg, tf.reshape(gs, [1, 1, 1, groups, cg])) : dyg;
          const dx = tf.reshape(
            tf.mul(r, tf.sub(tf.sub(g, tf.mean(g, axes, true)), tf.mul(xhat, tf.mean(tf.mul(g, xhat), axes, true)))),
            [B, H, W, C],
          );
          if (!affine) return [dx];
          const dGamma = tf.reshape(tf.sum(tf.mul(dyg, xhat), [0, 1, 2]), [C]);
          const dBeta = tf.sum(dy, [0, 1, 2]);
          return [dx, dGamma, dBeta];
        }),
    };
  });
  if (!affine) return f(x) as tf.Tensor4D;
  return tf.tidy(() => f(x, gamma ?? tf.ones([C]), beta ?? tf.zeros([C]))) as tf.Tensor4D;
}

/**
 * The "contiguous" layout: x viewed as [B, H·W, G, C/G]; per-group sums as a sum over H·W (axis 1) then
 * over C/G (axis 3). Backward from the per-channel sums Σ_hw dy and Σ_hw dy·x̂ ([B, 1, G, C/G]): dβ and dγ
 * are their sums over B, mean_grp(γ·dy) and mean_grp(γ·dy·x̂) their γ-weighted sums over C/G divided by
 * n = H·W·C/G. Saves the centred map and r like the other layout.
 */
function groupNormContiguous(x: tf.Tensor4D, groups: number, eps: number, gamma?: tf.Tensor, beta?: tf.Tensor) {
  const [B, H, W, C] = x.shape;
  const cg = C / groups;
  const HW = H * W;
  const n = HW * cg;
  const affine = gamma !== undefined || beta !== undefined;
  const perGroup = (perChannel: tf.Tensor) => (cg === 1 ? perChannel : tf.sum(perChannel, 3, true)); // → [B, 1, G, 1]
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xi, gi, bi] = args as tf.Tensor[];
    const value = tf.tidy(() => {
      const xg = tf.reshape(xi, [B, HW, groups, cg]); // [B, H, W, C] → [B, H·W, G, C/G]
      const centered = tf.sub(xg, tf.div(perGroup(tf.sum(xg, 1, true)), n)); // − μ [B, 1, G, 1]
      const variance = tf.div(perGroup(tf.sum(tf.square(centered), 1, true)), n);
      const r = tf.rsqrt(tf.add(variance, eps)); // [B, 1, G, 1]
      save(affine ? [centered, r, gi] : [centered, r]);
      if (!affine) return tf.reshape(tf.mul(centered, r), [B, H, W, C]);
      const scale = tf.mul(r, tf.reshape(gi, [1, 1, groups, cg])); // [B, 1, G, C/G]
      return tf.add(tf.reshape(tf.mul(centered, scale), [B, H, W, C]), bi); // → [B, H, W, C]
    });
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.tidy(() => {
          const [centered, r, gs] = saved;
          const xhat = tf.mul(centered, r); // [B, H·W, G, C/G]
          const dyg = tf.reshape(dy, [B, HW, groups, cg]);
          const sumDy = tf.sum(dyg, 1, true); // Σ_hw dy [B, 1, G, C/G]
          const sumDyXhat = tf.sum(tf.mul(dyg, xhat), 1, true); // Σ_hw dy·x̂
          const g4 = affine ? tf.reshape(gs, [1, 1, groups, cg]) : null;
          const meanG = tf.div(perGroup(g4 ? tf.mul(sumDy, g4) : sumDy), n); // mean_grp(g), g = γ·dy
          const meanGXhat = tf.div(perGroup(g4 ? tf.mul(sumDyXhat, g4) : sumDyXhat), n); // mean_grp(g·x̂)
          const g = g4 ? tf.mul(dyg, g4) : dyg;
          const dx = tf.reshape(tf.mul(r, tf.sub(tf.sub(g, meanG), tf.mul(xhat, meanGXhat))), [B, H, W, C]);
          if (!affine) return [dx];
          return [dx, tf.reshape(tf.sum(sumDyXhat, [0, 1]), [C]), tf.reshape(tf.sum(sumDy, [0, 1]), [C])];
        }),
    };
  });
  if (!affine) return f(x) as tf.Tensor4D;
  return tf.tidy(() => f(x, gamma ?? tf.ones([C]), beta ?? tf.zeros([C]))) as tf.Tensor4D;
}

/** GN32 (eps 1e-6, affine) — spec §2.1. */
export const groupNorm = (P: Params, name: string, x: tf.Tensor4D, groups = 32, eps = 1e-6): tf.Tensor4D =>
  groupNormRaw(x, groups, eps, P.get(`${name}.weight`), P.get(`${name}.bias`));

/** LayerNorm over the last axis (timm default eps 1e-5). */
export function layerNorm<T extends tf.Tensor>(P: Params, name: string, x: T, eps = 1e-5): T {
  const { mean, variance } = tf.moments(x, -1, true);
  const y = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
  return tf.add(tf.mul(y, P.get(`${name}.weight`)), P.get(`${name}.bias`)) as T;
}

/** Linear on the last axis: [..., Cin] → [..., Cout] (flattened to 2-D for the matmul). */
export function linear(P: Params, name: string, x: tf.Tensor, bias = true): tf.Tensor {
  const w = P.get(`${name}.weight`);
  const [cin, cout] = w.shape.length === 4 ? [w.shape[2], w.shape[3]] : w.shape; // 1×1 conv or linear
  const lead = x.shape.slice(0, -1);
  const y = matMul2d(tf.reshape(x, [-1, cin]) as tf.Tensor2D, tf.reshape(w, [cin, cout]) as tf.Tensor2D); // [..., Cin] → [N, Cout]
  return tf.reshape(bias ? tf.add(y, P.get(`${name}.bias`)) : y, [...lead, cout]); // → [..., Cout]
}

/** Conv 3×3, stride 1 or 2, symmetric padding 1 (PyTorch `padding=1`), optional bias. */
export function conv3x3(P: Params, name: string, x: tf.Tensor4D, stride = 1, bias = true): tf.Tensor4D {
  const w = P.get(`${name}.weight`) as tf.Tensor4D;
  const y = stride === 1 ? conv2dValid(x, w, 1, "same") : conv2dValid(pad1(x), w, stride);
  return bias ? (tf.add(y, P.get(`${name}.bias`)) as tf.Tensor4D) : y;
}

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
  let h = conv3x3(P, `${name}.conv1`, silu(groupNorm(P, `${name}.norm1`, x)) as tf.Tensor4D, 1, false);
  h = conv3x3(P, `${name}.conv2`, silu(groupNorm(P, `${name}.norm2`, h)) as tf.Tensor4D, 1, false);
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
  return tf.add(tf.mul(groupNormRaw(x, 32, 1e-6), scale), shift) as tf.Tensor4D;
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

/** LayerScale: γ ⊙ x (γ initialised to 1e-5). */
export const layerScale = (P: Params, name: string, x: tf.Tensor): tf.Tensor => tf.mul(x, P.get(`${name}.gamma`));

/** Pre-norm ViT block parameters: norm1/attn/ls1/norm2/mlp/ls2 (timm anatomy). */
export const vitBlockSpecs = (name: string, D: number, group: ParamGroup, mixMlpDw = false): ParamSpec[] => [
  ...normSpecs(`${name}.norm1`, D, group),
  ...attentionSpecs(`${name}.attn`, D, group),
  ...layerScaleSpecs(`${name}.ls1`, D, group),
  ...normSpecs(`${name}.norm2`, D, group),
  ...mlpSpecs(`${name}.mlp`, D, group, mixMlpDw),
  ...layerScaleSpecs(`${name}.ls2`, D, group),
];
