// ttlSecondsAfterFinished: delete the run this long after it Succeeded or Failed.
import { ms } from "./failurePolicy.ts";

export type TtlDecision = { kind: "none" } | { kind: "delete" } | { kind: "wait"; ms: number };

export function ttlDecision(
  completionTime: string | undefined,
  ttlSeconds: number | undefined,
  now: number,
): TtlDecision {
  if (ttlSeconds === undefined) return { kind: "none" };
  const done = ms(completionTime);
  if (done === undefined) return { kind: "none" };
  const left = done + ttlSeconds * 1000 - now;
  return left <= 0 ? { kind: "delete" } : { kind: "wait", ms: left };
}
