// Data-parallel helpers over a ProcessGroup for tfjs models. The only file of trainer/src/dist that imports
// tfjs. Gradients/variables are laid out by sorted name, so every rank packs the same buckets; the layout
// (names, shapes) is verified across ranks on the first call for each `key`.
//
// Per optimiser step (after accumulating this rank's micro-batch gradients, before clipping/Adam):
//   grads = await averageGradients(pg, grads, { disposeInputs: true })
// At start-up (after building the model/optimiser, or after resuming rank 0 from a checkpoint):
//   await broadcastVariables(pg, model variables ∪ optimiser moments ∪ EMA shadows)
// For logging: losses = await allReduceLosses(pg, losses)   (mean over ranks; identical on every rank)
import * as tf from "@tensorflow/tfjs";
import { configHash, DistError, type ProcessGroup } from "./processGroup.ts";

const verified = new WeakMap<ProcessGroup, Set<string>>();

/**
 * Check once per (group, key) that every rank has the same names and shapes, in the same order. The
 * decision to check depends only on `key` (never on the data), so all ranks take part in the same
 * collective.
 */
export async function verifyLayout(
  pg: ProcessGroup,
  key: string,
  layout: readonly (readonly [string, readonly number[]])[],
): Promise<void> {
  if (pg.worldSize === 1) return;
  let done = verified.get(pg);
  if (!done) {
    done = new Set();
    verified.set(pg, done);
  }
  if (done.has(key)) return;
  done.add(key);
  const mine = JSON.stringify(layout);
  const all = await pg.allGather(new TextEncoder().encode(mine));
  for (let r = 0; r < all.length; r++) {
    const theirs = new TextDecoder().decode(all[r]);
    if (theirs === mine) continue;
    const t = JSON.parse(theirs) as [string, number[]][];
    let detail = `rank ${r} has ${t.length} tensors, this rank ${layout.length}`;
    for (let i = 0; i < Math.min(t.length, layout.length); i++) {
      if (JSON.stringify(t[i]) !== JSON.stringify(layout[i])) {
        detail = `tensor #${i}: rank ${r} has ${JSON.stringify(t[i])}, this rank ${JSON.stringify(layout[i])}`;
        break;
      }
    }
    const e = new DistError("PROTOCOL", `rank ${pg.rank}: ${key} layout differs between ranks: ${detail}`);
    pg.fail(e);
    throw e;
  }
}

function sortedEntries<T extends tf.Tensor>(m: ReadonlyMap<string, T>): [string, T][] {
  return [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/**
 * Average gradients over all ranks (bucketed ring all-reduce; device→host copies of later tensors overlap
 * the reduction of earlier buckets). Returns a new map of float32 tensors the caller owns, with the same
 * keys; the result is bit-identical on every rank. `disposeInputs` disposes the input tensors.
 */
export async function averageGradients(
  pg: ProcessGroup,
  grads: ReadonlyMap<string, tf.Tensor>,
  opts: { disposeInputs?: boolean; key?: string } = {},
): Promise<Map<string, tf.Tensor>> {
  const entries = sortedEntries(grads);
  for (const [name, t] of entries) {
    if (t.dtype !== "float32")
      throw new DistError("CONFIG", `gradient ${name} has dtype ${t.dtype}; only float32 is averaged`);
  }
  if (pg.worldSize === 1) {
    const out = new Map(entries.map(([n, t]) => [n, opts.disposeInputs ? t : t.clone()]));
    return out;
  }
  await verifyLayout(
    pg,
    opts.key ?? "gradients",
    entries.map(([n, t]) => [n, t.shape] as const),
  );
  const items = entries.map(([, t]) => ({ size: t.size, data: t.data() as Promise<Float32Array> }));
  let outs: Float32Array[];
  try {
    outs = await pg.allReduceMeanFused(items);
  } finally {
    if (opts.disposeInputs) for (const [, t] of entries) t.dispose();
  }
  return new Map(entries.map(([n, t], i) => [n, tf.tensor(outs[i], t.shape, "float32")]));
}

/**
 * Copy `root`'s values of the variables into every rank's variables (initial weights, optimiser moments,
 * EMA shadows after a resume on rank 0). A Map is ordered by name; an array keeps its order (it must be
 * the same on every rank).
 */
export async function broadcastVariables(
  pg: ProcessGroup,
  vars: ReadonlyMap<string, tf.Variable> | readonly tf.Variable[],
  opts: { root?: number; key?: string } = {},
): Promise<void> {
  if (pg.worldSize === 1) return;
  const root = opts.root ?? 0;
  const list: [string, tf.Variable][] = Array.isArray(vars)
    ? (vars as readonly tf.Variable[]).map((v, i) => [`${i}:${v.name}`, v])
    : sortedEntries(vars as ReadonlyMap<string, tf.Variable>);
  for (const [name, v] of list) {
    if (v.dtype !== "float32")
      throw new DistError("CONFIG", `variable ${name} has dtype ${v.dtype}; only float32 is broadcast`);
  }
  await verifyLayout(
    pg,
    opts.key ?? `broadcast:${list.length}`,
    // tfjs auto-names variables with process-local counters: arrays are matched by position only.
    list.map(([n, v], i) => [Array.isArray(vars) ? String(i) : n, v.shape] as const),
  );
  const isRoot = pg.rank === root;
  const arrays = await Promise.all(
    list.map(async ([, v]) =>
      isRoot ? Float32Array.from((await v.data()) as Float32Array) : new Float32Array(v.size),
    ),
  );
  await pg.broadcast(arrays, root);
  if (!isRoot) {
    for (let i = 0; i < list.length; i++) {
      const v = list[i][1];
      tf.tidy(() => v.assign(tf.tensor(arrays[i], v.shape, "float32")));
    }
  }
}

/**
 * Mean of named scalars over ranks (float64, identical on every rank), for logging. Every rank must pass
 * the same names; a different name set is detected and fails the group.
 */
export async function allReduceLosses(
  pg: ProcessGroup,
  losses: Readonly<Record<string, number>>,
): Promise<Record<string, number>> {
  const names = Object.keys(losses).sort();
  if (pg.worldSize === 1) return Object.fromEntries(names.map((n) => [n, losses[n]]));
  const tag = Number.parseInt(configHash(names).slice(0, 12), 16); // < 2^48: exact in float64 sums
  const vals = await pg.allReduceScalars([...names.map((n) => losses[n]), tag], "mean");
  if (vals[vals.length - 1] !== tag) {
    const e = new DistError(
      "PROTOCOL",
      `rank ${pg.rank}: allReduceLosses: ranks passed different loss names (this rank: ${names.join(", ")})`,
    );
    pg.fail(e);
    throw e;
  }
  return Object.fromEntries(names.map((n, i) => [n, vals[i]]));
}
