// A parsed run of any of the three kinds, plus the operator-wide settings the pure functions need.
// Specs are parsed with the API's zod schemas (the single source of truth), which also applies defaults,
// so the rest of the reconcile code reads fully-defaulted values.
import { type ARTraining, KINDS, type SamplingJob, type TokenizerTraining } from "../api/v1alpha1/index.ts";
import type { AcceleratorProfiles } from "./accelerator.ts";

export type Run = TokenizerTraining | ARTraining | SamplingJob;
export type RunKind = Run["kind"];
export type TrainingRun = TokenizerTraining | ARTraining;
export type RunStatus = NonNullable<SamplingJob["status"]>;
export type ShardStatus = NonNullable<RunStatus["shards"]>[number];

/** Operator-wide settings (from env, see main.ts). */
export interface OperatorContext {
  trainerImage: string;
  /** Image of the rank > 0 TCP barrier init container; must provide `node` (default: trainerImage). */
  barrierImage: string;
  clusterDomain: string;
  /** Default S3 endpoint when a run's s3.endpoint is unset. */
  s3Endpoint?: string;
  profiles: AcceleratorProfiles;
  /** How often a running training run's progress.json is re-read into status (ms). Default 10 s. */
  progressPollMs?: number;
  /** Pod securityContext of every trainer pod (Helm trainer.podSecurityContext; e.g. non-root, seccomp). */
  trainerPodSecurityContext?: Record<string, unknown>;
  /** Container securityContext of trainer and barrier containers (e.g. readOnlyRootFilesystem, drop ALL). */
  trainerSecurityContext?: Record<string, unknown>;
}

export type ParseResult = { ok: true; run: Run } | { ok: false; message: string };

/** Parse a raw custom object; an invalid spec yields a message for the InvalidSpec condition. */
export function parseRun(kind: RunKind, raw: unknown): ParseResult {
  const res = KINDS[kind].schema.safeParse(raw);
  if (res.success) return { ok: true, run: res.data as Run };
  const message = res.error.issues
    .slice(0, 5)
    .map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`)
    .join("; ");
  return { ok: false, message };
}

/** `<checkpoint.uri>/status` — where the trainer writes progress.json / metrics.json. */
export function statusUri(checkpointUri: string, sub?: string): string {
  const base = `${checkpointUri.replace(/\/+$/, "")}/status`;
  return sub ? `${base}/${sub}` : base;
}
