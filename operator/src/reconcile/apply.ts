// The only step with I/O against the API server: create/delete children, write /status, delete a run, emit
// events. Error contract (operator-design §12.6, style §2.6): branch on ApiException.code — 404 on delete means
// done, 409 on create means already there (deterministic names), 409 on a status write is a quiet requeue
// (ConflictError), 422 is terminal (TerminalError). The status write is a JSON merge patch
// (controller/kubeClient.ts sends it as application/merge-patch+json).
import { randomBytes } from "node:crypto";
import type { V1Pod, V1Service } from "@kubernetes/client-node";
import { API_VERSION, GROUP, KINDS, VERSION } from "../api/v1alpha1/index.ts";
import type { CoreApi, CustomApi } from "../controller/kubeClient.ts";
import { TerminalError } from "../controller/workqueue.ts";
import { FIELD_MANAGER } from "./labels.ts";
import type { RunEvent } from "./plan.ts";
import type { RunKind } from "./run.ts";

/** A write lost an optimistic-concurrency race; requeue without logging an error. */
export class ConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConflictError";
  }
}

export function apiCode(err: unknown): number | undefined {
  if (err && typeof err === "object") {
    const c = (err as { code?: unknown }).code;
    if (typeof c === "number") return c;
  }
  return undefined;
}

export interface Clients {
  core: CoreApi;
  custom: CustomApi;
}

export interface RunRefForApply {
  kind: RunKind;
  namespace: string;
  name: string;
  uid: string;
}

export async function createPod(c: Clients, pod: V1Pod): Promise<"created" | "exists"> {
  try {
    await c.core.createNamespacedPod({ namespace: pod.metadata!.namespace!, body: pod, fieldManager: FIELD_MANAGER });
    return "created";
  } catch (err) {
    const code = apiCode(err);
    if (code === 409) return "exists";
    if (code === 422)
      throw new TerminalError(`creating pod ${pod.metadata?.name}: ${String((err as Error).message).slice(0, 500)}`);
    throw err;
  }
}

/** Create a gang-scheduler PodGroup (Volcano or scheduler-plugins CRD); 409 = already there. */
export async function createPodGroup(
  c: Clients,
  pg: { apiVersion?: string; metadata?: { namespace?: string } },
): Promise<void> {
  const [group, version] = (pg.apiVersion ?? "").split("/");
  try {
    await c.custom.createNamespacedCustomObject({
      group,
      version,
      namespace: pg.metadata!.namespace!,
      plural: "podgroups",
      body: pg,
      fieldManager: FIELD_MANAGER,
    });
  } catch (err) {
    if (apiCode(err) !== 409) throw err;
  }
}

export async function createService(c: Clients, svc: V1Service): Promise<"created" | "exists"> {
  try {
    await c.core.createNamespacedService({
      namespace: svc.metadata!.namespace!,
      body: svc,
      fieldManager: FIELD_MANAGER,
    });
    return "created";
  } catch (err) {
    if (apiCode(err) === 409) return "exists";
    throw err;
  }
}

export async function deletePod(c: Clients, namespace: string, name: string): Promise<"deleted" | "gone"> {
  try {
    await c.core.deleteNamespacedPod({ namespace, name, propagationPolicy: "Background" });
    return "deleted";
  } catch (err) {
    if (apiCode(err) === 404) return "gone";
    throw err;
  }
}

export async function deleteService(c: Clients, namespace: string, name: string): Promise<void> {
  try {
    await c.core.deleteNamespacedService({ namespace, name });
  } catch (err) {
    if (apiCode(err) !== 404) throw err;
  }
}

/**
 * Merge-patch /status with a resourceVersion precondition: a reconcile computed from a stale object must not
 * overwrite a newer decision (e.g. bump the attempt twice). Returns the updated object.
 */
export async function patchStatus(
  c: Clients,
  ref: Omit<RunRefForApply, "uid">,
  resourceVersion: string | undefined,
  statusPatch: unknown,
): Promise<Record<string, unknown> | undefined> {
  const body: Record<string, unknown> = { status: statusPatch };
  if (resourceVersion) body.metadata = { resourceVersion };
  try {
    return await c.custom.patchNamespacedCustomObjectStatus({
      group: GROUP,
      version: VERSION,
      namespace: ref.namespace,
      plural: KINDS[ref.kind].plural,
      name: ref.name,
      body,
      fieldManager: FIELD_MANAGER,
    });
  } catch (err) {
    const code = apiCode(err);
    if (code === 404) return undefined;
    if (code === 409)
      throw new ConflictError(`status of ${ref.kind} ${ref.namespace}/${ref.name} changed concurrently`);
    if (code === 422)
      throw new TerminalError(`status of ${ref.kind} ${ref.namespace}/${ref.name} rejected: ${body2msg(err)}`);
    throw err;
  }
}

function body2msg(err: unknown): string {
  const b = (err as { body?: unknown }).body;
  return (typeof b === "string" ? b : JSON.stringify(b ?? "")).slice(0, 1000);
}

export async function deleteRun(c: Clients, ref: Omit<RunRefForApply, "uid">): Promise<void> {
  try {
    await c.custom.deleteNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ref.namespace,
      plural: KINDS[ref.kind].plural,
      name: ref.name,
      propagationPolicy: "Background",
    });
  } catch (err) {
    if (apiCode(err) !== 404) throw err;
  }
}

export async function getRun(
  c: Clients,
  kind: RunKind,
  namespace: string,
  name: string,
): Promise<Record<string, unknown> | undefined> {
  try {
    return (await c.custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural: KINDS[kind].plural,
      name,
    })) as Record<string, unknown>;
  } catch (err) {
    if (apiCode(err) === 404) return undefined;
    throw err;
  }
}

/** core/v1 Event on the run (emitted after the status write). Failures are logged by the caller, not retried. */
export async function emitEvent(
  c: Clients,
  ref: RunRefForApply,
  e: RunEvent,
  component: string,
  now: Date,
): Promise<void> {
  await c.core.createNamespacedEvent({
    namespace: ref.namespace,
    body: {
      metadata: { name: `${ref.name}.${randomBytes(8).toString("hex")}`, namespace: ref.namespace },
      involvedObject: {
        apiVersion: API_VERSION,
        kind: ref.kind,
        name: ref.name,
        namespace: ref.namespace,
        uid: ref.uid,
      },
      type: e.type,
      reason: e.reason,
      message: e.message.slice(0, 1024),
      source: { component },
      reportingComponent: component,
      reportingInstance: component,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    },
  });
}

/**
 * Run `fn` over items with at most `limit` calls in flight (create/delete of many pods). Every item is tried;
 * then the first TerminalError, else the first error, is thrown.
 */
export async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (t: T) => Promise<unknown>,
): Promise<void> {
  // A limit of 0 would start no worker and silently skip every item.
  if (!Number.isInteger(limit) || limit < 1)
    throw new RangeError(`forEachLimit: limit must be a positive integer, got ${limit}`);
  let i = 0;
  const errors: unknown[] = [];
  const worker = async () => {
    while (i < items.length) {
      const t = items[i++];
      try {
        await fn(t);
      } catch (err) {
        errors.push(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (errors.length) {
    const terminal = errors.find((e) => e instanceof TerminalError);
    throw terminal ?? errors[0];
  }
}
