// Per-op dispatch cost on small tensors (µs/op), tensorflow vs wasm.
import * as tf from "@tensorflow/tfjs";
import { type BackendChoice, startBackend } from "../../trainer/src/backend/select.ts";

async function main(): Promise<void> {
  for (const b of (process.env.BS ?? "tensorflow,wasm").split(",") as BackendChoice[]) {
    await startBackend(b);
    const a = tf.randomNormal([8, 32]);
    const c = tf.randomNormal([8, 32]);
    const ops: Record<string, () => tf.Tensor> = {
      mul: () => tf.mul(a, c),
      mulScalar: () => tf.mul(a, 0.5),
      reshape: () => tf.reshape(a, [32, 8]),
      reshapeSame: () => tf.reshape(a, [8, 32]),
      cast: () => tf.cast(a, "float32"),
      mean: () => tf.mean(a, [1], true),
      transpose: () => tf.transpose(a),
      scalar: () => tf.scalar(0.5),
    };
    const res: Record<string, number> = {};
    for (const [k, f] of Object.entries(ops)) {
      let best = Infinity;
      for (let r = 0; r < 5; r++) {
        const t0 = performance.now();
        for (let i = 0; i < 1000; i++) f().dispose();
        best = Math.min(best, performance.now() - t0);
      }
      res[k] = +best.toFixed(2); // ms per 1000 = µs per op
    }
    console.error(b, "µs/op", JSON.stringify(res));
  }
}
main();
