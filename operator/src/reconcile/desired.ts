// Desired children as pure functions of (run, resolved accelerator, operator context, attempt inputs).
// No client, no clock: the same inputs always give the same objects (names included), so a create after a
// crash is idempotent and unit tests compare exact env lists.
//
// Env contract (operator-design §3, common/src/contract.ts; README documents it):
//   MASTER_ADDR  rank-0 FQDN <run>-node-0.<svc>.<ns>.svc.<clusterDomain>   PET_MASTER_ADDR
//   MASTER_PORT  spec.rendezvous.port (containerPort "rdzv")                PET_MASTER_PORT
//   NNODES       pods in the group                                          PET_NNODES
//   NODE_RANK    0..NNODES-1                                                PET_NODE_RANK, GROUP_RANK
//   NPROC_PER_NODE accelerators per pod (integer, never "auto")             PET_NPROC_PER_NODE
//   WORLD_SIZE   NNODES × NPROC_PER_NODE (processes)
//   RANK only with rendezvous.compat=pytorchjob (= node rank); LOCAL_RANK never.
import type {
  V1Container,
  V1EnvVar,
  V1OwnerReference,
  V1Pod,
  V1PodSecurityContext,
  V1SecurityContext,
  V1Service,
} from "@kubernetes/client-node";
import { DEFAULT_TERMINATION_MESSAGE_PATH, ENV, SamplingStep } from "../../../common/src/contract.ts";
import { API_VERSION, type ARTraining, type SamplingJob, type TokenizerTraining } from "../api/v1alpha1/index.ts";
import {
  acceleratorAnnotations,
  acceleratorEnv,
  acceleratorLimits,
  acceleratorPorts,
  nprocPerNode,
  type ResolvedAccelerator,
} from "./accelerator.ts";
import { barrierContainer, gangPodFields } from "./gang.ts";
import {
  fitName,
  hostname,
  LABEL,
  MANAGED_BY,
  nodePodName,
  type Role,
  reducePodName,
  serviceName,
  shardPodName,
} from "./labels.ts";
import { type OperatorContext, type Run, statusUri, type TrainingRun } from "./run.ts";

export const TRAINER_CONTAINER = "trainer";
/** emptyDir at /tmp in every trainer pod: the trainer images declare it as their only writable path (staging of
 * checkpoint uploads, model caches), so trainers also run with readOnlyRootFilesystem. */
export const SCRATCH_VOLUME = "mergevq-scratch";
export const SCRATCH_PATH = "/tmp";
export const RDZV_PORT_NAME = "rdzv";

/** Trainer CLI sub-command per role (image entrypoint = mergevq-trainer). */
export const TRAINER_MODE = {
  TokenizerTraining: "train-tokenizer",
  ARTraining: "train-ar",
  shard: "sample",
  reduce: "reduce",
} as const;

/** Per-attempt inputs decided by the failure policy / pipeline. */
export interface AttemptInputs {
  attempt: number;
  /** Checkpoint to resume from (restart, resume after suspend, preemption). */
  resumeFrom?: string;
  /** Tokenizer checkpoint (ARTraining, SamplingJob) from the referenced TokenizerTraining. */
  tokenizerCheckpoint?: string;
  /** AR checkpoint (SamplingJob) from the referenced ARTraining. */
  modelCheckpoint?: string;
}

export function ownerReference(run: Run): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: run.kind,
    name: run.metadata.name!,
    uid: run.metadata.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function runLabels(run: Run): Record<string, string> {
  return {
    [LABEL.run]: fitName(run.metadata.name!, "", 63),
    [LABEL.runUid]: run.metadata.uid!,
    [LABEL.kind]: run.kind,
    [LABEL.managedBy]: MANAGED_BY,
  };
}

export function masterAddr(run: Run, ctx: OperatorContext): string {
  return `${hostname(run.metadata.name!, 0)}.${serviceName(run.metadata.name!)}.${run.metadata.namespace}.svc.${ctx.clusterDomain}`;
}

/** Headless Service giving each rank a stable DNS name; publishes not-ready addresses for rendezvous. */
export function desiredService(run: TrainingRun): V1Service {
  const name = serviceName(run.metadata.name!);
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace: run.metadata.namespace,
      labels: runLabels(run),
      ownerReferences: [ownerReference(run)],
    },
    spec: {
      clusterIP: "None",
      publishNotReadyAddresses: true,
      selector: { [LABEL.runUid]: run.metadata.uid!, [LABEL.role]: "node" },
      ports: [{ name: RDZV_PORT_NAME, port: run.spec.rendezvous.port, targetPort: run.spec.rendezvous.port as never }],
    },
  };
}

export interface RendezvousValues {
  masterAddr: string;
  masterPort: number;
  nnodes: number;
  nodeRank: number;
  nproc: number;
  timeoutSeconds: number;
  compat: "none" | "pytorchjob";
}

export function rendezvousEnv(r: RendezvousValues): V1EnvVar[] {
  const env: V1EnvVar[] = [
    { name: ENV.MASTER_ADDR, value: r.masterAddr },
    { name: ENV.MASTER_PORT, value: String(r.masterPort) },
    { name: ENV.NNODES, value: String(r.nnodes) },
    { name: ENV.NODE_RANK, value: String(r.nodeRank) },
    { name: ENV.NPROC_PER_NODE, value: String(r.nproc) },
    { name: ENV.WORLD_SIZE, value: String(r.nnodes * r.nproc) },
    { name: "PET_MASTER_ADDR", value: r.masterAddr },
    { name: "PET_MASTER_PORT", value: String(r.masterPort) },
    { name: "PET_NNODES", value: String(r.nnodes) },
    { name: "PET_NODE_RANK", value: String(r.nodeRank) },
    { name: "PET_NPROC_PER_NODE", value: String(r.nproc) },
    { name: "GROUP_RANK", value: String(r.nodeRank) },
    { name: ENV.RENDEZVOUS_TIMEOUT_SECONDS, value: String(r.timeoutSeconds) },
  ];
  if (r.compat === "pytorchjob") env.push({ name: "RANK", value: String(r.nodeRank) });
  return env;
}

/** S3 endpoint/region and credentials (secretKeyRef only: the values never appear in the pod spec). */
export function s3Env(run: Run, ctx: OperatorContext): V1EnvVar[] {
  const s3 = run.spec.s3;
  if (!s3) return ctx.s3Endpoint ? [{ name: ENV.AWS_ENDPOINT_URL, value: ctx.s3Endpoint }] : [];
  const env: V1EnvVar[] = [];
  const endpoint = s3.endpoint ?? ctx.s3Endpoint;
  if (endpoint) env.push({ name: ENV.AWS_ENDPOINT_URL, value: endpoint });
  env.push({ name: ENV.AWS_REGION, value: s3.region });
  env.push({ name: "AWS_S3_FORCE_PATH_STYLE", value: String(s3.forcePathStyle) });
  env.push({
    name: ENV.AWS_ACCESS_KEY_ID,
    valueFrom: { secretKeyRef: { name: s3.secretRef.name, key: s3.secretRef.accessKeyIdKey } },
  });
  env.push({
    name: ENV.AWS_SECRET_ACCESS_KEY,
    valueFrom: { secretKeyRef: { name: s3.secretRef.name, key: s3.secretRef.secretAccessKeyKey } },
  });
  return env;
}

/** Run identity, data, checkpoints, status channel and configs. */
export function runEnv(run: Run, inputs: AttemptInputs, statusPrefix: string): V1EnvVar[] {
  const spec = run.spec;
  const env: V1EnvVar[] = [
    { name: ENV.RUN, value: `${run.metadata.namespace}/${run.metadata.name}` },
    { name: ENV.RUN_KIND, value: run.kind },
    { name: ENV.RUN_UID, value: run.metadata.uid! },
    { name: ENV.ATTEMPT, value: String(inputs.attempt) },
  ];
  if (run.kind !== "SamplingJob") {
    env.push({ name: ENV.DATASET_URI, value: run.spec.dataset.uri });
    env.push({ name: ENV.DATASET_FORMAT, value: run.spec.dataset.format });
  }
  env.push(
    { name: ENV.CHECKPOINT_DIR, value: spec.checkpoint.uri },
    { name: ENV.CHECKPOINT_INTERVAL, value: String(spec.checkpoint.intervalSteps) },
    { name: ENV.CHECKPOINT_KEEP_LAST, value: String(spec.checkpoint.keepLast) },
    { name: ENV.CHECKPOINT_SAVE_ON_SIGTERM, value: String(spec.checkpoint.saveOnSigterm ?? true) },
  );
  if (inputs.resumeFrom) env.push({ name: ENV.RESUME_FROM, value: inputs.resumeFrom });
  env.push({ name: ENV.STATUS_URI, value: statusPrefix });
  if (run.kind === "TokenizerTraining") {
    env.push({ name: ENV.MODEL_CONFIG, value: JSON.stringify(run.spec.model) });
    env.push({
      name: ENV.TRAIN_CONFIG,
      value: JSON.stringify({ ...run.spec.training, evaluation: run.spec.evaluation }),
    });
    if (run.spec.evaluation.inceptionUri)
      env.push({ name: ENV.INCEPTION_URI, value: run.spec.evaluation.inceptionUri });
    if (run.spec.model.teacherUri) env.push({ name: ENV.TEACHER_URI, value: run.spec.model.teacherUri });
    if (run.spec.model.perceptualUri) env.push({ name: ENV.PERCEPTUAL_URI, value: run.spec.model.perceptualUri });
  } else if (run.kind === "ARTraining") {
    env.push({ name: ENV.MODEL_CONFIG, value: JSON.stringify(run.spec.model) });
    env.push({ name: ENV.TRAIN_CONFIG, value: JSON.stringify(run.spec.training) });
  } else {
    env.push({
      name: ENV.TRAIN_CONFIG,
      value: JSON.stringify({ ...run.spec.sampling, evaluation: run.spec.evaluation }),
    });
    if (run.spec.evaluation.inceptionUri)
      env.push({ name: ENV.INCEPTION_URI, value: run.spec.evaluation.inceptionUri });
  }
  if (inputs.tokenizerCheckpoint) env.push({ name: ENV.TOKENIZER_CHECKPOINT, value: inputs.tokenizerCheckpoint });
  if (inputs.modelCheckpoint) env.push({ name: ENV.MODEL_CHECKPOINT, value: inputs.modelCheckpoint });
  env.push({ name: ENV.POD_IP, valueFrom: { fieldRef: { fieldPath: "status.podIP" } } });
  env.push({ name: ENV.TERMINATION_MESSAGE_PATH, value: DEFAULT_TERMINATION_MESSAGE_PATH });
  env.push({ name: "PYTHONUNBUFFERED", value: "1" });
  return env;
}

/** User env first, minus names the operator manages (operator values win on a clash). */
export function mergeEnv(user: { name: string; value?: string }[] | undefined, managed: V1EnvVar[]): V1EnvVar[] {
  const reserved = new Set(managed.map((e) => e.name));
  const out: V1EnvVar[] = (user ?? [])
    .filter((e) => !reserved.has(e.name))
    .map((e) => ({ name: e.name, value: e.value ?? "" }));
  return [...out, ...managed];
}

function trainerContainer(
  run: Run,
  ctx: OperatorContext,
  mode: string,
  env: V1EnvVar[],
  acc: ResolvedAccelerator | undefined,
  port: number | undefined,
  readiness: boolean,
): V1Container {
  const t = run.spec.trainer;
  const limits: Record<string, string> = { ...(acc ? acceleratorLimits(acc) : {}) };
  const requests: Record<string, string> = {};
  const res = run.spec.resources;
  if (res.cpu !== undefined) {
    limits.cpu = String(res.cpu);
    requests.cpu = String(res.cpu);
  }
  if (res.memory !== undefined) {
    limits.memory = String(res.memory);
    requests.memory = String(res.memory);
  }
  const ports = [
    ...(port !== undefined ? [{ name: RDZV_PORT_NAME, containerPort: port }] : []),
    ...(acc ? acceleratorPorts(acc) : []),
  ];
  const c: V1Container = {
    name: TRAINER_CONTAINER,
    image: t.image ?? ctx.trainerImage,
    env,
    terminationMessagePath: DEFAULT_TERMINATION_MESSAGE_PATH,
    terminationMessagePolicy: "FallbackToLogsOnError",
  };
  if (t.imagePullPolicy) c.imagePullPolicy = t.imagePullPolicy;
  if (t.command) c.command = t.command;
  // Default args select the trainer sub-command; a user `command` without `args` runs as given.
  if (t.args) c.args = t.args;
  else if (!t.command) c.args = [mode];
  if (ports.length) c.ports = ports;
  if (Object.keys(limits).length || Object.keys(requests).length) {
    c.resources = {};
    if (Object.keys(limits).length) c.resources.limits = limits;
    if (Object.keys(requests).length) c.resources.requests = requests;
  }
  if (readiness && port !== undefined) {
    c.readinessProbe = { tcpSocket: { port: port as never }, periodSeconds: 5, failureThreshold: 1 };
  }
  c.volumeMounts = [{ name: SCRATCH_VOLUME, mountPath: SCRATCH_PATH }];
  if (ctx.trainerSecurityContext) c.securityContext = ctx.trainerSecurityContext as V1SecurityContext;
  return c;
}

function basePod(
  run: Run,
  name: string,
  role: Role,
  attempt: number,
  extraLabels: Record<string, string>,
  annotations: Record<string, string>,
  acc: ResolvedAccelerator | undefined,
  ctx: OperatorContext,
): V1Pod {
  const t = run.spec.trainer;
  const pod: V1Pod = {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name,
      namespace: run.metadata.namespace,
      labels: { ...runLabels(run), [LABEL.role]: role, [LABEL.attempt]: String(attempt), ...extraLabels },
      annotations,
      ownerReferences: [ownerReference(run)],
    },
    spec: {
      restartPolicy: "Never",
      terminationGracePeriodSeconds: t.terminationGracePeriodSeconds,
      containers: [],
      enableServiceLinks: false,
      volumes: [{ name: SCRATCH_VOLUME, emptyDir: {} }],
    },
  };
  const spec = pod.spec!;
  if (ctx.trainerPodSecurityContext) spec.securityContext = ctx.trainerPodSecurityContext as V1PodSecurityContext;
  if (t.serviceAccountName) spec.serviceAccountName = t.serviceAccountName;
  if (t.priorityClassName) spec.priorityClassName = t.priorityClassName;
  if (acc && Object.keys(acc.nodeSelector).length) spec.nodeSelector = acc.nodeSelector;
  if (acc?.tolerations.length) spec.tolerations = acc.tolerations;
  return pod;
}

/** One pod per node rank of a training attempt (all created together: gang start). */
export function desiredNodePods(
  run: TokenizerTraining | ARTraining,
  acc: ResolvedAccelerator,
  ctx: OperatorContext,
  inputs: AttemptInputs,
): V1Pod[] {
  const name = run.metadata.name!;
  const nnodes = run.spec.resources.nodes;
  const nproc = nprocPerNode(acc, run.spec.resources.processesPerNode);
  const rdzv = run.spec.rendezvous;
  const addr = masterAddr(run, ctx);
  const gang = gangPodFields(run.spec.gang.scheduler, `${name}-a${inputs.attempt}`);
  const pods: V1Pod[] = [];
  for (let rank = 0; rank < nnodes; rank++) {
    const managed = [
      ...rendezvousEnv({
        masterAddr: addr,
        masterPort: rdzv.port,
        nnodes,
        nodeRank: rank,
        nproc,
        timeoutSeconds: rdzv.timeoutSeconds,
        compat: rdzv.compat,
      }),
      ...runEnv(run, inputs, statusUri(run.spec.checkpoint.uri)),
      ...s3Env(run, ctx),
      ...acceleratorEnv(acc),
    ];
    const env = mergeEnv(run.spec.trainer.env, managed);
    const pod = basePod(
      run,
      nodePodName(name, rank, inputs.attempt),
      "node",
      inputs.attempt,
      { [LABEL.nodeRank]: String(rank), ...gang.labels },
      { ...acceleratorAnnotations(acc, rank), ...gang.annotations },
      acc,
      ctx,
    );
    const spec = pod.spec!;
    spec.hostname = hostname(name, rank);
    spec.subdomain = serviceName(name);
    if (gang.schedulerName) spec.schedulerName = gang.schedulerName;
    if (rank > 0) {
      const barrier = barrierContainer(ctx.barrierImage, managed, run.spec.trainer.imagePullPolicy);
      if (ctx.trainerSecurityContext) barrier.securityContext = ctx.trainerSecurityContext as V1SecurityContext;
      spec.initContainers = [barrier];
    }
    spec.containers = [trainerContainer(run, ctx, TRAINER_MODE[run.kind], env, acc, rdzv.port, rank === 0)];
    pods.push(pod);
  }
  return pods;
}

/** One shard pod of a SamplingJob (single-node group; per-shard retry). */
export function desiredShardPod(
  run: SamplingJob,
  acc: ResolvedAccelerator,
  ctx: OperatorContext,
  shard: number,
  inputs: AttemptInputs,
): V1Pod {
  const nproc = nprocPerNode(acc, run.spec.resources.processesPerNode);
  const managed = [
    ...rendezvousEnv({
      masterAddr: "127.0.0.1",
      masterPort: 29500,
      nnodes: 1,
      nodeRank: 0,
      nproc,
      timeoutSeconds: 600,
      compat: "none",
    }),
    ...runEnv(run, inputs, statusUri(run.spec.checkpoint.uri, `shards/${shard}`)),
    { name: ENV.SHARD_INDEX, value: String(shard) },
    { name: ENV.NUM_SHARDS, value: String(run.spec.sampling.shards) },
    { name: ENV.STEP, value: SamplingStep.enum.sample },
    ...s3Env(run, ctx),
    ...acceleratorEnv(acc),
  ];
  const pod = basePod(
    run,
    shardPodName(run.metadata.name!, shard, inputs.attempt),
    "shard",
    inputs.attempt,
    { [LABEL.shard]: String(shard) },
    {},
    acc,
    ctx,
  );
  pod.spec!.containers = [
    trainerContainer(run, ctx, TRAINER_MODE.shard, mergeEnv(run.spec.trainer.env, managed), acc, undefined, false),
  ];
  return pod;
}

/** Reduce pod: combines shard outputs and computes gFID / IS (no accelerator). */
export function desiredReducePod(run: SamplingJob, ctx: OperatorContext, inputs: AttemptInputs): V1Pod {
  const managed = [
    ...runEnv(run, inputs, statusUri(run.spec.checkpoint.uri)),
    { name: ENV.NUM_SHARDS, value: String(run.spec.sampling.shards) },
    { name: ENV.STEP, value: SamplingStep.enum.reduce },
    ...s3Env(run, ctx),
  ];
  const pod = basePod(
    run,
    reducePodName(run.metadata.name!, inputs.attempt),
    "reduce",
    inputs.attempt,
    {},
    {},
    undefined,
    ctx,
  );
  // A user command override applies to the reduce step too; the mode arg tells a shared script which step runs.
  pod.spec!.containers = [
    trainerContainer(
      run,
      ctx,
      TRAINER_MODE.reduce,
      mergeEnv(run.spec.trainer.env, managed),
      undefined,
      undefined,
      false,
    ),
  ];
  return pod;
}
