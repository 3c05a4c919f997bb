// suspend: delete every pod and keep status (phase Suspended). Un-suspending starts a NEW attempt (not counted)
// that resumes from the last checkpoint, so a resumed run never reuses the names of a suspended attempt.

import { REASON } from "./reasons.ts";
import type { StatusBuilder } from "./status.ts";

/** Mark the run suspended. Returns true when this reconcile made the transition. */
export function markSuspended(b: StatusBuilder): boolean {
  const was = b.s.phase === "Suspended";
  b.s.phase = "Suspended";
  b.cond("Suspended", "True", REASON.Suspended, "run is suspended: pods deleted, status kept");
  b.cond("Running", "False", REASON.Suspended, "run is suspended");
  return !was;
}

/** Leave suspension: bump the attempt so new pods start from the last checkpoint. Returns true on transition. */
export function markResumed(b: StatusBuilder): boolean {
  if (b.s.phase !== "Suspended") return false;
  b.cond("Suspended", "False", REASON.Resumed, "run resumed from the last checkpoint");
  if ((b.s.attempt ?? 0) > 0) b.s.attempt = (b.s.attempt ?? 0) + 1;
  b.s.phase = "Pending";
  return true;
}
