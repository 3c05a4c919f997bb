// metav1.Condition handling with jobset's semantics (kubernetes-sigs/jobset updateCondition):
// - lastTransitionTime changes only when the status flips;
// - setting a condition True sets its exclusive opposite False;
// - a condition that does not exist yet is added only when it is True.
import { type ConditionType, EXCLUSIVE } from "./reasons.ts";

export interface Condition {
  type: string;
  status: "True" | "False" | "Unknown";
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface ConditionInput {
  type: ConditionType;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

function apply(list: Condition[], c: ConditionInput, now: string, generation?: number, addFalse = false): boolean {
  const i = list.findIndex((x) => x.type === c.type);
  if (i < 0) {
    if (c.status !== "True" && !addFalse) return false;
    list.push({ ...c, lastTransitionTime: now, observedGeneration: generation });
    return true;
  }
  const old = list[i];
  if (
    old.status === c.status &&
    old.reason === c.reason &&
    old.message === c.message &&
    old.observedGeneration === generation
  ) {
    return false;
  }
  list[i] = {
    ...c,
    observedGeneration: generation,
    lastTransitionTime: old.status === c.status ? old.lastTransitionTime : now,
  };
  return true;
}

/**
 * Set a condition; returns the new list and whether anything changed. The input list is not mutated.
 * `addFalse` adds a missing condition even when it is not True (reconcile-time blockers must be visible).
 */
export function setCondition(
  list: readonly Condition[] | undefined,
  c: ConditionInput,
  now: string,
  generation?: number,
  addFalse = false,
): { list: Condition[]; changed: boolean } {
  const out = (list ?? []).map((x) => ({ ...x }));
  let changed = false;
  if (c.status === "True") {
    const opposite = EXCLUSIVE[c.type];
    const o = opposite ? out.find((x) => x.type === opposite) : undefined;
    if (o && o.status === "True") {
      changed =
        apply(out, { type: opposite!, status: "False", reason: c.reason, message: c.message }, now, generation) ||
        changed;
    }
  }
  changed = apply(out, c, now, generation, addFalse) || changed;
  return { list: out, changed };
}

export function getCondition(list: readonly Condition[] | undefined, type: ConditionType): Condition | undefined {
  return list?.find((c) => c.type === type);
}
