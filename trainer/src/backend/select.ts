// TF.js backend selection at start-up: tfjs-node-gpu → tfjs-node → wasm → cpu.
// The same model code runs on every backend; which one runs (and why the faster ones did not) is logged.
// Override with TFJS_BACKEND=tensorflow-gpu|tensorflow|wasm|cpu (or the `--backend` flag of the CLI).
//
// Native ("tensorflow"): @tensorflow/tfjs-node normally downloads libtensorflow at install time, which
// cannot happen here. hack/tfjs-native/build.sh builds its addon against the libtensorflow of PyPI's
// tensorflow-cpu wheel into a cache OUTSIDE the repo; it is found, in this order, at
//   1. MERGEVQ_TFJS_NODE_DIR (a built tfjs-node package dir; authoritative: no other candidate is tried),
//   2. node_modules/@tensorflow/tfjs-node when it was installed with its addon,
//   3. ${MERGEVQ_CACHE:-~/.cache/mergevq}/tfjs-node/<tfjs version>/node_modules/@tensorflow/tfjs-node.
// A tfjs-node outside the repo resolves "@tensorflow/tfjs*" to the repo's copy (see redirectTfjsImports),
// so its kernels register with the one tfjs engine the model code uses.
//
// Wasm: SIMD always (Node ≥ 16 has it). Multi-threading (XNNPACK's pthreadpool on emscripten workers) is
// switched off by tfjs in Node (tfjs issue 3830); wasmThreaded() wires the threaded-SIMD build to Node's
// worker_threads itself. TFJS_WASM_THREADS=N picks the thread count (default: available cores, ≤ 8;
// 1 = the stock single-threaded SIMD path). A threaded start-up failure falls back to 1 thread and says so.
import { createHash } from "node:crypto";
import fs from "node:fs";
import Module, { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { Logger } from "../../../common/src/logger.ts";

export type BackendChoice = "tensorflow-gpu" | "tensorflow" | "wasm" | "cpu";
export const BACKEND_ORDER: readonly BackendChoice[] = ["tensorflow-gpu", "tensorflow", "wasm", "cpu"];

export interface NativeInfo {
  /** tfjs-node package dir that was loaded. */
  dir: string;
  /** Where it was found. */
  source: "env" | "node_modules" | "cache";
  /** libtensorflow version the addon runs on (`TF_Version()`). */
  tensorflow: string;
  /** Kernels replaced by installNativeFastKernels (empty when MERGEVQ_TFJS_NODE_FAST_KERNELS=0). */
  fastKernels?: string[];
}

export interface WasmInfo {
  simd: boolean;
  /** XNNPACK threads (1 = single-threaded). */
  threads: number;
  /** Why the thread count is what it is. */
  note: string;
}

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

const require = createRequire(import.meta.url);

// ---------------------------------------------------------------------------------------------------------
// Native (tfjs-node) discovery and loading.

export interface NativeCandidate {
  dir: string;
  source: NativeInfo["source"];
}

/** Cache root shared with hack/ scripts: $MERGEVQ_CACHE, else $XDG_CACHE_HOME/mergevq, else ~/.cache/mergevq. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MERGEVQ_CACHE) return path.resolve(env.MERGEVQ_CACHE);
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "mergevq");
}

/** The repo's @tensorflow/tfjs version: the tfjs-node build must match it. */
export function tfjsVersion(): string {
  return (require("@tensorflow/tfjs/package.json") as { version: string }).version;
}

/** Package dir hack/tfjs-native/build.sh produces (whether or not it exists). */
export function tfjsNodeCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(cacheRoot(env), "tfjs-node", tfjsVersion(), "node_modules", "@tensorflow", "tfjs-node");
}

function hasBinding(dir: string): boolean {
  const lib = path.join(dir, "lib");
  if (!fs.existsSync(lib)) return false;
  return fs.readdirSync(lib).some((d) => fs.existsSync(path.join(lib, d, "tfjs_binding.node")));
}

/**
 * Native tfjs-node packages to try, best first, plus why the implicit ones are absent. An explicit
 * MERGEVQ_TFJS_NODE_DIR is the only candidate when set (even if it is broken: loading it then fails loudly).
 */
export function nativeCandidates(env: NodeJS.ProcessEnv = process.env): {
  candidates: NativeCandidate[];
  absent: string[];
} {
  if (env.MERGEVQ_TFJS_NODE_DIR) {
    return { candidates: [{ dir: path.resolve(env.MERGEVQ_TFJS_NODE_DIR), source: "env" }], absent: [] };
  }
  const candidates: NativeCandidate[] = [];
  const absent: string[] = [];
  let installed: string | undefined;
  try {
    installed = path.dirname(require.resolve("@tensorflow/tfjs-node/package.json"));
  } catch {
    absent.push("@tensorflow/tfjs-node is not installed in node_modules");
  }
  if (installed) {
    if (hasBinding(installed)) candidates.push({ dir: installed, source: "node_modules" });
    else absent.push(`${installed} has no built addon (its libtensorflow download cannot run here)`);
  }
  const cached = tfjsNodeCacheDir(env);
  if (fs.existsSync(path.join(cached, "BUILD-INFO.json")) && hasBinding(cached)) {
    candidates.push({ dir: cached, source: "cache" });
  } else {
    absent.push(`no build at ${cached} (run hack/tfjs-native/build.sh)`);
  }
  return { candidates, absent };
}

const redirectedRoots = new Set<string>();
let redirectInstalled = false;
const TFJS_REQUEST = /^@tensorflow\/tfjs(-core|-layers|-converter|-data|-backend-cpu|-backend-webgl)?(\/.*)?$/;

/**
 * Make `require("@tensorflow/tfjs…")` from files under `root` resolve to this repo's copies. A second tfjs
 * copy would re-register every cpu/webgl kernel (hundreds of warnings) and keep its own io/Tensor registries.
 * Uses Module._resolveFilename, the hook module-alias/tsconfig-paths use; only these requests from these
 * roots are touched.
 */
function redirectTfjsImports(root: string): void {
  redirectedRoots.add(fs.realpathSync(root) + path.sep);
  if (redirectInstalled) return;
  redirectInstalled = true;
  type Resolve = (
    request: string,
    parent: { filename?: string | null } | null | undefined,
    ...rest: unknown[]
  ) => string;
  // Module's private resolver is not in @types/node; the cast names exactly the one member used.
  const mod = Module as unknown as { _resolveFilename: Resolve };
  const original = mod._resolveFilename;
  mod._resolveFilename = function (this: unknown, request, parent, ...rest) {
    const from = parent?.filename;
    if (from && TFJS_REQUEST.test(request) && [...redirectedRoots].some((r) => from.startsWith(r))) {
      return require.resolve(request);
    }
    return original.call(this, request, parent, ...rest);
  };
}

let nativeLoaded: NativeInfo | undefined;

async function loadNative(cand: NativeCandidate): Promise<NativeInfo> {
  const pkgJson = path.join(cand.dir, "package.json");
  if (!fs.existsSync(pkgJson)) throw new Error(`${cand.dir}: not a package dir (no package.json)`);
  if (!hasBinding(cand.dir)) throw new Error(`${cand.dir}: no built addon under lib/*/tfjs_binding.node`);
  // TF's C++ INFO lines (oneDNN notice, CPU feature guard) are noise on stderr; the user's value wins.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= "1";
  if (cand.source !== "node_modules") redirectTfjsImports(cand.dir);
  const main = require.resolve(cand.dir);
  // Version check before loading: a mismatched tfjs-node would run kernels written for another tfjs.
  const version = (JSON.parse(fs.readFileSync(pkgJson, "utf8")) as { version: string }).version;
  if (version !== tfjsVersion()) {
    throw new Error(`${cand.dir}: tfjs-node ${version} does not match @tensorflow/tfjs ${tfjsVersion()}`);
  }
  restoreUtilPredicates();
  // tfjs-node is CommonJS; loading it registers the "tensorflow" backend and its kernels.
  require(main);
  if (!tf.engine().registryFactory.tensorflow) {
    throw new Error(`${cand.dir} loaded but registered no "tensorflow" backend`);
  }
  const fastKernels = process.env.MERGEVQ_TFJS_NODE_FAST_KERNELS === "0" ? [] : installNativeFastKernels();
  return { dir: cand.dir, source: cand.source, tensorflow: tfVersionOf(cand.dir), fastKernels };
}

/**
 * tfjs-node 4.22 (its last release) calls `util.isNullOrUndefined` and `util.isArray` from node:util, which
 * Node 23 removed (deprecated since Node 4): on Node 24 the first op with an optional attribute throws
 * "isNullOrUndefined is not a function", and `util.isArray` prints a DEP0044 warning in every pod log. Give both
 * their documented semantics (isArray is Array.isArray, as Node's own deprecated version is).
 */
function restoreUtilPredicates(): void {
  const util = require("node:util") as Record<string, unknown>;
  util.isNullOrUndefined ??= (v: unknown) => v === null || v === undefined;
  util.isArray = Array.isArray;
}

function tfVersionOf(dir: string): string {
  const lib = path.join(dir, "lib");
  for (const d of fs.readdirSync(lib)) {
    const binding = path.join(lib, d, "tfjs_binding.node");
    if (fs.existsSync(binding)) return (require(binding) as { TF_Version: string }).TF_Version;
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------------------
// Native fast paths: tfjs-node kernels that pay for work the op does not need.

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The parts of tfjs-node's NodeJSKernelBackend (not exported as a type) the fast kernels use. */
interface NodeKernelBackend {
  binding: {
    createTensor(shape: number[], dtype: number, values: Int32Array): number;
    deleteTensor(id: number): void;
    executeOp(name: string, attrs: NodeOpAttr[], inputIds: number[], numOutputs: number): unknown[];
    TF_FLOAT: number;
    TF_INT32: number;
    TF_BOOL: number;
    TF_ATTR_TYPE: number;
    TF_ATTR_BOOL: number;
  };
  getInputTensorIds(tensors: tf.TensorInfo[]): number[];
  createOutputTensor(metadata: unknown): tf.Tensor;
  incRef(dataId: object): void;
}
interface NodeOpAttr {
  name: string;
  type: number;
  value: number | boolean;
}

/** Constant int32 vectors (shapes, axes) as native tensor handles, created once and reused by every op. */
const int32Handles = new Map<string, number>();
function int32Handle(b: NodeKernelBackend, values: readonly number[]): number {
  const key = values.join(",");
  let id = int32Handles.get(key);
  if (id === undefined) {
    if (int32Handles.size >= 4096) {
      for (const old of int32Handles.values()) b.binding.deleteTensor(old);
      int32Handles.clear();
    }
    id = b.binding.createTensor([values.length], b.binding.TF_INT32, Int32Array.from(values));
    int32Handles.set(key, id);
  }
  return id;
}

function tfDtype(b: NodeKernelBackend, dtype: tf.DataType): number | undefined {
  return dtype === "float32"
    ? b.binding.TF_FLOAT
    : dtype === "int32"
      ? b.binding.TF_INT32
      : dtype === "bool"
        ? b.binding.TF_BOOL
        : undefined;
}

function identity(b: NodeKernelBackend, x: tf.TensorInfo): tf.TensorInfo {
  b.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

/**
 * Replace four hot tfjs-node kernels with versions that skip work their results do not depend on (exact:
 * the same TF ops run on the same inputs, or none run at all):
 * - Cast to the tensor's own dtype: returns the input (tfjs-node runs TF's Cast, which copies; the tfjs
 *   gradient of every Mul calls cast(x, "float32"), and tfjs-node's Mean casts its input first);
 * - Reshape to the same shape: returns the input; other Reshapes take the target shape from a cached native
 *   int32 handle instead of creating, uploading and freeing a tfjs tensor per call;
 * - Mean of float32: no preliminary Cast; Mean and Sum: cached axes handles.
 * A T1 train step runs ~1000 Reshapes, ~500 Casts and ~500 reductions, so these are ~20 % of its ops.
 * Other dtypes/cases fall through to tfjs-node's own kernels. Returns the names of the replaced kernels.
 */
export function installNativeFastKernels(): string[] {
  const replaced: string[] = [];
  const replace = (name: string, fast: (args: KernelArgs, orig: tf.KernelFunc) => tf.TensorInfo | tf.TensorInfo[]) => {
    const orig = tf.getKernel(name, "tensorflow");
    if (!orig) return;
    tf.unregisterKernel(name, "tensorflow");
    tf.registerKernel({
      kernelName: name,
      backendName: "tensorflow",
      kernelFunc: (args) => fast(args, orig.kernelFunc),
    });
    replaced.push(name);
  };
  const nb = (args: KernelArgs) => args.backend as unknown as NodeKernelBackend;
  replace(tf.Cast, (args, orig) => {
    const x = args.inputs.x as tf.TensorInfo;
    return x.dtype === args.attrs?.dtype && tfDtype(nb(args), x.dtype) !== undefined
      ? identity(nb(args), x)
      : orig(args);
  });
  replace(tf.Reshape, (args, orig) => {
    const b = nb(args);
    const x = args.inputs.x as tf.TensorInfo;
    const dt = tfDtype(b, x.dtype);
    if (dt === undefined) return orig(args);
    const shape = tf.util.inferFromImplicitShape(args.attrs?.shape as number[], tf.util.sizeFromShape(x.shape));
    if (tf.util.arraysEqual(shape, x.shape)) return identity(b, x);
    const attrs = [
      { name: "T", type: b.binding.TF_ATTR_TYPE, value: dt },
      { name: "Tshape", type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_INT32 },
    ];
    const ids = [...b.getInputTensorIds([x]), int32Handle(b, shape)];
    return b.createOutputTensor(b.binding.executeOp("Reshape", attrs, ids, 1)[0]);
  });
  for (const name of [tf.Mean, tf.Sum]) {
    replace(name, (args, orig) => {
      const b = nb(args);
      const x = args.inputs.x as tf.TensorInfo;
      const dt = tfDtype(b, x.dtype);
      // Mean of int/bool: tfjs-node casts to float32 first; keep its kernel for those.
      if (dt === undefined || (name === tf.Mean && x.dtype !== "float32")) return orig(args);
      const axes = tf.util.parseAxisParam(args.attrs?.axis as number | number[], x.shape);
      const attrs = [
        { name: "keep_dims", type: b.binding.TF_ATTR_BOOL, value: Boolean(args.attrs?.keepDims) },
        { name: "T", type: b.binding.TF_ATTR_TYPE, value: dt },
        { name: "Tidx", type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_INT32 },
      ];
      const ids = [...b.getInputTensorIds([x]), int32Handle(b, axes)];
      return b.createOutputTensor(b.binding.executeOp(name, attrs, ids, 1)[0]);
    });
  }
  return replaced;
}

async function tryNative(gpu: boolean): Promise<NativeInfo> {
  if (gpu) {
    const dir = path.dirname(require.resolve("@tensorflow/tfjs-node-gpu/package.json"));
    return loadNative({ dir, source: "node_modules" });
  }
  if (nativeLoaded) return nativeLoaded;
  const { candidates, absent } = nativeCandidates();
  if (candidates.length === 0) throw new Error(`no native tfjs-node: ${absent.join("; ")}`);
  const errors: string[] = [];
  for (const cand of candidates) {
    try {
      nativeLoaded = await loadNative(cand);
      return nativeLoaded;
    } catch (e) {
      errors.push(`${cand.source} ${cand.dir}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  throw new Error(`native tfjs-node failed to load: ${errors.join("; ")}`);
}

// ---------------------------------------------------------------------------------------------------------
// Wasm (SIMD, optionally multi-threaded).

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

async function initWasm(): Promise<WasmInfo> {
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

// ---------------------------------------------------------------------------------------------------------
// Selection.

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
