// Pure status helpers: progress/metrics ingestion from the trainer contract (common/src/contract.ts),
// StatusBuilder (conditions via conditions.ts), and the JSON merge-patch diff used for write-on-diff.
import type { V1Pod } from "@kubernetes/client-node";
import { FinalReport, type Progress } from "../../../common/src/contract.ts";
import { setCondition } from "./conditions.ts";
import { TRAINER_CONTAINER } from "./desired.ts";
import type { RunStatus } from "./run.ts";

/** Mutable status being built during one reconcile; `cond` records conditions with one generation. */
export class StatusBuilder {
  readonly s: RunStatus;
  constructor(
    prev: RunStatus | undefined,
    readonly now: string,
    readonly generation: number | undefined,
  ) {
    this.s = structuredClone(prev ?? {}) as RunStatus;
    this.s.observedGeneration = generation;
  }
  /** Set a condition; returns true when it changed. `addFalse` makes a False condition visible when missing. */
  cond(
    type: Parameters<typeof setCondition>[1]["type"],
    status: "True" | "False",
    reason: string,
    message: string,
    addFalse = false,
  ): boolean {
    const r = setCondition(this.s.conditions, { type, status, reason, message }, this.now, this.generation, addFalse);
    this.s.conditions = r.list;
    return r.changed;
  }
}

/** Progress as shown in status (percent is a string for the printer column). */
export function percent(step: number | undefined, total: number | undefined): string | undefined {
  if (step === undefined || !total) return undefined;
  return `${Math.min(100, Math.floor((step / total) * 100))}%`;
}

/**
 * Copy a progress document into status. `lastUpdated` is the operator-observed time of the last *step change*
 * (the stall heartbeat), so a trainer that keeps rewriting the same step still stalls.
 */
export function ingestProgress(
  s: RunStatus,
  p: Progress,
  now: string,
): { stepChanged: boolean; newCheckpoint: boolean } {
  const prev = s.progress;
  const stepChanged = prev?.step !== p.step;
  s.progress = {
    ...prev,
    step: p.step,
    totalSteps: p.totalSteps,
    percent: percent(p.step, p.totalSteps),
    ...(p.epoch !== undefined ? { epoch: p.epoch } : {}),
    ...(p.imagesPerSecond !== undefined ? { imagesPerSecond: round(p.imagesPerSecond) } : {}),
    ...(p.etaSeconds !== undefined ? { etaSeconds: Math.round(p.etaSeconds) } : {}),
    lastUpdated: stepChanged || !prev?.lastUpdated ? now : prev.lastUpdated,
  };
  if (p.losses) s.metrics = { ...(s.metrics ?? {}), ...roundAll(lossMetrics(p.losses)) };
  if (p.dataErrors) s.dataErrors = p.dataErrors;
  const newCheckpoint = !!p.lastCheckpoint && p.lastCheckpoint !== s.lastCheckpoint;
  if (p.lastCheckpoint) s.lastCheckpoint = p.lastCheckpoint;
  return { stepChanged, newCheckpoint };
}

/** Training losses from progress.json go under `loss/<name>` (kept as is when already namespaced or `loss`),
 *  so they never collide with evaluation metrics such as rFID. */
export function lossMetrics(losses: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(losses)) out[k === "loss" || k.includes("/") ? k : `loss/${k}`] = v;
  return out;
}

/**
 * Drop trainer documents written before this run object existed: a run re-created with the same name and
 * checkpoint.uri must not inherit the previous run's progress, last checkpoint or final metrics.
 */
export function freshDocuments<D extends { progress?: { updatedAt: string }; metricsDoc?: { updatedAt?: string } }>(
  docs: D,
  creationTimestamp: string | undefined,
): D {
  const created = creationTimestamp ? Date.parse(creationTimestamp) : Number.NaN;
  if (!Number.isFinite(created)) return docs;
  // creationTimestamp has second resolution: allow the same second.
  const stale = (at: string | undefined) => at !== undefined && Date.parse(at) < created - 1000;
  const out = { ...docs };
  if (stale(docs.progress?.updatedAt)) delete out.progress;
  if (stale(docs.metricsDoc?.updatedAt)) delete out.metricsDoc;
  return out;
}

function round(v: number): number {
  return Number.isFinite(v) ? Math.round(v * 1e6) / 1e6 : v;
}
function roundAll(m: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(m)) if (Number.isFinite(v)) out[k] = round(v);
  return out;
}

/** The final report from a pod's trainer termination message (authoritative when present). */
export function finalReportFromPod(pod: V1Pod | undefined): FinalReport | undefined {
  const cs = pod?.status?.containerStatuses?.find((c) => c.name === TRAINER_CONTAINER);
  const msg = cs?.state?.terminated?.message;
  if (!msg) return undefined;
  try {
    const r = FinalReport.safeParse(JSON.parse(msg));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/** Copy a final report into status (metrics, artifacts, notes, checkpoint). */
export function applyFinalReport(s: RunStatus, r: FinalReport): void {
  s.metrics = { ...(s.metrics ?? {}), ...roundAll(r.metrics) };
  if (r.artifacts) {
    s.artifacts = { ...(s.artifacts ?? {}) };
    if (r.artifacts.checkpointUri) s.artifacts.checkpointUri = r.artifacts.checkpointUri;
    if (r.artifacts.imageUris) s.artifacts.imageUris = r.artifacts.imageUris.slice(0, 64);
    if (r.artifacts.extra) s.artifacts.extra = r.artifacts.extra;
  }
  if (r.notes?.length) s.metricsNote = r.notes.join("; ").slice(0, 1024);
  if (r.step !== undefined) {
    s.progress = { ...(s.progress ?? {}), step: r.step };
    if (s.progress.totalSteps) s.progress.percent = percent(r.step, s.progress.totalSteps);
  }
  if (!s.artifacts?.checkpointUri && s.lastCheckpoint)
    s.artifacts = { ...(s.artifacts ?? {}), checkpointUri: s.lastCheckpoint };
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/**
 * RFC 7386 merge patch turning `from` into `to` (undefined when equal). Arrays are replaced whole. Equality is
 * JSON equality: the order of an object's keys does not count (the apiserver hands objects back with its own key
 * order, so a key-order-sensitive comparison sent a no-op status patch on every reconcile).
 */
export function mergePatchDiff(from: unknown, to: unknown): Json | undefined {
  if (isObj(from) && isObj(to)) {
    const out: Record<string, Json> = {};
    for (const k of new Set([...Object.keys(from), ...Object.keys(to)])) {
      const a = from[k];
      const b = to[k];
      if (b === undefined) {
        if (a !== undefined) out[k] = null;
        continue;
      }
      const d = mergePatchDiff(a, b);
      if (d !== undefined) out[k] = d;
    }
    return Object.keys(out).length ? out : undefined;
  }
  if (jsonEqual(from, to)) return undefined;
  return JSON.parse(JSON.stringify(to ?? null)) as Json;
}

/** Equal as JSON documents: object keys in any order, undefined members absent, arrays element by element. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => jsonEqual(x, b[i]));
  }
  if (isObj(a) && isObj(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => b[k] !== undefined && jsonEqual(a[k], b[k]));
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
