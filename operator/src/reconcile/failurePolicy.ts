// Failure policy (operator-design §6): whole-group restart, exit-code classes, backoffLimit, deadlines, stall.
// First matching rule wins:
//   node lost / shutdown (pod status.reason)          → restart, not counted, NodeFailure
//   DisruptionTarget / Evicted / preemption           → restart, not counted, Preempted
//   barrier init container failed                     → restart, counted, RendezvousTimeout
//   container reason OOMKilled                        → fail fast, OOMKilled
//   exit code 75 (EXIT_CODE.PEER_FAILED)              → restart, counted, PeerFailed (secondary, see below)
//   exit code 1–127                                   → fail fast, ExitCode (PyTorchJob ExitCode semantics)
//   exit code 128–255 (signals)                       → restart, counted, Signal
// Only the first failure of an attempt is classified (earliest finishedAt); exits of pods being torn down
// are never looked at because they belong to an older attempt than status.attempt.
// Exit 75 is the trainer saying "another rank took the process group down under me". It is a consequence:
// when rank 0 is SIGKILLed, rank 1 sees the socket close and exits 75 within milliseconds, and its pod may
// reach the cache before rank 0's does (two kubelets, status updates seconds apart). So any other failure of
// the attempt wins over a 75 whatever the order, and while only 75s are seen and some rank still runs, the
// decision waits up to PEER_FAILURE_GRACE_MS for the rank that failed first to report. Without this a
// retryable crash (137) was classified by its peer's exit and failed the run as permanent.
import type { V1ContainerStatus, V1Pod } from "@kubernetes/client-node";
import { EXIT_CODE } from "../../../common/src/contract.ts";
import { BARRIER_CONTAINER } from "./gang.ts";
import { REASON, type Reason } from "./reasons.ts";

export type FailureAction = "fail" | "restart";

export interface Classification {
  action: FailureAction;
  /** Counted against backoffLimit. */
  counted: boolean;
  reason: Reason;
  message: string;
  exitCode?: number;
  pod: string;
  /** A consequence of another rank's failure (exit 75): any other failure of the attempt explains it better. */
  secondary?: boolean;
}

/** How long a peer failure (exit 75) waits for the rank that caused it to report, while any rank still runs. */
export const PEER_FAILURE_GRACE_MS = 20_000;

const PREEMPT_REASONS = new Set(["Evicted", "Preempting", "Preempted", "DisruptionTarget"]);
const NODE_REASONS = new Set([
  "NodeLost",
  "Shutdown",
  "Terminated",
  "NodeShutdown",
  "UnexpectedAdmissionError",
  "NodeAffinity",
]);

/** Milliseconds of a timestamp that may be a Date (typed client) or an RFC 3339 string (raw watch JSON). */
export function ms(t: Date | string | undefined | null): number | undefined {
  if (t === undefined || t === null) return undefined;
  const v = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isNaN(v) ? undefined : v;
}

function terminated(cs: V1ContainerStatus | undefined) {
  return cs?.state?.terminated ?? cs?.lastState?.terminated;
}

/** When the pod finished (latest container finishedAt), for ordering failures. */
export function finishedAt(pod: V1Pod): number {
  let t = 0;
  for (const cs of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
    const f = ms(terminated(cs)?.finishedAt);
    if (f !== undefined && f > t) t = f;
  }
  return t || (ms(pod.metadata?.deletionTimestamp) ?? ms(pod.metadata?.creationTimestamp) ?? 0);
}

export function isFailed(pod: V1Pod): boolean {
  return pod.status?.phase === "Failed";
}

export function isSucceeded(pod: V1Pod): boolean {
  return pod.status?.phase === "Succeeded";
}

export function isTerminal(pod: V1Pod): boolean {
  return isFailed(pod) || isSucceeded(pod);
}

export function isRunning(pod: V1Pod): boolean {
  return pod.status?.phase === "Running";
}

/** Classify one failed pod. */
export function classifyPod(pod: V1Pod): Classification {
  const name = pod.metadata?.name ?? "?";
  const st = pod.status ?? {};
  if (st.reason && NODE_REASONS.has(st.reason)) {
    return {
      action: "restart",
      counted: false,
      reason: REASON.NodeFailure,
      message: `pod ${name} lost its node: ${st.reason}${st.message ? ` (${st.message})` : ""}`,
      pod: name,
    };
  }
  const disrupted = (st.conditions ?? []).find((c) => c.type === "DisruptionTarget" && c.status === "True");
  if (disrupted || (st.reason && PREEMPT_REASONS.has(st.reason))) {
    return {
      action: "restart",
      counted: false,
      reason: REASON.Preempted,
      message: `pod ${name} was disrupted: ${disrupted?.reason ?? st.reason}${st.message ? ` (${st.message})` : ""}`,
      pod: name,
    };
  }
  const barrier = (st.initContainerStatuses ?? []).find((c) => c.name === BARRIER_CONTAINER);
  const bt = terminated(barrier);
  if (bt && bt.exitCode !== 0) {
    return {
      action: "restart",
      counted: true,
      reason: REASON.RendezvousTimeout,
      message: `pod ${name}: rank 0 not reachable before the rendezvous timeout (barrier exit ${bt.exitCode})`,
      exitCode: bt.exitCode,
      pod: name,
    };
  }
  const failedContainer = [...(st.initContainerStatuses ?? []), ...(st.containerStatuses ?? [])].find((c) => {
    const t = terminated(c);
    return t !== undefined && t.exitCode !== 0;
  });
  const t = terminated(failedContainer);
  if (!t) {
    // Failed without a container exit (e.g. deleted before start, admission error on the node).
    return {
      action: "restart",
      counted: false,
      reason: REASON.NodeFailure,
      message: `pod ${name} failed without a container exit${st.reason ? `: ${st.reason}` : ""}`,
      pod: name,
    };
  }
  const where = `pod ${name} container ${failedContainer!.name}`;
  if (t.reason === "OOMKilled") {
    return {
      action: "fail",
      counted: true,
      reason: REASON.OOMKilled,
      message: `${where} was OOMKilled (exit ${t.exitCode})`,
      exitCode: t.exitCode,
      pod: name,
    };
  }
  if (t.exitCode === EXIT_CODE.PEER_FAILED) {
    return {
      action: "restart",
      counted: true,
      reason: REASON.PeerFailed,
      message: `${where} exited with code ${t.exitCode}: a peer rank took the process group down${t.message ? `: ${t.message.slice(0, 300)}` : ""}`,
      exitCode: t.exitCode,
      pod: name,
      secondary: true,
    };
  }
  if (t.exitCode >= 1 && t.exitCode <= 127) {
    return {
      action: "fail",
      counted: true,
      reason: REASON.ExitCode,
      message: `${where} exited with code ${t.exitCode} (permanent: 1–127)${t.message ? `: ${t.message.slice(0, 300)}` : ""}`,
      exitCode: t.exitCode,
      pod: name,
    };
  }
  return {
    action: "restart",
    counted: true,
    reason: REASON.Signal,
    message: `${where} exited with code ${t.exitCode} (retryable: 128–255, signal ${t.exitCode - 128})`,
    exitCode: t.exitCode,
    pod: name,
  };
}

/** Only peer failures (exit 75) so far, and a rank still running: decide again in `waitMs`. */
export interface PendingRootCause {
  waitMs: number;
}

/**
 * Classify the first failure among the pods of one attempt; undefined when none failed. A root cause wins over
 * peer failures (exit 75) that finished earlier; peer failures alone wait for one (PendingRootCause). A pod of the attempt
 * that someone is deleting (kubectl delete, a controller) wins over exit codes: its SIGTERM makes the trainers
 * stop with 143 (after a checkpoint), which is a consequence of the deletion, not a trainer failure — so the
 * group restarts uncounted (PodDeleted), unless the deleted pod itself says more (node lost, disruption).
 */
export function firstFailure(pods: readonly V1Pod[], now = Date.now()): Classification | PendingRootCause | undefined {
  const deleted = pods.find((p) => p.metadata?.deletionTimestamp && !isSucceeded(p));
  if (deleted) {
    const own = isFailed(deleted) ? classifyPod(deleted) : undefined;
    if (own && own.action === "restart" && !own.counted) return own;
    const name = deleted.metadata?.name ?? "?";
    return {
      action: "restart",
      counted: false,
      reason: REASON.PodDeleted,
      message: `pod ${name} of the running attempt was deleted`,
      pod: name,
    };
  }
  const failed = pods
    .filter(isFailed)
    .sort((a, b) => finishedAt(a) - finishedAt(b))
    .map((p) => ({ pod: p, c: classifyPod(p) }));
  if (failed.length === 0) return undefined;
  const root = failed.find((f) => !f.c.secondary);
  if (root) return root.c;
  // Only peer failures so far: the rank that caused them may not have reported yet.
  const waitMs = finishedAt(failed[0].pod) + PEER_FAILURE_GRACE_MS - now;
  if (waitMs > 0 && pods.some((p) => !isTerminal(p))) return { waitMs };
  const c = failed[0].c;
  return {
    ...c,
    message: `${c.message} (no other rank reported a failure${waitMs > 0 ? "; none still running" : ` within ${PEER_FAILURE_GRACE_MS / 1000} s`})`,
  };
}

export type Decision =
  | { kind: "fail"; reason: Reason; message: string }
  | { kind: "restart"; counted: boolean; reason: Reason; message: string };

/** Turn a failure (or a restart trigger such as Stalled) into a decision under backoffLimit. */
export function decide(
  c: Pick<Classification, "action" | "counted" | "reason" | "message">,
  restartCount: number,
  backoffLimit: number,
): Decision {
  if (c.action === "fail") return { kind: "fail", reason: c.reason, message: c.message };
  if (c.counted && restartCount + 1 > backoffLimit) {
    return {
      kind: "fail",
      reason: REASON.BackoffLimitExceeded,
      message: `backoffLimit ${backoffLimit} exceeded after ${restartCount} counted restarts; last failure ${c.reason}: ${c.message}`,
    };
  }
  return { kind: "restart", counted: c.counted, reason: c.reason, message: c.message };
}

/** Stall: no step change for stallTimeoutSeconds since max(attempt running since, last step change). */
export function isStalled(opts: {
  now: number;
  stallTimeoutSeconds: number;
  runningSince?: number;
  lastStepChange?: number;
}): boolean {
  const base = Math.max(opts.runningSince ?? 0, opts.lastStepChange ?? 0);
  if (!base) return false;
  return opts.now - base > opts.stallTimeoutSeconds * 1000;
}

/** Milliseconds until the stall check could fire (for requeueAfter). */
export function stallCheckInMs(opts: {
  now: number;
  stallTimeoutSeconds: number;
  runningSince?: number;
  lastStepChange?: number;
}): number {
  const base = Math.max(opts.runningSince ?? 0, opts.lastStepChange ?? 0) || opts.now;
  return Math.max(1000, base + opts.stallTimeoutSeconds * 1000 - opts.now + 500);
}

/** activeDeadlineSeconds: exceeded? and ms left. */
export function deadline(startTime: string | undefined, activeDeadlineSeconds: number | undefined, now: number) {
  const start = ms(startTime);
  if (!activeDeadlineSeconds || start === undefined)
    return { exceeded: false, leftMs: undefined as number | undefined };
  const left = start + activeDeadlineSeconds * 1000 - now;
  return { exceeded: left <= 0, leftMs: Math.max(0, left) };
}
