// Operator benchmark (needs-cluster: hack/bench.sh runs it through hack/with-cluster.sh).
// Metrics (JSON lines on stdout):
//   create_to_pods_16_ranks  ms from creating a 16-node TokenizerTraining to all 16 pods existing
//   rss_idle                 operator RSS (MiB) with no runs
//   rss_<N>_runs             operator RSS (MiB) with N runs reconciled (each with its pod)
//   rss_per_run              (rss_N - rss_idle) / N in KiB
//   reconcile_p50 / p99      reconcile latency (ms) from the operator's own quantile summary
//   reconcile_count          reconciles measured
// Pods target a node label that no node has, so they stay Pending: this measures the operator, not the
// node agent. The operator runs as the image runs it: the compiled entrypoint dist/operator/src/main.js
// (built here with tsc -p tsconfig.build.json; RSS read from /proc/<pid>/status). BENCH_OPERATOR_ENTRY=source
// measures operator/src/main.ts through tsx instead (the test suites' way: ~30 MiB more, the transpiler).
// BENCH_QUICK=1: 100 runs instead of 500.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import * as k8s from "@kubernetes/client-node";
import { makeTokenizerTraining, startOperator } from "../operator/src/testing/fixtures.ts";
import { eventually, loadKubeConfig, makeNamespace } from "../test/cluster/testenv.ts";

const quick = process.env.BENCH_QUICK === "1";
const N = Number(process.env.BENCH_RUNS ?? (quick ? 100 : 500));
const kc = loadKubeConfig();
const core = kc.makeApiClient(k8s.CoreV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);

const entry = process.env.BENCH_OPERATOR_ENTRY === "source" ? "source" : "dist";
if (entry === "dist") {
  const tsc = spawnSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
  if (tsc.status !== 0) throw new Error("tsc -p tsconfig.build.json failed");
}

function emit(metric: string, value: number, unit: string, config: string): void {
  const cfg = `${config}, ${entry === "dist" ? "dist/operator/src/main.js" : "operator/src/main.ts via tsx"}, node ${process.version}`;
  process.stdout.write(
    `${JSON.stringify({ bench: "operator", metric, value: Math.round(value * 1000) / 1000, unit, backend: "n/a", config: cfg })}\n`,
  );
}
const log = (m: string) => process.stderr.write(`[operator bench] ${m}\n`);

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

function unschedulable(name: string, ns: string, nodes: number) {
  return makeTokenizerTraining(name)
    .namespace(ns)
    .nodes(nodes)
    .checkpointUri(`s3://mergevq/bench/${name}`)
    .set("spec.s3", undefined)
    .set("spec.dataset.uri", "/data")
    .checkpointUri(`file:///tmp/bench/${name}`)
    .accelerator({ vendor: "cpu", nodeSelector: { "mergevq.ai/bench": "no-such-node" } })
    .command(["sleep", "3600"])
    .raw_();
}

async function podCount(ns: string, run: string): Promise<number> {
  return (await core.listNamespacedPod({ namespace: ns, labelSelector: `mergevq.ai/run=${run}` })).items.length;
}

async function scrape(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

function metricValue(text: string, re: RegExp): number {
  const m = re.exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

async function main(): Promise<void> {
  const ns = await makeNamespace(kc, "op-bench");
  const op = startOperator(
    {
      KUBECONFIG: process.env.KUBECONFIG!,
      WATCH_NAMESPACES: ns.name,
      LEADER_ELECTION: "false",
      LOG_LEVEL: "info",
      CONCURRENCY: "8",
    },
    undefined,
    { entry },
  );
  try {
    const port = await eventually(
      async () => {
        try {
          const text = await scrape(await metricsPort(op));
          return text.includes("mergevq_operator_leader 1") ? await metricsPort(op) : undefined;
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 60_000, message: "operator metrics" },
    );
    await new Promise((r) => setTimeout(r, 1000));
    const idle = rssMiB(op.child.pid!);
    emit("rss_idle", idle, "MiB", "no runs");

    // 1. CR create → all pods created, 16 ranks.
    const t0 = performance.now();
    await custom.createNamespacedCustomObject({
      group: "mergevq.ai",
      version: "v1alpha1",
      namespace: ns.name,
      plural: "tokenizertrainings",
      body: unschedulable("r16", ns.name, 16),
    });
    await eventually(async () => (await podCount(ns.name, "r16")) === 16, {
      timeoutMs: 60_000,
      intervalMs: 20,
      message: "16 pods",
    });
    const ms = performance.now() - t0;
    emit("create_to_pods_16_ranks", ms, "ms", "16 nodes, cpu, pods pending");
    log(`16 ranks: all pods after ${ms.toFixed(0)} ms`);

    // 2. N runs: throughput and RSS.
    const t1 = performance.now();
    const names = Array.from({ length: N }, (_, i) => `b${i}`);
    for (let i = 0; i < names.length; i += 20) {
      await Promise.all(
        names.slice(i, i + 20).map((n) =>
          custom.createNamespacedCustomObject({
            group: "mergevq.ai",
            version: "v1alpha1",
            namespace: ns.name,
            plural: "tokenizertrainings",
            body: unschedulable(n, ns.name, 1),
          }),
        ),
      );
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
    const rss = rssMiB(op.child.pid!);
    emit(`rss_${N}_runs`, rss, "MiB", `${N} runs + pods in cache`);
    emit("rss_per_run", ((rss - idle) * 1024) / N, "KiB", `${N} runs`);
    const text = await scrape(port);
    const p50 = metricValue(
      text,
      /mergevq_operator_reconcile_duration_quantiles_seconds\{quantile="0.5"\} ([0-9.e+-]+)/,
    );
    const p99 = metricValue(
      text,
      /mergevq_operator_reconcile_duration_quantiles_seconds\{quantile="0.99"\} ([0-9.e+-]+)/,
    );
    const count = metricValue(text, /mergevq_operator_reconcile_duration_quantiles_seconds_count ([0-9.e+-]+)/);
    emit("reconcile_p50", p50 * 1000, "ms", `${N} runs, concurrency 8`);
    emit("reconcile_p99", p99 * 1000, "ms", `${N} runs, concurrency 8`);
    emit("reconcile_count", count, "count", `${N} runs`);
    log(
      `RSS idle ${idle.toFixed(1)} MiB, with ${N} runs ${rss.toFixed(1)} MiB; reconcile p50 ${(p50 * 1000).toFixed(1)} ms p99 ${(p99 * 1000).toFixed(1)} ms over ${count}`,
    );
  } finally {
    await op.stop();
    await ns.cleanup();
  }
}

async function metricsPort(op: ReturnType<typeof startOperator>): Promise<number> {
  const line = op
    .logs()
    .split("\n")
    .find((l) => l.includes('"operator starting"'));
  if (!line) throw new Error("operator not started yet");
  return (JSON.parse(line) as { metricsPort: number }).metricsPort;
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`operator bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
