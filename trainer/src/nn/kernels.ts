// Convolution and matmul cores with gradients that are fast on every backend.
//
// tfjs-backend-wasm registers no Conv2DBackpropFilter and no depthwise backprop kernels, and its transposed
// matmuls / Conv2DBackpropInput are slow, so `conv2dValid`, `matMul2d` and `depthwiseConv3x3` pick, per backend,
// the native ops or equivalent formulations whose gradients use only fast forward kernels (see `setConvGradMode`).
// All maps are NHWC.
import * as tf from "@tensorflow/tfjs";

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

export const pad1 = (x: tf.Tensor4D): tf.Tensor4D =>
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
