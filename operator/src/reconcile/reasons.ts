// Condition types and reasons (operator-design §8). One place, string-literal unions, no ad-hoc strings.

export const CONDITION = {
  Admitted: "Admitted",
  PodsReady: "PodsReady",
  Running: "Running",
  Restarting: "Restarting",
  Checkpointed: "Checkpointed",
  Succeeded: "Succeeded",
  Failed: "Failed",
  Suspended: "Suspended",
} as const;
export type ConditionType = (typeof CONDITION)[keyof typeof CONDITION];

/** Pairs that exclude each other: setting one True sets the other False (jobset semantics). */
export const EXCLUSIVE: Partial<Record<ConditionType, ConditionType>> = {
  Succeeded: "Failed",
  Failed: "Succeeded",
  Running: "Restarting",
  Restarting: "Running",
};

export const REASON = {
  // admission / reconcile-time validation
  Admitted: "Admitted",
  InvalidSpec: "InvalidSpec",
  SecretNotFound: "SecretNotFound",
  SecretKeyMissing: "SecretKeyMissing",
  UnknownAcceleratorProfile: "UnknownAcceleratorProfile",
  TokenizerNotFound: "TokenizerNotFound",
  TokenizerNotReady: "TokenizerNotReady",
  ModelNotFound: "ModelNotFound",
  ModelNotReady: "ModelNotReady",
  QuotaPending: "QuotaPending",
  // lifecycle
  PodsCreated: "PodsCreated",
  PodsPending: "PodsPending",
  AllPodsRunning: "AllPodsRunning",
  Running: "Running",
  Completed: "Completed",
  MetricsReported: "MetricsReported",
  CheckpointReported: "CheckpointReported",
  Suspended: "Suspended",
  Resumed: "Resumed",
  Reducing: "Reducing",
  ShardFailed: "ShardFailed",
  // failures and restarts
  GangTimeout: "GangTimeout",
  RendezvousTimeout: "RendezvousTimeout",
  Stalled: "Stalled",
  BackoffLimitExceeded: "BackoffLimitExceeded",
  DeadlineExceeded: "DeadlineExceeded",
  Preempted: "Preempted",
  NodeFailure: "NodeFailure",
  OOMKilled: "OOMKilled",
  ExitCode: "ExitCode",
  Signal: "Signal",
  PeerFailed: "PeerFailed",
  PodDeleted: "PodDeleted",
  ReduceFailed: "ReduceFailed",
} as const;
export type Reason = (typeof REASON)[keyof typeof REASON];
