// MergeVQ docs/model.md §2.4 "Lookup-free quantization (LFQ)" (Open-MAGVIT2 `lfqgan` quantizer): sign per channel
// (exact zero → −1), index = Σ_c [q_c > 0]·2^c (channel 0 = least-significant bit), straight-through
// estimator, commitment MSE to stop-grad(q), and the entropy aux loss at temperature 0.01 over the full
// codebook: L_ent = w_s·H_sample − w_b·H_codebook.
//
// Memory-safe exact computation (docs/model.md §2.4 memory note): with a = 4z/τ the per-token distribution
// factorises per bit, p_n(i) = Π_c σ(a_nc·c_c(i)), so H_sample = Σ_c H_bin(σ(a_nc)) exactly, and
// log p_n(i) = bits(i)·a_n + Σ_c log σ(−a_nc). p̄ = mean_n p_n is streamed over chunks of codes; its
// gradient is computed analytically in a second chunked pass (tf.customGrad), so no [B·K, 2^d] tensor
// is ever materialised or kept for backprop.
import * as tf from "@tensorflow/tfjs";

/** ±1 codes of z (z > 0 → +1, else −1), no gradient. */
function signValues(z: tf.Tensor): tf.Tensor {
  return tf.sub(tf.mul(tf.cast(tf.greater(z, 0), "float32"), 2), 1);
}

/** sg(sign(z)): the quantized values as a constant (zero gradient). Ops inside customGrad are not taped. */
function constSign(z: tf.Tensor): tf.Tensor {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const zi = args[0] as tf.Tensor;
    return { value: signValues(zi), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
  });
  return f(z);
}

/** Quantized values with the straight-through gradient: forward sign(z), backward identity. */
export function quantizeST<T extends tf.Tensor>(z: T): T {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const zi = args[0] as tf.Tensor;
    return { value: signValues(zi), gradFunc: (dy: tf.Tensor) => tf.clone(dy) };
  });
  return f(z) as T;
}

/** Index of ±1 / real codes along the last axis, LSB-first: [..., d] → int32 [...]. */
export function codesToIndices(z: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const d = z.shape[z.shape.length - 1];
    if (d > 24) throw new Error(`LFQ indices: ${d} bits exceed the exact float32 range`);
    const pow = tf.tensor1d(Array.from({ length: d }, (_, c) => 2 ** c));
    return tf.cast(tf.sum(tf.mul(tf.cast(tf.greater(z, 0), "float32"), pow), -1), "int32");
  });
}

/** Codebook vectors of indices: int [...] → ±1 float [..., d], c_j(i) = 2·bit_j(i) − 1. */
export function indicesToCodes(indices: tf.Tensor, d: number): tf.Tensor {
  return tf.tidy(() => {
    const idx = tf.expandDims(tf.cast(indices, "int32"), -1);
    const pow = tf.tensor1d(
      Array.from({ length: d }, (_, c) => 2 ** c),
      "int32",
    );
    const bits = tf.mod(tf.floorDiv(idx, pow), 2); // [..., d] ∈ {0, 1}
    return tf.sub(tf.mul(tf.cast(bits, "float32"), 2), 1);
  });
}

/** Stage-II token factorisation: pre = bits 0…preBits−1, post = the remaining bits (docs/model.md §2.4). */
export function splitIndices(indices: tf.Tensor, preBits: number): { pre: tf.Tensor; post: tf.Tensor } {
  return tf.tidy(() => {
    const idx = tf.cast(indices, "int32");
    const base = tf.scalar(2 ** preBits, "int32");
    return { pre: tf.mod(idx, base), post: tf.floorDiv(idx, base) };
  });
}

/** Bit matrix [d, count] (float 0/1) of the codes start … start+count−1. */
function bitMatrix(d: number, start: number, count: number): tf.Tensor2D {
  const data = new Float32Array(d * count);
  for (let c = 0; c < d; c++) for (let j = 0; j < count; j++) data[c * count + j] = ((start + j) >>> c) & 1;
  return tf.tensor2d(data, [d, count]);
}

/** Codes per chunk so that a [N, chunk] block stays near 4 M floats. */
function chunkSize(N: number, d: number): number {
  const total = 2 ** d;
  let c = 1;
  while (c < total && c * 2 * N <= 1 << 22) c *= 2;
  return c;
}

/** H_sample = mean_n Σ_c H_bin(σ(a_nc)), a [N, d] (exact, no epsilon). */
export function sampleEntropyFromLogits(a: tf.Tensor2D): tf.Scalar {
  const p = tf.sigmoid(a);
  // H_bin(p) = −p log p − (1−p) log(1−p) with log σ(a) = −softplus(−a), log σ(−a) = −softplus(a).
  const h = tf.add(tf.mul(p, tf.softplus(tf.neg(a))), tf.mul(tf.sub(1, p), tf.softplus(a)));
  return tf.mean(tf.sum(h, 1));
}

/**
 * H_codebook = −Σ_i p̄_i log(p̄_i + 1e-5), p̄ = mean over the N tokens of p_n, a [N, d] (per-bit logits).
 * Exact, streamed over chunks of the 2^d codes in both passes.
 */
export function codebookEntropyFromLogits(a: tf.Tensor2D): tf.Scalar {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [ai, save] = args as [tf.Tensor2D, tf.GradSaveFunc];
    const [N, d] = ai.shape;
    const total = 2 ** d;
    const C = chunkSize(N, d);
    const v = tf.neg(tf.sum(tf.softplus(ai), 1, true)); // Σ_c log σ(−a_nc): [N, 1]
    const parts: tf.Tensor[] = [];
    for (let s = 0; s < total; s += C) {
      parts.push(tf.tidy(() => tf.mean(tf.exp(tf.add(tf.matMul(ai, bitMatrix(d, s, C)), v)), 0))); // p̄ chunk [C]
    }
    const pbar = tf.concat(parts); // [2^d]
    tf.dispose(parts);
    const value = tf.neg(tf.sum(tf.mul(pbar, tf.log(tf.add(pbar, 1e-5)))));
    save([ai, v, pbar]);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [as, vs, pb] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
        // ∂H/∂p̄_i = −(log(p̄_i+ε) + p̄_i/(p̄_i+ε));  ∂p_n(i)/∂a_nc = p_n(i)·(bit_c(i) − σ(a_nc)).
        const pe = tf.add(pb, 1e-5);
        const g = tf.neg(tf.add(tf.log(pe), tf.div(pb, pe))); // [2^d]
        let acc: tf.Tensor = tf.zeros([N, d]);
        let rows: tf.Tensor = tf.zeros([N, 1]);
        for (let s = 0; s < total; s += C) {
          const [nAcc, nRows] = tf.tidy(() => {
            const bits = bitMatrix(d, s, C); // [d, C]
            const W = tf.mul(tf.exp(tf.add(tf.matMul(as, bits), vs)), tf.slice(g, s, C)); // p ⊙ g: [N, C]
            return [tf.add(acc, tf.matMul(W, bits, false, true)), tf.add(rows, tf.sum(W, 1, true))];
          });
          tf.dispose([acc, rows]);
          acc = nAcc;
          rows = nRows;
        }
        const grad = tf.mul(tf.div(tf.sub(acc, tf.mul(tf.sigmoid(as), rows)), N), dy);
        tf.dispose([acc, rows, pe, g]);
        return grad;
      },
    };
  });
  return f(a) as tf.Scalar;
}

export interface LfqLosses {
  /** w_s·H_sample − w_b·H_codebook (the term weighted by `codebook_weight` 0.1 in the total loss). */
  entropy: tf.Scalar;
  sampleEntropy: tf.Scalar;
  codebookEntropy: tf.Scalar;
  /** mean((z − sg(q))²). */
  commitment: tf.Scalar;
}

export interface LfqOutput {
  /** Straight-through quantized values (±1 forward, identity gradient), same shape as z. */
  zq: tf.Tensor;
  /** int32 indices, z.shape without the last axis. */
  indices: tf.Tensor;
  losses: LfqLosses;
}

export interface LfqOptions {
  temperature?: number;
  /** Entropy/commitment are training-only (zero scalars otherwise). Default true. */
  training?: boolean;
  sampleWeight?: number;
  batchWeight?: number;
}

/** Quantize z [..., d] (all leading axes are tokens of the per-device batch). */
export function lfq(z: tf.Tensor, opts: LfqOptions = {}): LfqOutput {
  const d = z.shape[z.shape.length - 1];
  const tau = opts.temperature ?? 0.01;
  const zq = quantizeST(z);
  const indices = codesToIndices(z);
  if (opts.training === false) {
    const zero = () => tf.scalar(0);
    return {
      zq,
      indices,
      losses: { entropy: zero(), sampleEntropy: zero(), codebookEntropy: zero(), commitment: zero() },
    };
  }
  const q = constSign(z);
  const commitment = tf.mean(tf.square(tf.sub(z, q))) as tf.Scalar;
  const a = tf.mul(tf.reshape(z, [-1, d]), 4 / tau) as tf.Tensor2D; // per-bit logits of softmax(2⟨z,c⟩/τ): [N, d]
  const sampleEntropy = sampleEntropyFromLogits(a);
  const codebookEntropy = codebookEntropyFromLogits(a);
  const entropy = tf.sub(
    tf.mul(sampleEntropy, opts.sampleWeight ?? 1),
    tf.mul(codebookEntropy, opts.batchWeight ?? 1),
  ) as tf.Scalar;
  return { zq, indices, losses: { entropy, sampleEntropy, codebookEntropy, commitment } };
}

/**
 * Brute-force reference over the full codebook (tests, d ≤ ~12): logits 2⟨z, c(i)⟩/τ, softmax,
 * H_sample = mean_n H(p_n), H_codebook = −Σ p̄ log(p̄ + 1e-5).
 */
export function entropyBruteForce(
  z: tf.Tensor2D,
  tau = 0.01,
): { sampleEntropy: tf.Scalar; codebookEntropy: tf.Scalar } {
  const d = z.shape[1];
  const codes = indicesToCodes(tf.range(0, 2 ** d, 1, "int32"), d); // [2^d, d]
  const logits = tf.div(tf.mul(tf.matMul(z, codes, false, true), 2), tau); // [N, 2^d]
  const logp = tf.logSoftmax(logits);
  const p = tf.exp(logp);
  const sampleEntropy = tf.mean(tf.neg(tf.sum(tf.mul(p, logp), 1))) as tf.Scalar;
  const pbar = tf.mean(p, 0);
  const codebookEntropy = tf.neg(tf.sum(tf.mul(pbar, tf.log(tf.add(pbar, 1e-5))))) as tf.Scalar;
  return { sampleEntropy, codebookEntropy };
}
