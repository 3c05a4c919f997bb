// What the operator benches share: the process under test (ours or a peer), its RSS and metrics, and runs whose
// pods stay Pending (they select a node label no node has), so the figures measure the operator, not the node
// agent. Used by bench/operator.bench.ts (ours alone) and bench/operator-peer.bench.ts (ours beside the Kubeflow
// training-operator on the same control plane).
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import * as k8s from "@kubernetes/client-node";
import { makeTokenizerTraining, startOperator } from "../operator/src/testing/fixtures.ts";
import { eventually } from "../test/cluster/testenv.ts";

export const NO_SUCH_NODE = { "mergevq.ai/bench": "no-such-node" };

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

export async function scrape(port: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

export function metricValue(text: string, re: RegExp): number {
  const m = re.exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

/**
 * Quantile q of a Prometheus histogram (cumulative `le` buckets), interpolated linearly inside the bucket as
 * PromQL's histogram_quantile does.
 */
export function histogramQuantile(buckets: readonly { le: number; count: number }[], q: number): number {
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const total = sorted.at(-1)?.count ?? 0;
  if (total === 0) return Number.NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of sorted) {
    if (b.count >= rank) {
      if (!Number.isFinite(b.le)) return prevLe; // in the +Inf bucket: the highest finite bound
      const inBucket = b.count - prevCount;
      return inBucket === 0 ? b.le : prevLe + ((b.le - prevLe) * (rank - prevCount)) / inBucket;
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

/**
 * Buckets of one histogram series from a Prometheus text page: the `name_bucket` lines whose labels include every
 * `k="v"` of `labels` (in any order: prom-client writes `le` first, Go's client last).
 */
export function histogramBuckets(text: string, name: string, labels: string): { le: number; count: number }[] {
  const want = [...labels.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]] as const);
  const out: { le: number; count: number }[] = [];
  const re = new RegExp(`^${name}_bucket\\{([^}]*)\\} ([0-9.e+-]+)$`, "gm");
  for (const m of text.matchAll(re)) {
    const got = new Map([...m[1].matchAll(/(\w+)="([^"]*)"/g)].map((l) => [l[1], l[2]] as const));
    if (!want.every(([k, v]) => got.get(k) === v)) continue;
    const le = got.get("le");
    if (le === undefined) continue;
    out.push({ le: le === "+Inf" ? Number.POSITIVE_INFINITY : Number(le), count: Number(m[2]) });
  }
  return out;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}

/** A running operator under test. */
export interface RunningOperator {
  pid: number;
  /** Reconcile latency quantiles (seconds) and count so far, from the operator's own metrics. */
  reconcile(): Promise<{ p50: number; p99: number; count: number; method: string }>;
  /** Ours only: apiserver requests so far by "VERB resource code" (mergevq_operator_api_requests_total). */
  apiRequests?(): Promise<Map<string, number>>;
  /** Ours only: request latency p50/p99 (s) of one verb and resource, from mergevq_operator_api_request_duration_seconds. */
  apiLatency?(verb: string, resource: string): Promise<{ p50: number; p99: number }>;
  stop(): Promise<void>;
}

/** One side of the comparison: how to start it and how its runs and their pods look. */
export interface OperatorSide {
  /** "mergevq" or the peer's name and version. */
  name: string;
  /** What a run is on this side (for the config field). */
  runKind: string;
  start(kc: k8s.KubeConfig, ns: string): Promise<RunningOperator>;
  /** Creates one run of `nodes` ranks whose pods stay Pending. */
  createRun(custom: k8s.CustomObjectsApi, ns: string, name: string, nodes: number): Promise<void>;
  /** The run a pod belongs to (from its labels), or undefined for pods of other owners. */
  runOfPod(pod: k8s.V1Pod): string | undefined;
}

// ───────────────────────────── ours ─────────────────────────────

export function unschedulableTokenizerTraining(name: string, ns: string, nodes: number) {
  return makeTokenizerTraining(name)
    .namespace(ns)
    .nodes(nodes)
    .set("spec.s3", undefined)
    .set("spec.dataset.uri", "/data")
    .checkpointUri(`file:///tmp/bench/${name}`)
    .accelerator({ vendor: "cpu", nodeSelector: NO_SUCH_NODE })
    .command(["sleep", "3600"])
    .raw_();
}

function metricsPortFromLogs(logs: string): number {
  const line = logs.split("\n").find((l) => l.includes('"operator starting"'));
  if (!line) throw new Error("operator not started yet");
  return (JSON.parse(line) as { metricsPort: number }).metricsPort;
}

const SUMMARY = "mergevq_operator_reconcile_duration_quantiles_seconds";

/** Our operator as the image runs it (compiled dist/ entry) or through tsx (`entry: "source"`). */
export type OperatorEntry = "dist" | "source";

/**
 * The node flags of the operator image's entrypoint, read from images/operator.Dockerfile (the flags between
 * node and the script in ENTRYPOINT), so the bench measures exactly what the image runs.
 */
export function imageNodeArgs(dockerfile = "images/operator.Dockerfile"): string[] {
  const m = /^ENTRYPOINT (\[.*\])\s*$/m.exec(readFileSync(dockerfile, "utf8"));
  if (!m) throw new Error(`${dockerfile}: no ENTRYPOINT [...] line`);
  const argv = JSON.parse(m[1] as string) as string[];
  const node = argv.findIndex((a) => a.endsWith("/node"));
  if (node < 0) throw new Error(`${dockerfile}: ENTRYPOINT does not run node`);
  return argv.slice(node + 1, -1);
}

/**
 * Builds the entry the bench measures: BENCH_OPERATOR_ENTRY = dist (default: the tsc output the image runs,
 * with the image's node flags, or BENCH_OPERATOR_NODE_FLAGS) or source (operator/src/main.ts through tsx, the
 * test suites' way).
 */
export function prepareEntry(): { entry: OperatorEntry; nodeArgs: string[]; describe: string } {
  if (process.env.BENCH_OPERATOR_ENTRY === "source") {
    return { entry: "source", nodeArgs: [], describe: "operator/src/main.ts via tsx" };
  }
  const tsc = spawnSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
  if (tsc.status !== 0) throw new Error("tsc -p tsconfig.build.json failed");
  // BENCH_OPERATOR_NODE_FLAGS: measure other node flags than the image's (as the chart's nodeFlags would set them).
  const override = process.env.BENCH_OPERATOR_NODE_FLAGS?.trim();
  const nodeArgs = override ? override.split(/\s+/) : imageNodeArgs();
  return { entry: "dist", nodeArgs, describe: `dist/operator/src/main.js (node ${nodeArgs.join(" ")})` };
}

export function mergevqSide(opts: { entry: OperatorEntry; nodeArgs?: string[]; concurrency: number }): OperatorSide {
  return {
    name: "mergevq",
    runKind: "TokenizerTraining",
    async start(_kc, ns) {
      const op = startOperator(
        {
          KUBECONFIG: process.env.KUBECONFIG ?? "",
          WATCH_NAMESPACES: ns,
          LEADER_ELECTION: "false",
          LOG_LEVEL: "info",
          CONCURRENCY: String(opts.concurrency),
          // e.g. --cpu-prof --cpu-prof-dir=/tmp/prof, or --heapsnapshot-signal=SIGUSR2
          ...(process.env.BENCH_OPERATOR_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_OPERATOR_NODE_OPTIONS } : {}),
        },
        undefined,
        { entry: opts.entry, nodeArgs: opts.nodeArgs },
      );
      const port = await eventually(
        async () => {
          try {
            const p = metricsPortFromLogs(op.logs());
            return (await scrape(p)).includes("mergevq_operator_leader 1") ? p : undefined;
          } catch {
            return undefined;
          }
        },
        { timeoutMs: 60_000, message: "operator metrics" },
      );
      return {
        pid: op.child.pid ?? -1,
        async reconcile() {
          const text = await scrape(port);
          return {
            p50: metricValue(text, new RegExp(`${SUMMARY}\\{quantile="0.5"\\} ([0-9.e+-]+)`)),
            p99: metricValue(text, new RegExp(`${SUMMARY}\\{quantile="0.99"\\} ([0-9.e+-]+)`)),
            count: metricValue(text, new RegExp(`${SUMMARY}_count ([0-9.e+-]+)`)),
            method: "summary quantiles",
          };
        },
        async apiLatency(verb, resource) {
          const b = histogramBuckets(
            await scrape(port),
            "mergevq_operator_api_request_duration_seconds",
            `verb="${verb}",resource="${resource}"`,
          );
          return { p50: histogramQuantile(b, 0.5), p99: histogramQuantile(b, 0.99) };
        },
        async apiRequests() {
          const out = new Map<string, number>();
          const re =
            /^mergevq_operator_api_requests_total\{verb="([^"]+)",resource="([^"]*)",code="([^"]*)"\} ([0-9.e+-]+)$/gm;
          for (const m of (await scrape(port)).matchAll(re)) {
            const k = `${m[1]} ${m[2]} ${m[3]}`;
            out.set(k, (out.get(k) ?? 0) + Number(m[4]));
          }
          return out;
        },
        async stop() {
          await op.stop();
        },
      };
    },
    async createRun(custom, ns, name, nodes) {
      await custom.createNamespacedCustomObject({
        group: "mergevq.ai",
        version: "v1alpha1",
        namespace: ns,
        plural: "tokenizertrainings",
        body: unschedulableTokenizerTraining(name, ns, nodes),
      });
    },
    runOfPod: (pod) => pod.metadata?.labels?.["mergevq.ai/run"],
  };
}

// ───────────────────────────── the Kubeflow training-operator ─────────────────────────────

/** Creates a CRD from its YAML file (kept when it exists) and waits until it is Established. */
async function installCrd(kc: k8s.KubeConfig, file: string): Promise<void> {
  const ext = kc.makeApiClient(k8s.ApiextensionsV1Api);
  const crd = k8s.loadYaml<k8s.V1CustomResourceDefinition>(readFileSync(file, "utf8"));
  const name = crd.metadata?.name ?? "";
  await ext.createCustomResourceDefinition({ body: crd }).catch((e: unknown) => {
    if ((e as { code?: number }).code !== 409) throw e;
  });
  await eventually(
    async () => {
      const c = await ext.readCustomResourceDefinition({ name });
      return c.status?.conditions?.some((x) => x.type === "Established" && x.status === "True") || undefined;
    },
    { timeoutMs: 60_000, message: `CRD ${name} established` },
  );
}

/** Where the cert-controller in the training-operator expects its serving certs (hard-coded upstream). */
const PEER_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs";
const PEER_CERT_SECRET = "training-operator-webhook-cert";

/**
 * The training-operator v1.8 PyTorchJob controller (hack/peer/build.sh), run as a process like ours, watching
 * only the bench namespace, with as many workers as our concurrency. Its cert rotator writes the webhook
 * certificates into a Secret and waits for the kubelet to mount them; with no kubelet here the bench copies
 * them from the Secret into the folder, as the Secret volume would. No ValidatingWebhookConfiguration is
 * installed, so admission never calls it (ours has none either: CEL in the CRD).
 */
export function trainingOperatorSide(opts: { binary: string; crd: string; concurrency: number }): OperatorSide {
  return {
    name: "kubeflow-training-operator",
    runKind: "PyTorchJob",
    async start(kc, ns) {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      await installCrd(kc, opts.crd);
      await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: PEER_CERT_SECRET } } });
      const [metrics, probe, webhook] = [await freePort(), await freePort(), await freePort()];
      const child = spawn(
        opts.binary,
        [
          `--kubeconfig=${process.env.KUBECONFIG ?? ""}`,
          "--enable-scheme=pytorchjob",
          `--namespace=${ns}`,
          `--controller-threads=${opts.concurrency}`,
          `--metrics-bind-address=127.0.0.1:${metrics}`,
          `--health-probe-bind-address=127.0.0.1:${probe}`,
          `--webhook-server-port=${webhook}`,
        ],
        { env: { ...process.env, MY_POD_NAMESPACE: ns }, stdio: ["ignore", "pipe", "pipe"] },
      );
      let logs = "";
      const keep = (b: Buffer) => {
        logs = (logs + b.toString()).slice(-1_000_000);
      };
      child.stdout?.on("data", keep);
      child.stderr?.on("data", keep);
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      // The Secret volume, by hand: copy the generated certs into the folder the rotator waits for.
      const secret = await eventually(
        async () => {
          const s = await core.readNamespacedSecret({ name: PEER_CERT_SECRET, namespace: ns });
          return s.data?.["tls.crt"] && s.data["tls.key"] ? s.data : undefined;
        },
        { timeoutMs: 60_000, message: "training-operator webhook certs in the Secret" },
      );
      mkdirSync(PEER_CERT_DIR, { recursive: true });
      for (const [k, v] of Object.entries(secret)) writeFileSync(`${PEER_CERT_DIR}/${k}`, Buffer.from(v, "base64"));
      await eventually(() => logs.includes("Starting workers") || undefined, {
        timeoutMs: 120_000,
        message: `training-operator workers started (log tail: ${logs.slice(-500)})`,
      });
      return {
        pid: child.pid ?? -1,
        async reconcile() {
          const text = await scrape(metrics);
          const buckets = histogramBuckets(
            text,
            "controller_runtime_reconcile_time_seconds",
            'controller="pytorchjob-controller"',
          );
          return {
            p50: histogramQuantile(buckets, 0.5),
            p99: histogramQuantile(buckets, 0.99),
            count: buckets.at(-1)?.count ?? Number.NaN,
            method: "histogram_quantile over controller_runtime_reconcile_time_seconds",
          };
        },
        async stop() {
          child.kill("SIGTERM");
          const t = setTimeout(() => child.kill("SIGKILL"), 20_000);
          await exited;
          clearTimeout(t);
        },
      };
    },
    async createRun(custom, ns, name, nodes) {
      const template = (role: string) => ({
        replicas: role === "Master" ? 1 : nodes - 1,
        restartPolicy: "OnFailure",
        template: {
          spec: {
            nodeSelector: NO_SUCH_NODE,
            containers: [{ name: "pytorch", image: "mergevq-bench:none", command: ["sleep", "3600"] }],
          },
        },
      });
      const specs: Record<string, unknown> = { Master: template("Master") };
      if (nodes > 1) specs.Worker = template("Worker");
      await custom.createNamespacedCustomObject({
        group: "kubeflow.org",
        version: "v1",
        namespace: ns,
        plural: "pytorchjobs",
        body: {
          apiVersion: "kubeflow.org/v1",
          kind: "PyTorchJob",
          metadata: { name, namespace: ns },
          spec: { pytorchReplicaSpecs: specs },
        },
      });
    },
    runOfPod: (pod) => pod.metadata?.labels?.["training.kubeflow.org/job-name"],
  };
}
