// TF.js backend selection at start-up: tfjs-node-gpu → tfjs-node → wasm → cpu (native.ts, wasm.ts).
// The same model code runs on every backend; which one runs (and why the faster ones did not) is logged.
// Override with TFJS_BACKEND=tensorflow-gpu|tensorflow|wasm|cpu (or the `--backend` flag of the CLI).
import * as tf from "@tensorflow/tfjs";
import type { Logger } from "../../../common/src/logger.ts";
import { type NativeInfo, tryNative } from "./native.ts";
import { initWasm, type WasmInfo } from "./wasm.ts";

export type BackendChoice = "tensorflow-gpu" | "tensorflow" | "wasm" | "cpu";
export const BACKEND_ORDER: readonly BackendChoice[] = ["tensorflow-gpu", "tensorflow", "wasm", "cpu"];

export interface BackendInfo {
  /** Backend actually running (`tf.getBackend()`). */
  name: string;
  /** Choice that was made. */
  choice: BackendChoice;
  /** Why each earlier candidate was skipped. */
  skipped: { choice: BackendChoice; reason: string }[];
  /** One line: why this backend runs. */
  reason: string;
  native?: NativeInfo;
  wasm?: WasmInfo;
}

interface Started {
  native?: NativeInfo;
  wasm?: WasmInfo;
}

/**
 * Initialise one backend and make it current. Exported for tests and benchmarks that compare backends
 * in one process; everything else calls selectBackend().
 */
export async function startBackend(choice: BackendChoice): Promise<Started> {
  const started: Started = {};
  switch (choice) {
    case "tensorflow-gpu":
      started.native = await tryNative(true);
      break;
    case "tensorflow":
      started.native = await tryNative(false);
      break;
    case "wasm":
      started.wasm = await initWasm();
      return started;
    case "cpu":
      await import("@tensorflow/tfjs-backend-cpu");
      break;
  }
  const name = choice === "tensorflow-gpu" ? "tensorflow" : choice;
  if (!(await tf.setBackend(name))) throw new Error(`tf.setBackend("${name}") returned false`);
  await tf.ready();
  return started;
}

function describe(choice: BackendChoice, s: Started, requested: boolean): string {
  const why = requested ? "requested by TFJS_BACKEND/--backend" : "fastest backend that started";
  if (s.native) return `${why}: tfjs-node (${s.native.source}) on libtensorflow ${s.native.tensorflow}`;
  if (s.wasm) return `${why}: wasm ${s.wasm.simd ? "SIMD" : "scalar"}, ${s.wasm.threads} thread(s)`;
  return `${why}: ${choice}`;
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
    const choice = requested as BackendChoice;
    let s: Started;
    try {
      s = await startBackend(choice);
    } catch (e) {
      throw new Error(`TFJS_BACKEND=${choice} requested but it cannot start: ${(e as Error).message}`);
    }
    const info: BackendInfo = { name: tf.getBackend(), choice, skipped, reason: describe(choice, s, true), ...s };
    opts.log?.info(
      { backend: info.name, reason: info.reason, native: s.native, wasm: s.wasm },
      "tfjs backend selected",
    );
    return info;
  }
  for (const choice of BACKEND_ORDER) {
    try {
      const s = await startBackend(choice);
      const info: BackendInfo = { name: tf.getBackend(), choice, skipped, reason: describe(choice, s, false), ...s };
      opts.log?.info(
        { backend: info.name, reason: info.reason, native: s.native, wasm: s.wasm, skipped },
        "tfjs backend selected",
      );
      return info;
    } catch (e) {
      skipped.push({ choice, reason: (e as Error).message.split("\n")[0] });
    }
  }
  throw new Error(`no tfjs backend could start: ${JSON.stringify(skipped)}`);
}
