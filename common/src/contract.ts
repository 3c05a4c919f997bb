// The operator ↔ trainer contract: environment variables the operator injects into every container of a
// run, and the JSON documents the trainer writes so the operator can fill `.status` without the trainer
// pods holding any Kubernetes API rights.
//
// Channel 1 (during the run): rank 0 writes `progress.json` under MERGEVQ_STATUS_URI (an s3:// or file://
//   prefix) at most every few seconds. The operator reads it (with the run's S3 credentials) for progress,
//   stall detection (the `step` is the heartbeat) and the last checkpoint (→ RESUME_FROM on restart).
// Channel 2 (at the end): rank 0 writes `metrics.json` under the same prefix AND a compact copy of it as the
//   container's termination message (TERMINATION_MESSAGE_PATH, default /dev/termination-log, ≤ 4 KiB).
//   The termination message is authoritative when present; bring-your-own trainers may use S3 alone.
import { z } from "zod";

/** Environment variable names injected by the operator (README documents each). */
export const ENV = {
  // Rendezvous (PyTorch/Lightning semantics; see operator-design §3). RANK/LOCAL_RANK are NOT set.
  MASTER_ADDR: "MASTER_ADDR",
  MASTER_PORT: "MASTER_PORT",
  NNODES: "NNODES",
  NODE_RANK: "NODE_RANK",
  NPROC_PER_NODE: "NPROC_PER_NODE",
  WORLD_SIZE: "WORLD_SIZE",
  RENDEZVOUS_TIMEOUT_SECONDS: "MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS",
  POD_IP: "MERGEVQ_POD_IP", // downward API status.podIP: the address collectives listen on
  // Run identity
  RUN: "MERGEVQ_RUN", // "<namespace>/<name>"
  RUN_KIND: "MERGEVQ_KIND", // TokenizerTraining | ARTraining | SamplingJob
  RUN_UID: "MERGEVQ_RUN_UID",
  ATTEMPT: "MERGEVQ_ATTEMPT",
  // Data and outputs
  DATASET_URI: "DATASET_URI",
  DATASET_FORMAT: "DATASET_FORMAT", // folder | tar-shards
  CHECKPOINT_DIR: "CHECKPOINT_DIR", // s3:// or file:// prefix
  CHECKPOINT_INTERVAL: "CHECKPOINT_INTERVAL", // optimiser steps
  CHECKPOINT_KEEP_LAST: "CHECKPOINT_KEEP_LAST",
  CHECKPOINT_SAVE_ON_SIGTERM: "CHECKPOINT_SAVE_ON_SIGTERM", // "true" | "false": checkpoint at the next step, exit 143
  RESUME_FROM: "RESUME_FROM", // checkpoint URI, set on restart/resume
  STATUS_URI: "MERGEVQ_STATUS_URI", // prefix for progress.json / metrics.json
  MODEL_CONFIG: "MERGEVQ_MODEL_CONFIG", // JSON of spec.model
  TRAIN_CONFIG: "MERGEVQ_TRAIN_CONFIG", // JSON of spec.training / spec.sampling
  TOKENIZER_CHECKPOINT: "MERGEVQ_TOKENIZER_CHECKPOINT", // ARTraining / SamplingJob input
  MODEL_CHECKPOINT: "MERGEVQ_MODEL_CHECKPOINT", // SamplingJob input
  SHARD_INDEX: "MERGEVQ_SHARD_INDEX", // SamplingJob shard
  NUM_SHARDS: "MERGEVQ_NUM_SHARDS",
  STEP: "MERGEVQ_STEP", // SamplingJob pods only: a SamplingStep ("sample" on shard pods, "reduce" on the reduce pod)
  INCEPTION_URI: "MERGEVQ_INCEPTION_URI", // ONNX Inception for rFID/gFID; unset → generated random net (labelled)
  TEACHER_URI: "MERGEVQ_TEACHER_URI", // ONNX teacher for global alignment
  PERCEPTUAL_URI: "MERGEVQ_PERCEPTUAL_URI", // frozen LPIPS/VGG weights for the perceptual loss
  TERMINATION_MESSAGE_PATH: "TERMINATION_MESSAGE_PATH",
  // S3 (credentials come from the referenced Secret via secretKeyRef, never inlined)
  AWS_ENDPOINT_URL: "AWS_ENDPOINT_URL",
  AWS_REGION: "AWS_REGION",
  AWS_ACCESS_KEY_ID: "AWS_ACCESS_KEY_ID",
  AWS_SECRET_ACCESS_KEY: "AWS_SECRET_ACCESS_KEY",
} as const;

/**
 * Values of MERGEVQ_STEP: which step of a SamplingJob a pod runs. Shard pods get "sample", the reduce pod
 * "reduce"; training pods do not get the variable. The default container args name the same step (the
 * `sample` / `reduce` sub-commands); the variable is what tells a bring-your-own `spec.trainer.command`
 * without args which step it is.
 */
export const SamplingStep = z.enum(["sample", "reduce"]);
export type SamplingStep = z.infer<typeof SamplingStep>;

/**
 * Trainer exit codes the operator reads. PEER_FAILED (75, EX_TEMPFAIL): this rank is fine, but the process
 * group failed under it because another rank did (its socket closed, it aborted the group, or it went
 * silent). Such an exit is a consequence, not a cause: the operator looks for the rank that failed first and
 * classifies that one, and only restarts on the peer failure itself (counted) when no other rank reports
 * within a short grace. Every other code keeps its usual meaning (1–127 permanent, 128+ signals).
 */
export const EXIT_CODE = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  PEER_FAILED: 75,
  SIGTERM_CHECKPOINT: 143,
} as const;

export const PROGRESS_FILE = "progress.json";
export const METRICS_FILE = "metrics.json";
export const DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log";
/** Kubernetes truncates termination messages at 4096 bytes. */
export const TERMINATION_MESSAGE_LIMIT = 4096;

/** Metric values; names follow the paper (rFID, gFID, IS). Labelled variants carry a suffix, e.g.
 *  `rFID@K=36` or `rFID[random-inception]` when the Inception weights are not the real ones. */
export const Metrics = z.record(z.string(), z.number());
export type Metrics = z.infer<typeof Metrics>;

export const Progress = z.object({
  attempt: z.number().int().min(1).optional(),
  step: z.number().int().min(0),
  totalSteps: z.number().int().min(0),
  epoch: z.number().min(0).optional(),
  imagesPerSecond: z.number().min(0).optional(),
  etaSeconds: z.number().min(0).optional(),
  losses: Metrics.optional(),
  /** URI of the newest complete checkpoint (written only after its upload finished). */
  lastCheckpoint: z.string().optional(),
  /** Counters of skipped inputs (corrupt JPEGs, truncated shards). */
  dataErrors: z.record(z.string(), z.number().int()).optional(),
  updatedAt: z.string(), // RFC 3339
});
export type Progress = z.infer<typeof Progress>;

export const Artifacts = z.object({
  checkpointUri: z.string().optional(),
  imageUris: z.array(z.string()).optional(),
  /** Free-form extra outputs (e.g. samples.npz of a sampling shard). */
  extra: z.record(z.string(), z.string()).optional(),
});
export type Artifacts = z.infer<typeof Artifacts>;

export const FinalReport = z.object({
  metrics: Metrics,
  artifacts: Artifacts.optional(),
  /** Notes that must reach the user, e.g. "Inception weights are randomly generated". */
  notes: z.array(z.string()).optional(),
  step: z.number().int().min(0).optional(),
  updatedAt: z.string().optional(),
});
export type FinalReport = z.infer<typeof FinalReport>;

/** Serialise a final report for the termination message, dropping optional parts until it fits. */
export function terminationMessage(report: FinalReport): string {
  let msg = JSON.stringify(report);
  if (Buffer.byteLength(msg) <= TERMINATION_MESSAGE_LIMIT) return msg;
  const compact: FinalReport = {
    metrics: report.metrics,
    artifacts: { checkpointUri: report.artifacts?.checkpointUri },
  };
  msg = JSON.stringify(compact);
  if (Buffer.byteLength(msg) <= TERMINATION_MESSAGE_LIMIT) return msg;
  return JSON.stringify({ metrics: {}, notes: ["report exceeded 4 KiB; see metrics.json"] });
}
