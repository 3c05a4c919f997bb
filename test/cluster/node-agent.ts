// Test-only kubelet stand-in. Registers Node objects, heartbeats their Leases, and runs every pod bound to
// them as local processes (one process group per container), reporting real pod status to the apiserver.
// Usable in-process (`startNodeAgent`) or as its own process (`node --import tsx node-agent.ts --config f`).
//
// Mechanisms (see test/cluster/README.md for the full list):
// - Pod IPs: every pod gets its own loopback address from a per-agent random 127.R.0.0/16 block (all of
//   127/8 routes to `lo`). Pods with `hostname` + `subdomain` get an IP reserved for that identity
//   (`<ns>/<hostname>.<subdomain>`) so a peer can learn it BEFORE that pod exists (rank 1 may start first).
// - Name resolution (no cluster DNS): env values, command and args are scanned for host tokens
//   `<h>.<s>[.<ns>[.svc[.cluster.local]]]`; a token is rewritten to the identity's reserved IP when `s` is
//   the pod's own subdomain, the subdomain of a known pod in that namespace, a Service in that namespace,
//   or the namespace is spelled out. Everything else is left alone (so "model.onnx" stays).
// - Paths: `terminationMessagePath` and volume `mountPath`s are rewritten to per-pod files/dirs wherever
//   they appear in env values, command or args; TERMINATION_MESSAGE_PATH points at the per-container file.
// - OOMKilled: reported (exit 137) when the agent killed the container because the RSS of its process
//   group exceeded `resources.limits.memory` (sampled every 500 ms), or when the container died from a
//   SIGKILL the agent did not send (e.g. the kernel OOM killer).
import { type ChildProcess, spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Kube, KubeError, type KubeObject } from "./kube.ts";
import { tokenKubeconfig } from "./pki.ts";
import { MARKER_VAR, sleep } from "./proc.ts";

export const DEFAULT_NODES = ["mergevq-node-0", "mergevq-node-1"];
export const DEFAULT_CAPACITY: Record<string, string> = {
  cpu: "16",
  memory: "64Gi",
  pods: "110",
  "ephemeral-storage": "100Gi",
  "nvidia.com/gpu": "4",
  "huawei.com/Ascend910": "8",
};
export const KUBELET_VERSION = "v1.36.3";

/** Maps an image repository suffix to a local entrypoint. `<repo>` in `entrypoint` is the repo root. */
export interface ImageCommand {
  /** Matches when the image repository (tag/digest stripped) ends with this string. */
  repositorySuffix: string;
  entrypoint: string[];
  /** `command[0]` values (basenames) that mean "the image's entrypoint" and are replaced by it. */
  aliases?: string[];
}

export const DEFAULT_IMAGE_COMMANDS: ImageCommand[] = [
  {
    repositorySuffix: "mergevq-k8s/operator",
    entrypoint: ["node", "--import", "tsx", "<repo>/operator/src/main.ts"],
    aliases: ["mergevq-operator", "main.ts"],
  },
  {
    repositorySuffix: "mergevq-k8s/trainer",
    entrypoint: ["node", "--import", "tsx", "<repo>/trainer/src/cli.ts"],
    aliases: ["mergevq-trainer", "cli.ts"],
  },
];

export interface NodeAgentOptions {
  kubeconfigPath: string;
  /** Working dir: one sub-dir per pod. */
  dir: string;
  nodes?: string[];
  capacity?: Record<string, string>;
  /** Per-node capacity overrides. */
  nodeCapacity?: Record<string, Record<string, string>>;
  repoRoot?: string;
  imageCommands?: ImageCommand[];
  /** TLS for the kubelet endpoint (`kubectl logs` via the apiserver). */
  tls?: { cert: string; key: string; ca: string };
  /** Kubelet endpoint port (0 = free port). */
  kubeletPort?: number;
  /** HTTP control endpoint port on 127.0.0.1 (0 = free port; undefined = none). */
  controlPort?: number;
  /** Host env vars passed into every pod (default PATH, HOME, LANG, TZ, TMPDIR, NODE_OPTIONS…). */
  passEnv?: string[];
  /** Lease renew interval (default 10 s). */
  heartbeatMs?: number;
  log?: (msg: string) => void;
}

type CState =
  | { kind: "waiting"; reason: string; message?: string }
  | { kind: "running"; startedAt: string }
  | {
      kind: "terminated";
      exitCode: number;
      signal?: number;
      reason: string;
      message?: string;
      startedAt: string;
      finishedAt: string;
    };

interface ContainerRun {
  name: string;
  image: string;
  init: boolean;
  spec: KubeObject;
  state: CState;
  lastState?: CState;
  restartCount: number;
  ready: boolean;
  started: boolean;
  proc?: ChildProcess;
  killedBy?: "agent" | "oom";
  logDir: string;
  termFile: string;
  probeTimer?: NodeJS.Timeout;
  memTimer?: NodeJS.Timeout;
}

interface PodRun {
  key: string;
  uid: string;
  namespace: string;
  name: string;
  node: string;
  pod: KubeObject;
  dir: string;
  ip: string;
  startTime: string;
  initDone: boolean;
  containers: ContainerRun[];
  initContainers: ContainerRun[];
  phase: "Pending" | "Running" | "Succeeded" | "Failed";
  reason?: string;
  message?: string;
  extraConditions: KubeObject[];
  deleting: boolean;
  stopped: boolean;
  statusChain: Promise<void>;
  statusPending: boolean;
  finished: Promise<void>;
  finish: () => void;
}

const nowIso = () => new Date().toISOString().replace(/\.\d+Z$/, "Z");
const podKey = (p: KubeObject) => `${p.metadata.namespace}/${p.metadata.name}`;

/** Parse a Kubernetes quantity into a number of base units (cores, bytes). */
export function parseQuantity(q: string | number | undefined): number {
  if (q === undefined) return Number.NaN;
  if (typeof q === "number") return q;
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?\d+)?)([a-zA-Z]*)$/.exec(q.trim());
  if (!m) return Number.NaN;
  const mult: Record<string, number> = {
    "": 1,
    n: 1e-9,
    u: 1e-6,
    m: 1e-3,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
    P: 1e15,
    E: 1e18,
    Ki: 2 ** 10,
    Mi: 2 ** 20,
    Gi: 2 ** 30,
    Ti: 2 ** 40,
    Pi: 2 ** 50,
    Ei: 2 ** 60,
  };
  const f = mult[m[2]];
  return f === undefined ? Number.NaN : Number(m[1]) * f;
}

/** Image repository without tag or digest: `reg:5000/a/b:tag@sha256:…` → `reg:5000/a/b`. */
export function imageRepository(image: string): string {
  let s = image.split("@")[0];
  const slash = s.lastIndexOf("/");
  const colon = s.lastIndexOf(":");
  if (colon > slash) s = s.slice(0, colon);
  return s;
}

/** file:// URL of tsx's ESM loader (for `node --import`), resolved from the repo root. */
export function tsxLoaderUrl(repoRoot: string): string {
  const local = path.join(repoRoot, "node_modules/tsx/dist/loader.mjs");
  if (existsSync(local)) return pathToFileURL(local).href;
  try {
    return import.meta.resolve("tsx");
  } catch {
    return "tsx";
  }
}

/** Resolve the argv for a container (image→command table, then Docker's command/args semantics). */
export function resolveArgv(
  container: { image?: string; command?: string[]; args?: string[] },
  table: ImageCommand[],
  repoRoot: string,
): string[] {
  const repo = imageRepository(container.image ?? "");
  const entry = table.find((e) => repo.endsWith(e.repositorySuffix));
  const args = container.args ?? [];
  if (entry) {
    // `--import tsx` must resolve from the repo, not from the pod's working dir.
    const ep = entry.entrypoint.map((a, i, all) =>
      a === "tsx" && all[i - 1] === "--import" ? tsxLoaderUrl(repoRoot) : a.replaceAll("<repo>", repoRoot),
    );
    const cmd = container.command;
    if (!cmd || cmd.length === 0) return [...ep, ...args];
    if ((entry.aliases ?? []).includes(path.basename(cmd[0]))) return [...ep, ...cmd.slice(1), ...args];
    return [...cmd, ...args];
  }
  return [...(container.command ?? []), ...args];
}

/** Kubernetes `$(VAR)` expansion (`$$` escapes; unknown references stay verbatim). */
export function expandVars(s: string, env: Record<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (m === "$$") return "$";
    return name !== undefined && name in env ? env[name] : m;
  });
}

const HOST_TOKEN =
  /(^|[^A-Za-z0-9.-])([a-z0-9](?:[-a-z0-9]*[a-z0-9])?\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.svc(?:\.cluster\.local)?)?)?)(?=$|[^A-Za-z0-9.-])/g;

/** Kubelet-style termination message from a log: last 80 lines, at most 2048 bytes. */
function logTail(file: string): string {
  try {
    const text = readFileSync(file, "utf8");
    const lines = text.split("\n");
    if (lines.at(-1) === "") lines.pop();
    let out = lines.slice(-80).join("\n");
    if (Buffer.byteLength(out) > 2048) out = Buffer.from(out).subarray(-2048).toString("utf8");
    return out;
  } catch {
    return "";
  }
}

function readTermination(file: string): string {
  try {
    const b = readFileSync(file);
    return b.subarray(0, 4096).toString("utf8");
  } catch {
    return "";
  }
}

function groupRssBytes(pgid: number): number {
  let total = 0;
  for (const ent of readdirSync("/proc")) {
    if (!/^\d+$/.test(ent)) continue;
    try {
      const stat = readFileSync(`/proc/${ent}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      // rest[0]=state, rest[2]=pgrp, rest[21]=rss (pages)
      if (Number(rest[2]) === pgid) total += Number(rest[21]) * 4096;
    } catch {
      /* raced */
    }
  }
  return total;
}

function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, sig);
  } catch {
    /* gone */
  }
}

export class NodeAgent {
  readonly kube: Kube;
  readonly nodes: string[];
  readonly repoRoot: string;
  readonly imageCommands: ImageCommand[];
  /** Base of this agent's pod IP block: `127.R.`. */
  readonly ipPrefix: string;
  kubeletPort = 0;
  controlUrl?: string;
  private readonly pods = new Map<string, PodRun>();
  /** Latest view of every pod in the cluster (for hostname/subdomain resolution). */
  private readonly podCache = new Map<string, KubeObject>();
  private readonly identityIps = new Map<string, string>();
  private nextIp = 1;
  private readonly failed = new Set<string>();
  private readonly abort = new AbortController();
  private timers: NodeJS.Timeout[] = [];
  private servers: (http.Server | https.Server)[] = [];
  private watchLoop?: Promise<void>;
  private stopped = false;
  private readonly log: (msg: string) => void;

  constructor(readonly opts: NodeAgentOptions) {
    this.kube = Kube.fromKubeconfig(opts.kubeconfigPath);
    this.nodes = opts.nodes ?? DEFAULT_NODES;
    this.repoRoot = opts.repoRoot ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
    this.imageCommands = opts.imageCommands ?? imageCommandsFromEnv() ?? DEFAULT_IMAGE_COMMANDS;
    this.ipPrefix = `127.${randomInt(10, 250)}.`;
    this.log = opts.log ?? (() => {});
    mkdirSync(path.join(opts.dir, "pods"), { recursive: true });
  }

  // ---------------------------------------------------------------- lifecycle

  async start(): Promise<void> {
    if (this.opts.tls) await this.startKubeletServer();
    if (this.opts.controlPort !== undefined) await this.startControlServer(this.opts.controlPort);
    for (const n of this.nodes) await this.registerNode(n);
    const hb = this.opts.heartbeatMs ?? 10_000;
    this.timers.push(
      setInterval(() => {
        for (const n of this.nodes) if (!this.failed.has(n)) void this.renewLease(n).catch(() => {});
      }, hb),
      setInterval(() => {
        for (const n of this.nodes) if (!this.failed.has(n)) void this.patchNodeStatus(n, true).catch(() => {});
      }, 30_000),
    );
    const listed = await this.kube.get("/api/v1/pods");
    for (const p of listed.items ?? []) this.onPod("ADDED", p);
    this.watchLoop = this.runWatch(String(listed.metadata?.resourceVersion ?? ""));
  }

  /** Kill every pod process (SIGTERM, SIGKILL after 3 s), stop heartbeats and servers. Node objects stay. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.abort.abort();
    for (const t of this.timers) clearInterval(t);
    const runs = [...this.pods.values()];
    for (const r of runs) this.stopContainers(r, "SIGTERM");
    await Promise.race([Promise.all(runs.map((r) => r.finished)), sleep(3000)]);
    for (const r of runs) this.stopContainers(r, "SIGKILL");
    for (const s of this.servers) {
      s.closeAllConnections?.();
      s.close();
    }
    await this.watchLoop?.catch(() => {});
    this.kube.close();
  }

  // ---------------------------------------------------------------- nodes

  private nodeCapacity(name: string): Record<string, string> {
    return { ...DEFAULT_CAPACITY, ...(this.opts.capacity ?? {}), ...(this.opts.nodeCapacity?.[name] ?? {}) };
  }

  private nodeStatus(name: string, ready: boolean, reason?: string, message?: string): KubeObject {
    const now = nowIso();
    const cap = this.nodeCapacity(name);
    const cond = (type: string, status: string, r: string, msg: string) => ({
      type,
      status,
      reason: r,
      message: msg,
      lastHeartbeatTime: now,
      lastTransitionTime: now,
    });
    return {
      capacity: cap,
      allocatable: cap,
      conditions: [
        cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ready
          ? cond("Ready", "True", "KubeletReady", "mergevq node agent is posting ready status")
          : cond("Ready", "False", reason ?? "KubeletNotReady", message ?? "node agent not ready"),
      ],
      addresses: [
        { type: "InternalIP", address: "127.0.0.1" },
        { type: "Hostname", address: name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: this.kubeletPort } },
      nodeInfo: {
        machineID: name,
        systemUUID: name,
        bootID: `${name}-boot`,
        kernelVersion: os.release(),
        osImage: "mergevq test node agent",
        containerRuntimeVersion: "mergevq-node-agent://0.1.0",
        kubeletVersion: KUBELET_VERSION,
        kubeProxyVersion: "",
        operatingSystem: "linux",
        architecture: process.arch === "x64" ? "amd64" : process.arch,
      },
    };
  }

  private async registerNode(name: string): Promise<void> {
    const labels = {
      "kubernetes.io/hostname": name,
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
      "mergevq.io/node-agent": "true",
    };
    const existing = await this.kube.tryGet(`/api/v1/nodes/${name}`);
    if (!existing) {
      await this.kube.request("POST", "/api/v1/nodes", {
        apiVersion: "v1",
        kind: "Node",
        metadata: { name, labels },
        spec: {},
      });
    } else {
      await this.kube.strategicPatch(`/api/v1/nodes/${name}`, { metadata: { labels } });
    }
    await this.patchNodeStatus(name, true);
    await this.renewLease(name);
  }

  private async patchNodeStatus(name: string, ready: boolean, reason?: string, message?: string): Promise<void> {
    await this.kube.strategicPatch(`/api/v1/nodes/${name}/status`, {
      status: this.nodeStatus(name, ready, reason, message),
    });
  }

  private async renewLease(name: string): Promise<void> {
    const p = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`;
    const renewTime = new Date()
      .toISOString()
      .replace("Z", "000Z")
      .replace(/(\.\d{6})\d*Z$/, "$1Z");
    const spec = { holderIdentity: name, leaseDurationSeconds: 40, renewTime };
    const cur = await this.kube.tryGet(p);
    if (!cur) {
      const node = await this.kube.get(`/api/v1/nodes/${name}`);
      await this.kube.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: {
          name,
          namespace: "kube-node-lease",
          ownerReferences: [{ apiVersion: "v1", kind: "Node", name, uid: node.metadata.uid }],
        },
        spec,
      });
    } else {
      await this.kube.mergePatch(p, { spec });
    }
  }

  /**
   * Simulate losing a node: SIGKILL its pods, mark them Failed (reason NodeLost, condition DisruptionTarget)
   * and the Node NotReady; stop its heartbeats. Pods bound to it later are not run until `recoverNode`.
   */
  async failNode(name: string): Promise<string[]> {
    if (!this.nodes.includes(name)) throw new Error(`unknown node ${name}`);
    this.failed.add(name);
    await this.patchNodeStatus(name, false, "NodeLost", "simulated node failure (mergevq node agent)");
    const affected: string[] = [];
    for (const r of [...this.pods.values()]) {
      if (r.node !== name || r.stopped) continue;
      affected.push(r.key);
      r.phase = "Failed";
      r.reason = "NodeLost";
      r.message = `Node ${name} which was running pod ${r.name} is unresponsive (simulated node failure)`;
      r.extraConditions.push({
        type: "DisruptionTarget",
        status: "True",
        reason: "DeletionByTaintManager",
        message: `simulated node failure: ${name} lost`,
        lastTransitionTime: nowIso(),
      });
      for (const c of [...r.initContainers, ...r.containers]) {
        if (c.proc) c.killedBy = "agent";
        if (c.state.kind !== "terminated") {
          const startedAt = c.state.kind === "running" ? c.state.startedAt : nowIso();
          c.state = {
            kind: "terminated",
            exitCode: 137,
            reason: "Error",
            message: "node lost",
            startedAt,
            finishedAt: nowIso(),
          };
        }
        c.ready = false;
      }
      r.stopped = true;
      this.stopContainers(r, "SIGKILL");
      await this.flushStatus(r);
    }
    return affected;
  }

  async recoverNode(name: string): Promise<void> {
    if (!this.nodes.includes(name)) throw new Error(`unknown node ${name}`);
    this.failed.delete(name);
    await this.patchNodeStatus(name, true);
    await this.renewLease(name);
    for (const p of this.podCache.values()) if (p.spec?.nodeName === name) this.onPod("MODIFIED", p);
  }

  // ---------------------------------------------------------------- watch

  private async runWatch(initialRv: string): Promise<void> {
    let rv = initialRv;
    while (!this.stopped) {
      try {
        await this.kube.watch(
          `/api/v1/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=240&resourceVersion=${rv}`,
          (ev) => {
            rv = String(ev.object?.metadata?.resourceVersion ?? rv);
            if (ev.type !== "BOOKMARK") this.onPod(ev.type, ev.object);
          },
          this.abort.signal,
        );
      } catch (e) {
        if (this.stopped) return;
        if (e instanceof KubeError && e.status === 410) {
          const listed = await this.kube.get("/api/v1/pods").catch(() => undefined);
          if (listed) {
            rv = String(listed.metadata.resourceVersion);
            const seen = new Set<string>();
            for (const p of listed.items ?? []) {
              seen.add(p.metadata.uid);
              this.onPod("MODIFIED", p);
            }
            for (const p of [...this.podCache.values()]) if (!seen.has(p.metadata.uid)) this.onPod("DELETED", p);
          }
        } else {
          this.log(`pod watch error: ${(e as Error).message}`);
          await sleep(500);
        }
      }
    }
  }

  private onPod(type: string, pod: KubeObject): void {
    const key = podKey(pod);
    if (type === "DELETED") {
      this.podCache.delete(key);
      const r = this.pods.get(key);
      if (r && r.uid === pod.metadata.uid) {
        r.stopped = true;
        this.stopContainers(r, "SIGKILL");
        this.pods.delete(key);
        void r.finished.then(() => rmSync(r.dir, { recursive: true, force: true }));
      }
      return;
    }
    this.podCache.set(key, pod);
    const node = pod.spec?.nodeName as string | undefined;
    if (!node || !this.nodes.includes(node)) return;
    let r = this.pods.get(key);
    if (r && r.uid !== pod.metadata.uid) {
      // Same name, new pod: the old one is gone.
      r.stopped = true;
      this.stopContainers(r, "SIGKILL");
      this.pods.delete(key);
      r = undefined;
    }
    if (this.failed.has(node)) return;
    if (r) r.pod = pod;
    if (pod.metadata.deletionTimestamp) {
      void this.handleDeletion(key, pod, r);
      return;
    }
    if (r) return;
    const phase = pod.status?.phase;
    if (phase === "Succeeded" || phase === "Failed") return;
    if (pod.status?.startTime) {
      // Started by an earlier agent process that is gone: its processes died with it.
      void this.kube
        .strategicPatch(`/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}/status`, {
          status: {
            phase: "Failed",
            reason: "NodeAgentRestarted",
            message: "the node agent running this pod restarted",
          },
        })
        .catch(() => {});
      return;
    }
    void this.runPod(pod).catch((e) => this.log(`pod ${key}: ${(e as Error).stack}`));
  }

  private deleting = new Set<string>();
  private async handleDeletion(key: string, pod: KubeObject, r: PodRun | undefined): Promise<void> {
    const id = `${key}/${pod.metadata.uid}`;
    if (this.deleting.has(id)) return;
    this.deleting.add(id);
    try {
      if (r && !r.stopped) {
        r.deleting = true;
        const grace = Number(pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30);
        this.stopContainers(r, "SIGTERM");
        const killer = setTimeout(() => this.stopContainers(r, "SIGKILL"), Math.max(0, grace) * 1000);
        await Promise.race([this.allExited(r), sleep(Math.max(0, grace) * 1000 + 2000)]);
        clearTimeout(killer);
        this.stopContainers(r, "SIGKILL");
        r.stopped = true;
        await this.allExited(r);
        if (r.phase === "Pending" || r.phase === "Running") {
          // Like the kubelet (1.27+): a deleted pod reaches a terminal phase before it goes away.
          const anyFailed = r.containers.some((c) => c.state.kind !== "terminated" || c.state.exitCode !== 0);
          r.phase = anyFailed ? "Failed" : "Succeeded";
        }
        await this.flushStatus(r);
      }
      await this.kube
        .request("DELETE", `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}`, {
          apiVersion: "v1",
          kind: "DeleteOptions",
          gracePeriodSeconds: 0,
          preconditions: { uid: pod.metadata.uid },
        })
        .catch((e) => {
          if (!(e instanceof KubeError && (e.status === 404 || e.status === 409))) throw e;
        });
    } catch (e) {
      this.log(`deleting ${key}: ${(e as Error).message}`);
    } finally {
      this.deleting.delete(id);
    }
  }

  private allExited(r: PodRun): Promise<void> {
    return Promise.all(
      [...r.initContainers, ...r.containers].map((c) =>
        c.proc && c.proc.exitCode === null && c.proc.signalCode === null
          ? new Promise<void>((res) => c.proc?.once("exit", () => res()))
          : Promise.resolve(),
      ),
    ).then(() => {});
  }

  private stopContainers(r: PodRun, sig: NodeJS.Signals): void {
    for (const c of [...r.initContainers, ...r.containers]) {
      if (c.proc && c.proc.exitCode === null && c.proc.signalCode === null) {
        c.killedBy = c.killedBy ?? "agent";
        killGroup(c.proc.pid, sig);
      } else if (c.proc?.pid) killGroup(c.proc.pid, "SIGKILL"); // orphans of an exited leader
      clearInterval(c.probeTimer);
      clearInterval(c.memTimer);
    }
  }

  // ---------------------------------------------------------------- IPs and names

  private allocIp(): string {
    const n = this.nextIp++;
    return `${this.ipPrefix}${Math.floor(n / 254)}.${(n % 254) + 1}`;
  }

  /** IP reserved for `<ns>/<hostname>.<subdomain>` (stable across pod re-creations). */
  identityIp(namespace: string, hostname: string, subdomain: string): string {
    const k = `${namespace}/${hostname}.${subdomain}`;
    let ip = this.identityIps.get(k);
    if (!ip) {
      ip = this.allocIp();
      this.identityIps.set(k, ip);
    }
    return ip;
  }

  private async subdomainKnown(ns: string, sub: string, self: KubeObject): Promise<boolean> {
    if (self.metadata.namespace === ns && self.spec?.subdomain === sub) return true;
    for (const p of this.podCache.values()) if (p.metadata.namespace === ns && p.spec?.subdomain === sub) return true;
    const svc = await this.kube.tryGet(`/api/v1/namespaces/${ns}/services/${sub}`).catch(() => undefined);
    return svc !== undefined;
  }

  /** Rewrite pod-FQDN host tokens in `s` to reserved loopback IPs. */
  async rewriteHosts(s: string, self: KubeObject): Promise<string> {
    const matches = [...s.matchAll(HOST_TOKEN)];
    if (matches.length === 0) return s;
    const repl = new Map<string, string>();
    for (const m of matches) {
      const token = m[2];
      if (repl.has(token)) continue;
      const parts = token.split(".");
      const [h, sub] = parts;
      const explicitNs = parts.length >= 3 ? parts[2] : undefined;
      if (parts.length >= 3 && parts.length !== 3 && parts[3] !== "svc") continue;
      const ns = explicitNs ?? self.metadata.namespace;
      const known = (parts.length >= 4 && parts[3] === "svc") || (await this.subdomainKnown(ns, sub, self));
      if (known) repl.set(token, this.identityIp(ns, h, sub));
    }
    if (repl.size === 0) return s;
    return s.replace(HOST_TOKEN, (all, pre: string, token: string) => {
      const ip = repl.get(token);
      return ip ? `${pre}${ip}` : all;
    });
  }

  // ---------------------------------------------------------------- pod execution

  private async runPod(pod: KubeObject): Promise<void> {
    const key = podKey(pod);
    const ns = pod.metadata.namespace as string;
    const name = pod.metadata.name as string;
    const uid = pod.metadata.uid as string;
    const dir = path.join(this.opts.dir, "pods", `${ns}_${name}_${uid.slice(0, 8)}`);
    mkdirSync(dir, { recursive: true });
    const ip =
      pod.spec.hostname && pod.spec.subdomain
        ? this.identityIp(ns, pod.spec.hostname, pod.spec.subdomain)
        : this.allocIp();
    let finish = () => {};
    const finished = new Promise<void>((res) => {
      finish = res;
    });
    const mk = (c: KubeObject, init: boolean): ContainerRun => ({
      name: c.name,
      image: c.image ?? "",
      init,
      spec: c,
      state: { kind: "waiting", reason: init ? "PodInitializing" : "ContainerCreating" },
      restartCount: 0,
      ready: false,
      started: false,
      logDir: path.join(dir, "logs", c.name),
      termFile: path.join(dir, "termination", c.name),
    });
    const r: PodRun = {
      key,
      uid,
      namespace: ns,
      name,
      node: pod.spec.nodeName,
      pod,
      dir,
      ip,
      startTime: nowIso(),
      initDone: false,
      initContainers: (pod.spec.initContainers ?? []).map((c: KubeObject) => mk(c, true)),
      containers: (pod.spec.containers ?? []).map((c: KubeObject) => mk(c, false)),
      phase: "Pending",
      extraConditions: [],
      deleting: false,
      stopped: false,
      statusChain: Promise.resolve(),
      statusPending: false,
      finished,
      finish,
    };
    this.pods.set(key, r);
    for (const c of [...r.initContainers, ...r.containers]) {
      mkdirSync(c.logDir, { recursive: true });
      mkdirSync(path.dirname(c.termFile), { recursive: true });
    }
    try {
      this.queueStatus(r);
      const pathMap = await this.prepareVolumes(r);
      const restartPolicy = (pod.spec.restartPolicy ?? "Always") as string;
      // Init containers, in order; each must succeed.
      for (const c of r.initContainers) {
        for (;;) {
          if (r.stopped) return;
          const code = await this.runContainer(r, c, pathMap);
          if (r.stopped) return;
          if (code === 0) break;
          if (restartPolicy === "Never") {
            r.phase = "Failed";
            r.stopped = true;
            this.queueStatus(r);
            return;
          }
          c.restartCount++;
          await sleep(Math.min(10_000, 1000 * 2 ** Math.min(c.restartCount - 1, 4)));
        }
      }
      r.initDone = true;
      r.phase = "Running";
      await Promise.all(
        r.containers.map(async (c) => {
          for (;;) {
            if (r.stopped) return;
            const code = await this.runContainer(r, c, pathMap);
            if (r.stopped || r.deleting) return;
            const restart = restartPolicy === "Always" || (restartPolicy === "OnFailure" && code !== 0);
            if (!restart) return;
            c.restartCount++;
            c.lastState = c.state;
            c.state = { kind: "waiting", reason: "CrashLoopBackOff", message: `back-off restarting ${c.name}` };
            this.queueStatus(r);
            await sleep(Math.min(10_000, 1000 * 2 ** Math.min(c.restartCount - 1, 4)));
          }
        }),
      );
      if (!r.stopped && !r.deleting) {
        const failed = r.containers.some((c) => c.state.kind === "terminated" && c.state.exitCode !== 0);
        r.phase = failed ? "Failed" : "Succeeded";
        r.stopped = true;
        this.queueStatus(r);
      }
    } finally {
      await r.statusChain;
      r.finish();
    }
  }

  /** Materialise emptyDir/configMap/secret/projected volumes; returns mountPath → host path. */
  private async prepareVolumes(r: PodRun): Promise<Map<string, string>> {
    const pod = r.pod;
    const vols = new Map<string, string>();
    for (const v of pod.spec.volumes ?? []) {
      const vdir = path.join(r.dir, "volumes", v.name);
      mkdirSync(vdir, { recursive: true });
      vols.set(v.name, vdir);
      const writeItems = (data: Record<string, string>, items: KubeObject[] | undefined, b64: boolean, sub = vdir) => {
        const list = items ?? Object.keys(data).map((k) => ({ key: k, path: k }));
        for (const it of list) {
          if (!(it.key in data)) continue;
          const f = path.join(sub, it.path);
          mkdirSync(path.dirname(f), { recursive: true });
          writeFileSync(f, b64 ? Buffer.from(data[it.key], "base64") : data[it.key]);
        }
      };
      if (v.configMap) {
        const cm = await this.waitObject(r, `configmaps/${v.configMap.name}`, v.configMap.optional);
        if (cm) writeItems(cm.data ?? {}, v.configMap.items, false);
      } else if (v.secret) {
        const s = await this.waitObject(r, `secrets/${v.secret.secretName}`, v.secret.optional);
        if (s) writeItems(s.data ?? {}, v.secret.items, true);
      } else if (v.projected) {
        for (const src of v.projected.sources ?? []) {
          if (src.serviceAccountToken) {
            const token = await this.serviceAccountToken(r, src.serviceAccountToken.expirationSeconds);
            writeFileSync(path.join(vdir, src.serviceAccountToken.path), token);
          } else if (src.configMap) {
            const cm = await this.waitObject(r, `configmaps/${src.configMap.name}`, src.configMap.optional);
            if (cm) writeItems(cm.data ?? {}, src.configMap.items, false);
          } else if (src.secret) {
            const s = await this.waitObject(r, `secrets/${src.secret.name}`, src.secret.optional);
            if (s) writeItems(s.data ?? {}, src.secret.items, true);
          } else if (src.downwardAPI) {
            for (const it of src.downwardAPI.items ?? []) {
              if (it.fieldRef) writeFileSync(path.join(vdir, it.path), this.fieldRef(r, it.fieldRef.fieldPath));
            }
          }
        }
      }
    }
    const map = new Map<string, string>();
    // An emptyDir over the host's own temp dir (the trainer pods' /tmp scratch, the operator's /tmp) stays the
    // host's: every container process already has one /tmp, and rewriting "/tmp/…" everywhere would also turn
    // host paths of test inputs (datasets, checkpoints under os.tmpdir()) into empty per-pod dirs.
    const hostTmp = os.tmpdir();
    const emptyDirs = new Set<string>();
    for (const v of pod.spec.volumes ?? []) if (v.emptyDir) emptyDirs.add(v.name);
    for (const c of [...(pod.spec.initContainers ?? []), ...(pod.spec.containers ?? [])]) {
      for (const m of c.volumeMounts ?? []) {
        if (emptyDirs.has(m.name) && m.mountPath === hostTmp && !m.subPath) continue;
        const host = vols.get(m.name);
        if (host) map.set(m.mountPath, m.subPath ? path.join(host, m.subPath) : host);
      }
    }
    return map;
  }

  private async serviceAccountToken(r: PodRun, expirationSeconds?: number): Promise<string> {
    const sa = r.pod.spec.serviceAccountName ?? "default";
    const tr = await this.kube.request("POST", `/api/v1/namespaces/${r.namespace}/serviceaccounts/${sa}/token`, {
      apiVersion: "authentication.k8s.io/v1",
      kind: "TokenRequest",
      spec: {
        expirationSeconds: expirationSeconds ?? 3607,
        boundObjectRef: { apiVersion: "v1", kind: "Pod", name: r.name, uid: r.uid },
      },
    });
    return tr.status.token as string;
  }

  /** GET a namespaced object, retrying while it is missing (kubelet's CreateContainerConfigError loop). */
  private async waitObject(r: PodRun, rel: string, optional?: boolean): Promise<KubeObject | undefined> {
    for (;;) {
      const o = await this.kube.tryGet(`/api/v1/namespaces/${r.namespace}/${rel}`);
      if (o || optional) return o;
      if (r.stopped) throw new Error("pod stopped");
      for (const c of [...r.initContainers, ...r.containers]) {
        if (c.state.kind === "waiting")
          c.state = { kind: "waiting", reason: "CreateContainerConfigError", message: `${rel} not found` };
      }
      this.queueStatus(r);
      await sleep(1000);
    }
  }

  private fieldRef(r: PodRun, fieldPath: string): string {
    const md = r.pod.metadata;
    const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
    if (m) return String(md[m[1]]?.[m[2]] ?? "");
    switch (fieldPath) {
      case "metadata.name":
        return md.name;
      case "metadata.namespace":
        return md.namespace;
      case "metadata.uid":
        return md.uid;
      case "metadata.labels":
      case "metadata.annotations":
        return Object.entries((md[fieldPath.split(".")[1]] ?? {}) as Record<string, string>)
          .map(([k, v]) => `${k}="${v}"`)
          .join("\n");
      case "spec.nodeName":
        return r.node;
      case "spec.serviceAccountName":
        return r.pod.spec.serviceAccountName ?? "default";
      case "status.podIP":
      case "status.podIPs":
        return r.ip;
      case "status.hostIP":
      case "status.hostIPs":
        return "127.0.0.1";
      default:
        throw new Error(`unsupported fieldRef ${fieldPath}`);
    }
  }

  private resourceFieldRef(r: PodRun, ref: KubeObject, self: KubeObject): string {
    const c = ref.containerName
      ? [...(r.pod.spec.containers ?? []), ...(r.pod.spec.initContainers ?? [])].find(
          (x) => x.name === ref.containerName,
        )
      : self;
    const [kind, res] = String(ref.resource).split(".");
    let v = parseQuantity(c?.resources?.[kind]?.[res]);
    if (Number.isNaN(v)) v = parseQuantity(this.nodeCapacity(r.node)[res]);
    const div = parseQuantity(ref.divisor ?? (res === "cpu" ? "1" : "1"));
    return String(Math.ceil(v / (div || 1)));
  }

  private async buildEnv(r: PodRun, c: ContainerRun, pathMap: Map<string, string>): Promise<Record<string, string>> {
    const spec = c.spec;
    const env: Record<string, string> = {};
    for (const k of this.opts.passEnv ?? ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "NODE_OPTIONS"]) {
      const v = process.env[k];
      if (v !== undefined) env[k] = v;
    }
    env[MARKER_VAR] = process.env[MARKER_VAR] ?? "";
    env.HOSTNAME = r.pod.spec.hostname ?? r.name;
    const server = new URL(this.kube.auth.server);
    env.KUBERNETES_SERVICE_HOST = server.hostname;
    env.KUBERNETES_SERVICE_PORT = server.port || "443";
    env.KUBERNETES_SERVICE_PORT_HTTPS = env.KUBERNETES_SERVICE_PORT;
    env.TERMINATION_MESSAGE_PATH = c.termFile;
    env.MERGEVQ_POD_DIR = r.dir;
    // Service-account credentials as a kubeconfig (client libraries' in-cluster paths are not writable).
    const saMount = pathMap.get("/var/run/secrets/kubernetes.io/serviceaccount");
    if (saMount && existsSync(path.join(saMount, "token"))) {
      const kc = path.join(r.dir, "serviceaccount.kubeconfig");
      if (!existsSync(kc)) {
        const ca = existsSync(path.join(saMount, "ca.crt")) ? readFileSync(path.join(saMount, "ca.crt"), "utf8") : "";
        writeFileSync(
          kc,
          tokenKubeconfig(this.kube.auth.server, ca, readFileSync(path.join(saMount, "token"), "utf8"), r.namespace),
        );
      }
      env.KUBECONFIG = kc;
    }
    const put = (k: string, v: string) => {
      env[k] = v;
    };
    for (const ef of spec.envFrom ?? []) {
      const prefix = ef.prefix ?? "";
      if (ef.configMapRef) {
        const cm = await this.waitObject(r, `configmaps/${ef.configMapRef.name}`, ef.configMapRef.optional);
        for (const [k, v] of Object.entries((cm?.data ?? {}) as Record<string, string>)) put(prefix + k, v);
      } else if (ef.secretRef) {
        const s = await this.waitObject(r, `secrets/${ef.secretRef.name}`, ef.secretRef.optional);
        for (const [k, v] of Object.entries((s?.data ?? {}) as Record<string, string>))
          put(prefix + k, Buffer.from(v, "base64").toString("utf8"));
      }
    }
    for (const e of spec.env ?? []) {
      if (e.value !== undefined) put(e.name, expandVars(String(e.value), env));
      else if (e.valueFrom?.fieldRef) put(e.name, this.fieldRef(r, e.valueFrom.fieldRef.fieldPath));
      else if (e.valueFrom?.resourceFieldRef) put(e.name, this.resourceFieldRef(r, e.valueFrom.resourceFieldRef, spec));
      else if (e.valueFrom?.secretKeyRef) {
        const ref = e.valueFrom.secretKeyRef;
        const s = await this.waitObject(r, `secrets/${ref.name}`, ref.optional);
        const v = s?.data?.[ref.key];
        if (v !== undefined) put(e.name, Buffer.from(v, "base64").toString("utf8"));
      } else if (e.valueFrom?.configMapKeyRef) {
        const ref = e.valueFrom.configMapKeyRef;
        const cm = await this.waitObject(r, `configmaps/${ref.name}`, ref.optional);
        const v = cm?.data?.[ref.key];
        if (v !== undefined) put(e.name, v);
      } else put(e.name, "");
    }
    const keep = new Set([MARKER_VAR, "PATH", "HOME", "TERMINATION_MESSAGE_PATH", "MERGEVQ_POD_DIR", "KUBECONFIG"]);
    for (const k of Object.keys(env)) {
      if (keep.has(k)) continue;
      env[k] = this.rewritePaths(await this.rewriteHosts(env[k], r.pod), c, pathMap);
    }
    return env;
  }

  private rewritePaths(s: string, c: ContainerRun, pathMap: Map<string, string>): string {
    const tmp = (c.spec.terminationMessagePath as string | undefined) ?? "/dev/termination-log";
    // Host paths of the repo (the image-mapped entrypoints) are never volume paths, even when the checkout lives
    // under a mount path such as /tmp: shield them from the rewrite.
    const SHIELD = "\u0000repo\u0000";
    let out = s.split(this.repoRoot).join(SHIELD).split(tmp).join(c.termFile);
    const entries = [...pathMap.entries()].sort((a, b) => b[0].length - a[0].length);
    for (const [mount, host] of entries) {
      if (mount === "/" || !out.includes(mount)) continue;
      const re = new RegExp(
        `(^|[^A-Za-z0-9_./-])${mount.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}(?=$|/|[^A-Za-z0-9_.-])`,
        "g",
      );
      out = out.replace(re, (_all, pre: string) => `${pre}${host}`);
    }
    return out.split(SHIELD).join(this.repoRoot);
  }

  /** Run one container to completion; returns its exit code. */
  private async runContainer(r: PodRun, c: ContainerRun, pathMap: Map<string, string>): Promise<number> {
    let env: Record<string, string>;
    let argv: string[];
    try {
      env = await this.buildEnv(r, c, pathMap);
      argv = resolveArgv(c.spec, this.imageCommands, this.repoRoot);
      const rewritten: string[] = [];
      for (const a of argv)
        rewritten.push(this.rewritePaths(await this.rewriteHosts(expandVars(a, env), r.pod), c, pathMap));
      argv = rewritten;
    } catch (e) {
      if (r.stopped) return 137;
      return this.containerCannotRun(r, c, `CreateContainerConfigError: ${(e as Error).message}`);
    }
    if (argv.length === 0)
      return this.containerCannotRun(r, c, `image ${c.image} has no known entrypoint and no command`);
    rmSync(c.termFile, { force: true });
    const logPath = path.join(c.logDir, `${c.restartCount}.log`);
    const fd = openSync(logPath, "a");
    const startedAt = nowIso();
    c.killedBy = undefined;
    let proc: ChildProcess;
    try {
      proc = spawn(argv[0], argv.slice(1), { cwd: r.dir, env, detached: true, stdio: ["ignore", fd, fd] });
    } catch (e) {
      closeSync(fd);
      return this.containerCannotRun(r, c, (e as Error).message);
    }
    closeSync(fd);
    c.proc = proc;
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; err?: Error }>((res) => {
      proc.once("exit", (code, signal) => res({ code, signal }));
      proc.once("error", (err) => res({ code: 127, signal: null, err }));
    });
    if (r.stopped) killGroup(proc.pid, "SIGKILL");
    c.state = { kind: "running", startedAt };
    c.started = true;
    c.ready = !c.spec.readinessProbe && !c.init;
    if (!c.init && c.spec.readinessProbe) this.startProbe(r, c, env);
    const memLimit = parseQuantity(c.spec.resources?.limits?.memory);
    if (Number.isFinite(memLimit) && memLimit > 0 && proc.pid) {
      const pgid = proc.pid;
      c.memTimer = setInterval(() => {
        if (groupRssBytes(pgid) > memLimit) {
          c.killedBy = "oom";
          killGroup(pgid, "SIGKILL");
        }
      }, 500);
    }
    this.queueStatus(r);
    const res = await exit;
    clearInterval(c.probeTimer);
    clearInterval(c.memTimer);
    killGroup(proc.pid, "SIGKILL"); // leftover children of the container's group
    const signo = res.signal ? (os.constants.signals[res.signal] ?? 9) : 0;
    const exitCode = res.signal ? 128 + signo : (res.code ?? 1);
    let reason = exitCode === 0 ? "Completed" : "Error";
    if (c.killedBy === "oom" || (res.signal === "SIGKILL" && !c.killedBy)) reason = "OOMKilled";
    if (res.err) reason = "StartError";
    let message = readTermination(c.termFile);
    if (!message && res.err) message = res.err.message;
    if (!message && exitCode !== 0 && c.spec.terminationMessagePolicy === "FallbackToLogsOnError")
      message = logTail(logPath);
    c.state = {
      kind: "terminated",
      exitCode,
      ...(res.signal ? { signal: signo } : {}),
      reason,
      ...(message ? { message } : {}),
      startedAt,
      finishedAt: nowIso(),
    };
    c.ready = false;
    c.proc = undefined;
    this.queueStatus(r);
    return exitCode;
  }

  private containerCannotRun(r: PodRun, c: ContainerRun, message: string): number {
    const t = nowIso();
    c.state = { kind: "terminated", exitCode: 128, reason: "ContainerCannotRun", message, startedAt: t, finishedAt: t };
    this.queueStatus(r);
    return 128;
  }

  private startProbe(r: PodRun, c: ContainerRun, env: Record<string, string>): void {
    const p = c.spec.readinessProbe as KubeObject;
    const period = Math.max(0.2, Number(p.periodSeconds ?? 10)) * 1000;
    const initial = Number(p.initialDelaySeconds ?? 0) * 1000;
    const succ = Number(p.successThreshold ?? 1);
    const fail = Number(p.failureThreshold ?? 3);
    const timeout = Number(p.timeoutSeconds ?? 1) * 1000;
    const port = (v: unknown): number => {
      if (typeof v === "number") return v;
      const named = (c.spec.ports ?? []).find((x: KubeObject) => x.name === v);
      return named ? Number(named.containerPort) : Number(v);
    };
    let ok = 0;
    let bad = 0;
    const once = async (): Promise<boolean> => {
      if (p.tcpSocket) {
        return await new Promise<boolean>((res) => {
          const s = net.connect({ host: p.tcpSocket.host || r.ip, port: port(p.tcpSocket.port) });
          const done = (v: boolean) => {
            s.destroy();
            res(v);
          };
          s.setTimeout(timeout, () => done(false));
          s.once("connect", () => done(true));
          s.once("error", () => done(false));
        });
      }
      if (p.httpGet) {
        const scheme = String(p.httpGet.scheme ?? "HTTP").toLowerCase();
        const url = `${scheme}://${p.httpGet.host || r.ip}:${port(p.httpGet.port)}${p.httpGet.path ?? "/"}`;
        try {
          const resp = await fetch(url, { signal: AbortSignal.timeout(timeout) });
          return resp.status >= 200 && resp.status < 400;
        } catch {
          return false;
        }
      }
      if (p.exec?.command) {
        return await new Promise<boolean>((res) => {
          const ch = spawn(p.exec.command[0], p.exec.command.slice(1), { cwd: r.dir, env, stdio: "ignore", timeout });
          ch.once("exit", (code) => res(code === 0));
          ch.once("error", () => res(false));
        });
      }
      return true;
    };
    let running = false;
    const tick = async () => {
      if (running || c.state.kind !== "running") return;
      running = true;
      try {
        const good = await once();
        if (good) {
          ok++;
          bad = 0;
        } else {
          bad++;
          ok = 0;
        }
        const before = c.ready;
        if (good && ok >= succ) c.ready = true;
        if (!good && bad >= fail) c.ready = false;
        if (before !== c.ready && c.state.kind === "running") this.queueStatus(r);
      } finally {
        running = false;
      }
    };
    const start = setTimeout(() => {
      void tick();
      c.probeTimer = setInterval(() => void tick(), period);
    }, initial);
    c.probeTimer = start;
  }

  // ---------------------------------------------------------------- status

  private containerStatus(c: ContainerRun): KubeObject {
    const st = (s: CState | undefined): KubeObject => {
      if (!s) return {};
      if (s.kind === "waiting") return { waiting: { reason: s.reason, ...(s.message ? { message: s.message } : {}) } };
      if (s.kind === "running") return { running: { startedAt: s.startedAt } };
      const { kind: _k, ...t } = s;
      return { terminated: t };
    };
    return {
      name: c.name,
      image: c.image,
      imageID: c.image,
      containerID: c.started ? `mergevq://${c.name}-${c.restartCount}` : undefined,
      ready: c.ready,
      started: c.state.kind === "running",
      restartCount: c.restartCount,
      state: st(c.state),
      lastState: st(c.lastState),
    };
  }

  private buildStatus(r: PodRun): KubeObject {
    const now = nowIso();
    const prev = (type: string) =>
      (r.pod.status?.conditions ?? []).find((x: KubeObject) => x.type === type) as KubeObject | undefined;
    const cond = (type: string, ok: boolean, reason?: string) => {
      const status = ok ? "True" : "False";
      const p = prev(type);
      return {
        type,
        status,
        lastProbeTime: null,
        lastTransitionTime: p && p.status === status ? p.lastTransitionTime : now,
        ...(reason && !ok ? { reason } : {}),
      };
    };
    const terminal = r.phase === "Succeeded" || r.phase === "Failed";
    const allReady = r.initDone && r.containers.every((c) => c.ready) && !terminal;
    const initOk = r.initDone || r.initContainers.length === 0;
    return {
      phase: r.phase,
      ...(r.reason ? { reason: r.reason } : {}),
      ...(r.message ? { message: r.message } : {}),
      hostIP: "127.0.0.1",
      hostIPs: [{ ip: "127.0.0.1" }],
      podIP: r.ip,
      podIPs: [{ ip: r.ip }],
      startTime: r.startTime,
      qosClass: r.pod.status?.qosClass,
      conditions: [
        cond("PodReadyToStartContainers", !r.stopped || r.initDone),
        cond("Initialized", initOk, "ContainersNotInitialized"),
        cond("ContainersReady", allReady, terminal ? "PodCompleted" : "ContainersNotReady"),
        cond("Ready", allReady, terminal ? "PodCompleted" : "ContainersNotReady"),
        cond("PodScheduled", true),
        ...r.extraConditions,
      ],
      initContainerStatuses: r.initContainers.map((c) => this.containerStatus(c)),
      containerStatuses: r.containers.map((c) => this.containerStatus(c)),
    };
  }

  /** Coalescing, serialised status writer (one in flight per pod, latest state wins). */
  private queueStatus(r: PodRun): void {
    if (r.statusPending) return;
    r.statusPending = true;
    r.statusChain = r.statusChain.then(async () => {
      r.statusPending = false;
      await this.writeStatus(r);
    });
  }

  private async flushStatus(r: PodRun): Promise<void> {
    this.queueStatus(r);
    await r.statusChain;
  }

  private async writeStatus(r: PodRun): Promise<void> {
    const status = this.buildStatus(r);
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const updated = await this.kube.strategicPatch(`/api/v1/namespaces/${r.namespace}/pods/${r.name}/status`, {
          metadata: { uid: r.uid },
          status,
        });
        if (updated.metadata?.uid === r.uid) r.pod = updated;
        return;
      } catch (e) {
        if (e instanceof KubeError && (e.status === 404 || e.status === 409 || e.status === 422)) {
          if (e.status === 422) this.log(`status ${r.key}: ${e.message}`);
          return;
        }
        await sleep(200 * (attempt + 1));
      }
    }
  }

  // ---------------------------------------------------------------- servers

  private findContainer(
    ns: string,
    pod: string,
    container: string | undefined,
  ): { r: PodRun; c: ContainerRun } | undefined {
    const r = this.pods.get(`${ns}/${pod}`);
    if (!r) return undefined;
    const all = [...r.containers, ...r.initContainers];
    const c = container ? all.find((x) => x.name === container) : r.containers[0];
    return c ? { r, c } : undefined;
  }

  /** Kubelet `/containerLogs/{ns}/{pod}/{container}` (follow, tailLines, limitBytes, previous). */
  private async serveLogs(req: http.IncomingMessage, res: http.ServerResponse, u: URL): Promise<void> {
    const [, , ns, pod, container] = u.pathname.split("/").map(decodeURIComponent);
    const found = this.findContainer(ns, pod, container);
    if (!found) {
      res
        .writeHead(404, { "Content-Type": "text/plain" })
        .end(`container ${container} in pod ${ns}/${pod} not found\n`);
      return;
    }
    const { c } = found;
    const previous = u.searchParams.get("previous") === "true";
    const idx = previous ? c.restartCount - 1 : c.restartCount;
    const file = path.join(c.logDir, `${idx}.log`);
    if (idx < 0 || !existsSync(file)) {
      res
        .writeHead(previous ? 400 : 200, { "Content-Type": "text/plain" })
        .end(previous ? `previous terminated container "${c.name}" in pod "${pod}" not found\n` : "");
      return;
    }
    let text = readFileSync(file);
    const tail = u.searchParams.get("tailLines");
    if (tail !== null) {
      const lines = text.toString("utf8").split("\n");
      const hasNl = lines.at(-1) === "";
      if (hasNl) lines.pop();
      const n = Math.max(0, Number(tail));
      text = Buffer.from(n === 0 ? "" : lines.slice(-n).join("\n") + (hasNl ? "\n" : ""));
    }
    const limit = u.searchParams.get("limitBytes");
    let budget = limit ? Number(limit) : Number.POSITIVE_INFINITY;
    res.writeHead(200, { "Content-Type": "text/plain", "Transfer-Encoding": "chunked" });
    const first = text.subarray(0, Math.min(text.length, budget));
    res.write(first);
    budget -= first.length;
    if (u.searchParams.get("follow") !== "true" || budget <= 0) {
      res.end();
      return;
    }
    let offset = statSync(file).size;
    let closed = false;
    req.on("close", () => {
      closed = true;
    });
    while (!closed && budget > 0) {
      const size = statSync(file).size;
      if (size > offset) {
        const fd = openSync(file, "r");
        const buf = Buffer.alloc(Math.min(size - offset, budget));
        readSync(fd, buf, 0, buf.length, offset);
        closeSync(fd);
        offset += buf.length;
        budget -= buf.length;
        res.write(buf);
      } else if (c.proc === undefined || idx !== c.restartCount) break;
      await sleep(200);
    }
    res.end();
  }

  private async startKubeletServer(): Promise<void> {
    const tls = this.opts.tls;
    if (!tls) return;
    const srv = https.createServer(
      {
        cert: readFileSync(tls.cert),
        key: readFileSync(tls.key),
        ca: readFileSync(tls.ca),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const u = new URL(req.url ?? "/", "https://127.0.0.1");
        if (u.pathname === "/healthz") return void res.end("ok");
        if (u.pathname.startsWith("/containerLogs/")) {
          void this.serveLogs(req, res, u).catch((e) => {
            if (!res.headersSent) res.writeHead(500);
            res.end(String(e));
          });
          return;
        }
        res.writeHead(404).end("not found\n");
      },
    );
    await new Promise<void>((resolve) => srv.listen(this.opts.kubeletPort ?? 0, "127.0.0.1", () => resolve()));
    const addr = srv.address();
    this.kubeletPort = typeof addr === "object" && addr ? addr.port : 0;
    this.servers.push(srv);
  }

  /** Loopback HTTP control: POST /nodes/<n>/fail|recover, GET /pods, GET /healthz. */
  private async startControlServer(port: number): Promise<void> {
    const srv = http.createServer((req, res) => {
      const u = new URL(req.url ?? "/", "http://127.0.0.1");
      const json = (code: number, body: unknown) =>
        res.writeHead(code, { "Content-Type": "application/json" }).end(`${JSON.stringify(body)}\n`);
      const m = /^\/nodes\/([^/]+)\/(fail|recover)$/.exec(u.pathname);
      if (req.method === "POST" && m) {
        const op = m[2] === "fail" ? this.failNode(m[1]) : this.recoverNode(m[1]).then(() => []);
        void op.then(
          (pods) => json(200, { node: m[1], action: m[2], pods }),
          (e) => json(400, { error: String(e) }),
        );
        return;
      }
      if (u.pathname === "/healthz") return json(200, { ok: true, nodes: this.nodes, failed: [...this.failed] });
      if (u.pathname === "/pods") {
        return json(
          200,
          [...this.pods.values()].map((r) => ({
            key: r.key,
            node: r.node,
            ip: r.ip,
            phase: r.phase,
            pids: [...r.initContainers, ...r.containers].map((c) => c.proc?.pid).filter(Boolean),
          })),
        );
      }
      json(404, { error: "not found" });
    });
    await new Promise<void>((resolve) => srv.listen(port, "127.0.0.1", () => resolve()));
    const addr = srv.address();
    this.controlUrl = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : port}`;
    this.servers.push(srv);
  }
}

/** `MERGEVQ_IMAGE_COMMANDS` (JSON array of ImageCommand) or `MERGEVQ_IMAGE_COMMANDS_FILE` (path to one). */
export function imageCommandsFromEnv(env = process.env): ImageCommand[] | undefined {
  const raw =
    env.MERGEVQ_IMAGE_COMMANDS ??
    (env.MERGEVQ_IMAGE_COMMANDS_FILE ? readFileSync(env.MERGEVQ_IMAGE_COMMANDS_FILE, "utf8") : undefined);
  if (!raw) return undefined;
  const parsed = JSON.parse(raw) as ImageCommand[];
  if (
    !Array.isArray(parsed) ||
    parsed.some((e) => typeof e.repositorySuffix !== "string" || !Array.isArray(e.entrypoint))
  ) {
    throw new Error("MERGEVQ_IMAGE_COMMANDS: must be a JSON array of {repositorySuffix, entrypoint[], aliases?[]}");
  }
  return parsed;
}

export async function startNodeAgent(opts: NodeAgentOptions): Promise<NodeAgent> {
  const a = new NodeAgent(opts);
  try {
    await a.start();
  } catch (e) {
    await a.stop();
    throw e;
  }
  return a;
}

/** Config file format for the standalone process (`--config <file>`). */
export interface NodeAgentProcessConfig extends NodeAgentOptions {
  /** Written (JSON {kubeletPort, controlUrl, pid}) once the agent is ready. */
  readyFile: string;
}

async function main(): Promise<void> {
  const i = process.argv.indexOf("--config");
  if (i < 0 || !process.argv[i + 1]) {
    process.stderr.write("usage: node --import tsx test/cluster/node-agent.ts --config <file.json>\n");
    process.exit(2);
  }
  const cfg = JSON.parse(readFileSync(process.argv[i + 1], "utf8")) as NodeAgentProcessConfig;
  const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} node-agent: ${msg}\n`);
  const agent = await startNodeAgent({ ...cfg, log });
  let stopping = false;
  const shutdown = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: stopping pods`);
    void agent.stop().finally(() => process.exit(0));
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  writeFileSync(
    cfg.readyFile,
    JSON.stringify({ kubeletPort: agent.kubeletPort, controlUrl: agent.controlUrl, pid: process.pid }),
  );
  log(`ready: nodes ${agent.nodes.join(",")} kubelet port ${agent.kubeletPort} control ${agent.controlUrl}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    process.stderr.write(`node-agent: ${(e as Error).stack}\n`);
    process.exit(1);
  });
}
