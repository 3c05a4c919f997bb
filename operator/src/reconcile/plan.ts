// What a planner (planTraining in training.ts, planSampling in pipeline.ts) returns, and the builder both use
// to fill it. Pure: no client, no clock. The reconciler writes plan.status first, then deletes and creates
// children, then emits the events.
import type { KubernetesObject, V1Pod, V1Service } from "@kubernetes/client-node";
import { LABEL } from "./labels.ts";
import type { RunStatus } from "./run.ts";
import type { StatusBuilder } from "./status.ts";

/** Poll interval while blocked on something we do not watch (Secrets, references in other namespaces). */
export const BLOCKED_REQUEUE_MS = 10_000;
/** Floor of any requeue a plan asks for. */
const MIN_REQUEUE_MS = 500;

/** Reconcile-time problem that prevents creating pods (missing Secret, unknown profile, ref not ready). */
export interface Blocker {
  reason: string;
  message: string;
}

export interface RunEvent {
  type: "Normal" | "Warning";
  reason: string;
  message: string;
}

export interface Plan {
  status: RunStatus;
  createService?: V1Service;
  /** PodGroup for a gang scheduler (Volcano / scheduler-plugins), created before the pods. */
  createPodGroup?: KubernetesObject & { spec: Record<string, unknown> };
  createPods: V1Pod[];
  /** Pod names to delete. */
  deletePods: string[];
  deleteRun: boolean;
  events: RunEvent[];
  requeueAfterMs?: number;
}

/** The attempt a pod belongs to (its attempt label; 0 when unlabelled). */
export function attemptOf(pod: V1Pod): number {
  return Number(pod.metadata?.labels?.[LABEL.attempt] ?? 0);
}

/** The node rank of a training pod (its node-rank label; -1 when unlabelled). */
export function rankOf(pod: V1Pod): number {
  return Number(pod.metadata?.labels?.[LABEL.nodeRank] ?? -1);
}

/** A plan under construction; `plan.status` is the StatusBuilder's status object. */
export class PlanBuilder {
  readonly plan: Plan;
  constructor(readonly b: StatusBuilder) {
    this.plan = { status: b.s, createPods: [], deletePods: [], deleteRun: false, events: [] };
  }
  /** Ask to be reconciled again after `msAfter` (at least MIN_REQUEUE_MS); the earliest request wins. */
  requeue(msAfter: number): void {
    const v = Math.max(MIN_REQUEUE_MS, Math.round(msAfter));
    this.plan.requeueAfterMs = this.plan.requeueAfterMs === undefined ? v : Math.min(this.plan.requeueAfterMs, v);
  }
  /** Delete these pods (once each; pods already being deleted are skipped). */
  del(pods: readonly V1Pod[]): void {
    for (const p of pods) {
      const n = p.metadata?.name;
      if (n && !p.metadata?.deletionTimestamp && !this.plan.deletePods.includes(n)) this.plan.deletePods.push(n);
    }
  }
  event(type: RunEvent["type"], reason: string, message: string): void {
    this.plan.events.push({ type, reason, message });
  }
}
