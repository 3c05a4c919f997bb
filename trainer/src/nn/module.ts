// Modules, as in PyTorch's nn.Module: a layer or block declares its parameters and children once, in its
// constructor, under its dotted name ("decoder.up.2.block.0.norm1"); its forward reads them through the same
// fields. `specs()` lists every parameter in declaration order, which is the order of the ParamStore, of the
// checkpoint tensors and of the optimiser state; the model builders and the analytic parameter counts both
// read it, so the allocated model and the counted one cannot drift apart.
//
// A module holds no tensors: the values live in a ParamStore (params.ts) and every forward takes it as `P`,
// so the same module tree serves the live model, an EMA copy or a frozen one loaded from a checkpoint.
import type { Init, ParamGroup, ParamSpec } from "./params.ts";

export abstract class Module {
  /** Dotted path of this module ("" for a root whose children carry full names). */
  readonly name: string;
  private readonly entries: (ParamSpec | Module)[] = [];

  constructor(name: string) {
    this.name = name;
  }

  /** Full name of a child or parameter: "<name>.<key>", or "<key>" at an unnamed root. */
  protected path(key: string | number): string {
    return this.name === "" ? String(key) : `${this.name}.${key}`;
  }

  /** Declares one parameter of this module and returns its full name (the ParamStore key). */
  protected param(key: string, shape: number[], init: Init, group: ParamGroup): string {
    const name = this.path(key);
    this.entries.push({ name, shape, init, group });
    return name;
  }

  /** Registers a child module (its parameters follow those declared so far). */
  protected add<M extends Module>(child: M): M {
    this.entries.push(child);
    return child;
  }

  /** Every parameter of this module and its children, in declaration order. */
  specs(): ParamSpec[] {
    return this.entries.flatMap((e) => (e instanceof Module ? e.specs() : [e]));
  }
}
