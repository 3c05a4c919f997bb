// L1 reconstruction loss (docs/model.md §4.1: `L_rec = mean |x − x̂|`, the only option upstream).
import * as tf from "@tensorflow/tfjs";

/** Mean absolute error over all elements (scalar). `xhat` is the raw (unclamped) decoder output. */
export function l1Loss(x: tf.Tensor, xhat: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.mean(tf.abs(tf.sub(x, xhat))) as tf.Scalar);
}

/** Per-sample mean absolute error `[B]` (used for held-out evaluation). */
export function l1PerSample(x: tf.Tensor4D, xhat: tf.Tensor4D): tf.Tensor1D {
  return tf.tidy(() => tf.mean(tf.abs(tf.sub(x, xhat)), [1, 2, 3]) as tf.Tensor1D);
}
