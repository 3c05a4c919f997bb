// What the operator keeps of each watched object (informer transforms). A pod as the apiserver serves it is
// mostly spec (containers, the whole env contract, volumes, tolerations) and managedFields; reconcile reads
// none of that from observed pods: it reads metadata (names, labels, annotations, owners, deletion) and the
// status (phase, conditions, container states and termination messages). Keeping only those is what lets the
// caches hold thousands of runs in little memory (issue 17); a new field that reconcile starts to read must be
// added here (cacheShape.test.ts plans from lean and from served pods and compares).
import type { V1ObjectMeta, V1Pod, V1Service } from "@kubernetes/client-node";

/** kubectl's copy of the whole applied object, kept as an annotation: never read, often as large as the spec. */
const LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration";

const META_KEPT = [
  "name",
  "namespace",
  "uid",
  "resourceVersion",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "labels",
  "ownerReferences",
  "finalizers",
] as const;

/** Identity, labels, owners, deletion and annotations (without kubectl's copy); absent fields stay absent. */
function leanMeta(m: V1ObjectMeta | undefined): V1ObjectMeta {
  const out: Record<string, unknown> = {};
  if (!m) return out;
  for (const k of META_KEPT) if (m[k] !== undefined) out[k] = m[k];
  if (m.annotations) {
    const { [LAST_APPLIED]: _dropped, ...rest } = m.annotations;
    if (Object.keys(rest).length) out.annotations = rest;
  }
  return out as V1ObjectMeta;
}

/** A pod as reconcile reads it: metadata, spec.nodeName, and the status. */
export function leanPod(p: V1Pod): V1Pod {
  const s = p.status;
  return {
    apiVersion: p.apiVersion,
    kind: p.kind,
    metadata: leanMeta(p.metadata),
    spec: p.spec?.nodeName ? ({ nodeName: p.spec.nodeName } as V1Pod["spec"]) : undefined,
    status: s && {
      phase: s.phase,
      reason: s.reason,
      message: s.message,
      startTime: s.startTime,
      conditions: s.conditions,
      initContainerStatuses: s.initContainerStatuses,
      containerStatuses: s.containerStatuses,
    },
  };
}

/** A Service as reconcile reads it: that it exists, and whose it is. */
export function leanService(s: V1Service): V1Service {
  return { apiVersion: s.apiVersion, kind: s.kind, metadata: leanMeta(s.metadata) };
}

/** A run keeps spec and status whole (both are read); only managedFields and kubectl's copy go. */
export function leanRun<T extends { metadata?: object }>(r: T): T {
  return { ...r, metadata: leanMeta(r.metadata as V1ObjectMeta | undefined) };
}
