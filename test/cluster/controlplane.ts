// A real Kubernetes control plane as local processes on loopback: etcd, kube-apiserver,
// kube-controller-manager (all default controllers: GC, namespace lifecycle, SA tokens, node lifecycle,
// Deployments/Jobs, ...) and kube-scheduler. No kubelet: see node-agent.ts.
import { readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import https from "node:https";
import path from "node:path";
import { generatePki, type Pki, writeKubeconfig } from "./pki.ts";
import { freePorts, type Managed, spawnManaged, stopManaged, tailFile, waitFor } from "./proc.ts";

export interface ControlPlane {
  dir: string;
  pki: Pki;
  /** `https://127.0.0.1:<port>` */
  server: string;
  apiserverPort: number;
  etcdPort: number;
  /** Admin kubeconfig (system:masters client cert, embedded data). */
  kubeconfigPath: string;
  processes: Managed[];
  stop(): Promise<void>;
}

export interface ControlPlaneOptions {
  binDir: string;
  dir: string;
  clusterId: string;
  /** Start kube-controller-manager (default true). */
  controllerManager?: boolean;
  /** Start kube-scheduler (default true). */
  scheduler?: boolean;
  timeoutMs?: number;
  log?: (msg: string) => void;
}

/** GET a path on the apiserver with the admin client cert; resolves {status, body}. */
export function apiGet(cp: Pick<ControlPlane, "server" | "pki">, p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${cp.server}${p}`,
      {
        ca: readFileSync(cp.pki.ca.cert),
        cert: readFileSync(cp.pki.admin.cert),
        key: readFileSync(cp.pki.admin.key),
        timeout: 5000,
      },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const log = opts.log ?? (() => {});
  const dir = opts.dir;
  await mkdir(dir, { recursive: true });
  const bin = (n: string) => path.join(opts.binDir, n);
  const processes: Managed[] = [];
  const stop = async () => {
    // Reverse start order: scheduler/controller-manager, apiserver, etcd last.
    for (const p of [...processes].reverse()) await stopManaged(p, 5000);
  };
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const anyExited = () => {
    const dead = processes.find((p) => p.exited);
    return dead ? `${dead.name} ${dead.exited}\n--- ${dead.name} log ---\n${tailFile(dead.logPath)}` : undefined;
  };
  try {
    let t = Date.now();
    const pki = generatePki(path.join(dir, "pki"));
    log(`pki generated in ${Date.now() - t} ms`);
    const [etcdPort, peerPort, apiserverPort, cmPort, schedPort] = await freePorts(5);
    const server = `https://127.0.0.1:${apiserverPort}`;

    t = Date.now();
    const etcd = spawnManaged(
      "etcd",
      bin("etcd"),
      [
        "--name=mergevq",
        `--data-dir=${path.join(dir, "etcd")}`,
        `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
        `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
        `--listen-peer-urls=http://127.0.0.1:${peerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${peerPort}`,
        `--initial-cluster=mergevq=http://127.0.0.1:${peerPort}`,
        "--unsafe-no-fsync=true",
        "--log-level=warn",
        "--quota-backend-bytes=2147483648",
      ],
      { clusterId: opts.clusterId, logPath: path.join(dir, "etcd.log") },
    );
    processes.push(etcd);
    await waitFor(
      "etcd /health",
      async () => {
        const r = await fetch(`http://127.0.0.1:${etcdPort}/health`);
        return r.ok && ((await r.json()) as { health?: string }).health === "true";
      },
      { timeoutMs, abort: anyExited },
    );
    log(`etcd ready in ${Date.now() - t} ms`);

    t = Date.now();
    const apiserver = spawnManaged(
      "kube-apiserver",
      bin("kube-apiserver"),
      [
        `--etcd-servers=http://127.0.0.1:${etcdPort}`,
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        `--secure-port=${apiserverPort}`,
        `--cert-dir=${path.join(dir, "apiserver-certs")}`,
        `--tls-cert-file=${pki.apiserver.cert}`,
        `--tls-private-key-file=${pki.apiserver.key}`,
        `--client-ca-file=${pki.ca.cert}`,
        `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
        `--service-account-key-file=${pki.saPub}`,
        `--service-account-signing-key-file=${pki.saKey}`,
        "--service-cluster-ip-range=10.0.0.0/24",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--profiling=false",
        "--endpoint-reconciler-type=none",
        // Kubelet client (apiserver → node agent) so `kubectl logs` is proxied to the agent.
        `--kubelet-client-certificate=${pki.apiserverKubeletClient.cert}`,
        `--kubelet-client-key=${pki.apiserverKubeletClient.key}`,
        `--kubelet-certificate-authority=${pki.ca.cert}`,
        "--kubelet-preferred-address-types=InternalIP",
        "--v=1",
      ],
      { clusterId: opts.clusterId, logPath: path.join(dir, "kube-apiserver.log") },
    );
    processes.push(apiserver);
    const partial = { server, pki };
    await waitFor(
      "kube-apiserver /readyz",
      async () => {
        const r = await apiGet(partial, "/readyz");
        return r.status === 200 && r.body.trim() === "ok";
      },
      { timeoutMs, intervalMs: 250, abort: anyExited },
    );
    log(`kube-apiserver ready in ${Date.now() - t} ms`);

    const kubeconfigPath = path.join(dir, "admin.kubeconfig");
    writeKubeconfig(kubeconfigPath, server, pki.ca.cert, pki.admin);

    if (opts.controllerManager !== false) {
      processes.push(
        spawnManaged(
          "kube-controller-manager",
          bin("kube-controller-manager"),
          [
            `--kubeconfig=${kubeconfigPath}`,
            `--authentication-kubeconfig=${kubeconfigPath}`,
            `--authorization-kubeconfig=${kubeconfigPath}`,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            `--secure-port=${cmPort}`,
            `--cert-dir=${path.join(dir, "kcm-certs")}`,
            `--service-account-private-key-file=${pki.saKey}`,
            `--root-ca-file=${pki.ca.cert}`,
            `--cluster-signing-cert-file=${pki.ca.cert}`,
            `--cluster-signing-key-file=${pki.ca.key}`,
            "--controllers=*",
            "--use-service-account-credentials=false",
            "--concurrent-gc-syncs=5",
            "--v=1",
          ],
          { clusterId: opts.clusterId, logPath: path.join(dir, "kube-controller-manager.log") },
        ),
      );
    }
    if (opts.scheduler !== false) {
      processes.push(
        spawnManaged(
          "kube-scheduler",
          bin("kube-scheduler"),
          [
            `--kubeconfig=${kubeconfigPath}`,
            `--authentication-kubeconfig=${kubeconfigPath}`,
            `--authorization-kubeconfig=${kubeconfigPath}`,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            `--secure-port=${schedPort}`,
            `--cert-dir=${path.join(dir, "scheduler-certs")}`,
            "--v=1",
          ],
          { clusterId: opts.clusterId, logPath: path.join(dir, "kube-scheduler.log") },
        ),
      );
    }
    if (opts.controllerManager !== false) {
      // The service-account controller creating `default` in `default` proves the controller-manager runs.
      t = Date.now();
      await waitFor(
        "kube-controller-manager (default ServiceAccount)",
        async () => (await apiGet(partial, "/api/v1/namespaces/default/serviceaccounts/default")).status === 200,
        { timeoutMs, intervalMs: 250, abort: anyExited },
      );
      log(`kube-controller-manager working in ${Date.now() - t} ms`);
    }
    return { dir, pki, server, apiserverPort, etcdPort, kubeconfigPath, processes, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
