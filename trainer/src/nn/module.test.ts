// Module: names compose from the parent's path, parameters are listed in declaration order (the ParamStore,
// checkpoint and optimiser order), and a forward reads exactly what was declared.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { Conv2d, LayerNorm, Linear } from "./layers.ts";
import { Module } from "./module.ts";
import { ParamStore } from "./params.ts";

class Block extends Module {
  readonly norm: LayerNorm;
  readonly fc: Linear;
  readonly scale: string;

  constructor(name: string, D: number) {
    super(name);
    this.norm = this.add(new LayerNorm(this.path("norm"), D, "encoder"));
    this.scale = this.param("scale", [D], { kind: "ones" }, "encoder");
    this.fc = this.add(new Linear(this.path("fc"), D, 2 * D, { init: "vit", group: "encoder" }));
  }

  forward(P: ParamStore, x: tf.Tensor2D): tf.Tensor {
    return this.fc.forward(P, tf.mul(this.norm.forward(P, x), P.get(this.scale)));
  }
}

class Root extends Module {
  readonly blocks: Block[];
  readonly head: Conv2d;

  constructor() {
    super("");
    this.blocks = [0, 1].map((i) => this.add(new Block(this.path(`blocks.${i}`), 4)));
    this.head = this.add(new Conv2d("head", 1, 1, 8, 3, { bias: false, init: "torch", group: "decoder" }));
  }
}

describe("Module", () => {
  it("lists parameters in declaration order under composed dotted names, with the declared shapes and groups", () => {
    const specs = new Root().specs();
    assert.deepEqual(
      specs.map((s) => s.name),
      [
        "blocks.0.norm.weight",
        "blocks.0.norm.bias",
        "blocks.0.scale",
        "blocks.0.fc.weight",
        "blocks.0.fc.bias",
        "blocks.1.norm.weight",
        "blocks.1.norm.bias",
        "blocks.1.scale",
        "blocks.1.fc.weight",
        "blocks.1.fc.bias",
        "head.weight",
      ],
    );
    assert.deepEqual(specs[3]?.shape, [4, 8]);
    assert.deepEqual(specs.at(-1)?.shape, [1, 1, 8, 3]);
    assert.equal(specs.at(-1)?.group, "decoder");
  });

  it("a forward reads exactly the declared parameters (each gets a gradient)", () => {
    const root = new Root();
    const P = new ParamStore(root.specs(), 3);
    try {
      const block = root.blocks[1] as Block;
      const x = tf.randomNormal([2, 4], 0, 1, "float32", 1) as tf.Tensor2D;
      const own = P.variables((s) => s.name.startsWith("blocks.1."));
      const { grads } = tf.variableGrads(() => tf.sum(tf.square(block.forward(P, x))) as tf.Scalar, own);
      assert.deepEqual(Object.keys(grads).length, 5);
      for (const g of Object.values(grads)) assert.ok(tf.max(tf.abs(g)).dataSync()[0] > 0);
      tf.dispose([x, ...Object.values(grads)]);
    } finally {
      P.dispose();
    }
  });
});
