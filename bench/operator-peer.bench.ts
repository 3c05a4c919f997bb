// Our operator beside a Go peer on the same control plane (needs-cluster: hack/bench.sh runs it through
// hack/with-cluster.sh). The peer is the Kubeflow training-operator v1.8.1 PyTorchJob controller, built from the Go
// module proxy by hack/peer/build.sh. The two run one after the other, each in a fresh namespace, with the
// same load: one 16-rank run, then one-node runs up to each N of BENCH_PEER_RUNS (default 500,5000; BENCH_QUICK=1:
// 100), created 20 at a time. Pods select a node label no node has, so they stay Pending on both sides.
// Each side gets as many workers (our CONCURRENCY, the peer's --controller-threads) as BENCH_CONCURRENCY (8).
//
// Figures, per side (JSON lines, `side` = mergevq | kubeflow-training-operator; ours carry ratio_vs_peer = ours /
// peer, so below 1 is better for every figure):
//   rss_idle                  MiB, started, no runs
//   create_to_pods_16_ranks   ms from creating the 16-rank run to its 16th pod seen by a watch
//   rss_<N>_runs, rss_per_run MiB with N one-node runs (+ the 16-rank one) and their pods; KiB per run over idle
//   create_to_pods_<N>_runs   s from the first create of the batch to the last run's pod
//   run_to_pod_p50/p99_<N>    ms per run, create request sent → its pod seen by the watch
//   reconcile_p50/p99_<N>     ms, from each operator's own metrics (ours: summary quantiles; the peer's:
//                             histogram_quantile of controller_runtime_reconcile_time_seconds)
// Ours runs as the image runs it (dist/operator/src/main.js with the image's node flags, built here), unless
// BENCH_OPERATOR_ENTRY=source.
import { spawnSync } from "node:child_process";
import path from "node:path";
import * as k8s from "@kubernetes/client-node";
import { eventually, loadKubeConfig, makeNamespace } from "../test/cluster/testenv.ts";
import { mergevqSide, type OperatorSide, prepareEntry, rssMiB, trainingOperatorSide } from "./operatorHarness.ts";

const quick = process.env.BENCH_QUICK === "1";
const Ns = (process.env.BENCH_PEER_RUNS ?? (quick ? "100" : "500,5000")).split(",").map(Number);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const kc = loadKubeConfig();
const core = kc.makeApiClient(k8s.CoreV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
const log = (m: string) => process.stderr.write(`[operator-peer bench] ${m}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Figure {
  metric: string;
  value: number;
  unit: string;
  config: string;
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : (s[Math.min(s.length - 1, Math.floor(q * s.length))] as number);
};

/** Watches the namespace's pods and resolves, per run, when all of its pods have been seen. */
class PodWatch {
  private readonly expected = new Map<string, { nodes: number; t0: number; seen: number; resolve?: () => void }>();
  readonly latencyMs = new Map<string, number>();
  private abort: AbortController | undefined;

  constructor(private readonly side: OperatorSide) {}

  async start(ns: string): Promise<void> {
    this.abort = await new k8s.Watch(kc).watch(
      `/api/v1/namespaces/${ns}/pods`,
      {},
      (type: string, obj: k8s.V1Pod) => {
        if (type !== "ADDED") return;
        const run = this.side.runOfPod(obj);
        const e = run ? this.expected.get(run) : undefined;
        if (!run || !e) return;
        e.seen++;
        if (e.seen === e.nodes) {
          this.latencyMs.set(run, performance.now() - e.t0);
          e.resolve?.();
        }
      },
      (err) => {
        if (err && !this.abort?.signal.aborted) log(`pod watch ended: ${String(err)}`);
      },
    );
  }

  /** Registers a run just before its create request; the promise resolves when all its pods exist. */
  expect(run: string, nodes: number): Promise<void> {
    return new Promise((resolve) => this.expected.set(run, { nodes, t0: performance.now(), seen: 0, resolve }));
  }

  stop(): void {
    this.abort?.abort();
  }
}

async function measure(side: OperatorSide): Promise<Figure[]> {
  const figures: Figure[] = [];
  const add = (metric: string, value: number, unit: string, config: string) =>
    figures.push({ metric, value, unit, config });
  const ns = await makeNamespace(kc, side.name === "mergevq" ? "peer-bench-ours" : "peer-bench-peer");
  const watch = new PodWatch(side);
  await watch.start(ns.name);
  const op = await side.start(kc, ns.name);
  try {
    await sleep(1000);
    const idle = rssMiB(op.pid);
    add("rss_idle", idle, "MiB", "no runs");

    const r16 = watch.expect("r16", 16);
    await side.createRun(custom, ns.name, "r16", 16);
    await r16;
    add("create_to_pods_16_ranks", watch.latencyMs.get("r16") ?? Number.NaN, "ms", "one 16-rank run");
    log(`${side.name}: 16 ranks in ${watch.latencyMs.get("r16")?.toFixed(0)} ms`);

    let created = 0;
    for (const N of Ns) {
      const names = Array.from({ length: N - created }, (_, i) => `b${created + i}`);
      const t0 = performance.now();
      const done: Promise<void>[] = [];
      for (let i = 0; i < names.length; i += 20) {
        await Promise.all(
          names.slice(i, i + 20).map((n) => {
            done.push(watch.expect(n, 1));
            return side.createRun(custom, ns.name, n, 1);
          }),
        );
      }
      log(
        `${side.name}: created ${names.length} runs (${N} in all) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      await Promise.race([
        Promise.all(done),
        sleep(1_800_000).then(() => {
          throw new Error(`${side.name}: not all ${N} runs got their pod within 30 min`);
        }),
      ]);
      const total = (performance.now() - t0) / 1000;
      created = N;
      const lat = names.map((n) => watch.latencyMs.get(n) ?? Number.NaN);
      add(`create_to_pods_${N}_runs`, total, "s", `${names.length} one-node runs created 20 at a time (${N} in all)`);
      add(`run_to_pod_p50_${N}`, quantile(lat, 0.5), "ms", `per run, the last ${names.length} runs`);
      add(`run_to_pod_p99_${N}`, quantile(lat, 0.99), "ms", `per run, the last ${names.length} runs`);
      await sleep(3000);
      const rss = rssMiB(op.pid);
      add(`rss_${N}_runs`, rss, "MiB", `${N} one-node runs + one 16-rank run, pods in cache`);
      add(`rss_per_run_${N}`, ((rss - idle) * 1024) / N, "KiB", `${N} runs over idle`);
      const r = await op.reconcile();
      add(`reconcile_p50_${N}`, r.p50 * 1000, "ms", `${N} runs, ${CONCURRENCY} workers, ${r.method}`);
      add(`reconcile_p99_${N}`, r.p99 * 1000, "ms", `${N} runs, ${CONCURRENCY} workers, ${r.method}`);
      add(`reconcile_count_${N}`, r.count, "count", `${N} runs`);
      log(
        `${side.name}: ${N} runs in ${total.toFixed(1)} s; RSS ${rss.toFixed(1)} MiB (idle ${idle.toFixed(1)}); reconcile p50 ${(r.p50 * 1000).toFixed(1)} ms p99 ${(r.p99 * 1000).toFixed(1)} ms over ${r.count}`,
      );
    }
  } finally {
    watch.stop();
    await op.stop();
    await ns.cleanup();
    // The next side must not share the apiserver with this namespace's deletion.
    await eventually(
      async () => {
        try {
          await core.readNamespace({ name: ns.name });
          return undefined;
        } catch {
          return true;
        }
      },
      { timeoutMs: 900_000, intervalMs: 2000, message: `namespace ${ns.name} deleted` },
    );
  }
  return figures;
}

let ourEntry = "";

function emit(side: string, f: Figure, extra: Record<string, number> = {}): void {
  const cfg = `${f.config}; ${side === "mergevq" ? `${ourEntry}, node ${process.version}` : "training-operator v1.8.1 (Go), PyTorchJob"}`;
  const value = Math.round(f.value * 1000) / 1000;
  process.stdout.write(
    `${JSON.stringify({ bench: "operator-peer", side, metric: f.metric, value, unit: f.unit, backend: "n/a", config: cfg, ...extra })}\n`,
  );
}

async function main(): Promise<void> {
  const built = prepareEntry();
  ourEntry = built.describe;
  const build = spawnSync("hack/peer/build.sh", [], { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
  if (build.status !== 0) throw new Error("hack/peer/build.sh failed");
  const peerDir = build.stdout.trim().split("\n").at(-1) ?? "";
  const ours = await measure(mergevqSide({ entry: built.entry, nodeArgs: built.nodeArgs, concurrency: CONCURRENCY }));
  const peerSide = trainingOperatorSide({
    binary: path.join(peerDir, "training-operator"),
    crd: path.join(peerDir, "kubeflow.org_pytorchjobs.yaml"),
    concurrency: CONCURRENCY,
  });
  const peer = await measure(peerSide);
  const peerBy = new Map(peer.map((f) => [f.metric, f]));
  for (const f of ours) {
    const p = peerBy.get(f.metric);
    emit("mergevq", f, p && p.value !== 0 ? { ratio_vs_peer: Math.round((f.value / p.value) * 1000) / 1000 } : {});
  }
  for (const f of peer) emit(peerSide.name, f);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`operator-peer bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  },
);
