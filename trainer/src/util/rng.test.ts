import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng, rankSeed } from "./rng.ts";

test("Rng is deterministic, serialisable and continues exactly after setState", () => {
  const a = new Rng(42);
  const b = new Rng(42);
  assert.deepEqual(
    Array.from({ length: 5 }, () => a.nextU32()),
    Array.from({ length: 5 }, () => b.nextU32()),
  );
  a.normal(); // leaves a cached spare variate in the state
  const state = JSON.parse(JSON.stringify(a.getState()));
  const c = Rng.fromState(state);
  const seqA = [a.normal(), a.uniform(), a.int(1000), ...a.permutation(10)];
  const seqC = [c.normal(), c.uniform(), c.int(1000), ...c.permutation(10)];
  assert.deepEqual(seqC, seqA);
  assert.notDeepEqual(new Rng(43).nextU32(), new Rng(42).nextU32());
});

test("Rng distributions are sane", () => {
  const r = new Rng(1);
  const n = 20000;
  const xs = r.normalArray(n);
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  const v = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / n;
  assert.ok(Math.abs(mean) < 0.03 && Math.abs(v - 1) < 0.05, `${mean} ${v}`);
  const u = r.uniformArray(n, -2, 2);
  assert.ok(Math.min(...u) >= -2 && Math.max(...u) < 2);
  const p = r.permutation(50);
  assert.deepEqual(
    [...p].sort((x, y) => x - y),
    Array.from({ length: 50 }, (_, i) => i),
  );
});

test("rankSeed = seed·worldSize + rank and validates the rank", () => {
  assert.equal(rankSeed(7, 4, 3), 31);
  assert.throws(() => rankSeed(7, 4, 4), /rank 4 out of range/);
});
