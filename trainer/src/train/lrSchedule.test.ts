import assert from "node:assert/strict";
import { test } from "node:test";
import { arLrAt } from "./lrSchedule.ts";

const close = (a: number, b: number, tol = 1e-12) =>
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

test("warm-up starts at 0.005·peak and rises linearly to the peak", () => {
  const o = { peak: 3e-4, warmupSteps: 100, totalSteps: 1101 };
  close(arLrAt(o, 0), 0.005 * 3e-4);
  close(arLrAt(o, 50), 3e-4 * (0.005 + 0.995 * 0.5));
  close(arLrAt(o, 99), 3e-4 * (0.005 + 0.995 * 0.99));
  close(arLrAt(o, 100), 3e-4);
  for (let s = 1; s < 100; s++) assert.ok(arLrAt(o, s) > arLrAt(o, s - 1));
});

test("constant for the first 5% of the remaining steps, then linear decay to 0.1·peak at the last step", () => {
  // W = 100, last step = 1100 → 1000 remaining optimiser steps: constant while (s−100)/1000 < 0.05 → s < 150.
  const o = { peak: 2e-4, warmupSteps: 100, totalSteps: 1101 };
  for (const s of [100, 120, 149]) close(arLrAt(o, s), 2e-4);
  close(arLrAt(o, 150), 2e-4); // p = 0.05: 0.1 + 0.9·0.95/0.95 = 1 (continuous)
  close(arLrAt(o, 600), 2e-4 * (0.1 + (0.9 * 0.5) / 0.95));
  close(arLrAt(o, 1100), 0.1 * 2e-4);
  assert.ok(arLrAt(o, 151) < 2e-4);
  for (let s = 151; s <= 1100; s++) assert.ok(arLrAt(o, s) < arLrAt(o, s - 1));
});

test("no warm-up, and degenerate horizons", () => {
  close(arLrAt({ peak: 1, warmupSteps: 0, totalSteps: 21 }, 0), 1);
  close(arLrAt({ peak: 1, warmupSteps: 0, totalSteps: 21 }, 20), 0.1);
  close(arLrAt({ peak: 1, warmupSteps: 0, totalSteps: 1 }, 0), 1);
  close(arLrAt({ peak: 1, warmupSteps: 4, totalSteps: 5 }, 4), 1);
  close(arLrAt({ peak: 1, warmupSteps: 4, totalSteps: 5 }, 0), 0.005);
});
