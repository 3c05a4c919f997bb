// Minimal ONNX protobuf writer (enough to emit small inference graphs from TypeScript without the Python
// `onnx` package). Field numbers follow onnx/onnx.proto (ModelProto, GraphProto, NodeProto, TensorProto,
// ValueInfoProto, TypeProto, TensorShapeProto, AttributeProto, OperatorSetIdProto).

class Writer {
  private chunks: number[] = [];
  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.chunks.push(Number((x & 0x7fn) | 0x80n));
      x >>= 7n;
    }
    this.chunks.push(Number(x));
  }
  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  int(field: number, v: number | bigint): void {
    this.tag(field, 0);
    this.varint(v);
  }
  bytes(field: number, b: Uint8Array): void {
    this.tag(field, 2);
    this.varint(b.length);
    for (const x of b) this.chunks.push(x);
  }
  string(field: number, s: string): void {
    this.bytes(field, new TextEncoder().encode(s));
  }
  float(field: number, f: number): void {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, f, true);
    for (const x of b) this.chunks.push(x);
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.chunks);
  }
}

export const ONNX_FLOAT = 1;
export const ONNX_INT64 = 7;

export type AttrValue =
  | { kind: "int"; v: number }
  | { kind: "float"; v: number }
  | { kind: "ints"; v: number[] }
  | { kind: "string"; v: string };

export interface OnnxNode {
  op: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  attrs?: Record<string, AttrValue>;
}

export interface OnnxTensor {
  name: string;
  dims: number[];
  dataType: typeof ONNX_FLOAT | typeof ONNX_INT64;
  data: Float32Array | BigInt64Array;
}

export interface OnnxValueInfo {
  name: string;
  elemType: number;
  /** number = fixed size, string = symbolic dimension */
  shape: (number | string)[];
}

export interface OnnxGraph {
  name: string;
  nodes: OnnxNode[];
  initializers: OnnxTensor[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  opset: number;
  producer?: string;
  docString?: string;
}

function encodeAttr(name: string, a: AttrValue): Uint8Array {
  const w = new Writer();
  w.string(1, name);
  switch (a.kind) {
    case "float":
      w.float(2, a.v);
      w.int(20, 1);
      break;
    case "int":
      w.int(3, a.v);
      w.int(20, 2);
      break;
    case "string":
      w.string(4, a.v);
      w.int(20, 3);
      break;
    case "ints":
      for (const v of a.v) w.int(8, v);
      w.int(20, 7);
      break;
  }
  return w.finish();
}

function encodeNode(n: OnnxNode, i: number): Uint8Array {
  const w = new Writer();
  for (const x of n.inputs) w.string(1, x);
  for (const x of n.outputs) w.string(2, x);
  w.string(3, n.name ?? `${n.op}_${i}`);
  w.string(4, n.op);
  for (const [k, v] of Object.entries(n.attrs ?? {})) w.bytes(5, encodeAttr(k, v));
  return w.finish();
}

function encodeTensor(t: OnnxTensor): Uint8Array {
  const w = new Writer();
  for (const d of t.dims) w.int(1, d);
  w.int(2, t.dataType);
  w.string(8, t.name);
  w.bytes(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return w.finish();
}

function encodeValueInfo(v: OnnxValueInfo): Uint8Array {
  const shape = new Writer();
  for (const d of v.shape) {
    const dim = new Writer();
    if (typeof d === "number") dim.int(1, d);
    else dim.string(2, d);
    shape.bytes(1, dim.finish());
  }
  const tensorType = new Writer();
  tensorType.int(1, v.elemType);
  tensorType.bytes(2, shape.finish());
  const type = new Writer();
  type.bytes(1, tensorType.finish());
  const w = new Writer();
  w.string(1, v.name);
  w.bytes(2, type.finish());
  return w.finish();
}

/** Serialise a graph into an ONNX ModelProto (IR version 8). */
export function encodeOnnxModel(g: OnnxGraph): Uint8Array {
  const graph = new Writer();
  g.nodes.forEach((n, i) => {
    graph.bytes(1, encodeNode(n, i));
  });
  graph.string(2, g.name);
  for (const t of g.initializers) graph.bytes(5, encodeTensor(t));
  if (g.docString) graph.string(10, g.docString);
  for (const v of g.inputs) graph.bytes(11, encodeValueInfo(v));
  for (const v of g.outputs) graph.bytes(12, encodeValueInfo(v));
  const opset = new Writer();
  opset.string(1, "");
  opset.int(2, g.opset);
  const model = new Writer();
  model.int(1, 8);
  model.string(2, g.producer ?? "mergevq-trainer");
  if (g.docString) model.string(6, g.docString);
  model.bytes(7, graph.finish());
  model.bytes(8, opset.finish());
  return model.finish();
}
