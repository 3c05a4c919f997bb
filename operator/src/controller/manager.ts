// The manager wires informers → work queue → reconciler, under leader election, with graceful shutdown.
// Informer handlers only enqueue keys: a run's own events enqueue it; pod/service events enqueue their
// controller owner; a TokenizerTraining / ARTraining change enqueues the runs that reference it (pipeline).
// Only the leader starts the queue workers; caches are started after leadership is acquired so a standby
// replica holds no watches. Losing leadership stops everything (main.ts exits the process).
import type { KubeConfig, KubernetesListObject, KubernetesObject, V1Pod, V1Service } from "@kubernetes/client-node";
import type { Logger } from "../../../common/src/logger.ts";
import { API_VERSION, CRDS, GROUP, isRunKind, VERSION } from "../api/v1alpha1/index.ts";
import { ConflictError } from "../reconcile/apply.ts";
import { leanPod, leanRun, leanService } from "../reconcile/cacheShape.ts";
import { LABEL, MANAGED_SELECTOR } from "../reconcile/labels.ts";
import { type Caches, UID_INDEX } from "../reconcile/observe.ts";
import { Reconciler, runKeyOf } from "../reconcile/reconciler.ts";
import type { OperatorContext, RunKind } from "../reconcile/run.ts";
import { StatusReader } from "../reconcile/statusReader.ts";
import { Informer, type InformerEvent } from "./informer.ts";
import { type CoreApi, type CustomApi, KubeClient } from "./kubeClient.ts";
import { LeaderElector } from "./leaderElection.ts";
import { createMetrics, type OperatorMetrics } from "./metrics.ts";
import { WorkQueue } from "./workqueue.ts";

type RawObj = KubernetesObject & {
  spec?: Record<string, unknown>;
  status?: { phase?: string };
};

export interface ManagerOptions {
  kc: KubeConfig;
  ctx: OperatorContext;
  logger: Logger;
  /** Namespaces to watch; empty = all. */
  namespaces: string[];
  leaderElection: boolean;
  leaseNamespace: string;
  leaseName?: string;
  identity: string;
  concurrency?: number;
  /** Pod create/delete calls in flight at once within one reconcile (Reconciler writeConcurrency). */
  writeConcurrency?: number;
  resyncMs?: number;
  metrics?: OperatorMetrics;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Called when leadership is lost (the process should exit). */
  onLostLeadership?: () => void;
}

export class Manager {
  readonly metrics: OperatorMetrics;
  readonly queue: WorkQueue;
  private readonly informers: Informer<RawObj>[] = [];
  private readonly podInformers: Informer<V1Pod>[] = [];
  private readonly svcInformers: Informer<V1Service>[] = [];
  private readonly runInformers = Object.fromEntries(CRDS.map((d) => [d.kind, []])) as unknown as Record<
    RunKind,
    Informer<RawObj>[]
  >;
  private elector: LeaderElector | undefined;
  private leading = false;
  private started = false;
  private synced = false;
  private stopping = false;
  private readonly reconciler: Reconciler;
  private readonly client: KubeClient;
  private readonly log: Logger;

  constructor(private readonly o: ManagerOptions) {
    this.log = o.logger;
    this.queue = new WorkQueue({
      concurrency: o.concurrency ?? 4,
      onResult: (key, outcome, secs, err) => {
        const kind = key.split("/")[0];
        this.metrics.reconcileSeconds.observe({ kind }, secs);
        this.metrics.reconcileQuantiles.observe(secs);
        if (outcome === "error" && err instanceof ConflictError) {
          this.metrics.reconciles.inc({ kind, result: "conflict" });
          return;
        }
        this.metrics.reconciles.inc({ kind, result: outcome });
        if (outcome === "error" || outcome === "terminal") {
          this.metrics.reconcileErrors.inc({ kind });
          this.log.error({ key, err: err instanceof Error ? err.message : String(err), outcome }, "reconcile failed");
        }
      },
    });
    this.metrics =
      o.metrics ??
      createMetrics({
        phaseCollector: () => this.phaseCounts(),
        queueDepth: () => this.queue.depth,
      });
    this.client = new KubeClient(o.kc, {
      onRequest: (verb, resource, code, secs) => {
        this.metrics.apiRequests.inc({ verb, resource, code: String(code) });
        this.metrics.apiRequestSeconds.observe({ verb, resource }, secs);
      },
    });
    const { core, custom } = this.client;
    const caches = this.buildInformers(core, custom);
    this.reconciler = new Reconciler({
      core,
      custom,
      caches,
      ctx: o.ctx,
      reader: new StatusReader(),
      logger: o.logger,
      writeConcurrency: o.writeConcurrency,
    });
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** Ready: caches synced when leading; a standby is ready (it serves health and waits). */
  isReady(): boolean {
    return this.leading ? this.synced : !this.stopping;
  }

  private namespaces(): Array<string | undefined> {
    return this.o.namespaces.length ? this.o.namespaces : [undefined];
  }

  private buildInformers(core: CoreApi, custom: CustomApi): Caches {
    const common = {
      kc: this.o.kc,
      logger: this.log,
      resyncMs: this.o.resyncMs ?? 5 * 60_000,
      onRestart: (name: string, cause: "error" | "gone" | "watchdog") =>
        this.metrics.informerRestarts.inc({ informer: name, cause }),
    };
    const uidIndex = (o: { metadata?: { labels?: Record<string, string> } }) => {
      const u = o.metadata?.labels?.[LABEL.runUid];
      return u ? [u] : [];
    };
    for (const ns of this.namespaces()) {
      for (const { kind, plural } of CRDS) {
        const inf = new Informer<RawObj>({
          ...common,
          transform: leanRun,
          name: `${plural}${ns ? `@${ns}` : ""}`,
          path: ns ? `/apis/${API_VERSION}/namespaces/${ns}/${plural}` : `/apis/${API_VERSION}/${plural}`,
          list: async (opts) =>
            (ns
              ? await custom.listNamespacedCustomObject({
                  group: GROUP,
                  version: VERSION,
                  namespace: ns,
                  plural,
                  limit: opts.limit,
                  _continue: opts.continueToken,
                })
              : await custom.listClusterCustomObject({
                  group: GROUP,
                  version: VERSION,
                  plural,
                  limit: opts.limit,
                  _continue: opts.continueToken,
                })) as KubernetesListObject<RawObj>,
        });
        inf.on((ev, obj) => this.onRun(kind, ev, obj));
        this.runInformers[kind].push(inf);
        this.informers.push(inf);
      }
      const pods = new Informer<V1Pod>({
        ...common,
        transform: leanPod,
        name: `pods${ns ? `@${ns}` : ""}`,
        path: ns ? `/api/v1/namespaces/${ns}/pods` : "/api/v1/pods",
        labelSelector: MANAGED_SELECTOR,
        list: (opts) =>
          ns
            ? core.listNamespacedPod({
                namespace: ns,
                labelSelector: opts.labelSelector,
                limit: opts.limit,
                _continue: opts.continueToken,
              })
            : core.listPodForAllNamespaces({
                labelSelector: opts.labelSelector,
                limit: opts.limit,
                _continue: opts.continueToken,
              }),
      });
      pods.addIndex(UID_INDEX, uidIndex);
      pods.on((_ev, pod) => this.onChild(pod as unknown as RawObj));
      this.podInformers.push(pods);
      const svcs = new Informer<V1Service>({
        ...common,
        transform: leanService,
        name: `services${ns ? `@${ns}` : ""}`,
        path: ns ? `/api/v1/namespaces/${ns}/services` : "/api/v1/services",
        labelSelector: MANAGED_SELECTOR,
        list: (opts) =>
          ns
            ? core.listNamespacedService({
                namespace: ns,
                labelSelector: opts.labelSelector,
                limit: opts.limit,
                _continue: opts.continueToken,
              })
            : core.listServiceForAllNamespaces({
                labelSelector: opts.labelSelector,
                limit: opts.limit,
                _continue: opts.continueToken,
              }),
      });
      svcs.addIndex(UID_INDEX, uidIndex);
      svcs.on((ev, svc) => {
        if (ev === "delete") this.onChild(svc as unknown as RawObj);
      });
      this.svcInformers.push(svcs);
    }
    // Multi-namespace: present the per-namespace informers as one cache each.
    return {
      runs: Object.fromEntries(CRDS.map(({ kind }) => [kind, merged(this.runInformers[kind])])),
      pods: merged(this.podInformers),
      services: merged(this.svcInformers),
    } as unknown as Caches;
  }

  private onRun(kind: RunKind, _ev: InformerEvent, obj: RawObj): void {
    const ns = obj.metadata?.namespace;
    const name = obj.metadata?.name;
    if (!ns || !name) return;
    this.queue.add(runKeyOf(kind, ns, name));
    // Pipeline: wake the runs that consume this one.
    if (kind === "TokenizerTraining" || kind === "ARTraining") {
      const consumers: RunKind[] = kind === "TokenizerTraining" ? ["ARTraining", "SamplingJob"] : ["SamplingJob"];
      for (const ck of consumers) {
        for (const inf of this.runInformers[ck]) {
          for (const c of inf.list()) {
            const spec = c.spec as
              | { tokenizerRef?: { name: string; namespace?: string }; modelRef?: { name: string; namespace?: string } }
              | undefined;
            const ref = kind === "TokenizerTraining" ? spec?.tokenizerRef : spec?.modelRef;
            const cns = c.metadata?.namespace;
            if (ref && ref.name === name && (ref.namespace ?? cns) === ns && cns && c.metadata?.name) {
              this.queue.add(runKeyOf(ck, cns, c.metadata.name));
            }
          }
        }
      }
    }
  }

  private onChild(obj: RawObj): void {
    const ns = obj.metadata?.namespace;
    const owner = (obj.metadata?.ownerReferences ?? []).find(
      (r) => r.controller && r.apiVersion?.startsWith(`${GROUP}/`),
    );
    if (!ns || !owner || !isRunKind(owner.kind)) return;
    // A child changed: the run's running work moved on (pod phase, exit code), so its status is due first.
    this.queue.add(runKeyOf(owner.kind, ns, owner.name), "high");
  }

  private phaseCounts(): Array<{ kind: string; phase: string; count: number }> {
    const out: Array<{ kind: string; phase: string; count: number }> = [];
    for (const { kind } of CRDS) {
      const counts = new Map<string, number>();
      for (const inf of this.runInformers[kind]) {
        for (const o of inf.list()) {
          const p = o.status?.phase ?? "New";
          counts.set(p, (counts.get(p) ?? 0) + 1);
        }
      }
      for (const [phase, count] of counts) out.push({ kind, phase, count });
    }
    return out;
  }

  /** Start: campaign for leadership (or lead at once), then run caches + workers. */
  async start(): Promise<void> {
    if (!this.o.leaderElection) {
      await this.startLeading();
      return;
    }
    this.elector = new LeaderElector({
      api: this.client.leases,
      namespace: this.o.leaseNamespace,
      name: this.o.leaseName ?? "mergevq-operator",
      identity: this.o.identity,
      logger: this.log,
      leaseDurationMs: this.o.leaseDurationMs,
      renewDeadlineMs: this.o.renewDeadlineMs,
      retryPeriodMs: this.o.retryPeriodMs,
      onStartedLeading: () => {
        this.startLeading().catch((err) => {
          this.log.error({ err: String(err) }, "starting controllers failed");
          this.o.onLostLeadership?.();
        });
      },
      onStoppedLeading: () => {
        this.leading = false;
        this.metrics.isLeader.set(0);
        void this.queue.shutdown();
        this.o.onLostLeadership?.();
      },
    });
    this.elector.start();
  }

  private async startLeading(): Promise<void> {
    if (this.started || this.stopping) return;
    this.started = true;
    this.leading = true;
    this.metrics.isLeader.set(1);
    // Runs first, so pipeline lookups see referenced runs; then children.
    await Promise.all([...this.informers, ...this.podInformers, ...this.svcInformers].map((i) => i.start()));
    this.synced = true;
    this.log.info(
      { namespaces: this.o.namespaces.length ? this.o.namespaces : "all" },
      "caches synced; starting workers",
    );
    this.queue.start((key) => this.reconciler.reconcile(key));
  }

  /** Graceful shutdown: stop taking work, finish in-flight reconciles, stop watches, release the Lease. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.queue.shutdown();
    await Promise.all([...this.informers, ...this.podInformers, ...this.svcInformers].map((i) => i.stop()));
    await this.elector?.stop();
    this.client.close();
    this.leading = false;
    this.metrics.isLeader.set(0);
  }
}

/** Several per-namespace informers seen as one cache (get/list/byIndex). */
function merged<T extends { metadata?: { namespace?: string } }>(infs: Informer<T>[]) {
  if (infs.length === 1) return infs[0];
  return {
    get: (key: string) => {
      for (const i of infs) {
        const v = i.get(key);
        if (v) return v;
      }
      return undefined;
    },
    list: (ns?: string) => infs.flatMap((i) => i.list(ns)),
    byIndex: (name: string, value: string) => infs.flatMap((i) => i.byIndex(name, value)),
  };
}
