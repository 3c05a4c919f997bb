// TF.js backend selection at start-up: tfjs-node-gpu → tfjs-node → wasm → cpu.
// The same model code runs on every backend; which one runs (and why the faster ones did not) is logged.
// Override with TFJS_BACKEND=tensorflow-gpu|tensorflow|wasm|cpu (or the `--backend` flag of the CLI).
import { createRequire } from "node:module";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { Logger } from "../../common/src/logger.ts";

export type BackendChoice = "tensorflow-gpu" | "tensorflow" | "wasm" | "cpu";
export const BACKEND_ORDER: readonly BackendChoice[] = ["tensorflow-gpu", "tensorflow", "wasm", "cpu"];

export interface BackendInfo {
  /** Backend actually running (`tf.getBackend()`). */
  name: string;
  /** Choice that was made. */
  choice: BackendChoice;
  /** Why each earlier candidate was skipped. */
  skipped: { choice: BackendChoice; reason: string }[];
}

const require = createRequire(import.meta.url);

async function tryNative(pkg: "@tensorflow/tfjs-node-gpu" | "@tensorflow/tfjs-node"): Promise<void> {
  // The native packages register the "tensorflow" backend as a side effect of loading.
  // MERGEVQ_TFJS_NODE_DIR points at a tfjs-node built against a registry-sourced libtensorflow (hack/).
  const override = pkg === "@tensorflow/tfjs-node" ? process.env.MERGEVQ_TFJS_NODE_DIR : undefined;
  const resolved = override ? path.resolve(override) : require.resolve(pkg);
  await import(resolved.endsWith(".js") ? resolved : require.resolve(resolved));
  if (!tf.findBackend("tensorflow")) throw new Error(`${pkg} loaded but registered no "tensorflow" backend`);
}

async function tryBackend(choice: BackendChoice): Promise<void> {
  switch (choice) {
    case "tensorflow-gpu":
      await tryNative("@tensorflow/tfjs-node-gpu");
      break;
    case "tensorflow":
      await tryNative("@tensorflow/tfjs-node");
      break;
    case "wasm": {
      const wasm = await import("@tensorflow/tfjs-backend-wasm");
      const dist = path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"));
      wasm.setWasmPaths(`${dist}${path.sep}`);
      break;
    }
    case "cpu":
      await import("@tensorflow/tfjs-backend-cpu");
      break;
  }
  const name = choice === "tensorflow-gpu" ? "tensorflow" : choice;
  if (!(await tf.setBackend(name))) throw new Error(`tf.setBackend("${name}") returned false`);
  await tf.ready();
}

/**
 * Select and initialise the fastest available backend (or exactly `requested`). Throws when a requested
 * backend cannot start: an explicit request is never silently downgraded.
 */
export async function selectBackend(opts: { requested?: string; log?: Logger } = {}): Promise<BackendInfo> {
  const requested = opts.requested ?? process.env.TFJS_BACKEND;
  const skipped: BackendInfo["skipped"] = [];
  if (requested) {
    if (!(BACKEND_ORDER as readonly string[]).includes(requested)) {
      throw new Error(`TFJS_BACKEND: unknown backend "${requested}" (expected one of ${BACKEND_ORDER.join(", ")})`);
    }
    await tryBackend(requested as BackendChoice);
    const info = { name: tf.getBackend(), choice: requested as BackendChoice, skipped };
    opts.log?.info({ backend: info.name, reason: "requested by TFJS_BACKEND/--backend" }, "tfjs backend selected");
    return info;
  }
  for (const choice of BACKEND_ORDER) {
    try {
      await tryBackend(choice);
      const info = { name: tf.getBackend(), choice, skipped };
      opts.log?.info({ backend: info.name, skipped }, "tfjs backend selected");
      return info;
    } catch (e) {
      skipped.push({ choice, reason: (e as Error).message.split("\n")[0] });
    }
  }
  throw new Error(`no tfjs backend could start: ${JSON.stringify(skipped)}`);
}
