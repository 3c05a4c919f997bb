// Parameter declarations and seeded initialisation for the MergeVQ tokenizer (docs/model.md §2.1, §2.7, pitfall 22).
// Every module declares its parameters as `ParamSpec`s (name, shape, init); the model builder and the
// analytic parameter count (docs/model.md §2.8 checksum) both read the same declarations, so counts never drift
// from the allocated model. Weight names are stable, PyTorch-like dotted paths (checkpoint keys).
import * as tf from "@tensorflow/tfjs";

export type Init =
  | { kind: "zeros" }
  | { kind: "ones" }
  | { kind: "const"; value: number }
  /** U(−bound, bound): PyTorch's default Conv/Linear init uses bound = 1/√fan_in. */
  | { kind: "uniform"; bound: number }
  /** N(0, std²) (CLS token N(0, 1e-6²)). */
  | { kind: "normal"; std: number }
  /** timm `trunc_normal_(std, a=−2, b=2)`: truncation at ±2 absolute (≈ ±100σ for std .02). */
  | { kind: "truncNormal"; std: number };

/**
 * Which part of the model a parameter belongs to (docs/model.md §2.8 reports encoder incl. CLS head / decoder;
 * "ar" = the Stage II generator, trainer/src/ar).
 */
export type ParamGroup = "encoder" | "clsHead" | "decoder" | "ar";

export interface ParamSpec {
  name: string;
  shape: number[];
  init: Init;
  group: ParamGroup;
}

/** Read access to named parameters used by every forward function. */
export interface Params {
  get(name: string): tf.Tensor;
}

export const torchDefault = (fanIn: number): Init => ({ kind: "uniform", bound: 1 / Math.sqrt(fanIn) });
export const vitWeight: Init = { kind: "truncNormal", std: 0.02 };
export const ZEROS: Init = { kind: "zeros" };
export const ONES: Init = { kind: "ones" };

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
export const countParams = (specs: readonly ParamSpec[]): number => specs.reduce((a, s) => a + numel(s.shape), 0);

/** 32-bit FNV-1a of a string: stable per-parameter seeds from (config seed, parameter name). */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Initial value of one parameter. The seed depends only on (seed, name), not on creation order. */
export function initTensor(spec: ParamSpec, seed: number): tf.Tensor {
  const s = fnv1a(`${seed}/${spec.name}`);
  const { init, shape } = spec;
  switch (init.kind) {
    case "zeros":
      return tf.zeros(shape);
    case "ones":
      return tf.ones(shape);
    case "const":
      return tf.fill(shape, init.value);
    case "uniform":
      return tf.randomUniform(shape, -init.bound, init.bound, "float32", s);
    case "normal":
      return tf.randomNormal(shape, 0, init.std, "float32", s);
    case "truncNormal":
      return tf.tidy(() => tf.clipByValue(tf.randomNormal(shape, 0, init.std, "float32", s), -2, 2));
  }
}

let storeCounter = 0;

/** Owns the tf.Variables of one model instance. */
export class ParamStore implements Params {
  readonly specs: readonly ParamSpec[];
  private readonly vars = new Map<string, tf.Variable>();
  /** tfjs variable names are global; each store gets its own prefix so several models can coexist. */
  readonly prefix: string;

  constructor(specs: readonly ParamSpec[], seed: number) {
    this.specs = specs;
    this.prefix = `mergevq${storeCounter++}`;
    for (const spec of specs) {
      if (this.vars.has(spec.name)) throw new Error(`duplicate parameter name ${spec.name}`);
      const init = initTensor(spec, seed);
      this.vars.set(spec.name, tf.variable(init, true, `${this.prefix}/${spec.name}`));
      init.dispose();
    }
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new Error(`unknown parameter ${name}`);
    return v;
  }

  names(): string[] {
    return [...this.vars.keys()];
  }

  variables(filter?: (spec: ParamSpec) => boolean): tf.Variable[] {
    return this.specs.filter((s) => !filter || filter(s)).map((s) => this.get(s.name));
  }

  /** Named map of the live variables (not copies). */
  getWeights(): Map<string, tf.Variable> {
    return new Map(this.vars);
  }

  /** Assign values by name; every parameter must be present with the declared shape. */
  setWeights(weights: ReadonlyMap<string, tf.Tensor> | Record<string, tf.Tensor>): void {
    const get = (n: string) => (weights instanceof Map ? weights.get(n) : (weights as Record<string, tf.Tensor>)[n]);
    const missing = this.specs.filter((s) => get(s.name) === undefined).map((s) => s.name);
    if (missing.length > 0)
      throw new Error(`setWeights: missing ${missing.length} parameters (${missing.slice(0, 5).join(", ")}…)`);
    for (const spec of this.specs) {
      const t = get(spec.name)!;
      if (!tf.util.arraysEqual(t.shape, spec.shape)) {
        throw new Error(`setWeights: ${spec.name} has shape [${t.shape}] but the model declares [${spec.shape}]`);
      }
      this.get(spec.name).assign(t.dtype === "float32" ? t : tf.cast(t, "float32"));
    }
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}

/**
 * `tf.tidy` for functions returning interfaces of tensors (TypeScript interfaces lack the index signature
 * of `TensorContainer`; the runtime keeps every tensor reachable in the returned object).
 */
export function tidyObject<T extends object>(fn: () => T): T {
  return tf.tidy(fn as unknown as () => tf.TensorContainer) as unknown as T;
}
