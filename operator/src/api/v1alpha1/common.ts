// Building blocks shared by TokenizerTraining, ARTraining and SamplingJob (mergevq.ai/v1alpha1).
// Every field carries a description: it becomes the `kubectl explain` text of the generated CRD.
import { z } from "zod";
import { immutable, withRules } from "./rules.ts";

const STORAGE_URI = /^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.*)$/;
const DATA_URI = /^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.*|\/.*)$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const QUANTITY = /^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$/;

export const storageUri = (what: string) =>
  z.string().max(1024).regex(STORAGE_URI, `${what} must be an s3://bucket/prefix or file:///path URI`);

/** Kubernetes resource quantity (`2`, `500m`, `8Gi`); accepted as integer or string like core types. */
export const Quantity = z
  .union([
    z.number().int().min(0),
    z.string().max(64).regex(QUANTITY, "must be a Kubernetes quantity such as 500m or 8Gi"),
  ])
  .meta({ "x-kubernetes-int-or-string": true });

export const RunRef = z
  .object({
    name: z
      .string()
      .min(1)
      .max(253)
      .regex(DNS_LABEL, "must be a DNS-1123 label")
      .describe("Name of the referenced run."),
    namespace: z
      .string()
      .max(63)
      .regex(DNS_LABEL, "must be a DNS-1123 label")
      .optional()
      .describe("Namespace of the referenced run; defaults to the namespace of this object."),
  })
  .describe("Reference to another mergevq.ai run whose artifacts this run consumes.");

export const S3Config = z
  .object({
    endpoint: z
      .string()
      .max(512)
      .regex(/^https?:\/\/[^\s/]+(\/.*)?$/, "must be an http(s) URL")
      .optional()
      .describe(
        "S3 API endpoint URL (MinIO, Ceph, OBS...). Unset: the operator's default endpoint (Helm value s3.endpoint), else AWS.",
      ),
    region: z.string().max(64).default("us-east-1").describe("S3 region passed to the SDK as AWS_REGION."),
    forcePathStyle: z
      .boolean()
      .default(true)
      .describe("Use path-style addressing (required by most S3-compatible stores)."),
    secretRef: z
      .object({
        name: z.string().min(1).max(253).regex(DNS_LABEL, "must be a DNS-1123 label").describe("Secret name."),
        accessKeyIdKey: z
          .string()
          .max(253)
          .default("AWS_ACCESS_KEY_ID")
          .describe("Key in the Secret holding the access key id."),
        secretAccessKeyKey: z
          .string()
          .max(253)
          .default("AWS_SECRET_ACCESS_KEY")
          .describe("Key in the Secret holding the secret access key."),
      })
      .describe(
        "Secret (same namespace) with S3 credentials. Injected into pods via secretKeyRef; never copied into the pod spec or logs.",
      ),
  })
  .describe("Object storage used for the dataset, checkpoints, status documents and artifacts.");

export const Dataset = z
  .object({
    uri: z
      .string()
      .max(1024)
      .regex(DATA_URI, "dataset.uri must be s3://bucket/prefix, file:///path or an absolute path")
      .describe(
        "Where the dataset lives: s3://bucket/prefix (streamed), file:///path or an absolute path inside the pod.",
      ),
    format: z
      .enum(["folder", "tar-shards"])
      .default("tar-shards")
      .describe(
        "folder: ImageNet layout (train/<class>/*.jpg, val/...). tar-shards: WebDataset tars with an index manifest.",
      ),
    shuffleBuffer: z.number().int().min(1).max(1_000_000).default(1000).describe("Samples held in the shuffle buffer."),
  })
  .meta({ "x-kubernetes-validations": [immutable("dataset")] })
  .describe("Training data.");

export const Checkpoint = z
  .object({
    uri: storageUri("checkpoint.uri").describe(
      "Prefix for checkpoints (s3:// or file://). Status documents go to <uri>/status/, artifacts to <uri>/artifacts/.",
    ),
    intervalSteps: z
      .number()
      .int()
      .min(1)
      .default(500)
      .describe("Save a checkpoint every N optimiser steps (and at the end)."),
    keepLast: z.number().int().min(1).max(1000).default(3).describe("Number of most recent checkpoints to keep."),
    saveOnSigterm: z.boolean().default(true).describe("Save a final checkpoint when the pod receives SIGTERM."),
  })
  .describe("Checkpointing and resume. On restart the operator passes the last reported checkpoint as RESUME_FROM.");

export const Toleration = z
  .object({
    key: z.string().max(316).optional().describe("Taint key the toleration applies to."),
    operator: z.enum(["Exists", "Equal"]).optional().describe("Exists or Equal (default Equal)."),
    value: z.string().max(63).optional().describe("Taint value for Equal."),
    effect: z.enum(["NoSchedule", "PreferNoSchedule", "NoExecute"]).optional().describe("Taint effect to match."),
    tolerationSeconds: z
      .number()
      .int()
      .optional()
      .describe("For NoExecute: how long the pod stays bound after the taint."),
  })
  .describe("A core/v1 Toleration.");

export const Accelerator = withRules(
  z
    .object({
      profile: z
        .string()
        .max(63)
        .regex(DNS_LABEL, "must be a DNS-1123 label")
        .optional()
        .describe(
          "Name of an accelerator profile configured in the operator (Helm value acceleratorProfiles). Fields set here override it.",
        ),
      vendor: z
        .enum(["cpu", "nvidia", "ascend"])
        .optional()
        .describe("cpu: no accelerator. nvidia: CUDA GPUs (NCCL). ascend: Huawei Ascend NPUs (HCCL env injected)."),
      resourceName: z
        .string()
        .max(253)
        .regex(/^([a-z0-9.-]+\/)?[a-zA-Z0-9._-]+$/, "must be an extended resource name such as nvidia.com/gpu")
        .optional()
        .describe(
          "Extended resource to request, e.g. nvidia.com/gpu, huawei.com/Ascend910, huawei.com/npu. Default per vendor.",
        ),
      perNode: z
        .number()
        .int()
        .min(0)
        .max(64)
        .optional()
        .describe("Accelerators per pod; also the number of processes per node (NPROC_PER_NODE, never 'auto')."),
      nodeSelector: z.record(z.string(), z.string()).optional().describe("Node labels the pods must match."),
      tolerations: z.array(Toleration).max(32).optional().describe("Tolerations added to every pod."),
    })
    .describe("Accelerator profile: vendor, resource name, count per node, placement."),
  [
    {
      cel: "!has(self.vendor) || self.vendor == 'cpu' || !has(self.perNode) || self.perNode >= 1",
      message: "accelerator.perNode must be at least 1 for nvidia and ascend",
      path: ["perNode"],
      check: (a) => !a.vendor || a.vendor === "cpu" || a.perNode === undefined || a.perNode >= 1,
    },
    {
      cel: "!has(self.vendor) || self.vendor != 'cpu' || !has(self.resourceName)",
      message: "accelerator.resourceName must not be set for vendor cpu",
      path: ["resourceName"],
      check: (a) => a.vendor !== "cpu" || a.resourceName === undefined,
    },
    {
      cel: "has(self.profile) || has(self.vendor)",
      message: "accelerator needs a profile or a vendor",
      check: (a) => a.profile !== undefined || a.vendor !== undefined,
    },
  ],
);

export const Resources = z
  .object({
    nodes: z.number().int().min(1).max(1024).default(1).describe("Number of pods (nodes) in the group; NNODES."),
    accelerator: Accelerator.default({ vendor: "cpu" }),
    processesPerNode: z
      .number()
      .int()
      .min(1)
      .max(64)
      .optional()
      .describe("Processes per pod for CPU runs (accelerator runs use accelerator.perNode). Default 1."),
    cpu: Quantity.optional().describe("CPU request and limit per pod, e.g. 4 or 3500m."),
    memory: Quantity.optional().describe("Memory request and limit per pod, e.g. 16Gi."),
  })
  .describe("Pods, accelerators and compute per pod.");

export const EnvVar = z
  .object({
    name: z
      .string()
      .min(1)
      .max(253)
      .regex(/^[-._a-zA-Z][-._a-zA-Z0-9]*$/, "must be a valid environment variable name")
      .describe("Variable name."),
    value: z.string().max(32768).default("").describe("Variable value."),
  })
  .describe("Extra environment variable. Operator-managed variables (rendezvous, S3, run identity) win on a clash.");

export const Trainer = z
  .object({
    image: z
      .string()
      .max(512)
      .optional()
      .describe(
        "Container image. Default: the operator's trainer image (Helm value trainer.image). Any image may be used.",
      ),
    imagePullPolicy: z.enum(["Always", "IfNotPresent", "Never"]).optional().describe("Image pull policy."),
    command: z
      .array(z.string().max(4096))
      .max(64)
      .optional()
      .describe(
        "Entrypoint override (bring-your-own trainer). The rendezvous/S3 env contract is injected either way; metrics then come from <checkpoint.uri>/status/metrics.json.",
      ),
    args: z.array(z.string().max(4096)).max(256).optional().describe("Arguments override."),
    env: z.array(EnvVar).max(128).optional().describe("Extra environment variables."),
    serviceAccountName: z.string().max(253).optional().describe("ServiceAccount for the pods (needs no API rights)."),
    priorityClassName: z.string().max(253).optional().describe("PriorityClass for the pods."),
    terminationGracePeriodSeconds: z
      .number()
      .int()
      .min(0)
      .max(3600)
      .default(60)
      .describe("Time between SIGTERM and SIGKILL; leave room for a final checkpoint upload."),
  })
  .describe("The trainer container.");

export const Rendezvous = z
  .object({
    port: z.number().int().min(1024).max(65535).default(29500).describe("MASTER_PORT; containerPort named rdzv."),
    timeoutSeconds: z
      .number()
      .int()
      .min(5)
      .max(7200)
      .default(600)
      .describe("How long ranks > 0 wait for rank 0's TCP port before failing with RendezvousTimeout."),
    compat: z
      .enum(["none", "pytorchjob"])
      .default("none")
      .describe("pytorchjob: also set RANK = node rank for legacy scripts. Default none: no RANK/LOCAL_RANK."),
  })
  .describe("Rendezvous contract (MASTER_ADDR/MASTER_PORT/NNODES/NODE_RANK/NPROC_PER_NODE/WORLD_SIZE).");

export const Gang = z
  .object({
    scheduler: z
      .enum(["none", "volcano", "scheduler-plugins"])
      .default("none")
      .describe("Create a PodGroup (minMember = nodes) for this gang scheduler; none relies on the TCP start barrier."),
    queue: z.string().max(253).optional().describe("Volcano queue name."),
    timeoutSeconds: z
      .number()
      .int()
      .min(10)
      .max(86400)
      .default(900)
      .describe("Pods not all running after this long → condition reason GangTimeout and a new attempt."),
  })
  .describe("Gang scheduling.");

export const RunPolicy = z
  .object({
    backoffLimit: z
      .number()
      .int()
      .min(0)
      .max(1000)
      .default(3)
      .describe(
        "Counted restarts of the whole group before the run fails: retryable exits (codes 128-255, e.g. signals), stalls and rendezvous timeouts count; preemption, node loss and suspend/resume do not.",
      ),
    activeDeadlineSeconds: z
      .number()
      .int()
      .min(1)
      .optional()
      .describe("Fail with DeadlineExceeded when the run has been active this long."),
    ttlSecondsAfterFinished: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe("Delete the run this many seconds after it Succeeded or Failed."),
    suspend: z
      .boolean()
      .default(false)
      .describe(
        "Suspend: delete the pods and keep status; un-suspending starts a new attempt from the last checkpoint.",
      ),
    cleanPodPolicy: z
      .enum(["None", "Running", "All"])
      .default("Running")
      .describe("Pods deleted when the run finishes: All, only still-Running ones, or None (keep for logs)."),
    stallTimeoutSeconds: z
      .number()
      .int()
      .min(5)
      .max(86400)
      .default(1800)
      .describe(
        "No progress (step) reported for this long → restart the group from the last checkpoint (reason Stalled).",
      ),
  })
  .describe("Lifecycle policy of the run.");

// ---------------------------------------------------------------------------------------------------------
// Status

export const Condition = z
  .object({
    type: z
      .string()
      .min(1)
      .max(316)
      .describe(
        "Condition type: Admitted, PodsReady, Running, Restarting, Checkpointed, Succeeded, Failed, Suspended.",
      ),
    status: z.enum(["True", "False", "Unknown"]).describe("True, False or Unknown."),
    observedGeneration: z.number().int().min(0).optional().describe("metadata.generation the condition was set for."),
    lastTransitionTime: z.string().describe("When the status last changed (RFC 3339)."),
    reason: z.string().min(1).max(1024).describe("CamelCase reason, e.g. BackoffLimitExceeded, Stalled, InvalidSpec."),
    message: z.string().max(32768).describe("Human-readable detail."),
  })
  .describe("metav1.Condition.");

export const Progress = z
  .object({
    step: z.number().int().min(0).optional().describe("Optimiser steps done."),
    totalSteps: z.number().int().min(0).optional().describe("Planned optimiser steps."),
    percent: z.string().max(8).optional().describe("step/totalSteps as a percentage string (printer column)."),
    epoch: z.number().min(0).optional().describe("Epochs done (fractional)."),
    imagesPerSecond: z.number().min(0).optional().describe("Training throughput over the whole group."),
    etaSeconds: z.number().min(0).optional().describe("Estimated seconds to completion."),
    lastUpdated: z.string().optional().describe("When the trainer last reported progress (RFC 3339)."),
  })
  .describe("Progress reported by the trainer through <checkpoint.uri>/status/progress.json.");

export const Artifacts = z
  .object({
    checkpointUri: z
      .string()
      .max(1024)
      .optional()
      .describe("Final (or newest) checkpoint; consumed by downstream runs."),
    imageUris: z.array(z.string().max(1024)).max(64).optional().describe("Reconstruction or sample grids (PNG)."),
    extra: z.record(z.string(), z.string()).optional().describe("Other outputs by name."),
  })
  .describe("Outputs of the run.");

export const ReplicaStatuses = z
  .object({
    active: z.number().int().min(0).default(0).describe("Pods of the current attempt that are pending or running."),
    succeeded: z.number().int().min(0).default(0).describe("Pods of the current attempt that succeeded."),
    failed: z.number().int().min(0).default(0).describe("Pods of the current attempt that failed."),
  })
  .describe("Pod counts of the current attempt.");

export const Phase = z
  .enum(["Pending", "Waiting", "Running", "Restarting", "Suspended", "Reducing", "Succeeded", "Failed"])
  .describe(
    "Pending: admitted, pods not all running. Waiting: blocked on a reference or a reconcile-time problem (see conditions). Running. Restarting: tearing down an attempt. Suspended. Reducing: SamplingJob reduce step. Succeeded. Failed.",
  );

export const RunStatus = z
  .object({
    phase: Phase.optional(),
    conditions: z
      .array(Condition)
      .max(16)
      .optional()
      .meta({ "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"] })
      .describe("Latest observations (metav1.Condition), one per type."),
    observedGeneration: z.number().int().min(0).optional().describe("metadata.generation last reconciled."),
    attempt: z.number().int().min(0).optional().describe("Current attempt number (1 = first start)."),
    restartCount: z.number().int().min(0).optional().describe("Counted restarts (compared against backoffLimit)."),
    startTime: z.string().optional().describe("When the first attempt started (RFC 3339)."),
    completionTime: z.string().optional().describe("When the run Succeeded or Failed (RFC 3339)."),
    replicaStatuses: ReplicaStatuses.optional(),
    progress: Progress.optional(),
    metrics: z
      .record(z.string(), z.number())
      .optional()
      .describe("Metrics by name: rFID, gFID, IS, precision, recall, loss, ... (per-K variants as rFID@K=36)."),
    metricsNote: z
      .string()
      .max(1024)
      .optional()
      .describe(
        "Provenance of the metrics, e.g. which Inception weights computed FID (random weights are labelled here).",
      ),
    lastCheckpoint: z.string().max(1024).optional().describe("Newest complete checkpoint reported by the trainer."),
    artifacts: Artifacts.optional(),
    dataErrors: z
      .record(z.string(), z.number().int())
      .optional()
      .describe("Skipped inputs by kind (corrupt JPEGs, truncated shards)."),
  })
  .describe("Observed state of the run, written by the operator.");

/** Standard printer columns: phase, progress, age (+ per-kind metric columns). */
export const commonPrinterColumns = [
  { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Run phase" },
  { name: "Progress", type: "string", jsonPath: ".status.progress.percent", description: "step/totalSteps" },
  { name: "Step", type: "integer", jsonPath: ".status.progress.step", priority: 1, description: "Optimiser step" },
  {
    name: "Img/s",
    type: "number",
    jsonPath: ".status.progress.imagesPerSecond",
    priority: 1,
    description: "Throughput",
  },
  { name: "ETA", type: "integer", jsonPath: ".status.progress.etaSeconds", priority: 1, description: "Seconds left" },
  { name: "Attempt", type: "integer", jsonPath: ".status.attempt", priority: 1, description: "Attempt" },
] as const;

export const ageColumn = { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" } as const;

export const ObjectMeta = z
  .object({
    name: z.string().max(253).optional(),
    namespace: z.string().max(63).optional(),
    uid: z.string().optional(),
    generation: z.number().int().optional(),
    resourceVersion: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
    creationTimestamp: z.string().optional(),
    deletionTimestamp: z.string().optional(),
  })
  .passthrough();

/** Spec-level rule for every kind with `s3` and `checkpoint`. */
export const checkpointS3Rule = {
  cel: "!self.checkpoint.uri.startsWith('s3://') || has(self.s3)",
  message: "s3 (credentials Secret) is required when checkpoint.uri is s3://",
  path: ["s3"],
  check: (o: { checkpoint: { uri: string }; s3?: unknown }) =>
    !o.checkpoint.uri.startsWith("s3://") || o.s3 !== undefined,
};

/** Spec-level rule for the training kinds, which also read a dataset. */
export const datasetS3Rule = {
  cel: "!self.dataset.uri.startsWith('s3://') || has(self.s3)",
  message: "s3 (credentials Secret) is required when dataset.uri is s3://",
  path: ["s3"],
  check: (o: { dataset: { uri: string }; s3?: unknown }) => !o.dataset.uri.startsWith("s3://") || o.s3 !== undefined,
};
