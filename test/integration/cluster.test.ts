// Integration test of the local test cluster itself (test/cluster/): real etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, MinIO and the node agent running pods as processes.
//
// Decision: this file ALWAYS starts its own cluster with startCluster() (≈5-10 s) instead of using a
// shared one from KUBECONFIG, because it tests the harness (node failure, teardown, signal cleanup) and
// needs the node agent's control endpoint. Other suites use the shared cluster through testEnv().
//
//   node --import tsx --test test/integration/cluster.test.ts
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import * as k8s from "@kubernetes/client-node";
import { type Cluster, clusterPids, REPO_ROOT, startCluster } from "../cluster/cluster.ts";
import { s3Client } from "../cluster/minio.ts";
import { portOpen, sleep } from "../cluster/proc.ts";
import { eventually, loadKubeConfig, makeNamespace, type TestNamespace } from "../cluster/testenv.ts";

const run = promisify(execFile);

describe("local test cluster", { timeout: 240_000 }, () => {
  let cluster: Cluster;
  let kc: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let ns: TestNamespace;
  const kubectl = async (...args: string[]) =>
    (
      await run(path.join(cluster.binDir, "kubectl"), args, {
        env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
        maxBuffer: 16 << 20,
      })
    ).stdout;
  const pod = (name: string) => core.readNamespacedPod({ name, namespace: ns.name });
  const waitPod = (name: string, pred: (p: k8s.V1Pod) => boolean, timeoutMs = 30_000) =>
    eventually(
      async () => {
        const p = await pod(name);
        return pred(p) ? p : undefined;
      },
      { timeoutMs, message: `pod ${name}` },
    );
  const shPod = (
    name: string,
    script: string,
    extra: Partial<k8s.V1PodSpec> = {},
    c: Partial<k8s.V1Container> = {},
  ): k8s.V1Pod => ({
    metadata: { name },
    spec: {
      restartPolicy: "Never",
      terminationGracePeriodSeconds: 2,
      containers: [{ name: "main", image: "busybox:1.36", command: ["sh", "-c", script], ...c }],
      ...extra,
    },
  });

  before(async () => {
    cluster = await startCluster({ buckets: ["mergevq", "mergevq-test"] });
    process.stderr.write(`# cluster started in ${cluster.startMs} ms\n`);
    kc = loadKubeConfig(cluster.kubeconfigPath);
    core = kc.makeApiClient(k8s.CoreV1Api);
    ns = await makeNamespace(kc, "cluster-test");
  });
  after(async () => {
    await ns?.cleanup().catch(() => {});
    await cluster?.stop();
  });

  test("apiserver /readyz is ok and /version is v1.36.3", async () => {
    assert.equal((await kubectl("get", "--raw", "/readyz")).trim(), "ok");
    const v = await kc.makeApiClient(k8s.VersionApi).getCode();
    assert.equal(v.gitVersion, "v1.36.3");
    assert.equal(v.minor, "36");
  });

  test("a CRD applies with kubectl and `kubectl explain` describes it", async () => {
    const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.mergevq.io}
spec:
  group: test.mergevq.io
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: Desired widget.
            properties:
              size: {type: integer, minimum: 1, description: Number of sprockets.}
`;
    const child = spawn(path.join(cluster.binDir, "kubectl"), ["apply", "-f", "-"], {
      env: { ...process.env, KUBECONFIG: cluster.kubeconfigPath },
    });
    child.stdin.end(crd);
    assert.equal(await new Promise((r) => child.on("exit", r)), 0);
    await eventually(async () => (await kubectl("explain", "widgets.spec.size")).includes("Number of sprockets"), {
      timeoutMs: 20_000,
    });
    // Schema validation is live: size 0 is rejected.
    const objs = kc.makeApiClient(k8s.CustomObjectsApi);
    await assert.rejects(
      objs.createNamespacedCustomObject({
        group: "test.mergevq.io",
        version: "v1",
        namespace: ns.name,
        plural: "widgets",
        body: { apiVersion: "test.mergevq.io/v1", kind: "Widget", metadata: { name: "w" }, spec: { size: 0 } },
      }),
    );
  });

  test("the project's CRDs in crds/ apply and are explained", async () => {
    const files = readdirSync(path.join(REPO_ROOT, "crds")).filter((f) => f.endsWith(".yaml"));
    assert.ok(files.length > 0, "crds/ holds no YAML");
    await kubectl("apply", "--server-side", "-f", path.join(REPO_ROOT, "crds"));
    const crds = JSON.parse(await kubectl("get", "crd", "-o", "json")) as {
      items: { spec: { names: { plural: string } } }[];
    };
    for (const f of files) {
      const plural = f
        .replace(/\.yaml$/, "")
        .split("_")
        .at(-1) as string;
      assert.ok(
        crds.items.some((c) => c.spec.names.plural === plural),
        `${plural} not installed`,
      );
      await eventually(async () => (await kubectl("explain", `${plural}.spec`)).includes("FIELDS"), {
        timeoutMs: 20_000,
      });
    }
  });

  test("a pod exiting 3 ends Failed with exit code 3 and `kubectl logs` returns its output", async () => {
    await core.createNamespacedPod({ namespace: ns.name, body: shPod("exit3", "echo hi; exit 3") });
    const p = await waitPod("exit3", (x) => x.status?.phase === "Failed");
    const st = p.status?.containerStatuses?.[0]?.state?.terminated;
    assert.equal(st?.exitCode, 3);
    assert.equal(st?.reason, "Error");
    assert.match(p.spec?.nodeName ?? "", /^mergevq-node-/);
    assert.match(p.status?.podIP ?? "", /^127\.\d+\.\d+\.\d+$/);
    assert.equal((await kubectl("logs", "-n", ns.name, "exit3")).trim(), "hi");
    const viaClient = await core.readNamespacedPodLog({ name: "exit3", namespace: ns.name, container: "main" });
    assert.equal(String(viaClient).trim(), "hi");
  });

  test("termination messages: /dev/termination-log, custom path and FallbackToLogsOnError", async () => {
    await core.createNamespacedPod({
      namespace: ns.name,
      body: {
        metadata: { name: "term" },
        spec: {
          restartPolicy: "Never",
          containers: [
            {
              name: "a",
              image: "busybox",
              command: ["sh", "-c", "printf 'bye from a' > /dev/termination-log; exit 0"],
            },
            {
              name: "b",
              image: "busybox",
              terminationMessagePath: "/tmp/custom-msg",
              command: ["sh", "-c", 'printf "custom %s" "$TERMINATION_MESSAGE_PATH" > /tmp/custom-msg; exit 1'],
            },
            {
              name: "c",
              image: "busybox",
              terminationMessagePolicy: "FallbackToLogsOnError",
              command: ["sh", "-c", "echo line1; echo fatal: boom; exit 2"],
            },
          ],
        },
      },
    });
    const p = await waitPod("term", (x) => x.status?.phase === "Failed");
    const byName = Object.fromEntries((p.status?.containerStatuses ?? []).map((c) => [c.name, c.state?.terminated]));
    assert.equal(byName.a?.message, "bye from a");
    assert.equal(byName.a?.reason, "Completed");
    assert.match(byName.b?.message ?? "", /^custom \/.+/);
    assert.ok(!byName.b?.message?.includes("/tmp/custom-msg"), "terminationMessagePath should map to a per-pod file");
    assert.equal(byName.c?.exitCode, 2);
    assert.equal(byName.c?.message, "line1\nfatal: boom");
  });

  test("env: secretKeyRef, configMapKeyRef, envFrom, downward API and $(VAR) expansion", async () => {
    await core.createNamespacedSecret({
      namespace: ns.name,
      body: { metadata: { name: "s" }, stringData: { token: "t0ps3cret" } },
    });
    await core.createNamespacedConfigMap({
      namespace: ns.name,
      body: { metadata: { name: "cm" }, data: { mode: "fast", A: "1" } },
    });
    await core.createNamespacedPod({
      namespace: ns.name,
      body: {
        metadata: { name: "envp", labels: { team: "vq" } },
        spec: {
          restartPolicy: "Never",
          containers: [
            {
              name: "main",
              image: "busybox",
              command: ["sh", "-c", 'echo "$TOKEN|$MODE|$CFG_A|$POD|$NS|$NODE|$IP|$TEAM|$GREETING|$(MODE)"'],
              envFrom: [{ configMapRef: { name: "cm" }, prefix: "CFG_" }],
              env: [
                { name: "TOKEN", valueFrom: { secretKeyRef: { name: "s", key: "token" } } },
                { name: "MODE", valueFrom: { configMapKeyRef: { name: "cm", key: "mode" } } },
                { name: "POD", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                { name: "NS", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
                { name: "NODE", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
                { name: "IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
                { name: "TEAM", valueFrom: { fieldRef: { fieldPath: "metadata.labels['team']" } } },
                { name: "GREETING", value: "hello-$(POD)" },
              ],
            },
          ],
        },
      },
    });
    const p = await waitPod("envp", (x) => x.status?.phase === "Succeeded");
    const out = (await kubectl("logs", "-n", ns.name, "envp")).trim();
    assert.equal(out, `t0ps3cret|fast|1|envp|${ns.name}|${p.spec?.nodeName}|${p.status?.podIP}|vq|hello-envp|fast`);
  });

  test("a pod requesting more nvidia.com/gpu than any node has stays Pending (Unschedulable)", async () => {
    const nodes = await core.listNode();
    const maxGpu = Math.max(...nodes.items.map((n) => Number(n.status?.allocatable?.["nvidia.com/gpu"] ?? 0)));
    assert.ok(maxGpu > 0, "nodes advertise nvidia.com/gpu");
    assert.ok(nodes.items.every((n) => Number(n.status?.allocatable?.["huawei.com/Ascend910"] ?? 0) > 0));
    const res = { "nvidia.com/gpu": String(maxGpu + 1) };
    await core.createNamespacedPod({
      namespace: ns.name,
      body: shPod("toobig", "echo never", {}, { resources: { limits: res, requests: res } }),
    });
    const p = await waitPod("toobig", (x) =>
      (x.status?.conditions ?? []).some(
        (c) => c.type === "PodScheduled" && c.status === "False" && c.reason === "Unschedulable",
      ),
    );
    assert.equal(p.status?.phase, "Pending");
    assert.equal(p.spec?.nodeName, undefined);
    assert.match(p.status?.conditions?.find((c) => c.type === "PodScheduled")?.message ?? "", /nvidia\.com\/gpu/);
    // A request that fits is scheduled and runs.
    const fit = { "nvidia.com/gpu": String(maxGpu) };
    await core.createNamespacedPod({
      namespace: ns.name,
      body: shPod("fits", "exit 0", {}, { resources: { limits: fit, requests: fit } }),
    });
    await waitPod("fits", (x) => x.status?.phase === "Succeeded");
  });

  test("deleting an owner cascades to its pod (garbage collector + agent finalises the deletion)", async () => {
    const owner = await core.createNamespacedConfigMap({ namespace: ns.name, body: { metadata: { name: "owner" } } });
    const ref = { apiVersion: "v1", kind: "ConfigMap", name: "owner", uid: owner.metadata?.uid as string };
    // The child ignores SIGTERM: the agent must SIGKILL it after the 2 s grace period.
    const child = shPod("child", "trap '' TERM; echo started; while true; do sleep 1; done");
    child.metadata = { name: "child", ownerReferences: [ref] };
    await core.createNamespacedPod({ namespace: ns.name, body: child });
    await waitPod("child", (x) => x.status?.phase === "Running");
    await core.deleteNamespacedConfigMap({ name: "owner", namespace: ns.name });
    const t = Date.now();
    await eventually(
      async () => {
        try {
          await pod("child");
          return false;
        } catch (e) {
          return (e as { code?: number }).code === 404;
        }
      },
      { timeoutMs: 30_000, message: "child pod deleted" },
    );
    assert.ok(Date.now() - t >= 1500, "deletion honoured the grace period");
  });

  test("two pods of a headless service reach each other by hostname (peer created first)", async () => {
    await core.createNamespacedService({
      namespace: ns.name,
      body: {
        metadata: { name: "rdzv" },
        spec: { clusterIP: "None", selector: { app: "rdzv" }, ports: [{ port: 7000 }] },
      },
    });
    const client =
      "const net=require('net');const h=process.env.MASTER_ADDR;console.log('addr',h);" +
      "const go=()=>{const s=net.connect(7000,h,()=>s.write('ping'));s.on('data',d=>{console.log('got',String(d));process.exit(0)});" +
      "s.on('error',()=>setTimeout(go,200))};go();";
    const server =
      "const net=require('net');net.createServer(s=>s.on('data',d=>{s.end('pong:'+d);setTimeout(()=>process.exit(0),100)})).listen(7000,process.env.POD_IP,()=>console.log('listening',process.env.POD_IP))";
    const podSpec = (name: string, hostname: string, js: string, extra: Partial<k8s.V1Container> = {}): k8s.V1Pod => ({
      metadata: { name, labels: { app: "rdzv" } },
      spec: {
        restartPolicy: "Never",
        hostname,
        subdomain: "rdzv",
        containers: [
          {
            name: "main",
            image: "node:20",
            command: ["node", "-e", js],
            env: [
              { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
              { name: "MASTER_ADDR", value: "rank-0.rdzv" },
            ],
            ...extra,
          },
        ],
      },
    });
    await core.createNamespacedPod({ namespace: ns.name, body: podSpec("rank-1", "rank-1", client) });
    await sleep(500);
    await core.createNamespacedPod({
      namespace: ns.name,
      body: podSpec("rank-0", "rank-0", server, { readinessProbe: { tcpSocket: { port: 7000 }, periodSeconds: 1 } }),
    });
    const r0 = await waitPod(
      "rank-0",
      (x) =>
        x.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true ||
        x.status?.phase === "Succeeded",
    );
    const r1 = await waitPod("rank-1", (x) => x.status?.phase === "Succeeded" || x.status?.phase === "Failed");
    assert.equal(r1.status?.phase, "Succeeded");
    const logs = await kubectl("logs", "-n", ns.name, "rank-1");
    assert.match(logs, new RegExp(`addr ${r0.status?.podIP?.replaceAll(".", "\\.")}\\n`));
    assert.match(logs, /got pong:ping/);
  });

  test("MinIO: put/get, multipart upload, lib-storage Upload", async () => {
    const s3 = s3Client(cluster.s3);
    const Bucket = "mergevq-test";
    await s3.send(new PutObjectCommand({ Bucket, Key: "a/hello.txt", Body: "hello s3" }));
    const got = await s3.send(new GetObjectCommand({ Bucket, Key: "a/hello.txt" }));
    assert.equal(await got.Body?.transformToString(), "hello s3");
    const part = Buffer.alloc(5 * 1024 * 1024, 7);
    const mp = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: "mp.bin" }));
    const parts = [];
    for (const [i, body] of [part, Buffer.from("tail")].entries()) {
      const r = await s3.send(
        new UploadPartCommand({ Bucket, Key: "mp.bin", UploadId: mp.UploadId, PartNumber: i + 1, Body: body }),
      );
      parts.push({ ETag: r.ETag, PartNumber: i + 1 });
    }
    await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key: "mp.bin",
        UploadId: mp.UploadId,
        MultipartUpload: { Parts: parts },
      }),
    );
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key: "mp.bin" }));
    assert.equal(head.ContentLength, part.length + 4);
    assert.match(head.ETag ?? "", /-2"$/);
    const big = Buffer.alloc(11 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big[i] = i % 251;
    await new Upload({ client: s3, params: { Bucket, Key: "big.bin", Body: big }, partSize: 5 * 1024 * 1024 }).done();
    const back = Buffer.from(
      await (await s3.send(new GetObjectCommand({ Bucket, Key: "big.bin" }))).Body!.transformToByteArray(),
    );
    assert.ok(back.equals(big));
    s3.destroy();
    // The operator-facing Secret carries the same credentials.
    const sec = await core.readNamespacedSecret({ name: "mergevq-s3", namespace: "mergevq-system" });
    assert.equal(Buffer.from(sec.data?.AWS_ACCESS_KEY_ID ?? "", "base64").toString(), cluster.s3.accessKeyId);
  });

  test("simulated node failure: pods Failed/NodeLost with DisruptionTarget, node NotReady, then recovery", async () => {
    const node = cluster.nodes[1];
    await core.createNamespacedPod({
      namespace: ns.name,
      body: shPod("victim", "while true; do sleep 1; done", { nodeName: node }),
    });
    await waitPod("victim", (x) => x.status?.phase === "Running");
    const before = (await (await fetch(`${cluster.nodeAgentUrl}/pods`)).json()) as { key: string; pids: number[] }[];
    const pids = before.find((p) => p.key === `${ns.name}/victim`)?.pids ?? [];
    assert.equal(pids.length, 1);
    const affected = await cluster.failNode(node);
    assert.ok(affected.includes(`${ns.name}/victim`));
    const p = await waitPod("victim", (x) => x.status?.phase === "Failed");
    assert.equal(p.status?.reason, "NodeLost");
    assert.ok(p.status?.conditions?.some((c) => c.type === "DisruptionTarget" && c.status === "True"));
    await eventually(
      () => {
        try {
          process.kill(pids[0], 0);
          return false;
        } catch {
          return true;
        }
      },
      { timeoutMs: 5000, message: "victim process killed" },
    );
    const n = await core.readNode({ name: node });
    assert.equal(n.status?.conditions?.find((c) => c.type === "Ready")?.status, "False");
    await cluster.recoverNode(node);
    const n2 = await core.readNode({ name: node });
    assert.equal(n2.status?.conditions?.find((c) => c.type === "Ready")?.status, "True");
  });

  test("stop() leaves no processes, ports or work dir behind", async () => {
    const ports = [
      Number(new URL(cluster.server).port),
      cluster.controlPlane.etcdPort,
      Number(new URL(cluster.s3.endpoint).port),
      cluster.kubeletPort as number,
    ];
    for (const port of ports) assert.ok(await portOpen(port), `port ${port} open while running`);
    assert.ok(clusterPids(cluster.id).length >= 6, "control plane, MinIO and agent processes are marked");
    await ns.cleanup();
    await cluster.stop();
    assert.deepEqual(clusterPids(cluster.id), []);
    for (const port of ports) assert.equal(await portOpen(port), false, `port ${port} still open`);
    assert.throws(() => readdirSync(cluster.dir));
  });

  for (const sig of ["SIGINT", "SIGKILL"] as const) {
    test(`a cluster owner killed with ${sig} leaves nothing behind`, async () => {
      const child = spawn(
        process.execPath,
        ["--no-warnings", "--import", "tsx", path.join(REPO_ROOT, "test/cluster/hold.ts")],
        {
          stdio: ["ignore", "pipe", "inherit"],
        },
      );
      const line = await new Promise<string>((resolve, reject) => {
        let buf = "";
        child.stdout.on("data", (d) => {
          buf += d;
          if (buf.includes("\n")) resolve(buf.split("\n")[0]);
        });
        child.on("exit", (c) => reject(new Error(`hold.ts exited ${c}`)));
      });
      const info = JSON.parse(line) as { id: string; dir: string; ports: number[] };
      assert.ok(clusterPids(info.id).length >= 6);
      child.kill(sig);
      await eventually(() => clusterPids(info.id).length === 0, { timeoutMs: 20_000, message: "all processes gone" });
      // A listener can outlive its process by a moment while the kernel tears the socket down.
      for (const port of info.ports) {
        await eventually(async () => !(await portOpen(port)), { timeoutMs: 10_000, message: `port ${port} closed` });
      }
      await eventually(
        () => {
          try {
            readdirSync(info.dir);
            return false;
          } catch {
            return true;
          }
        },
        { timeoutMs: 10_000, message: "work dir removed" },
      );
    });
  }
});
