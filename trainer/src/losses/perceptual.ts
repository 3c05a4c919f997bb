// LPIPS-style perceptual loss (docs/model.md §4.1): a frozen VGG-type feature network, LPIPS input scaling,
// channel-normalised features, squared difference, non-negative 1×1 "lin" heads, spatial mean, summed over
// the tapped layers. No dropout (spec decision: LPIPS stays in eval mode upstream).
//
// Weights come from a file in the checkpoint container format (kind "perceptual"), by path, file:// or
// s3:// URI. Production: VGG16 + LPIPS v0.1 "vgg" lin heads converted with `convert_lpips.py` (this folder).
// Tests: `generatePerceptualNet()` builds a small random network with the same interface; it is marked
// `generated: true` and every log line about it says "generated/random".
import * as tf from "@tensorflow/tfjs";
import type { Logger } from "../../../common/src/logger.ts";
import { type Checkpoint, decodeCheckpoint, encodeCheckpoint, type TensorEntry } from "../io/checkpoint.ts";
import { storageFor } from "../io/storage.ts";
import type { Rng } from "../util/rng.ts";

/** Conv widths in order ("M" = 2×2 max-pool), and which conv layers (0-based, counting convs) are tapped. */
export interface FeatureNetSpec {
  name: string;
  /** true for randomly generated test networks; never true for real LPIPS/VGG weights. */
  generated: boolean;
  layers: (number | "M")[];
  taps: number[];
}

/** LPIPS ScalingLayer constants (inputs in [−1,1]). */
const SHIFT = [-0.03, -0.088, -0.188];
const SCALE = [0.458, 0.448, 0.45];

export class PerceptualLoss {
  private constructor(
    readonly spec: FeatureNetSpec,
    private readonly convs: { kernel: tf.Tensor4D; bias: tf.Tensor1D }[],
    private readonly lins: tf.Tensor1D[],
  ) {}

  /** Build from a decoded weight container. */
  static fromCheckpoint(ckpt: Checkpoint, source: string): PerceptualLoss {
    if (ckpt.kind !== "perceptual")
      throw new Error(`${source}: expected a "perceptual" weight file, got "${ckpt.kind}"`);
    const spec = ckpt.meta.spec as FeatureNetSpec;
    const get = (name: string): TensorEntry => {
      const t = ckpt.tensors.get(name);
      if (!t) throw new Error(`${source}: missing tensor ${name}`);
      return t;
    };
    const convs: { kernel: tf.Tensor4D; bias: tf.Tensor1D }[] = [];
    let cin = 3;
    let ci = 0;
    for (const l of spec.layers) {
      if (l === "M") continue;
      const k = get(`conv${ci}/kernel`);
      if (k.shape.join() !== [3, 3, cin, l].join()) {
        throw new Error(`${source}: conv${ci}/kernel has shape [${k.shape}], expected [3,3,${cin},${l}]`);
      }
      convs.push({
        kernel: tf.tensor4d(k.data as Float32Array, [3, 3, cin, l]),
        bias: tf.tensor1d(get(`conv${ci}/bias`).data as Float32Array),
      });
      cin = l;
      ci++;
    }
    const widths = convWidths(spec);
    const lins = spec.taps.map((tap, j) => {
      const w = get(`lin${j}/weight`);
      if (w.data.length !== widths[tap]) {
        throw new Error(`${source}: lin${j}/weight has ${w.data.length} entries, expected ${widths[tap]}`);
      }
      return tf.tensor1d(w.data as Float32Array);
    });
    return new PerceptualLoss(spec, convs, lins);
  }

  /** Load from a path, file:// or s3:// URI. Logs whether the weights are real or generated/random. */
  static async load(uri: string, log?: Logger): Promise<PerceptualLoss> {
    const net = PerceptualLoss.fromCheckpoint(decodeCheckpoint(await storageFor(uri).get(uri), uri), uri);
    log?.info(
      { uri, net: net.spec.name, weights: net.spec.generated ? "generated/random" : "pretrained" },
      net.spec.generated
        ? "perceptual loss: GENERATED/RANDOM feature network (not LPIPS/VGG weights)"
        : "perceptual loss: pretrained weights",
    );
    return net;
  }

  /** Per-sample LPIPS distance `[B]` between NHWC images in [−1,1]. Gradients flow into both inputs. */
  distance(x: tf.Tensor4D, y: tf.Tensor4D): tf.Tensor1D {
    return tf.tidy(() => {
      const b = x.shape[0];
      const shift = tf.tensor1d(SHIFT);
      const scale = tf.tensor1d(SCALE);
      const both = tf.div(tf.sub(tf.concat([x, y], 0), shift), scale) as tf.Tensor4D;
      const feats = this.features(both);
      let total: tf.Tensor1D | undefined;
      feats.forEach((f, j) => {
        // LPIPS normalize_tensor: f / (‖f‖ + 1e-10). The 1e-20 inside the sqrt keeps the gradient finite
        // where a random/ReLU-dead location has ‖f‖ = 0 (0·∞ = NaN otherwise); it shifts ‖f‖ by ≤ 1e-10.
        const n = tf.div(f, tf.add(tf.sqrt(tf.add(tf.sum(tf.square(f), -1, true), 1e-20)), 1e-10));
        const [fx, fy] = tf.split(n, [b, b], 0);
        const d = tf.square(tf.sub(fx, fy));
        const lin = tf.sum(tf.mul(d, this.lins[j]), -1); // [B,H,W]
        const per = tf.mean(lin, [1, 2]) as tf.Tensor1D;
        total = total ? (tf.add(total, per) as tf.Tensor1D) : per;
      });
      return total as tf.Tensor1D;
    });
  }

  /** Scalar loss: mean over the batch (spec: `mean_b LPIPS(x_b, x̂_b)`). */
  loss(x: tf.Tensor4D, xhat: tf.Tensor4D): tf.Scalar {
    return tf.tidy(() => tf.mean(this.distance(x, xhat)) as tf.Scalar);
  }

  private features(x: tf.Tensor4D): tf.Tensor4D[] {
    const out: tf.Tensor4D[] = [];
    let h = x;
    let ci = 0;
    const last = Math.max(...this.spec.taps);
    for (const l of this.spec.layers) {
      if (ci > last) break;
      if (l === "M") {
        h = tf.maxPool(h, 2, 2, "valid");
        continue;
      }
      const { kernel, bias } = this.convs[ci];
      h = tf.relu(tf.add(tf.conv2d(h, kernel, 1, "same"), bias)) as tf.Tensor4D;
      if (this.spec.taps.includes(ci)) out.push(h);
      ci++;
    }
    return out;
  }

  dispose(): void {
    for (const c of this.convs) {
      c.kernel.dispose();
      c.bias.dispose();
    }
    for (const l of this.lins) l.dispose();
  }
}

function convWidths(spec: FeatureNetSpec): number[] {
  return spec.layers.filter((l): l is number => l !== "M");
}

/** A small VGG-shaped net (5 stages, 13 convs, 5 taps) for tests; random weights, labelled generated. */
export const TINY_VGG: Omit<FeatureNetSpec, "generated" | "name"> = {
  layers: [8, 8, "M", 16, 16, "M", 32, 32, 32, "M", 32, 32, 32, "M", 32, 32, 32],
  taps: [1, 3, 6, 9, 12],
};

/**
 * Generate a random feature network (He-normal convs, zero bias, positive lin weights) in the same
 * container format real weights use. The result is labelled `generated: true`.
 */
export function generatePerceptualNet(rng: Rng, arch = TINY_VGG, name = "generated-tiny-vgg"): Checkpoint {
  const spec: FeatureNetSpec = { ...arch, name, generated: true };
  const tensors = new Map<string, TensorEntry>();
  let cin = 3;
  let ci = 0;
  for (const l of spec.layers) {
    if (l === "M") continue;
    const std = Math.sqrt(2 / (9 * cin));
    tensors.set(`conv${ci}/kernel`, {
      shape: [3, 3, cin, l],
      dtype: "float32",
      data: rng.normalArray(9 * cin * l, 0, std),
    });
    tensors.set(`conv${ci}/bias`, { shape: [l], dtype: "float32", data: new Float32Array(l) });
    cin = l;
    ci++;
  }
  const widths = convWidths(spec);
  spec.taps.forEach((tap, j) => {
    const c = widths[tap];
    tensors.set(`lin${j}/weight`, { shape: [c], dtype: "float32", data: rng.uniformArray(c, 0, 2 / c) });
  });
  return {
    kind: "perceptual",
    meta: { spec, note: "GENERATED/RANDOM weights for tests; not LPIPS/VGG" },
    tensors,
  };
}

/** Generate and write a random perceptual network file (see generatePerceptualNet). */
export async function writeGeneratedPerceptualNet(uri: string, rng: Rng): Promise<void> {
  await storageFor(uri).put(uri, encodeCheckpoint(generatePerceptualNet(rng)));
}
