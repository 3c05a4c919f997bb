// One call that brings up the whole local test cluster: control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler), MinIO, and the node agent as a child process.
// Everything is torn down by `stop()`, on SIGINT/SIGTERM, on process exit, and — if this process is
// killed outright — by a watchdog that reaps every process carrying the cluster marker.
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { type ControlPlane, startControlPlane } from "./controlplane.ts";
import { Kube } from "./kube.ts";
import { type MinioServer, type S3Info, startMinio } from "./minio.ts";
import { DEFAULT_NODES, type ImageCommand, type NodeAgentProcessConfig } from "./node-agent.ts";
import {
  killMarked,
  type Managed,
  markedPids,
  removeDir,
  spawnManaged,
  startReaper,
  stopManaged,
  tailFile,
  waitFor,
} from "./proc.ts";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface ClusterOptions {
  /** Work dir (default: a fresh mkdtemp under os.tmpdir()). Removed on stop unless `keepDir`. */
  dir?: string;
  keepDir?: boolean;
  /** Toolchain bin dir (default: `hack/toolchain.sh --bin-dir`; binaries must already be built). */
  binDir?: string;
  nodes?: string[];
  capacity?: Record<string, string>;
  nodeCapacity?: Record<string, Record<string, string>>;
  imageCommands?: ImageCommand[];
  /** Buckets created in MinIO (default ["mergevq"]). */
  buckets?: string[];
  /** Namespace + name of the S3 credentials Secret to create (default mergevq-system/mergevq-s3). */
  s3Secret?: { namespace: string; name: string } | false;
  /** Apply every YAML in crds/ after the apiserver is ready: true = fail on error, "warn" = log it. */
  applyCrds?: boolean | "warn";
  minio?: boolean;
  nodeAgent?: boolean;
  /** Progress lines (stderr by default when MERGEVQ_CLUSTER_VERBOSE=1). */
  log?: (msg: string) => void;
}

export interface Cluster {
  id: string;
  dir: string;
  binDir: string;
  kubeconfigPath: string;
  server: string;
  s3: Omit<S3Info, "buckets">;
  buckets: string[];
  nodes: string[];
  /** Node agent HTTP control endpoint (POST /nodes/<n>/fail|recover). */
  nodeAgentUrl?: string;
  kubeletPort?: number;
  /** Milliseconds from startCluster() to ready. */
  startMs: number;
  controlPlane: ControlPlane;
  /** Simulate a node failure through the agent (pods killed and Failed/NodeLost, Node NotReady). */
  failNode(node: string): Promise<string[]>;
  recoverNode(node: string): Promise<void>;
  /** Env vars of the test contract (KUBECONFIG, MERGEVQ_S3_ENDPOINT, AWS_*). */
  env(): Record<string, string>;
  stop(): Promise<void>;
}

export function defaultBinDir(): string {
  if (process.env.MERGEVQ_TOOLCHAIN_BIN) return process.env.MERGEVQ_TOOLCHAIN_BIN;
  return execFileSync(path.join(REPO_ROOT, "hack/toolchain.sh"), ["--bin-dir"], { encoding: "utf8" }).trim();
}

const REQUIRED_BINS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "minio"];

const active = new Set<Cluster>();
let handlersInstalled = false;
function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  const onSignal = (sig: NodeJS.Signals) => {
    void Promise.allSettled([...active].map((c) => c.stop())).finally(() => {
      process.exit(sig === "SIGINT" ? 130 : 143);
    });
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  process.once("exit", () => {
    for (const c of active) {
      killMarked(c.id);
      removeDir(c.dir);
    }
  });
}

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const t0 = Date.now();
  const log =
    opts.log ??
    (process.env.MERGEVQ_CLUSTER_VERBOSE === "1"
      ? (m: string) => process.stderr.write(`[cluster +${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}\n`)
      : () => {});
  const binDir = opts.binDir ?? defaultBinDir();
  const missing = REQUIRED_BINS.filter((b) => !existsSync(path.join(binDir, b)));
  if (missing.length) {
    throw new Error(`toolchain missing in ${binDir}: ${missing.join(", ")} — run hack/toolchain.sh first`);
  }
  const id = randomBytes(8).toString("hex");
  const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), "mergevq-cluster-"));
  mkdirSync(dir, { recursive: true });
  const reaperPid = opts.keepDir
    ? startReaper(id, process.pid, path.join(dir, "run"))
    : startReaper(id, process.pid, dir);
  const nodes = opts.nodes ?? DEFAULT_NODES;
  let cp: ControlPlane | undefined;
  let minio: MinioServer | undefined;
  let agent: Managed | undefined;
  let stopped = false;
  const stopAll = async () => {
    if (stopped) return;
    stopped = true;
    if (agent) await stopManaged(agent, 8000);
    await Promise.all([minio?.stop(), cp?.stop()]);
    // Anything still carrying the marker (e.g. a pod's grandchild that escaped its group) dies now.
    killMarked(id);
    if (!opts.keepDir) removeDir(dir);
    else removeDir(path.join(dir, "run"));
    if (reaperPid) {
      try {
        process.kill(reaperPid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
  };
  const cluster = {} as Cluster;
  active.add(cluster);
  installHandlers();
  try {
    const runDir = opts.keepDir ? path.join(dir, "run") : dir;
    const [controlPlane, minioServer] = await Promise.all([
      startControlPlane({ binDir, dir: path.join(runDir, "controlplane"), clusterId: id, log }),
      opts.minio === false
        ? Promise.resolve(undefined)
        : startMinio({
            binDir,
            dir: path.join(runDir, "s3"),
            clusterId: id,
            buckets: opts.buckets ?? ["mergevq"],
          }).then((m) => {
            log(`minio ready at ${m.s3.endpoint}`);
            return m;
          }),
    ]);
    cp = controlPlane;
    minio = minioServer;
    const kube = Kube.fromKubeconfig(cp.kubeconfigPath);
    const s3 = minio?.s3 ?? { endpoint: "", region: "us-east-1", accessKeyId: "", secretAccessKey: "", buckets: [] };

    let nodeAgentUrl: string | undefined;
    let kubeletPort: number | undefined;
    if (opts.nodeAgent !== false) {
      const cfgPath = path.join(runDir, "node-agent.json");
      const readyFile = path.join(runDir, "node-agent.ready");
      const cfg: NodeAgentProcessConfig = {
        kubeconfigPath: cp.kubeconfigPath,
        dir: path.join(runDir, "node-agent"),
        nodes,
        capacity: opts.capacity,
        nodeCapacity: opts.nodeCapacity,
        imageCommands: opts.imageCommands,
        repoRoot: REPO_ROOT,
        tls: { cert: cp.pki.kubeletServing.cert, key: cp.pki.kubeletServing.key, ca: cp.pki.ca.cert },
        kubeletPort: 0,
        controlPort: 0,
        readyFile,
      };
      writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
      const t = Date.now();
      const a = spawnManaged(
        "node-agent",
        process.execPath,
        ["--import", "tsx", path.join(REPO_ROOT, "test/cluster/node-agent.ts"), "--config", cfgPath],
        { clusterId: id, logPath: path.join(runDir, "node-agent.log"), cwd: REPO_ROOT },
      );
      agent = a;
      const ready = await waitFor(
        "node agent ready",
        () =>
          existsSync(readyFile)
            ? (JSON.parse(readFileSync(readyFile, "utf8")) as { controlUrl: string; kubeletPort: number })
            : undefined,
        {
          timeoutMs: 60_000,
          abort: () => (a.exited ? `${a.exited}\n--- node-agent.log ---\n${tailFile(a.logPath)}` : undefined),
        },
      );
      nodeAgentUrl = ready.controlUrl;
      kubeletPort = ready.kubeletPort;
      log(`node agent ready in ${Date.now() - t} ms (nodes ${nodes.join(", ")})`);
    }

    if (opts.s3Secret !== false && minio) {
      const sec = opts.s3Secret ?? { namespace: "mergevq-system", name: "mergevq-s3" };
      await kube
        .request("POST", "/api/v1/namespaces", {
          apiVersion: "v1",
          kind: "Namespace",
          metadata: { name: sec.namespace },
        })
        .catch(() => {});
      await kube.request("POST", `/api/v1/namespaces/${sec.namespace}/secrets`, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: sec.name, labels: { "app.kubernetes.io/part-of": "mergevq-test-cluster" } },
        type: "Opaque",
        stringData: {
          AWS_ACCESS_KEY_ID: s3.accessKeyId,
          AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
          AWS_REGION: s3.region,
          AWS_ENDPOINT_URL: s3.endpoint,
          MERGEVQ_S3_ENDPOINT: s3.endpoint,
        },
      });
    }
    if (opts.applyCrds) {
      const crdDir = path.join(REPO_ROOT, "crds");
      if (existsSync(crdDir)) {
        const r = spawnSync(path.join(binDir, "kubectl"), ["apply", "--server-side", "-f", crdDir], {
          env: { ...process.env, KUBECONFIG: cp.kubeconfigPath },
          encoding: "utf8",
        });
        if (r.status !== 0 && !/no objects passed to apply/.test(r.stderr)) {
          if (opts.applyCrds === "warn") log(`WARNING: kubectl apply crds/ failed: ${r.stderr.trim()}`);
          else throw new Error(`kubectl apply crds/: ${r.stderr}`);
        } else log("applied crds/");
      }
    }
    kube.close();

    const control = async (node: string, action: "fail" | "recover") => {
      if (!nodeAgentUrl) throw new Error("node agent not running");
      const res = await fetch(`${nodeAgentUrl}/nodes/${encodeURIComponent(node)}/${action}`, { method: "POST" });
      const body = (await res.json()) as { pods?: string[]; error?: string };
      if (!res.ok) throw new Error(`node ${action} ${node}: ${body.error}`);
      return body.pods ?? [];
    };
    const { buckets, ...s3Public } = s3;
    Object.assign(cluster, {
      id,
      dir,
      binDir,
      kubeconfigPath: cp.kubeconfigPath,
      server: cp.server,
      s3: s3Public,
      buckets,
      nodes,
      nodeAgentUrl,
      kubeletPort,
      startMs: Date.now() - t0,
      controlPlane: cp,
      failNode: (n: string) => control(n, "fail"),
      recoverNode: async (n: string) => {
        await control(n, "recover");
      },
      env: () => ({
        KUBECONFIG: cp?.kubeconfigPath ?? "",
        MERGEVQ_S3_ENDPOINT: s3.endpoint,
        AWS_ENDPOINT_URL: s3.endpoint,
        AWS_ACCESS_KEY_ID: s3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
        AWS_REGION: s3.region,
      }),
      stop: async () => {
        active.delete(cluster);
        await stopAll();
      },
    } satisfies Cluster);
    log(`cluster ready in ${cluster.startMs} ms`);
    return cluster;
  } catch (e) {
    active.delete(cluster);
    await stopAll();
    throw e;
  }
}

/** PIDs still alive from cluster `id` (for teardown assertions). */
export function clusterPids(id: string): number[] {
  return markedPids(id);
}
