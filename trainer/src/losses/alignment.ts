// Global alignment (docs/model.md §3): the student's CLS-head output is aligned with a frozen teacher's CLS feature
// by `L_cls = T²·KL(softmax(t/T) ‖ softmax(s/T))`, T = 4, batch-mean; the 768-d features are treated as
// logits. The teacher is an ONNX model run by onnxruntime-node:
//   input  "pixel_values"  float32 [B,3,H,W], ImageNet mean/std normalised (the teacher view)
//   output "pooler_output" float32 [B,C]  (final-LayerNorm CLS; DINOv2-B: C = 768)
// which is the interface of a HuggingFace DINOv2 ONNX export. Production loads DINOv2-B from a path or
// s3:// URI; tests use `generateTinyVitTeacher()`, a small random ViT with the same interface (labelled
// GENERATED/RANDOM wherever it is logged).
import * as tf from "@tensorflow/tfjs";
import * as ort from "onnxruntime-node";
import type { Logger } from "../../../common/src/logger.ts";
import { storageFor } from "../io/storage.ts";
import { encodeOnnxModel, ONNX_FLOAT, ONNX_INT64, type OnnxNode, type OnnxTensor } from "../util/onnx.ts";
import type { Rng } from "../util/rng.ts";

export const ALIGN_TEMPERATURE = 4;

/** `T²·KL(softmax(t/T) ‖ softmax(s/T))`, averaged over the batch. Gradient flows into `student` only. */
export function klAlignmentLoss(teacher: tf.Tensor2D, student: tf.Tensor2D, T = ALIGN_TEMPERATURE): tf.Scalar {
  return tf.tidy(() => {
    // The teacher features are constants (not produced from any variable), so no gradient reaches them.
    const t = teacher;
    const logPt = tf.logSoftmax(tf.div(t, T));
    const logPs = tf.logSoftmax(tf.div(student, T));
    const kl = tf.sum(tf.mul(tf.exp(logPt), tf.sub(logPt, logPs)), -1);
    return tf.mul(T * T, tf.mean(kl)) as tf.Scalar;
  });
}

/** Frozen ONNX teacher. */
export class OnnxTeacher {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly inputName: string,
    readonly outputName: string,
    readonly generated: boolean,
    readonly source: string,
  ) {}

  /** Load from a path, file:// or s3:// URI. */
  static async load(uri: string, log?: Logger): Promise<OnnxTeacher> {
    const bytes = await storageFor(uri).get(uri);
    const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    const inputName = session.inputNames.includes("pixel_values") ? "pixel_values" : session.inputNames[0];
    const outputName = session.outputNames.includes("pooler_output") ? "pooler_output" : session.outputNames[0];
    // A generated teacher carries this marker in its graph name / doc string (see generateTinyVitTeacher).
    const generated = Buffer.from(bytes).includes(Buffer.from(GENERATED_MARKER));
    log?.info(
      { uri, inputName, outputName, weights: generated ? "generated/random" : "pretrained" },
      generated ? "alignment teacher: GENERATED/RANDOM tiny ViT (not DINOv2)" : "alignment teacher loaded",
    );
    return new OnnxTeacher(session, inputName, outputName, generated, uri);
  }

  /**
   * Teacher features for NHWC views that are already ImageNet-normalised (`[B,H,W,3]`). Returns a
   * constant `[B,C]` tensor (no gradient).
   */
  async features(viewNhwc: tf.Tensor4D): Promise<tf.Tensor2D> {
    const [b, h, w, c] = viewNhwc.shape;
    const nchw = tf.tidy(() => tf.transpose(viewNhwc, [0, 3, 1, 2]));
    const data = (await nchw.data()) as Float32Array;
    nchw.dispose();
    const out = await this.session.run({ [this.inputName]: new ort.Tensor("float32", data, [b, c, h, w]) });
    const t = out[this.outputName];
    if (t.dims.length !== 2 || t.dims[0] !== b) {
      throw new Error(`${this.source}: teacher output ${this.outputName} has shape [${t.dims}], expected [${b},C]`);
    }
    return tf.tensor2d(t.data as Float32Array, [b, Number(t.dims[1])]);
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}

export const GENERATED_MARKER = "GENERATED-RANDOM-TINY-VIT";

export interface TinyVitSpec {
  imageSize: number;
  patch: number;
  dim: number;
  depth: number;
  heads: number;
  /** Output width; when ≠ dim a (random) linear projection follows the final LayerNorm. */
  outDim: number;
}

/**
 * A small random ViT as an ONNX model with the DINOv2 export interface (pixel_values → pooler_output).
 * Patch conv → [CLS; patches] + learned positions → `depth` pre-norm blocks (MHSA, exact-GELU MLP ×4) →
 * final LayerNorm → CLS (→ projection when outDim ≠ dim). Weights: N(0, 0.02), LN γ=1, β=0.
 * Opset 17 (LayerNormalization). Batch dimension is symbolic.
 */
export function generateTinyVitTeacher(spec: TinyVitSpec, rng: Rng): Uint8Array {
  const { imageSize, patch, dim, depth, heads, outDim } = spec;
  if (imageSize % patch) throw new Error(`tiny ViT: imageSize ${imageSize} not divisible by patch ${patch}`);
  if (dim % heads) throw new Error(`tiny ViT: dim ${dim} not divisible by heads ${heads}`);
  const n = (imageSize / patch) ** 2;
  const dh = dim / heads;
  const nodes: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  const f32 = (name: string, dims: number[], data: Float32Array): string => {
    inits.push({ name, dims, dataType: ONNX_FLOAT, data });
    return name;
  };
  const rnd = (name: string, dims: number[]) =>
    f32(
      name,
      dims,
      rng.normalArray(
        dims.reduce((a, b) => a * b, 1),
        0,
        0.02,
      ),
    );
  const fill = (name: string, dims: number[], v: number) =>
    f32(name, dims, new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(v));
  const i64 = (name: string, vals: number[]): string => {
    inits.push({ name, dims: [vals.length], dataType: ONNX_INT64, data: BigInt64Array.from(vals.map(BigInt)) });
    return name;
  };
  const op = (o: string, inputs: string[], out: string, attrs?: OnnxNode["attrs"]) => {
    nodes.push({ op: o, inputs, outputs: [out], attrs });
    return out;
  };
  const ln = (x: string, p: string) =>
    op("LayerNormalization", [x, fill(`${p}.g`, [dim], 1), fill(`${p}.b`, [dim], 0)], `${p}.out`, {
      axis: { kind: "int", v: -1 },
      epsilon: { kind: "float", v: 1e-6 },
    });
  const linear = (x: string, p: string, cin: number, cout: number) =>
    op("Add", [op("MatMul", [x, rnd(`${p}.w`, [cin, cout])], `${p}.mm`), fill(`${p}.bias`, [cout], 0)], `${p}.out`);

  i64("shape_bdn", [0, dim, -1]);
  i64("shape_heads", [0, 0, heads, dh]);
  i64("shape_merge", [0, 0, dim]);
  i64("idx0", [0]);
  f32("half", [], Float32Array.of(0.5));
  f32("one", [], Float32Array.of(1));
  f32("zero", [], Float32Array.of(0));
  f32("inv_sqrt2", [], Float32Array.of(Math.SQRT1_2));
  f32("attn_scale", [], Float32Array.of(1 / Math.sqrt(dh)));

  const pe = op(
    "Conv",
    ["pixel_values", rnd("patch.w", [dim, 3, patch, patch]), fill("patch.b", [dim], 0)],
    "patch.out",
    {
      kernel_shape: { kind: "ints", v: [patch, patch] },
      strides: { kind: "ints", v: [patch, patch] },
    },
  );
  const tokens = op("Transpose", [op("Reshape", [pe, "shape_bdn"], "patch.flat")], "tokens", {
    perm: { kind: "ints", v: [0, 2, 1] },
  });
  // [B,1,D] CLS broadcast without shape arithmetic: 0·mean(tokens) + cls.
  const zeroRow = op(
    "Mul",
    [op("ReduceMean", [tokens], "tok.mean", { axes: { kind: "ints", v: [1] } }), "zero"],
    "tok.zero",
  );
  const cls = op("Add", [zeroRow, rnd("cls", [1, 1, dim])], "cls.b");
  let x = op(
    "Add",
    [op("Concat", [cls, tokens], "seq", { axis: { kind: "int", v: 1 } }), rnd("pos", [1, n + 1, dim])],
    "x0",
  );

  for (let l = 0; l < depth; l++) {
    const p = `blk${l}`;
    const h = ln(x, `${p}.ln1`);
    const split = (name: string, perm: number[]) =>
      op(
        "Transpose",
        [op("Reshape", [linear(h, `${p}.${name}`, dim, dim), "shape_heads"], `${p}.${name}.r`)],
        `${p}.${name}.t`,
        {
          perm: { kind: "ints", v: perm },
        },
      );
    const q = split("q", [0, 2, 1, 3]);
    const k = split("k", [0, 2, 3, 1]);
    const v = split("v", [0, 2, 1, 3]);
    const scores = op("Mul", [op("MatMul", [q, k], `${p}.qk`), "attn_scale"], `${p}.scores`);
    const attn = op("Softmax", [scores], `${p}.attn`, { axis: { kind: "int", v: -1 } });
    const ctx = op("Transpose", [op("MatMul", [attn, v], `${p}.ctx`)], `${p}.ctx.t`, {
      perm: { kind: "ints", v: [0, 2, 1, 3] },
    });
    const merged = op("Reshape", [ctx, "shape_merge"], `${p}.ctx.m`);
    x = op("Add", [x, linear(merged, `${p}.proj`, dim, dim)], `${p}.res1`);
    const h2 = linear(ln(x, `${p}.ln2`), `${p}.fc1`, dim, 4 * dim);
    const erf = op("Erf", [op("Mul", [h2, "inv_sqrt2"], `${p}.gs`)], `${p}.erf`);
    const gelu = op("Mul", [op("Mul", [h2, "half"], `${p}.gh`), op("Add", [erf, "one"], `${p}.g1`)], `${p}.gelu`);
    x = op("Add", [x, linear(gelu, `${p}.fc2`, 4 * dim, dim)], `${p}.res2`);
  }
  const last = ln(x, "norm");
  const gathered = op("Gather", [last, "idx0"], "cls.g", { axis: { kind: "int", v: 1 } }); // [B,1,D]
  let pooled = op("Squeeze", [gathered, i64("axes1", [1])], "cls.out"); // [B,D]
  if (outDim !== dim) pooled = op("MatMul", [pooled, rnd("head.w", [dim, outDim])], "head.out");
  nodes.push({ op: "Identity", inputs: [pooled], outputs: ["pooler_output"] });
  return encodeOnnxModel({
    name: GENERATED_MARKER,
    docString: `${GENERATED_MARKER}: random weights for tests, NOT DINOv2 (${JSON.stringify(spec)})`,
    nodes,
    initializers: inits,
    inputs: [{ name: "pixel_values", elemType: ONNX_FLOAT, shape: ["batch", 3, imageSize, imageSize] }],
    outputs: [{ name: "pooler_output", elemType: ONNX_FLOAT, shape: ["batch", outDim] }],
    opset: 17,
  });
}

/** Generate a tiny ViT teacher and write it to a path/URI. */
export async function writeGeneratedTeacher(uri: string, spec: TinyVitSpec, rng: Rng): Promise<void> {
  await storageFor(uri).put(uri, generateTinyVitTeacher(spec, rng));
}
