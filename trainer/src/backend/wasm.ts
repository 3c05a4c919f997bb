// The wasm backend: SIMD always (Node ≥ 16 has it). Multi-threading (XNNPACK's pthreadpool on emscripten workers)
// is switched off by tfjs in Node (tfjs issue 3830); registerThreadedWasm wires the threaded-SIMD build to
// Node's worker_threads itself. TFJS_WASM_THREADS=N picks the thread count (default: available cores, ≤ 8;
// 1 = the stock single-threaded SIMD path). A threaded start-up failure falls back to 1 thread and says so.
import { createHash } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";

export interface WasmInfo {
  simd: boolean;
  /** XNNPACK threads (1 = single-threaded). */
  threads: number;
  /** Why the thread count is what it is. */
  note: string;
}

const require = createRequire(import.meta.url);

/** Threads the wasm backend should use: TFJS_WASM_THREADS, else available cores capped at 8 (XNNPACK pool). */
export function wasmThreadsWanted(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.TFJS_WASM_THREADS;
  if (raw !== undefined && raw !== "") {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new Error(`TFJS_WASM_THREADS: expected an integer ≥ 1, got "${raw}"`);
    return Math.min(n, 8);
  }
  return Math.max(1, Math.min(os.availableParallelism(), 8));
}

interface EmscriptenModule {
  cwrap(name: string, ret: string | null, args: string[]): (...a: number[]) => number;
  PThread?: { runningWorkers: { unref(): void }[] };
}
type EmscriptenFactory = (config: Record<string, unknown>) => Promise<EmscriptenModule>;

let wasmInfo: WasmInfo | undefined;

/**
 * Register "wasm" as the threaded-SIMD emscripten build wired to worker_threads:
 * - the pthread worker script ships as a JS string; it is written to a content-addressed temp file;
 * - the emscripten main script is loaded by path (the browser path uses a Blob URL Node workers cannot load);
 * - the C++ side caps threads at emscripten_num_logical_cores()/2 (it assumes hyper-threading), which it reads
 *   through os.cpus() in Node, so os.cpus() reports 2×threads while the module initialises;
 * - pool workers are unref'd so an idle pool never keeps the process alive.
 */
async function registerThreadedWasm(threads: number): Promise<void> {
  const wasmPkg = await import("@tensorflow/tfjs-backend-wasm");
  const dir = path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/package.json"));
  const factoryJs = path.join(dir, "wasm-out", "tfjs-backend-wasm-threaded-simd.js");
  const wasmFile = path.join(dir, "dist", "tfjs-backend-wasm-threaded-simd.wasm");
  const factory = require(factoryJs) as EmscriptenFactory;
  const { wasmWorkerContents } = require(path.join(dir, "wasm-out", "tfjs-backend-wasm-threaded-simd.worker.js")) as {
    wasmWorkerContents: string;
  };
  // The string was written for a Blob: its "\n" escapes became real newlines inside string literals.
  const workerSrc = wasmWorkerContents.replace(/\n/g, "\\n");
  const hash = createHash("sha256").update(workerSrc).digest("hex").slice(0, 16);
  const workerPath = path.join(os.tmpdir(), `mergevq-tfjs-wasm-${hash}.worker.cjs`);
  if (!fs.existsSync(workerPath)) {
    const tmp = `${workerPath}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, workerSrc);
    fs.renameSync(tmp, workerPath);
  }
  tf.removeBackend("wasm");
  tf.registerBackend(
    "wasm",
    async () => {
      const realCpus = os.cpus;
      const cpu0 = realCpus()[0];
      os.cpus = () => Array.from({ length: 2 * threads }, () => cpu0);
      let mod: EmscriptenModule;
      try {
        mod = await factory({
          locateFile: (p: string, prefix: string) =>
            p.endsWith(".worker.js") ? workerPath : p.endsWith(".wasm") ? wasmFile : prefix + p,
          mainScriptUrlOrBlob: factoryJs,
        });
      } finally {
        os.cpus = realCpus;
      }
      const m = mod as EmscriptenModule & { tfjs: Record<string, unknown> };
      m.tfjs = {
        init: mod.cwrap("init", null, []),
        initWithThreadsCount: mod.cwrap("init_with_threads_count", null, ["number"]),
        getThreadsCount: mod.cwrap("get_threads_count", "number", []),
        registerTensor: mod.cwrap("register_tensor", null, ["number", "number", "number"]),
        disposeData: mod.cwrap("dispose_data", null, ["number"]),
        dispose: mod.cwrap("dispose", null, []),
      };
      wasmPkg.setThreadsCount(threads);
      // BackendWasm's constructor type names the emscripten module interface tfjs does not export.
      const backend = new wasmPkg.BackendWasm(m as unknown as ConstructorParameters<typeof wasmPkg.BackendWasm>[0]);
      for (const w of mod.PThread?.runningWorkers ?? []) w.unref();
      return backend;
    },
    2,
  );
}

/** Start (or re-select) the wasm backend. */
export async function initWasm(): Promise<WasmInfo> {
  if (wasmInfo && tf.findBackend("wasm")) {
    // Already initialised: only make it current again (startBackend's contract).
    if (!(await tf.setBackend("wasm"))) throw new Error('tf.setBackend("wasm") returned false');
    return wasmInfo;
  }
  const wasmPkg = await import("@tensorflow/tfjs-backend-wasm");
  const dist = path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"));
  const simd = (await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT")) as boolean;
  const threads = wasmThreadsWanted();
  let note = threads === 1 ? "1 thread (TFJS_WASM_THREADS or a single core)" : "";
  // The factory @tensorflow/tfjs-backend-wasm registered on import; restored if the threaded start fails.
  const stock = tf.engine().registryFactory.wasm;
  if (!stock) throw new Error("@tensorflow/tfjs-backend-wasm registered no wasm backend");
  if (threads > 1 && simd) {
    try {
      await registerThreadedWasm(threads);
      if (!(await tf.setBackend("wasm"))) throw new Error('tf.setBackend("wasm") returned false');
      const got = wasmPkg.getThreadsCount();
      wasmInfo = { simd, threads: got, note: `threaded SIMD build on worker_threads, ${got} threads` };
      return wasmInfo;
    } catch (e) {
      note = `threaded start-up failed, using 1 thread: ${(e as Error).message.split("\n")[0]}`;
      tf.removeBackend("wasm");
      tf.registerBackend("wasm", stock.factory, stock.priority);
    }
  } else if (threads > 1) {
    note = "no wasm SIMD support: single-threaded build";
  }
  wasmPkg.setThreadsCount(1);
  wasmPkg.setWasmPaths(`${dist}${path.sep}`);
  if (!(await tf.setBackend("wasm"))) throw new Error('tf.setBackend("wasm") returned false');
  wasmInfo = { simd, threads: wasmPkg.getThreadsCount(), note };
  return wasmInfo;
}
