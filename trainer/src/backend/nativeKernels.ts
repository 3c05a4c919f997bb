// Native fast paths: tfjs-node kernels that pay for work the op does not need, replaced by direct libtensorflow
// calls through the addon's binding (MERGEVQ_TFJS_NODE_FAST_KERNELS=0 keeps tfjs-node's own).
import * as tf from "@tensorflow/tfjs";
import {
  ATTENTION,
  ATTENTION_GRAD,
  BIAS_ADD,
  BIAS_ADD_GRAD,
  FUSED_ADAM,
  GELU,
  GELU_GRAD,
  GROUP_NORM_ACT,
  GROUP_NORM_ACT_GRAD,
  LAYER_NORM,
  LAYER_NORM_GRAD,
  LINEAR,
  LINEAR_GRAD,
  SCALED_RESIDUAL,
  SCALED_RESIDUAL_GRAD,
} from "../nn/fusedOps.ts";

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
    TF_ATTR_INT: number;
    TF_ATTR_FLOAT: number;
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
 * Replace hot tfjs-node kernels with versions that skip work their results do not depend on (exact: the same
 * TF ops run on the same inputs, or none run at all):
 * - Identity (tfjs' clone, e.g. of every tensor saved for a gradient): shares the input's data;
 * - Cast to the tensor's own dtype: returns the input (tfjs-node runs TF's Cast, which copies; the tfjs
 *   gradient of every Mul calls cast(x, "float32"), and tfjs-node's Mean casts its input first);
 * - Reshape to the same shape: returns the input; other Reshapes take the target shape from a cached native
 *   int32 handle instead of creating, uploading and freeing a tfjs tensor per call;
 * - Mean of float32: no preliminary Cast; Mean and Sum: cached axes handles.
 * A T1 train step runs ~1000 Reshapes, ~500 Casts and ~500 reductions, so these are ~20 % of its ops.
 * - BatchMatMul of two float32 matrices: TF's MatMul (below).
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
  // Identity: tfjs' engine clones every tensor a gradient saves (saveTensorsForBackwardMode), ~950 per T1 step,
  // and tfjs-node runs each clone as a TF Identity op. TF tensors are immutable, so the clone can share the data.
  replace(tf.Identity, (args, orig) => {
    const x = args.inputs.x as tf.TensorInfo;
    return tfDtype(nb(args), x.dtype) !== undefined ? identity(nb(args), x) : orig(args);
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
  // BatchMatMul of two matrices: TF's MatMul instead of BatchMatMulV2, which tfjs-node runs for every matMul
  // and which takes ~2× as long on 2-D operands (e.g. 512×64 · 64×64: 104 vs 232 µs here). Same product,
  // a different oneDNN kernel (float32 rounding may differ in the last bits).
  replace(tf.BatchMatMul, (args, orig) => {
    const b = nb(args);
    const { a, b: bm } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    if (a.shape.length !== 2 || bm.shape.length !== 2 || a.dtype !== "float32" || bm.dtype !== "float32") {
      return orig(args);
    }
    const attrs = [
      { name: "T", type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT },
      { name: "transpose_a", type: b.binding.TF_ATTR_BOOL, value: Boolean(args.attrs?.transposeA) },
      { name: "transpose_b", type: b.binding.TF_ATTR_BOOL, value: Boolean(args.attrs?.transposeB) },
    ];
    return b.createOutputTensor(b.binding.executeOp("MatMul", attrs, b.getInputTensorIds([a, bm]), 1)[0]);
  });
  return replaced;
}

/**
 * The fused kernels of the op library hack/tfjs-native/ops/mergevq_ops.cc (already loaded into libtensorflow by
 * the caller) as tfjs kernels of the tensorflow backend; trainer/src/nn (groupNorm.ts, layers.ts, attention.ts)
 * and train/adam.ts use them when registered and hold their gradients. Only the ops `hasOp` finds in
 * TensorFlow's registry are registered; the others are returned as `missing` and run composed.
 */
export function installFusedKernels(hasOp: (tfOp: string) => boolean): { kernels: string[]; missing: string[] } {
  const kernels: string[] = [];
  const missing: string[] = [];
  const run = (
    op: string,
    inputNames: (attrs: Record<string, unknown>) => string[],
    numOutputs: (attrs: Record<string, unknown>) => number,
    attrs: (a: Record<string, unknown>, b: NodeKernelBackend) => NodeOpAttr[],
    tfOp = op,
  ) => {
    if (!hasOp(tfOp)) {
      missing.push(op);
      return;
    }
    kernels.push(op);
    tf.registerKernel({
      kernelName: op,
      backendName: "tensorflow",
      kernelFunc: (args) => {
        const b = args.backend as unknown as NodeKernelBackend;
        const a = args.attrs ?? {};
        const names = inputNames(a);
        const ins = names.map((n) => args.inputs[n] as tf.TensorInfo);
        for (const [i, t] of ins.entries()) {
          if (t?.dtype !== "float32") throw new Error(`${op}: input ${names[i]} must be a float32 tensor`);
        }
        const outs = b.binding.executeOp(tfOp, attrs(a, b), b.getInputTensorIds(ins), numOutputs(a));
        const tensors = outs.map((o) => b.createOutputTensor(o));
        return tensors.length === 1 ? tensors[0] : tensors; // a single-output kernel returns one tensor
      },
    });
  };
  const int = (b: NodeKernelBackend, name: string, value: unknown) => ({
    name,
    type: b.binding.TF_ATTR_INT,
    value: value as number,
  });
  const float = (b: NodeKernelBackend, name: string, value: unknown) => ({
    name,
    type: b.binding.TF_ATTR_FLOAT,
    value: value as number,
  });
  const bool = (b: NodeKernelBackend, name: string, value: unknown) => ({
    name,
    type: b.binding.TF_ATTR_BOOL,
    value: Boolean(value),
  });
  run(
    GROUP_NORM_ACT,
    () => ["x", "gamma", "beta"],
    () => 3,
    (a, b) => [int(b, "groups", a.groups), float(b, "eps", a.eps), bool(b, "silu", a.silu)],
  );
  run(
    GROUP_NORM_ACT_GRAD,
    () => ["dy", "x", "gamma", "beta", "mean", "rstd"],
    () => 3,
    (a, b) => [int(b, "groups", a.groups), bool(b, "silu", a.silu)],
  );
  run(
    FUSED_ADAM,
    (a) => ["p", "m", "v", "g"].flatMap((k) => Array.from({ length: a.n as number }, (_, i) => `${k}${i}`)),
    (a) => 3 * (a.n as number),
    (a, b) => [
      int(b, "N", a.n),
      ...["beta1", "beta2", "one_minus_beta1", "one_minus_beta2", "bc2_sqrt", "eps", "step_size"].map((k) =>
        float(b, k, a[k]),
      ),
    ],
  );
  run(
    LAYER_NORM,
    () => ["x", "gamma", "beta"],
    () => 3,
    (a, b) => [float(b, "eps", a.eps)],
  );
  run(
    LAYER_NORM_GRAD,
    () => ["dy", "x", "gamma", "mean", "rstd"],
    () => 3,
    () => [],
  );
  run(
    GELU,
    () => ["x"],
    () => 1,
    () => [],
  );
  run(
    GELU_GRAD,
    () => ["dy", "x"],
    () => 1,
    () => [],
  );
  // TF's own BiasAdd / BiasAddGrad (NHWC = channels last, the default): one pass each, where tfjs's broadcast
  // Add and its gradient (a Sum over the broadcast axes) are slower.
  const floatT = (b: NodeKernelBackend) => [{ name: "T", type: b.binding.TF_ATTR_TYPE, value: b.binding.TF_FLOAT }];
  run(
    BIAS_ADD,
    () => ["x", "b"],
    () => 1,
    (_a, b) => floatT(b),
    "BiasAdd",
  );
  run(
    BIAS_ADD_GRAD,
    () => ["dy"],
    () => 1,
    (_a, b) => floatT(b),
    "BiasAddGrad",
  );
  run(
    ATTENTION,
    (a) => (a.hasBias ? ["qkv", "bias"] : ["qkv", "qkv"]),
    () => 2,
    (a, b) => [int(b, "heads", a.heads), float(b, "scale", a.scale), bool(b, "has_bias", a.hasBias)],
  );
  run(
    ATTENTION_GRAD,
    () => ["dout", "qkv", "probs"],
    () => 2,
    (a, b) => [int(b, "heads", a.heads), float(b, "scale", a.scale)],
  );
  run(
    LINEAR,
    (a) => (a.hasBias ? ["x", "w", "b"] : ["x", "w", "w"]),
    () => 1,
    (a, b) => [bool(b, "has_bias", a.hasBias)],
  );
  run(
    LINEAR_GRAD,
    () => ["dy", "x", "w"],
    () => 3,
    (a, b) => [bool(b, "has_bias", a.hasBias)],
  );
  run(
    SCALED_RESIDUAL,
    () => ["x", "y", "gamma"],
    () => 1,
    () => [],
  );
  run(
    SCALED_RESIDUAL_GRAD,
    () => ["dout", "y", "gamma"],
    () => 2,
    () => [],
  );
  return { kernels, missing };
}
