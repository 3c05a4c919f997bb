// The TokenizerTraining / ARTraining state machine as ONE pure function: (observed, context) → plan.
// The plan's status is written first (it is the durable decision: e.g. "attempt k+1"), then pods are deleted
// and created, then events are emitted. Every action is derived from the persisted status + observed pods, so
// an operator killed anywhere in between redoes the same actions (deterministic names, 404/409 tolerated).
import type { V1Pod } from "@kubernetes/client-node";
import type { FinalReport, Progress } from "../../../common/src/contract.ts";
import type { ResolvedAccelerator } from "./accelerator.ts";
import { podsToClean } from "./cleanup.ts";
import { getCondition } from "./conditions.ts";
import { desiredNodePods, desiredService, ownerReference, runLabels } from "./desired.ts";
import {
  type Classification,
  deadline,
  decide,
  firstFailure,
  isRunning,
  isStalled,
  isSucceeded,
  ms,
  stallCheckInMs,
} from "./failurePolicy.ts";
import { desiredPodGroup } from "./gang.ts";
import { attemptOf, BLOCKED_REQUEUE_MS, type Blocker, type Plan, PlanBuilder, rankOf } from "./plan.ts";
import { REASON } from "./reasons.ts";
import type { OperatorContext, RunStatus, TrainingRun } from "./run.ts";
import { applyFinalReport, finalReportFromPod, ingestProgress, StatusBuilder } from "./status.ts";
import { markResumed, markSuspended } from "./suspend.ts";
import { ttlDecision } from "./ttl.ts";

/** A pod of the current attempt missing for longer than this while others exist counts as deleted under us. */
export const MISSING_POD_GRACE_MS = 30_000;

export interface TrainingObserved {
  now: number;
  run: TrainingRun;
  /** Pods owned by this run (by owner-UID label), all attempts, as cached. */
  pods: readonly V1Pod[];
  serviceExists: boolean;
  /** Reconcile-time problem that prevents creating pods (missing Secret, unknown profile, ref not ready). */
  blocker?: Blocker;
  /** Resolved accelerator (required unless blocked). */
  acc?: ResolvedAccelerator;
  tokenizerCheckpoint?: string;
  progress?: Progress;
  /** metrics.json from S3 (used when the termination message carries no report). */
  metricsDoc?: FinalReport;
}

/** Terminal failure: phase Failed, completion time, Failed condition. */
function failRun(pb: PlanBuilder, reason: string, message: string): void {
  const b = pb.b;
  b.s.phase = "Failed";
  b.s.completionTime ??= b.now;
  b.cond("Failed", "True", reason, message);
  b.cond("Running", "False", reason, "run failed");
  b.cond("Restarting", "False", reason, "run failed");
  pb.event("Warning", reason, message);
}

function restart(
  pb: PlanBuilder,
  cur: readonly V1Pod[],
  c: Pick<Classification, "counted" | "reason" | "message">,
): void {
  const b = pb.b;
  const attempt = b.s.attempt ?? 1;
  b.s.attempt = attempt + 1;
  if (c.counted) b.s.restartCount = (b.s.restartCount ?? 0) + 1;
  b.s.phase = "Restarting";
  b.cond("Restarting", "True", c.reason, `attempt ${attempt} → ${attempt + 1}: ${c.message}`);
  b.cond("PodsReady", "False", c.reason, "restarting the group");
  pb.del(cur);
  pb.event(
    "Warning",
    c.reason,
    `restarting the whole group (attempt ${attempt + 1}${c.counted ? "" : ", not counted"}): ${c.message}`,
  );
  pb.requeue(1000);
}

function handleFailure(
  pb: PlanBuilder,
  run: TrainingRun,
  cur: readonly V1Pod[],
  c: Classification | Pick<Classification, "action" | "counted" | "reason" | "message">,
): void {
  const d = decide(c, pb.b.s.restartCount ?? 0, run.spec.runPolicy.backoffLimit);
  if (d.kind === "fail") {
    failRun(pb, d.reason, d.message);
    pb.del(
      podsToClean(cur, run.spec.runPolicy.cleanPodPolicy === "None" ? "Running" : run.spec.runPolicy.cleanPodPolicy),
    );
  } else {
    restart(pb, cur, d);
  }
}

function replicaStatuses(cur: readonly V1Pod[]) {
  return {
    active: cur.filter((p) => !p.status?.phase || p.status.phase === "Pending" || p.status.phase === "Running").length,
    succeeded: cur.filter((p) => p.status?.phase === "Succeeded").length,
    failed: cur.filter((p) => p.status?.phase === "Failed").length,
  };
}

export function planTraining(o: TrainingObserved, ctx: OperatorContext): Plan {
  const run = o.run;
  const rp = run.spec.runPolicy;
  const nowIso = new Date(o.now).toISOString();
  const b = new StatusBuilder(run.status as RunStatus | undefined, nowIso, run.metadata.generation);
  const pb = new PlanBuilder(b);

  // Terminal: clean up per cleanPodPolicy, then TTL.
  if (b.s.phase === "Succeeded" || b.s.phase === "Failed") {
    pb.del(podsToClean(o.pods, rp.cleanPodPolicy));
    const ttl = ttlDecision(b.s.completionTime, rp.ttlSecondsAfterFinished, o.now);
    if (ttl.kind === "delete") pb.plan.deleteRun = true;
    else if (ttl.kind === "wait") pb.requeue(ttl.ms);
    return pb.plan;
  }

  let attempt = b.s.attempt ?? 0;

  // Progress channel (S3 progress.json): progress, losses, last checkpoint, stall heartbeat.
  if (o.progress && attempt > 0 && (o.progress.attempt === undefined || o.progress.attempt <= attempt)) {
    const r = ingestProgress(b.s, o.progress, nowIso);
    if (r.newCheckpoint) {
      b.cond("Checkpointed", "True", REASON.CheckpointReported, `newest checkpoint ${b.s.lastCheckpoint}`);
      pb.event("Normal", REASON.CheckpointReported, `checkpoint ${b.s.lastCheckpoint} at step ${o.progress.step}`);
    }
  }

  // Suspend: delete every pod, keep status.
  if (rp.suspend) {
    pb.del(o.pods);
    if (markSuspended(b)) pb.event("Normal", REASON.Suspended, "run suspended: deleting pods");
    return pb.plan;
  }
  if (markResumed(b)) {
    attempt = b.s.attempt ?? 0;
    pb.event(
      "Normal",
      REASON.Resumed,
      `run resumed as attempt ${attempt}${b.s.lastCheckpoint ? ` from ${b.s.lastCheckpoint}` : ""}`,
    );
  }

  // activeDeadlineSeconds.
  const dl = deadline(b.s.startTime, rp.activeDeadlineSeconds, o.now);
  if (dl.exceeded) {
    failRun(pb, REASON.DeadlineExceeded, `run exceeded activeDeadlineSeconds=${rp.activeDeadlineSeconds}`);
    pb.del(podsToClean(o.pods, rp.cleanPodPolicy === "None" ? "Running" : rp.cleanPodPolicy));
    return pb.plan;
  }
  if (dl.leftMs !== undefined) pb.requeue(dl.leftMs + 100);

  const cur = o.pods.filter((p) => attemptOf(p) === attempt);
  const old = o.pods.filter((p) => attemptOf(p) !== attempt);
  // Pods of earlier attempts always go (the decision to move on is already in status.attempt).
  pb.del(old);

  // Reconcile-time validation: only gates the creation of pods.
  if (cur.length === 0 && o.blocker) {
    b.s.phase = "Waiting";
    if (b.cond("Admitted", "False", o.blocker.reason, o.blocker.message, true)) {
      pb.event("Warning", o.blocker.reason, o.blocker.message);
    }
    pb.requeue(BLOCKED_REQUEUE_MS);
    return pb.plan;
  }
  if (b.cond("Admitted", "True", REASON.Admitted, "spec valid; references, Secret and accelerator profile resolved")) {
    pb.event("Normal", REASON.Admitted, "run admitted");
  }
  if (attempt === 0) {
    attempt = 1;
    b.s.attempt = 1;
    b.s.restartCount ??= 0;
    b.s.startTime ??= nowIso;
    if (dl.leftMs === undefined && rp.activeDeadlineSeconds) pb.requeue(rp.activeDeadlineSeconds * 1000 + 100);
  }

  const nnodes = run.spec.resources.nodes;
  if (cur.length === 0) {
    if (old.length > 0) {
      // Whole-group restart: the next attempt starts only when every old pod is gone (a terminating rank 0
      // would still answer for MASTER_ADDR through publishNotReadyAddresses).
      b.s.phase = attempt > 1 ? "Restarting" : "Pending";
      pb.requeue(2000);
      return pb.plan;
    }
    // Every pod of a RUNNING attempt vanished (force-deleted, node gone): like a missing rank, a restart from the
    // last checkpoint that is not counted — never a silent re-creation of the same attempt from step 0.
    if (b.s.phase === "Running") {
      handleFailure(pb, run, cur, {
        action: "restart",
        counted: false,
        reason: REASON.PodDeleted,
        message: `all ${nnodes} rank(s) of attempt ${attempt} disappeared`,
      });
      return pb.plan;
    }
    if (!o.acc) throw new Error("planTraining: accelerator not resolved and no blocker given");
    if (!o.serviceExists) pb.plan.createService = desiredService(run);
    pb.plan.createPodGroup = desiredPodGroup({
      scheduler: run.spec.gang.scheduler,
      name: `${run.metadata.name}-a${attempt}`,
      namespace: run.metadata.namespace!,
      minMember: nnodes,
      queue: run.spec.gang.queue,
      priorityClassName: run.spec.trainer.priorityClassName,
      timeoutSeconds: run.spec.gang.timeoutSeconds,
      labels: runLabels(run),
      ownerReferences: [ownerReference(run)],
    });
    pb.plan.createPods = desiredNodePods(run, o.acc, ctx, {
      attempt,
      resumeFrom: b.s.lastCheckpoint, // only this run object's checkpoints reach status (freshDocuments)
      tokenizerCheckpoint: o.tokenizerCheckpoint,
    });
    b.s.phase = attempt > 1 ? "Restarting" : "Pending";
    b.s.replicaStatuses = { active: nnodes, succeeded: 0, failed: 0 };
    pb.event("Normal", REASON.PodsCreated, `creating ${nnodes} pod(s) for attempt ${attempt}`);
    pb.requeue(run.spec.gang.timeoutSeconds * 1000);
    return pb.plan;
  }

  b.s.replicaStatuses = replicaStatuses(cur);
  const failure = firstFailure(cur, o.now);
  if (failure && "waitMs" in failure) {
    // A rank exited 75 (its peer failed): wait for the peer's own exit, which names the cause.
    pb.requeue(failure.waitMs);
    return pb.plan;
  }
  if (failure) {
    handleFailure(pb, run, cur, failure);
    return pb.plan;
  }

  // Missing ranks: recreate right after creation (cache lag / crash mid-create), else the pod was deleted under us.
  if (cur.length < nnodes) {
    const present = new Set(cur.map(rankOf));
    const oldest = Math.min(...cur.map((p) => ms(p.metadata?.creationTimestamp) ?? o.now));
    const started = cur.some((p) => p.status?.phase && p.status.phase !== "Pending");
    if (started || o.now - oldest > MISSING_POD_GRACE_MS) {
      handleFailure(pb, run, cur, {
        action: "restart",
        counted: false,
        reason: REASON.PodDeleted,
        message: `rank(s) ${[...Array(nnodes).keys()].filter((r) => !present.has(r)).join(",")} of attempt ${attempt} disappeared`,
      });
      return pb.plan;
    }
    if (!o.acc) throw new Error("planTraining: accelerator not resolved");
    pb.plan.createPods = desiredNodePods(run, o.acc, ctx, {
      attempt,
      resumeFrom: b.s.lastCheckpoint, // only this run object's checkpoints reach status (freshDocuments)
      tokenizerCheckpoint: o.tokenizerCheckpoint,
    }).filter((p) => !present.has(rankOf(p)));
    pb.requeue(2000);
    return pb.plan;
  }

  // Success: every rank exited 0. Rank 0's termination message is authoritative; S3 metrics.json otherwise.
  if (cur.every(isSucceeded)) {
    const rank0 = cur.find((p) => rankOf(p) === 0);
    const report = finalReportFromPod(rank0) ?? o.metricsDoc;
    if (report) applyFinalReport(b.s, report);
    else if (b.s.lastCheckpoint) b.s.artifacts = { ...(b.s.artifacts ?? {}), checkpointUri: b.s.lastCheckpoint };
    b.s.phase = "Succeeded";
    b.s.completionTime ??= nowIso;
    if (b.s.progress?.totalSteps && report?.step === undefined) {
      b.s.progress = { ...b.s.progress, step: b.s.progress.totalSteps, percent: "100%", etaSeconds: 0 };
    }
    b.cond("Succeeded", "True", REASON.Completed, `all ${nnodes} rank(s) completed in attempt ${attempt}`);
    b.cond("Running", "False", REASON.Completed, "run completed");
    b.cond("Restarting", "False", REASON.Completed, "run completed");
    const metrics = Object.entries(report?.metrics ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");
    pb.event("Normal", REASON.Completed, `run succeeded${metrics ? `: ${metrics}` : ""}`);
    if (report) pb.event("Normal", REASON.MetricsReported, metrics || "final report without metrics");
    pb.del(podsToClean(cur, rp.cleanPodPolicy));
    const ttl = ttlDecision(b.s.completionTime, rp.ttlSecondsAfterFinished, o.now);
    if (ttl.kind === "wait") pb.requeue(ttl.ms);
    else if (ttl.kind === "delete") pb.requeue(500);
    return pb.plan;
  }

  const up = cur.filter((p) => isRunning(p) || isSucceeded(p));
  if (up.length === nnodes) {
    b.s.phase = "Running";
    if (b.cond("Running", "True", REASON.AllPodsRunning, `all ${nnodes} rank(s) of attempt ${attempt} running`)) {
      pb.event("Normal", REASON.Running, `attempt ${attempt}: all ${nnodes} rank(s) running`);
    }
    b.cond("PodsReady", "True", REASON.AllPodsRunning, `all ${nnodes} pod(s) running`);
    b.cond("Restarting", "False", REASON.AllPodsRunning, `attempt ${attempt} running`);
    // Stall detection: the heartbeat is the step in progress.json.
    const stall = {
      now: o.now,
      stallTimeoutSeconds: rp.stallTimeoutSeconds,
      runningSince: ms(getCondition(b.s.conditions, "Running")?.lastTransitionTime),
      lastStepChange: ms(b.s.progress?.lastUpdated),
    };
    if (isStalled(stall)) {
      handleFailure(pb, run, cur, {
        action: "restart",
        counted: true,
        reason: REASON.Stalled,
        message: `no progress (step ${b.s.progress?.step ?? "none"}) for ${rp.stallTimeoutSeconds}s; restarting from ${b.s.lastCheckpoint ?? "scratch"}`,
      });
      return pb.plan;
    }
    pb.requeue(Math.min(stallCheckInMs(stall), ctx.progressPollMs ?? 10_000));
    return pb.plan;
  }

  // Still forming the gang.
  b.s.phase = attempt > 1 ? "Restarting" : "Pending";
  const created = Math.min(...cur.map((p) => ms(p.metadata?.creationTimestamp) ?? o.now));
  const gangLeft = created + run.spec.gang.timeoutSeconds * 1000 - o.now;
  if (gangLeft <= 0) {
    handleFailure(pb, run, cur, {
      action: "restart",
      counted: true,
      reason: REASON.GangTimeout,
      message: `only ${up.length}/${nnodes} pod(s) running after gang.timeoutSeconds=${run.spec.gang.timeoutSeconds}`,
    });
    return pb.plan;
  }
  pb.requeue(gangLeft + 100);
  return pb.plan;
}
