// Pipeline: artifact hand-off by reference (operator-design §7, §9).
// - ARTraining waits for its tokenizerRef to be Succeeded and consumes status.artifacts.checkpointUri.
// - SamplingJob waits for its modelRef (ARTraining) and the tokenizer, fans out into N shard pods with per-shard
//   retry (idempotent outputs <checkpoint.uri>/shards/<i>.npz, skipped by the trainer when present), then one
//   reduce pod computes gFID / IS, which land in status.metrics.
import type { V1Pod } from "@kubernetes/client-node";
import type { FinalReport } from "../../../common/src/contract.ts";
import type { ARTraining, SamplingJob, TokenizerTraining } from "../api/v1alpha1/index.ts";
import type { ResolvedAccelerator } from "./accelerator.ts";
import { podsToClean } from "./cleanup.ts";
import { desiredReducePod, desiredShardPod } from "./desired.ts";
import { classifyPod, deadline, decide, isFailed, isRunning, isSucceeded } from "./failurePolicy.ts";
import { LABEL } from "./labels.ts";
import { attemptOf, BLOCKED_REQUEUE_MS, type Blocker, type Plan, PlanBuilder } from "./plan.ts";
import { REASON } from "./reasons.ts";
import type { OperatorContext, RunStatus, ShardStatus } from "./run.ts";
import { applyFinalReport, finalReportFromPod, percent, StatusBuilder } from "./status.ts";
import { markResumed, markSuspended } from "./suspend.ts";
import { ttlDecision } from "./ttl.ts";

type RefRun = TokenizerTraining | ARTraining;
export type RefLookup = (
  kind: "TokenizerTraining" | "ARTraining",
  namespace: string,
  name: string,
) => RefRun | undefined;

export type RefResult = { ok: true; checkpointUri: string } | { ok: false; blocker: Blocker };

function checkpointOf(run: RefRun): string | undefined {
  return run.status?.artifacts?.checkpointUri ?? run.status?.lastCheckpoint;
}

/** A referenced run must exist, be Succeeded and expose a checkpoint artifact. */
export function resolveRef(
  kind: "TokenizerTraining" | "ARTraining",
  ref: { name: string; namespace?: string },
  defaultNs: string,
  lookup: RefLookup,
): RefResult {
  const ns = ref.namespace ?? defaultNs;
  const what = kind === "TokenizerTraining" ? "Tokenizer" : "Model";
  const target = lookup(kind, ns, ref.name);
  if (!target) {
    return {
      ok: false,
      blocker: {
        reason: kind === "TokenizerTraining" ? REASON.TokenizerNotFound : REASON.ModelNotFound,
        message: `${kind} ${ns}/${ref.name} not found`,
      },
    };
  }
  const phase = target.status?.phase;
  const ckpt = checkpointOf(target);
  if (phase !== "Succeeded" || !ckpt) {
    return {
      ok: false,
      blocker: {
        reason: kind === "TokenizerTraining" ? REASON.TokenizerNotReady : REASON.ModelNotReady,
        message: `${what} ${kind} ${ns}/${ref.name} is ${phase ?? "not started"}${phase === "Succeeded" ? " but reported no checkpoint" : ""}; waiting for it to succeed`,
      },
    };
  }
  return { ok: true, checkpointUri: ckpt };
}

/** ARTraining → its tokenizer checkpoint. */
export function resolveTokenizerForAR(run: ARTraining, lookup: RefLookup): RefResult {
  return resolveRef("TokenizerTraining", run.spec.tokenizerRef, run.metadata.namespace!, lookup);
}

/** SamplingJob → model and tokenizer checkpoints (tokenizer defaults to the model's tokenizerRef). */
export function resolveSamplingInputs(
  run: SamplingJob,
  lookup: RefLookup,
): { ok: true; model: string; tokenizer: string } | { ok: false; blocker: Blocker } {
  const ns = run.metadata.namespace!;
  const model = resolveRef("ARTraining", run.spec.modelRef, ns, lookup);
  if (!model.ok) return model;
  let tokRef = run.spec.tokenizerRef;
  let tokNs = ns;
  if (!tokRef) {
    const ar = lookup("ARTraining", run.spec.modelRef.namespace ?? ns, run.spec.modelRef.name) as ARTraining;
    tokRef = ar.spec.tokenizerRef;
    tokNs = run.spec.modelRef.namespace ?? ns;
  }
  const tok = resolveRef("TokenizerTraining", tokRef, tokNs, lookup);
  if (!tok.ok) return tok;
  return { ok: true, model: model.checkpointUri, tokenizer: tok.checkpointUri };
}

export interface SamplingObserved {
  now: number;
  run: SamplingJob;
  pods: readonly V1Pod[];
  blocker?: Blocker;
  acc?: ResolvedAccelerator;
  modelCheckpoint?: string;
  tokenizerCheckpoint?: string;
  /** metrics.json of the reduce step from S3 (when the termination message has none). */
  metricsDoc?: FinalReport;
}

export function shardOf(pod: V1Pod): number {
  return Number(pod.metadata?.labels?.[LABEL.shard] ?? -1);
}

export function shardOutputUri(checkpointUri: string, shard: number): string {
  return `${checkpointUri.replace(/\/+$/, "")}/shards/${shard}.npz`;
}

export function planSampling(o: SamplingObserved, ctx: OperatorContext): Plan {
  const run = o.run;
  const rp = run.spec.runPolicy;
  const nowIso = new Date(o.now).toISOString();
  const b = new StatusBuilder(run.status as RunStatus | undefined, nowIso, run.metadata.generation);
  const pb = new PlanBuilder(b);
  const plan = pb.plan;
  // Unlike training's failRun: a SamplingJob never sets a Restarting condition, and failing cleans up its pods.
  const fail = (reason: string, message: string) => {
    b.s.phase = "Failed";
    b.s.completionTime ??= nowIso;
    b.cond("Failed", "True", reason, message);
    b.cond("Running", "False", reason, "run failed");
    pb.event("Warning", reason, message);
    pb.del(podsToClean(o.pods, rp.cleanPodPolicy === "None" ? "Running" : rp.cleanPodPolicy));
  };

  if (b.s.phase === "Succeeded" || b.s.phase === "Failed") {
    pb.del(podsToClean(o.pods, rp.cleanPodPolicy));
    const ttl = ttlDecision(b.s.completionTime, rp.ttlSecondsAfterFinished, o.now);
    if (ttl.kind === "delete") plan.deleteRun = true;
    else if (ttl.kind === "wait") pb.requeue(ttl.ms);
    return plan;
  }
  if (rp.suspend) {
    pb.del(o.pods);
    if (markSuspended(b)) pb.event("Normal", REASON.Suspended, "run suspended: deleting pods");
    return plan;
  }
  const nShards = run.spec.sampling.shards;
  let shards: ShardStatus[] = (b.s.shards ?? []).map((s) => ({ ...s }));
  if (markResumed(b)) {
    shards = shards.map((s) =>
      s.phase === "Succeeded" || s.attempts === 0 ? s : { ...s, attempts: s.attempts + 1, phase: "Pending" },
    );
    pb.event("Normal", REASON.Resumed, "run resumed: unfinished shards restart, finished shards are kept");
  }
  const dl = deadline(b.s.startTime, rp.activeDeadlineSeconds, o.now);
  if (dl.exceeded) {
    fail(REASON.DeadlineExceeded, `run exceeded activeDeadlineSeconds=${rp.activeDeadlineSeconds}`);
    return plan;
  }
  if (dl.leftMs !== undefined) pb.requeue(dl.leftMs + 100);

  const started = (b.s.attempt ?? 0) > 0;
  if (!started && o.blocker) {
    b.s.phase = "Waiting";
    if (b.cond("Admitted", "False", o.blocker.reason, o.blocker.message, true))
      pb.event("Warning", o.blocker.reason, o.blocker.message);
    pb.requeue(BLOCKED_REQUEUE_MS);
    return plan;
  }
  if (b.cond("Admitted", "True", REASON.Admitted, "model and tokenizer checkpoints resolved"))
    pb.event("Normal", REASON.Admitted, "run admitted");
  if (!started) {
    b.s.attempt = 1;
    b.s.restartCount = 0;
    b.s.startTime ??= nowIso;
  }
  if (!o.acc) throw new Error("planSampling: accelerator not resolved and no blocker given");
  const inputs = { tokenizerCheckpoint: o.tokenizerCheckpoint, modelCheckpoint: o.modelCheckpoint };

  // Fan-out: one pod per shard, per-shard retry.
  for (let i = 0; i < nShards; i++) {
    if (!shards.find((s) => s.index === i)) shards.push({ index: i, phase: "Pending", attempts: 0 });
  }
  shards.sort((a, b2) => a.index - b2.index);
  const shardPods = o.pods.filter((p) => p.metadata?.labels?.[LABEL.role] === "shard");
  for (const sh of shards) {
    const mine = shardPods.filter((p) => shardOf(p) === sh.index);
    if (sh.phase === "Succeeded") continue;
    if (sh.attempts === 0) sh.attempts = 1;
    const cur = mine.filter((p) => attemptOf(p) === sh.attempts);
    pb.del(mine.filter((p) => attemptOf(p) !== sh.attempts && !isSucceeded(p)));
    const pod = cur[0];
    if (!pod) {
      plan.createPods.push(desiredShardPod(run, o.acc, ctx, sh.index, { attempt: sh.attempts, ...inputs }));
      sh.phase = "Pending";
      continue;
    }
    if (isSucceeded(pod)) {
      sh.phase = "Succeeded";
      const rep = finalReportFromPod(pod);
      sh.outputUri = rep?.artifacts?.extra?.samples ?? shardOutputUri(run.spec.checkpoint.uri, sh.index);
      delete sh.message;
      continue;
    }
    if (isFailed(pod)) {
      const c = classifyPod(pod);
      sh.message = c.message.slice(0, 4096);
      const d = decide(c, sh.attempts - 1, rp.backoffLimit);
      if (d.kind === "fail") {
        sh.phase = "Failed";
        b.s.shards = shards;
        fail(
          d.reason === REASON.BackoffLimitExceeded ? d.reason : REASON.ShardFailed,
          `shard ${sh.index}: ${d.message}`,
        );
        return plan;
      }
      sh.attempts += 1;
      sh.phase = "Pending";
      pb.del([pod]);
      pb.event(
        "Warning",
        REASON.ShardFailed,
        `shard ${sh.index} failed (${c.reason}); retrying as attempt ${sh.attempts}`,
      );
      plan.createPods.push(desiredShardPod(run, o.acc, ctx, sh.index, { attempt: sh.attempts, ...inputs }));
      continue;
    }
    sh.phase = isRunning(pod) ? "Running" : "Pending";
  }
  b.s.shards = shards;
  const done = shards.filter((s) => s.phase === "Succeeded").length;
  b.s.progress = { ...(b.s.progress ?? {}), step: done, totalSteps: nShards, percent: percent(done, nShards) };
  b.s.replicaStatuses = {
    active: shards.filter((s) => s.phase === "Pending" || s.phase === "Running").length,
    succeeded: done,
    failed: 0,
  };

  if (done < nShards) {
    const anyRunning = shards.some((s) => s.phase === "Running");
    b.s.phase = anyRunning ? "Running" : "Pending";
    if (anyRunning) b.cond("Running", "True", REASON.Running, `${done}/${nShards} shard(s) done`);
    pb.requeue(30_000);
    return plan;
  }

  // All shards done.
  if (!run.spec.evaluation.enabled) {
    b.s.phase = "Succeeded";
    b.s.completionTime ??= nowIso;
    b.s.artifacts = {
      ...(b.s.artifacts ?? {}),
      extra: Object.fromEntries(shards.map((s) => [`shard-${s.index}`, s.outputUri ?? ""])),
    };
    b.cond("Succeeded", "True", REASON.Completed, `all ${nShards} shard(s) completed`);
    pb.event("Normal", REASON.Completed, `all ${nShards} shard(s) completed (evaluation disabled)`);
    pb.del(podsToClean(o.pods, rp.cleanPodPolicy));
    return plan;
  }

  const attempt = b.s.attempt ?? 1;
  const reducePods = o.pods.filter((p) => p.metadata?.labels?.[LABEL.role] === "reduce");
  pb.del(reducePods.filter((p) => attemptOf(p) !== attempt));
  const rpod = reducePods.find((p) => attemptOf(p) === attempt);
  if (b.s.phase !== "Reducing") pb.event("Normal", REASON.Reducing, `all ${nShards} shard(s) done; computing gFID/IS`);
  b.s.phase = "Reducing";
  if (!rpod) {
    plan.createPods.push(desiredReducePod(run, ctx, { attempt, ...inputs }));
    pb.requeue(30_000);
    return plan;
  }
  if (isSucceeded(rpod)) {
    const report = finalReportFromPod(rpod) ?? o.metricsDoc;
    if (report) applyFinalReport(b.s, report);
    b.s.phase = "Succeeded";
    b.s.completionTime ??= nowIso;
    b.cond("Succeeded", "True", REASON.Completed, "shards and reduce completed");
    b.cond("Running", "False", REASON.Completed, "run completed");
    const metrics = Object.entries(report?.metrics ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(", ");
    pb.event("Normal", REASON.MetricsReported, metrics || "reduce finished without metrics");
    pb.del(podsToClean(o.pods, rp.cleanPodPolicy));
    const ttl = ttlDecision(b.s.completionTime, rp.ttlSecondsAfterFinished, o.now);
    if (ttl.kind === "wait") pb.requeue(ttl.ms);
    return plan;
  }
  if (isFailed(rpod)) {
    const c = classifyPod(rpod);
    const d = decide(c, b.s.restartCount ?? 0, rp.backoffLimit);
    if (d.kind === "fail") {
      fail(d.reason === REASON.BackoffLimitExceeded ? d.reason : REASON.ReduceFailed, `reduce: ${d.message}`);
      return plan;
    }
    b.s.attempt = attempt + 1;
    if (d.counted) b.s.restartCount = (b.s.restartCount ?? 0) + 1;
    pb.del([rpod]);
    pb.event("Warning", REASON.ReduceFailed, `reduce failed (${c.reason}); retrying as attempt ${attempt + 1}`);
    plan.createPods.push(desiredReducePod(run, ctx, { attempt: attempt + 1, ...inputs }));
  }
  pb.requeue(30_000);
  return plan;
}
