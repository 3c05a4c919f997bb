// Prometheus metrics (prom-client) on their own registry: reconciles, errors, latency, queue depth,
// informer restarts, leadership and runs by phase (collected from the informer caches at scrape time).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry, Summary } from "prom-client";

export interface OperatorMetrics {
  registry: Registry;
  reconciles: Counter<"kind" | "result">;
  reconcileErrors: Counter<"kind">;
  reconcileSeconds: Histogram<"kind">;
  /** Client-side quantiles (p50/p90/p99 over a sliding 10-minute window) of the same latency. */
  reconcileQuantiles: Summary;
  queueDepth: Gauge;
  informerRestarts: Counter<"informer" | "cause">;
  isLeader: Gauge;
  runsByPhase: Gauge<"kind" | "phase">;
  /** API requests by verb, resource and HTTP code (0 = no response), like client-go's rest_client_requests_total. */
  apiRequests: Counter<"verb" | "resource" | "code">;
  apiRequestSeconds: Histogram<"verb" | "resource">;
}

export function createMetrics(
  opts: {
    defaultMetrics?: boolean;
    phaseCollector?: () => Array<{ kind: string; phase: string; count: number }>;
    queueDepth?: () => number;
  } = {},
): OperatorMetrics {
  const registry = new Registry();
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: "mergevq_operator_" });
  const reconciles = new Counter({
    name: "mergevq_operator_reconciles_total",
    help: "Reconciles by kind and result (success, requeue, error, terminal).",
    labelNames: ["kind", "result"] as const,
    registers: [registry],
  });
  const reconcileErrors = new Counter({
    name: "mergevq_operator_reconcile_errors_total",
    help: "Reconciles that returned an error.",
    labelNames: ["kind"] as const,
    registers: [registry],
  });
  const reconcileSeconds = new Histogram({
    name: "mergevq_operator_reconcile_duration_seconds",
    help: "Reconcile latency.",
    labelNames: ["kind"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const reconcileQuantiles = new Summary({
    name: "mergevq_operator_reconcile_duration_quantiles_seconds",
    help: "Reconcile latency quantiles over a sliding window.",
    percentiles: [0.5, 0.9, 0.99],
    maxAgeSeconds: 600,
    ageBuckets: 5,
    registers: [registry],
  });
  const queueDepth = new Gauge({
    name: "mergevq_operator_workqueue_depth",
    help: "Keys queued or in flight.",
    registers: [registry],
    collect() {
      if (opts.queueDepth) this.set(opts.queueDepth());
    },
  });
  const informerRestarts = new Counter({
    name: "mergevq_operator_informer_restarts_total",
    help: "List/watch restarts by informer and cause (error, gone, watchdog).",
    labelNames: ["informer", "cause"] as const,
    registers: [registry],
  });
  const isLeader = new Gauge({
    name: "mergevq_operator_leader",
    help: "1 when this replica leads.",
    registers: [registry],
  });
  const runsByPhase = new Gauge({
    name: "mergevq_operator_runs",
    help: "Runs by kind and phase.",
    labelNames: ["kind", "phase"] as const,
    registers: [registry],
    collect() {
      if (!opts.phaseCollector) return;
      this.reset();
      for (const r of opts.phaseCollector()) this.set({ kind: r.kind, phase: r.phase }, r.count);
    },
  });
  const apiRequests = new Counter({
    name: "mergevq_operator_api_requests_total",
    help: "Requests to the apiserver by verb, resource and HTTP code (0: no response).",
    labelNames: ["verb", "resource", "code"] as const,
    registers: [registry],
  });
  const apiRequestSeconds = new Histogram({
    name: "mergevq_operator_api_request_duration_seconds",
    help: "Apiserver request latency (until the whole response is read) by verb and resource.",
    labelNames: ["verb", "resource"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  return {
    registry,
    apiRequests,
    apiRequestSeconds,
    reconciles,
    reconcileErrors,
    reconcileQuantiles,
    reconcileSeconds,
    queueDepth,
    informerRestarts,
    isLeader,
    runsByPhase,
  };
}
