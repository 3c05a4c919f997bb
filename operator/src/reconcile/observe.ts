// Observe: a typed snapshot of one run. The run itself is read fresh from the API server (a cached copy may
// lag our own last status write, and acting on it could e.g. recreate pods of a finished attempt); children
// come from the informer caches by owner-UID label (a recreated run with the same name never adopts old
// pods). Reconcile-time validation (Secret, profile, references) yields a Blocker rather than an error.
import type { V1Pod, V1Secret, V1Service } from "@kubernetes/client-node";
import { FinalReport, METRICS_FILE, PROGRESS_FILE, Progress } from "../../../common/src/contract.ts";
import type { Informer } from "../controller/informer.ts";
import type { CoreApi } from "../controller/kubeClient.ts";
import { type ResolvedAccelerator, resolveAccelerator } from "./accelerator.ts";
import { apiCode } from "./apply.ts";
import { isSucceeded, isTerminal } from "./failurePolicy.ts";
import { LABEL } from "./labels.ts";
import { type RefLookup, resolveSamplingInputs, resolveTokenizerForAR } from "./pipeline.ts";
import { attemptOf, type Blocker, rankOf } from "./plan.ts";
import { REASON } from "./reasons.ts";
import { type OperatorContext, parseRun, type Run, type RunKind, statusUri } from "./run.ts";
import { finalReportFromPod } from "./status.ts";
import type { S3Credentials, StatusReader } from "./statusReader.ts";

export const UID_INDEX = "owner-uid";

export interface Caches {
  runs: Record<RunKind, Informer<Record<string, unknown> & { metadata?: { name?: string; namespace?: string } }>>;
  pods: Informer<V1Pod>;
  services: Informer<V1Service>;
}

export interface Snapshot {
  run: Run;
  raw: Record<string, unknown>;
  pods: V1Pod[];
  /** Pods bucketed by attempt label. */
  byAttempt: Map<number, V1Pod[]>;
  serviceExists: boolean;
  blocker?: Blocker;
  acc?: ResolvedAccelerator;
  creds?: S3Credentials;
  tokenizerCheckpoint?: string;
  modelCheckpoint?: string;
}

export function bucketByAttempt(pods: readonly V1Pod[]): Map<number, V1Pod[]> {
  const m = new Map<number, V1Pod[]>();
  for (const p of pods) {
    const a = attemptOf(p);
    const list = m.get(a) ?? [];
    list.push(p);
    m.set(a, list);
  }
  return m;
}

/** Look up a referenced run in the cache, parsed (invalid specs count as not found). */
export function cacheLookup(caches: Caches): RefLookup {
  return (kind, namespace, name) => {
    const raw = caches.runs[kind].get(`${namespace}/${name}`);
    if (!raw) return undefined;
    const p = parseRun(kind, raw);
    return p.ok && (p.run.kind === "TokenizerTraining" || p.run.kind === "ARTraining") ? p.run : undefined;
  };
}

async function readSecret(core: CoreApi, namespace: string, name: string): Promise<V1Secret | undefined> {
  try {
    return await core.readNamespacedSecret({ namespace, name });
  } catch (err) {
    if (apiCode(err) === 404) return undefined;
    throw err;
  }
}

function secretValue(s: V1Secret, key: string): string | undefined {
  const b64 = s.data?.[key];
  if (b64 !== undefined) return Buffer.from(b64, "base64").toString("utf8");
  return s.stringData?.[key];
}

/** Validate the S3 Secret and build credentials for the status reader. */
export async function s3Credentials(
  core: CoreApi,
  run: Run,
  ctx: OperatorContext,
): Promise<{ creds?: S3Credentials; blocker?: Blocker }> {
  const s3 = run.spec.s3;
  if (!s3) return {};
  const ns = run.metadata.namespace!;
  const secret = await readSecret(core, ns, s3.secretRef.name);
  if (!secret) {
    return {
      blocker: {
        reason: REASON.SecretNotFound,
        message: `S3 credentials Secret ${ns}/${s3.secretRef.name} not found (spec.s3.secretRef.name)`,
      },
    };
  }
  const id = secretValue(secret, s3.secretRef.accessKeyIdKey);
  const key = secretValue(secret, s3.secretRef.secretAccessKeyKey);
  const missing = [
    ...(id === undefined ? [s3.secretRef.accessKeyIdKey] : []),
    ...(key === undefined ? [s3.secretRef.secretAccessKeyKey] : []),
  ];
  if (missing.length) {
    return {
      blocker: {
        reason: REASON.SecretKeyMissing,
        message: `Secret ${ns}/${s3.secretRef.name} lacks key(s) ${missing.join(", ")}`,
      },
    };
  }
  return {
    creds: {
      endpoint: s3.endpoint ?? ctx.s3Endpoint,
      region: s3.region,
      forcePathStyle: s3.forcePathStyle,
      accessKeyId: id!,
      secretAccessKey: key!,
    },
  };
}

/** Everything the pure planners need, except the trainer documents (see readDocuments). */
export async function observe(
  core: CoreApi,
  caches: Caches,
  ctx: OperatorContext,
  run: Run,
  raw: Record<string, unknown>,
): Promise<Snapshot> {
  const uid = run.metadata.uid!;
  const pods = caches.pods.byIndex(UID_INDEX, uid);
  const svcName = run.kind === "SamplingJob" ? undefined : `${run.metadata.namespace}/${run.metadata.name}`;
  const serviceExists = svcName
    ? caches.services.byIndex(UID_INDEX, uid).length > 0 || caches.services.get(svcName) !== undefined
    : true;
  const snap: Snapshot = { run, raw, pods, byAttempt: bucketByAttempt(pods), serviceExists };

  const blockers: Blocker[] = [];
  const acc = resolveAccelerator(run.spec.resources.accelerator, ctx.profiles, run.spec.resources.nodes);
  if (acc.ok) snap.acc = acc.value;
  else blockers.push({ reason: acc.reason, message: acc.message });

  const s3 = await s3Credentials(core, run, ctx);
  if (s3.blocker) blockers.push(s3.blocker);
  snap.creds = s3.creds;

  const lookup = cacheLookup(caches);
  if (run.kind === "ARTraining") {
    const r = resolveTokenizerForAR(run, lookup);
    if (r.ok) snap.tokenizerCheckpoint = r.checkpointUri;
    else blockers.push(r.blocker);
  } else if (run.kind === "SamplingJob") {
    const r = resolveSamplingInputs(run, lookup);
    if (r.ok) {
      snap.modelCheckpoint = r.model;
      snap.tokenizerCheckpoint = r.tokenizer;
    } else blockers.push(r.blocker);
  }
  if (blockers.length) snap.blocker = blockers[0];
  return snap;
}

/**
 * Trainer documents: progress.json while a training attempt is active; metrics.json when the final pods
 * succeeded without a termination-message report (bring-your-own trainers may use S3 alone).
 * Read errors are returned, not thrown: an unreachable object store must not block pod management.
 */
export async function readDocuments(
  reader: StatusReader,
  snap: Snapshot,
): Promise<{ progress?: Progress; metricsDoc?: FinalReport; error?: unknown }> {
  const run = snap.run;
  const phase = run.status?.phase;
  if (phase === "Succeeded" || phase === "Failed") return {};
  const prefix = statusUri(run.spec.checkpoint.uri);
  const out: { progress?: Progress; metricsDoc?: FinalReport; error?: unknown } = {};
  try {
    const attempt = run.status?.attempt ?? 0;
    if (run.kind !== "SamplingJob" && attempt > 0) {
      const cur = snap.byAttempt.get(attempt) ?? [];
      // Read fresh when a decision is imminent or being carried out: a rank finished, failed or is being deleted
      // (restart → RESUME_FROM), or the attempt lacks pods (about to be created: a trainer stopped by SIGTERM
      // wrote its final checkpoint into progress.json just before its pod went away).
      const fresh =
        cur.length < run.spec.resources.nodes || cur.some((p) => isTerminal(p) || p.metadata?.deletionTimestamp);
      out.progress = await reader.readJson(`${prefix}/${PROGRESS_FILE}`, Progress, snap.creds, fresh);
      const rank0 = cur.find((p) => rankOf(p) === 0);
      if (cur.length === run.spec.resources.nodes && cur.every(isSucceeded) && !finalReportFromPod(rank0)) {
        out.metricsDoc = await reader.readJson(`${prefix}/${METRICS_FILE}`, FinalReport, snap.creds, true);
      }
    } else if (run.kind === "SamplingJob") {
      const reduce = snap.pods.find((p) => p.metadata?.labels?.[LABEL.role] === "reduce" && attemptOf(p) === attempt);
      if (reduce && isSucceeded(reduce) && !finalReportFromPod(reduce)) {
        out.metricsDoc = await reader.readJson(`${prefix}/${METRICS_FILE}`, FinalReport, snap.creds, true);
      }
    }
  } catch (err) {
    out.error = err;
  }
  return out;
}
