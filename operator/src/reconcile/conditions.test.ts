// setCondition: jobset semantics (transition time, exclusive pairs, add-only-when-True) and merge-patch diffs.
import assert from "node:assert/strict";
import { test } from "node:test";
import { setCondition } from "./conditions.ts";
import { mergePatchDiff } from "./status.ts";

const T1 = "2026-01-01T00:00:01Z";
const T2 = "2026-01-01T00:00:02Z";

test("a missing condition is added only when True (or explicitly for blockers)", () => {
  assert.deepEqual(setCondition([], { type: "Running", status: "False", reason: "X", message: "" }, T1), {
    list: [],
    changed: false,
  });
  const added = setCondition([], { type: "Running", status: "True", reason: "Up", message: "m" }, T1, 3);
  assert.equal(added.changed, true);
  assert.deepEqual(added.list, [
    { type: "Running", status: "True", reason: "Up", message: "m", lastTransitionTime: T1, observedGeneration: 3 },
  ]);
  const blocker = setCondition(
    [],
    { type: "Admitted", status: "False", reason: "SecretNotFound", message: "m" },
    T1,
    1,
    true,
  );
  assert.equal(blocker.list[0].status, "False");
});

test("lastTransitionTime changes only when the status flips", () => {
  const a = setCondition([], { type: "Running", status: "True", reason: "Up", message: "m" }, T1).list;
  const same = setCondition(a, { type: "Running", status: "True", reason: "Up", message: "m" }, T2);
  assert.equal(same.changed, false);
  const msg = setCondition(a, { type: "Running", status: "True", reason: "Up2", message: "m2" }, T2);
  assert.equal(msg.changed, true);
  assert.equal(msg.list[0].lastTransitionTime, T1);
  const flip = setCondition(a, { type: "Running", status: "False", reason: "Down", message: "" }, T2);
  assert.equal(flip.list[0].lastTransitionTime, T2);
  assert.equal(a[0].reason, "Up", "input not mutated");
});

test("exclusive pairs: Succeeded/Failed, Running/Restarting", () => {
  let l = setCondition([], { type: "Running", status: "True", reason: "Up", message: "" }, T1).list;
  l = setCondition(l, { type: "Restarting", status: "True", reason: "Signal", message: "x" }, T2).list;
  const byType = Object.fromEntries(l.map((c) => [c.type, c]));
  assert.equal(byType.Running.status, "False");
  assert.equal(byType.Running.reason, "Signal");
  assert.equal(byType.Running.lastTransitionTime, T2);
  assert.equal(byType.Restarting.status, "True");
  l = setCondition(l, { type: "Failed", status: "True", reason: "ExitCode", message: "" }, T2).list;
  assert.equal(
    l.find((c) => c.type === "Succeeded"),
    undefined,
    "opposite not added when absent",
  );
});

test("mergePatchDiff: only changes, explicit nulls for removals, arrays replaced whole", () => {
  assert.equal(mergePatchDiff({ a: 1, b: { c: 2 } }, { a: 1, b: { c: 2 } }), undefined);
  assert.deepEqual(mergePatchDiff({ a: 1, b: { c: 2, d: 3 } }, { a: 1, b: { c: 5 } }), { b: { c: 5, d: null } });
  assert.deepEqual(mergePatchDiff({ l: [1, 2] }, { l: [1, 2, 3] }), { l: [1, 2, 3] });
  assert.deepEqual(mergePatchDiff({}, { phase: "Running" }), { phase: "Running" });
  // The apiserver returns objects with its own key order: conditions equal but for key order are no change.
  const served = [{ type: "Admitted", status: "True", observedGeneration: 1, reason: "Admitted", message: "ok" }];
  const planned = [{ type: "Admitted", status: "True", reason: "Admitted", message: "ok", observedGeneration: 1 }];
  assert.equal(mergePatchDiff({ conditions: served }, { conditions: planned }), undefined);
  assert.deepEqual(mergePatchDiff({ conditions: served }, { conditions: [{ ...planned[0], status: "False" }] }), {
    conditions: [{ ...planned[0], status: "False" }],
  });
  assert.deepEqual(mergePatchDiff({ l: [{ a: 1 }, { b: 2 }] }, { l: [{ b: 2 }, { a: 1 }] }), {
    l: [{ b: 2 }, { a: 1 }],
  });
  assert.equal(mergePatchDiff({ l: [{ a: 1, x: undefined }] }, { l: [{ a: 1 }] }), undefined);
});
