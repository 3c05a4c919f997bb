// Operator benchmark (needs-cluster: hack/bench.sh runs it through hack/with-cluster.sh).
// Metrics (JSON lines on stdout):
//   create_to_pods_16_ranks  ms from creating a 16-node TokenizerTraining to all 16 pods existing
//   rss_idle                 operator RSS (MiB) with no runs
//   rss_<N>_runs             operator RSS (MiB) with N runs reconciled (each with its pod)
//   rss_per_run              (rss_N - rss_idle) / N in KiB
//   reconcile_p50 / p99      reconcile latency (ms) from the operator's own quantile summary
//   reconcile_count          reconciles measured
//   api_requests_per_run     apiserver requests the operator made per run (lists and watches included), from its
//                            mergevq_operator_api_requests_total; the breakdown by verb and resource goes to stderr
// Pods target a node label that no node has, so they stay Pending: this measures the operator, not the
// node agent. The operator runs as the image runs it: dist/operator/src/main.js with the image's node flags
// (built here with tsc -p tsconfig.build.json; RSS read from /proc/<pid>/status). BENCH_OPERATOR_ENTRY=source
// measures operator/src/main.ts through tsx instead (the test suites' way).
// BENCH_QUICK=1: 100 runs instead of 500.
import * as k8s from "@kubernetes/client-node";
import { eventually, loadKubeConfig, makeNamespace } from "../test/cluster/testenv.ts";
import { mergevqSide, prepareEntry, rssMiB } from "./operatorHarness.ts";

const quick = process.env.BENCH_QUICK === "1";
const N = Number(process.env.BENCH_RUNS ?? (quick ? 100 : 500));
const kc = loadKubeConfig();
const core = kc.makeApiClient(k8s.CoreV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);

const built = prepareEntry();

function emit(metric: string, value: number, unit: string, config: string): void {
  const cfg = `${config}, ${built.describe}, node ${process.version}`;
  process.stdout.write(
    `${JSON.stringify({ bench: "operator", metric, value: Math.round(value * 1000) / 1000, unit, backend: "n/a", config: cfg })}\n`,
  );
}
const log = (m: string) => process.stderr.write(`[operator bench] ${m}\n`);

async function podCount(ns: string, run: string): Promise<number> {
  return (await core.listNamespacedPod({ namespace: ns, labelSelector: `mergevq.ai/run=${run}` })).items.length;
}

async function main(): Promise<void> {
  const ns = await makeNamespace(kc, "op-bench");
  const side = mergevqSide({ entry: built.entry, nodeArgs: built.nodeArgs, concurrency: 8 });
  const op = await side.start(kc, ns.name);
  try {
    await new Promise((r) => setTimeout(r, 1000));
    const idle = rssMiB(op.pid);
    emit("rss_idle", idle, "MiB", "no runs");

    // 1. CR create → all pods created, 16 ranks.
    const t0 = performance.now();
    await side.createRun(custom, ns.name, "r16", 16);
    await eventually(async () => (await podCount(ns.name, "r16")) === 16, {
      timeoutMs: 60_000,
      intervalMs: 20,
      message: "16 pods",
    });
    const ms = performance.now() - t0;
    emit("create_to_pods_16_ranks", ms, "ms", "16 nodes, cpu, pods pending");
    log(`16 ranks: all pods after ${ms.toFixed(0)} ms`);

    // 2. N runs: throughput and RSS.
    const requestsBefore = (await op.apiRequests?.()) ?? new Map<string, number>();
    const t1 = performance.now();
    const names = Array.from({ length: N }, (_, i) => `b${i}`);
    for (let i = 0; i < names.length; i += 20) {
      await Promise.all(names.slice(i, i + 20).map((n) => side.createRun(custom, ns.name, n, 1)));
    }
    log(`created ${N} runs in ${((performance.now() - t1) / 1000).toFixed(1)} s`);
    await eventually(
      async () => {
        const pods = await core.listNamespacedPod({
          namespace: ns.name,
          labelSelector: "mergevq.ai/kind=TokenizerTraining",
        });
        return pods.items.length >= N + 16;
      },
      { timeoutMs: 600_000, intervalMs: 1000, message: `${N} runs reconciled` },
    );
    const allMs = performance.now() - t1;
    emit(`create_to_pods_${N}_runs`, allMs / 1000, "s", `${N} one-node runs`);
    await new Promise((r) => setTimeout(r, 3000));
    const rss = rssMiB(op.pid);
    emit(`rss_${N}_runs`, rss, "MiB", `${N} runs + pods in cache`);
    emit("rss_per_run", ((rss - idle) * 1024) / N, "KiB", `${N} runs`);
    const { p50, p99, count } = await op.reconcile();
    emit("reconcile_p50", p50 * 1000, "ms", `${N} runs, concurrency 8`);
    emit("reconcile_p99", p99 * 1000, "ms", `${N} runs, concurrency 8`);
    emit("reconcile_count", count, "count", `${N} runs`);
    if (op.apiRequests) {
      const after = await op.apiRequests();
      const delta = [...after].map(([k, v]) => [k, v - (requestsBefore.get(k) ?? 0)] as const).filter(([, v]) => v > 0);
      const total = delta.reduce((a, [, v]) => a + v, 0);
      emit("api_requests_per_run", total / N, "count", `${N} one-node runs`);
      log(`apiserver requests for ${N} runs: ${delta.map(([k, v]) => `${k} ${v}`).join(", ")}`);
      for (const [verb, res] of [
        ["PATCH", "tokenizertrainings/status"],
        ["POST", "pods"],
        ["POST", "services"],
        ["POST", "events"],
      ]) {
        const l = await op.apiLatency?.(verb, res);
        if (l) log(`${verb} ${res}: p50 ${(l.p50 * 1000).toFixed(1)} ms, p99 ${(l.p99 * 1000).toFixed(1)} ms`);
      }
    }
    log(
      `RSS idle ${idle.toFixed(1)} MiB, with ${N} runs ${rss.toFixed(1)} MiB; reconcile p50 ${(p50 * 1000).toFixed(1)} ms p99 ${(p99 * 1000).toFixed(1)} ms over ${count}`,
    );
  } finally {
    await op.stop();
    await ns.cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`operator bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
