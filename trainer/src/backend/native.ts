import fs from "node:fs";
import Module, { createRequire } from "node:module";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { cacheRoot } from "../util/cache.ts";
import { installFusedKernels, installNativeFastKernels } from "./nativeKernels.ts";

export { cacheRoot };

export interface NativeInfo {
  /** tfjs-node package dir that was loaded. */
  dir: string;
  /** Where it was found. */
  source: "env" | "node_modules" | "cache";
  /** libtensorflow version the addon runs on (`TF_Version()`). */
  tensorflow: string;
  /** Kernels replaced by installNativeFastKernels (empty when MERGEVQ_TFJS_NODE_FAST_KERNELS=0). */
  fastKernels?: string[];
  /** Fused kernels from the op library (hack/tfjs-native/ops), or why they are not used. */
  /** `missing`: kernels this TypeScript knows that the library on disk lacks (older build): they run composed. */
  fusedOps?: { kernels: string[]; missing?: string[]; isa: FusedOpsIsa } | { absent: string };
  /** TF_ENABLE_ONEDNN_OPTS as libtensorflow reads it, and who set it (see `oneDnnDefault`). */
  oneDnn?: { value: string; setBy: "user" | "trainer" | "unset" };
}

/**
 * TensorFlow's own default turns its oneDNN kernels on only on CPUs with AVX-512 VNNI/BF16 or AMX. Elsewhere (an
 * AVX2-only AMD EPYC, for one) its eager convolutions run as im2col + GEMM, whose backward passes ran 1.1–1.7×
 * slower in T1's profile than oneDNN's convolution primitives (hack/tfjs-native/README.md). CPU builds therefore set
 * `TF_ENABLE_ONEDNN_OPTS=1` unless the user set it; it must be in the environment before the addon creates its
 * context, because libtensorflow reads it once. The CUDA build is left to TensorFlow's default.
 */
export function oneDnnDefault(env: NodeJS.ProcessEnv, gpu: boolean): NonNullable<NativeInfo["oneDnn"]> {
  const user = env.TF_ENABLE_ONEDNN_OPTS;
  if (user !== undefined) return { value: user, setBy: "user" };
  if (gpu) return { value: "", setBy: "unset" };
  env.TF_ENABLE_ONEDNN_OPTS = "1";
  return { value: "1", setBy: "trainer" };
}

/** The two builds of the op library: AVX2/FMA, and AVX-512 (F, DQ, VL, BW) where the CPU has it. */
export type FusedOpsIsa = "avx512" | "avx2";

/** Where hack/tfjs-native/build-ops.sh puts each build of the op library inside a tfjs-node package dir. */
export const fusedOpsPath = (pkgDir: string, isa: FusedOpsIsa = "avx2"): string =>
  path.join(pkgDir, "deps", "lib", isa === "avx512" ? "mergevq_ops_avx512.node" : "mergevq_ops.node");

/**
 * Whether the CPU has the AVX-512 extensions the AVX-512 build is compiled for, from /proc/cpuinfo's flags (Linux;
 * elsewhere false). Decided before loading: that file's static initialisers may already use the instructions.
 */
export function cpuHasAvx512(cpuinfo?: string): boolean {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = fs.readFileSync("/proc/cpuinfo", "utf8");
    } catch {
      return false;
    }
  }
  const flags = new Set(/^flags\s*:(.*)$/m.exec(text)?.[1].trim().split(/\s+/) ?? []);
  return ["avx512f", "avx512dq", "avx512vl", "avx512bw"].every((f) => flags.has(f));
}

/** The build to load: AVX-512 where the CPU has it and the file exists; MERGEVQ_FUSED_OPS_ISA=avx2 forces AVX2. */
export function fusedOpsIsa(dir: string, env: NodeJS.ProcessEnv = process.env, cpuinfo?: string): FusedOpsIsa {
  if (env.MERGEVQ_FUSED_OPS_ISA === "avx2") return "avx2";
  return cpuHasAvx512(cpuinfo) && fs.existsSync(fusedOpsPath(dir, "avx512")) ? "avx512" : "avx2";
}

/**
 * Load the fused-op library into the running libtensorflow and register its tfjs kernels. CPU builds only (its
 * kernels are CPU kernels: on a GPU device they would force host copies); MERGEVQ_FUSED_OPS=0 turns it off.
 */
function loadFusedOps(dir: string, gpu: boolean): NonNullable<NativeInfo["fusedOps"]> {
  if (process.env.MERGEVQ_FUSED_OPS === "0") return { absent: "MERGEVQ_FUSED_OPS=0" };
  if (gpu) return { absent: "CUDA build: the fused kernels are CPU-only" };
  const isa = fusedOpsIsa(dir);
  const lib = fusedOpsPath(dir, isa);
  if (!fs.existsSync(lib)) return { absent: `no ${lib} (hack/tfjs-native/build-ops.sh builds it)` };
  const mod = require(lib) as { cpuSupported?: boolean; hasOp?: (op: string) => boolean };
  if (!mod.cpuSupported) return { absent: `${lib}: this CPU lacks ${isa === "avx512" ? "AVX-512" : "AVX2/FMA"}` };
  const { hasOp } = mod;
  if (typeof hasOp !== "function") return { absent: `${lib} is stale (no hasOp): rerun hack/tfjs-native/build.sh` };
  const { kernels, missing } = installFusedKernels(hasOp);
  return missing.length ? { kernels, missing, isa } : { kernels, isa };
}

const require = createRequire(import.meta.url);

export interface NativeCandidate {
  dir: string;
  source: NativeInfo["source"];
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

async function loadNative(cand: NativeCandidate, gpu = false): Promise<NativeInfo> {
  const pkgJson = path.join(cand.dir, "package.json");
  if (!fs.existsSync(pkgJson)) throw new Error(`${cand.dir}: not a package dir (no package.json)`);
  if (!hasBinding(cand.dir)) throw new Error(`${cand.dir}: no built addon under lib/*/tfjs_binding.node`);
  // TF's C++ INFO lines (oneDNN notice, CPU feature guard) are noise on stderr; the user's value wins.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= "1";
  const oneDnn = oneDnnDefault(process.env, gpu);
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
  const fusedOps = loadFusedOps(cand.dir, gpu);
  return { dir: cand.dir, source: cand.source, tensorflow: tfVersionOf(cand.dir), fastKernels, fusedOps, oneDnn };
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

/** Load the native backend (the GPU build from node_modules, or the first CPU candidate that loads). */
export async function tryNative(gpu: boolean): Promise<NativeInfo> {
  if (gpu) {
    const dir = path.dirname(require.resolve("@tensorflow/tfjs-node-gpu/package.json"));
    return loadNative({ dir, source: "node_modules" }, true);
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
