// One reconcile of one run: read it (informer cache) → observe → plan (pure) → write status (only on diff,
// resourceVersion precondition) → delete/create children → events. Keys are `<Kind>/<namespace>/<name>`.
import type { V1Pod } from "@kubernetes/client-node";
import type { Logger } from "../../../common/src/logger.ts";
import { isRunKind } from "../api/v1alpha1/index.ts";
import type { CoreApi, CustomApi } from "../controller/kubeClient.ts";
import { type ReconcileResult, TerminalError } from "../controller/workqueue.ts";
import {
  type Clients,
  createPod,
  createPodGroup,
  createService,
  deletePod,
  deleteRun,
  deleteService,
  emitEvent,
  forEachLimit,
  getRun,
  patchStatus,
} from "./apply.ts";
import { LABEL } from "./labels.ts";
import { type Caches, observe, readDocuments, UID_INDEX } from "./observe.ts";
import { planSampling } from "./pipeline.ts";
import type { Plan, RunEvent } from "./plan.ts";
import { REASON } from "./reasons.ts";
import { type OperatorContext, parseRun, type RunKind, type RunStatus } from "./run.ts";
import { freshDocuments, mergePatchDiff, StatusBuilder } from "./status.ts";
import type { StatusReader } from "./statusReader.ts";
import { planTraining } from "./training.ts";

export const COMPONENT = "mergevq-operator";
/** Default of ReconcilerDeps.writeConcurrency (operator env WRITE_CONCURRENCY, Helm writeConcurrency). */
export const DEFAULT_WRITE_CONCURRENCY = 16;

export function runKeyOf(kind: RunKind, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

export function parseKey(key: string): { kind: RunKind; namespace: string; name: string } {
  const [kind, namespace, name] = key.split("/");
  if (!isRunKind(kind) || !namespace || !name) throw new Error(`bad key ${key}`);
  return { kind, namespace, name };
}

export interface ReconcilerDeps {
  core: CoreApi;
  custom: CustomApi;
  caches: Caches;
  ctx: OperatorContext;
  reader: StatusReader;
  logger: Logger;
  now?: () => number;
  /**
   * Most pod create/delete calls in flight at once within one reconcile (a positive integer; default
   * DEFAULT_WRITE_CONCURRENCY). main.ts sets it from WRITE_CONCURRENCY.
   */
  writeConcurrency?: number;
}

/**
 * True when resourceVersion `rv` is known to be at least `min` (no `min`: always). Resource versions are opaque
 * to clients; every apiserver backed by etcd serves decimal revisions, which compare as integers. Anything else
 * compares as "not known", so the caller reads the object live.
 */
export function resourceVersionAtLeast(rv: string | undefined, min: string | undefined): boolean {
  if (min === undefined) return true;
  if (rv === undefined || !/^\d+$/.test(rv) || !/^\d+$/.test(min)) return false;
  return BigInt(rv) >= BigInt(min);
}

export class Reconciler {
  private readonly c: Clients;
  private readonly writeConcurrency: number;
  /**
   * resourceVersion returned by this process's last status write, per run key, until the informer cache has
   * caught up with it. A cached copy older than our own write is not planned from (it could undo a decision
   * that a write with no diff would not catch by its precondition); the run is read live instead. Only the
   * operator writes status, and a new leader lists its caches after it acquires the Lease (manager.ts), so they
   * are never older than the previous leader's writes.
   */
  private readonly written = new Map<string, string>();
  constructor(private readonly d: ReconcilerDeps) {
    this.c = { core: d.core, custom: d.custom };
    const wc = d.writeConcurrency ?? DEFAULT_WRITE_CONCURRENCY;
    if (!Number.isInteger(wc) || wc < 1) {
      throw new RangeError(`writeConcurrency (WRITE_CONCURRENCY) must be a positive integer, got ${wc}`);
    }
    this.writeConcurrency = wc;
  }

  private now(): number {
    return (this.d.now ?? Date.now)();
  }

  async reconcile(key: string): Promise<ReconcileResult | undefined> {
    const { kind, namespace, name } = parseKey(key);
    const log = this.d.logger.child({ run: `${namespace}/${name}`, kind });
    const raw = await this.readRun(key, kind, namespace, name);
    if (!raw) {
      this.written.delete(key);
      await this.cleanupOrphans(kind, namespace, name, log);
      return undefined;
    }
    const meta = raw.metadata as {
      uid: string;
      resourceVersion?: string;
      generation?: number;
      deletionTimestamp?: string;
    };
    const ref = { kind, namespace, name, uid: meta.uid };
    if (meta.deletionTimestamp) {
      // Explicit child deletion: do not rely on the garbage collector alone.
      await this.deleteChildren(ref.uid, namespace, kind, log);
      return undefined;
    }

    const parsed = parseRun(kind, raw);
    if (!parsed.ok) {
      // Invalid at reconcile time (admission should have caught it): condition + no pods; a spec edit requeues.
      const now = new Date(this.now()).toISOString();
      const b = new StatusBuilder(raw.status as RunStatus | undefined, now, meta.generation);
      b.s.phase = "Waiting";
      const changed = b.cond("Admitted", "False", REASON.InvalidSpec, parsed.message, true);
      await this.writeStatus(key, ref, meta.resourceVersion, raw.status, b.s, log);
      if (changed)
        await this.emit(ref, [{ type: "Warning", reason: REASON.InvalidSpec, message: parsed.message }], log);
      return undefined;
    }
    const run = parsed.run;
    const snap = await observe(this.d.core, this.d.caches, this.d.ctx, run, raw);
    const rawDocs = await readDocuments(this.d.reader, snap);
    if (rawDocs.error) log.warn({ err: String(rawDocs.error) }, "reading trainer status documents failed");

    const now = this.now();
    // Documents left under a reused checkpoint.uri by an earlier run of the same name are not this run's.
    const docs = freshDocuments(rawDocs, run.metadata.creationTimestamp);
    let plan: Plan;
    if (run.kind === "SamplingJob") {
      plan = planSampling(
        {
          now,
          run,
          pods: snap.pods,
          blocker: snap.blocker,
          acc: snap.acc,
          modelCheckpoint: snap.modelCheckpoint,
          tokenizerCheckpoint: snap.tokenizerCheckpoint,
          metricsDoc: docs.metricsDoc,
        },
        this.d.ctx,
      );
    } else {
      plan = planTraining(
        {
          now,
          run,
          pods: snap.pods,
          serviceExists: snap.serviceExists,
          blocker: snap.blocker,
          acc: snap.acc,
          tokenizerCheckpoint: snap.tokenizerCheckpoint,
          progress: docs.progress,
          metricsDoc: docs.metricsDoc,
        },
        this.d.ctx,
      );
    }

    // 1. The decision (status) first: if this write loses a race, nothing else happens.
    const wrote = await this.writeStatus(key, ref, meta.resourceVersion, raw.status, plan.status, log);
    if (wrote === "gone") return undefined;
    // 2. Children.
    const conc = this.writeConcurrency;
    if (plan.deletePods.length) {
      log.info({ pods: plan.deletePods }, "deleting pods");
      await forEachLimit(plan.deletePods, conc, (n) => deletePod(this.c, namespace, n));
    }
    // The Service and the pods in parallel (one round trip less for a new attempt); a PodGroup before its pods.
    const creates = await Promise.allSettled([
      plan.createService ? createService(this.c, plan.createService) : undefined,
      (async () => {
        if (plan.createPodGroup) await createPodGroup(this.c, plan.createPodGroup);
        if (plan.createPods.length) {
          log.info({ pods: plan.createPods.map((p) => p.metadata?.name) }, "creating pods");
          await forEachLimit(plan.createPods, conc, (p: V1Pod) => createPod(this.c, p));
        }
      })(),
    ]);
    const failed = creates.flatMap((r) => (r.status === "rejected" ? [r.reason as unknown] : []));
    if (failed.length) throw failed.find((e) => e instanceof TerminalError) ?? failed[0];
    // 3. Events, after the status write; best effort, off the reconcile's critical path.
    void this.emit(ref, plan.events, log);
    if (plan.deleteRun) {
      log.info("deleting run: ttlSecondsAfterFinished elapsed");
      await this.deleteChildren(ref.uid, namespace, kind, log);
      await deleteRun(this.c, ref);
      return undefined;
    }
    return plan.requeueAfterMs !== undefined ? { requeueAfterMs: plan.requeueAfterMs } : undefined;
  }

  /**
   * The run as the informer cache holds it (no API round trip), unless this process wrote its status more
   * recently than the cached copy, or the cache does not hold it (yet): then a live GET. Undefined = gone.
   */
  private async readRun(
    key: string,
    kind: RunKind,
    namespace: string,
    name: string,
  ): Promise<Record<string, unknown> | undefined> {
    const cached = this.d.caches.runs[kind].get(`${namespace}/${name}`);
    const rv = (cached?.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
    if (cached && resourceVersionAtLeast(rv, this.written.get(key))) {
      this.written.delete(key);
      return cached;
    }
    return getRun(this.c, kind, namespace, name);
  }

  private async writeStatus(
    key: string,
    ref: { kind: RunKind; namespace: string; name: string },
    resourceVersion: string | undefined,
    before: unknown,
    after: RunStatus,
    log: Logger,
  ): Promise<"unchanged" | "written" | "gone"> {
    const patch = mergePatchDiff(before ?? {}, after);
    if (patch === undefined) return "unchanged";
    const res = await patchStatus(this.c, ref, resourceVersion, patch);
    if (!res) return "gone";
    const rv = (res.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
    if (rv) this.written.set(key, rv);
    log.debug({ phase: after.phase, attempt: after.attempt, patch }, "status written");
    return "written";
  }

  private async emit(
    ref: { kind: RunKind; namespace: string; name: string; uid: string },
    events: RunEvent[],
    log: Logger,
  ) {
    await Promise.all(
      events.map(async (e) => {
        log.info({ reason: e.reason, type: e.type }, e.message);
        try {
          await emitEvent(this.c, ref, e, COMPONENT, new Date(this.now()));
        } catch (err) {
          log.warn({ err: String(err) }, "emitting event failed");
        }
      }),
    );
  }

  private async deleteChildren(uid: string, namespace: string, kind: RunKind, log: Logger) {
    const pods = this.d.caches.pods.byIndex(UID_INDEX, uid).filter((p) => !p.metadata?.deletionTimestamp);
    if (pods.length) log.info({ count: pods.length }, "deleting pods of deleted run");
    await forEachLimit(pods, this.writeConcurrency, (p) => deletePod(this.c, namespace, p.metadata!.name!));
    if (kind !== "SamplingJob") {
      const svcs = this.d.caches.services.byIndex(UID_INDEX, uid);
      for (const s of svcs) await deleteService(this.c, namespace, s.metadata!.name!);
    }
  }

  /** The run is gone: delete children still labelled with its name whose owner no longer exists. */
  private async cleanupOrphans(kind: RunKind, namespace: string, name: string, log: Logger) {
    const owned = (o: {
      metadata?: { ownerReferences?: Array<{ kind: string; name: string }>; deletionTimestamp?: unknown };
    }) =>
      !o.metadata?.deletionTimestamp &&
      (o.metadata?.ownerReferences ?? []).some((r) => r.kind === kind && r.name === name);
    const pods = this.d.caches.pods.list(namespace).filter(owned);
    if (pods.length) log.info({ count: pods.length }, "deleting orphaned pods");
    await forEachLimit(pods, this.writeConcurrency, (p) => deletePod(this.c, namespace, p.metadata!.name!));
    for (const s of this.d.caches.services.list(namespace).filter(owned)) {
      if (s.metadata?.labels?.[LABEL.kind] === kind) await deleteService(this.c, namespace, s.metadata!.name!);
    }
  }
}
