// The real-kubelet tier (make kind-e2e): what only pods in containers on a real kubelet can show. Runs on kind
// against the images built by hack/images/build.sh (the chart is installed with them; see hack/kind-e2e.sh), and
// reads only KUBECONFIG and the S3 variables like every suite. On the local process cluster it is not run: the
// node agent has no containers, images, PID 1 or extended resources.
//   1. images: the operator runs from its compiled image as uid 65532 under tini, Node 24, read-only root.
//   2. one 2-node TokenizerTraining through three failures: the operator pod deleted mid-run (the run keeps its
//      two pods: none duplicated, none orphaned); a trainer pod deleted (kubelet SIGTERM → the trainer
//      checkpoints that step → PodDeleted restart, not counted, resuming from that checkpoint); a trainer
//      container SIGKILLed (exit 137 → counted group restart from the last checkpoint, classified by that exit
//      and not by the peer's exit 75); then Succeeded, with the native tfjs backend in the pod logs.
//   3. a dataset with a corrupt JPEG and a truncated shard: skipped, counted in progress.json, run Succeeded.
//   4. bad input: an invalid CR is rejected at admission naming the field; a missing Secret is Admitted=False.
//   5. the GPU accelerator profile: a worker advertising nvidia.com/gpu (node status patch) gets the pod, which
//      requests the GPU and carries the NVIDIA env; with the trainer-gpu image (CUDA libtensorflow under
//      tfjs-node-gpu) it trains to Succeeded on CPU kernels (kind has no GPU), and `backend check --parity` in
//      that image reports no GPU device and T1 forward+backward equal to wasm.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import * as k8s from "@kubernetes/client-node";
import { Progress } from "../../common/src/contract.ts";
import {
  createRun,
  demoEnv,
  ensureS3Secret,
  installOperator,
  loadExample,
  prepareData,
  REPO,
  watchRun,
} from "../../hack/demo/flow.ts";
import type { TokenizerTraining } from "../../operator/src/api/v1alpha1/index.ts";
import { readImageNetSplit } from "../../trainer/src/data/imagenet.ts";
import { packShard } from "../../trainer/src/data/shards.ts";
import { createS3Client, createStorage, s3SettingsFromEnv } from "../../trainer/src/io/s3.ts";
import { eventually, loadKubeConfig, makeNamespace, type TestNamespace } from "../cluster/testenv.ts";
import { run } from "../support/kubectl.ts";

const RELEASE = "mergevq-kind";
const SYSTEM = "mergevq-kind-system";
const GROUP = "mergevq.ai";
const VERSION = "v1alpha1";
const print = (l: string) => process.stderr.write(`${l}\n`);

type Status = NonNullable<TokenizerTraining["status"]>;

describe("kind: containers on a real kubelet", () => {
  let kc: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let custom: k8s.CustomObjectsApi;
  let ns: TestNamespace;
  let dataset = "";

  const kubectl = (args: string[], timeoutMs = 60_000, okCodes: number[] = [0]) => {
    const r = run("kubectl", args, { timeoutMs });
    assert.ok(okCodes.includes(r.status ?? -1), `kubectl ${args.join(" ")}: exit ${r.status}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const status = async (name: string): Promise<Status> => {
    const o = (await custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace: ns.name,
      plural: "tokenizertrainings",
      name,
    })) as { status?: Status };
    return o.status ?? {};
  };
  const runPods = async (name: string) =>
    (await core.listNamespacedPod({ namespace: ns.name, labelSelector: `mergevq.ai/run=${name}` })).items;
  const envOf = (pod: k8s.V1Pod, name: string) => pod.spec?.containers[0].env?.find((e) => e.name === name)?.value;
  const stepOf = (uri: string | undefined) => Number(/step-(\d{9})\.ckpt$/.exec(uri ?? "")?.[1] ?? Number.NaN);
  const running = (p: k8s.V1Pod) => p.status?.phase === "Running" && !p.metadata?.deletionTimestamp;
  /** One line of the run's state for timelines and timeout messages: status and every pod with its exit codes. */
  const snapshot = async (name: string) => {
    const st = await status(name);
    const pods = (await runPods(name)).map((p) => {
      const exits = (p.status?.containerStatuses ?? [])
        .map(
          (c) =>
            `${c.name}:${c.state?.terminated ? `exit ${c.state.terminated.exitCode}` : c.state?.running ? "running" : "waiting"}`,
        )
        .join(",");
      const gone = p.metadata?.deletionTimestamp ? " deleting" : "";
      return `${p.metadata?.name}[a${p.metadata?.labels?.["mergevq.ai/attempt"]} ${p.status?.phase}${gone} ${exits}]`;
    });
    const conds = (st.conditions ?? []).filter((c) => c.status === "True").map((c) => `${c.type}:${c.reason}`);
    return `phase=${st.phase} attempt=${st.attempt} restarts=${st.restartCount ?? 0} step=${st.progress?.step} ${conds.join(" ")} pods: ${pods.join(" ")}`;
  };
  /** eventually(), with the run's state in the timeout message. */
  const until = async <T>(name: string, fn: () => Promise<T>, opts: { timeoutMs: number; message: string }) => {
    try {
      return await eventually(fn, { ...opts, intervalMs: 1000 });
    } catch (e) {
      throw new Error(`${(e as Error).message}; ${await snapshot(name)}`);
    }
  };
  const mark = async (name: string, what: string) =>
    print(`[resilience ${new Date().toISOString()}] ${what}: ${await snapshot(name)}`);

  /** A small TokenizerTraining from the demo example (T1 at 64², CPU). */
  const tokenizerRun = (name: string, opts: { steps: number; nodes: number; interval: number }) => {
    const tt = loadExample("tokenizer-training-demo.yaml");
    tt.metadata = { name, namespace: ns.name };
    tt.spec.dataset.uri = dataset;
    tt.spec.training = { ...tt.spec.training, steps: opts.steps, batchSize: 4, logEverySteps: 1 };
    tt.spec.evaluation = { ...tt.spec.evaluation, enabled: false };
    tt.spec.checkpoint = {
      ...tt.spec.checkpoint,
      uri: `s3://mergevq-runs/kind-${ns.name}-${name}`,
      intervalSteps: opts.interval,
    };
    tt.spec.resources = { ...tt.spec.resources, nodes: opts.nodes, cpu: "500m", memory: "2Gi" };
    tt.spec.runPolicy = { ...tt.spec.runPolicy, cleanPodPolicy: "None", backoffLimit: 3 };
    return tt;
  };

  before(async () => {
    kc = loadKubeConfig();
    core = kc.makeApiClient(k8s.CoreV1Api);
    custom = kc.makeApiClient(k8s.CustomObjectsApi);
    installOperator(demoEnv(), { release: RELEASE, namespace: SYSTEM, set: ["progressPollSeconds=2"] });
    ns = await makeNamespace(kc, "kind");
    await ensureS3Secret(kc, ns.name);
    dataset = await prepareData({ size: 64 });
  });

  after(async () => {
    await ns?.cleanup();
    run("helm", ["uninstall", RELEASE, "-n", SYSTEM, "--wait"], { timeoutMs: 120_000 });
  });

  it("the operator runs from its compiled image: uid 65532 under tini as PID 1, Node 24, read-only root", async () => {
    const pods = (
      await core.listNamespacedPod({ namespace: SYSTEM, labelSelector: `app.kubernetes.io/instance=${RELEASE}` })
    ).items.filter(running);
    assert.equal(pods.length, 1, `operator pods: ${pods.map((p) => p.metadata?.name)}`);
    const pod = pods[0];
    assert.match(pod.spec?.containers[0].image ?? "", /^mergevq\/operator:/);
    assert.equal(pod.spec?.containers[0].securityContext?.readOnlyRootFilesystem, true);
    const probe = kubectl([
      "-n",
      SYSTEM,
      "exec",
      pod.metadata?.name ?? "",
      "--",
      "/usr/local/bin/node",
      "-e",
      `const fs = require("fs"); let ro = false;
       try { fs.writeFileSync("/probe", "x"); } catch (e) { ro = e.code === "EROFS"; }
       fs.writeFileSync("/tmp/probe", "x");
       const op = fs.readdirSync("/proc").filter((d) => /^[0-9]+$/.test(d))
         .map((d) => { try { return fs.readFileSync("/proc/" + d + "/cmdline", "utf8").split("\\0"); } catch { return []; } })
         .find((a) => a.includes("/app/dist/operator/src/main.js"));
       console.log(JSON.stringify({ uid: process.getuid(), node: process.version, pid1: fs.readFileSync("/proc/1/comm", "utf8").trim(), ro, op }));`,
    ]);
    const p = JSON.parse(probe) as { uid: number; node: string; pid1: string; ro: boolean; op?: string[] };
    assert.equal(p.uid, 65532);
    assert.match(p.node, /^v24\./);
    assert.equal(p.pid1, "tini");
    assert.equal(p.ro, true, "the root filesystem must be read-only (only /tmp is writable)");
    assert.ok(
      p.op?.includes("--max-semi-space-size=2") && p.op.includes("--lite-mode"),
      `operator process argv: ${JSON.stringify(p.op)}`,
    );
  });

  it("survives the operator pod deleted, a trainer pod deleted (SIGTERM checkpoint) and a container SIGKILLed", async () => {
    const name = "resilience";
    // No periodic checkpoint before the end: the only one the restarts can use is the SIGTERM one.
    const tt = tokenizerRun(name, { steps: 40, nodes: 2, interval: 1000 });
    await createRun(kc, ns.name, tt);
    await until(name, async () => ((await status(name)).progress?.step ?? 0) >= 3, {
      timeoutMs: 8 * 60_000,
      message: "step 3 of attempt 1",
    });

    await mark(name, "attempt 1 at step 3");
    // 1. Operator pod deleted mid-run: the Deployment brings a new one, which adopts the running pods.
    const before1 = (await runPods(name)).map((p) => `${p.metadata?.name}/${p.metadata?.uid}`).sort();
    assert.equal(before1.length, 2);
    kubectl(["-n", SYSTEM, "delete", "pod", "-l", `app.kubernetes.io/instance=${RELEASE}`, "--wait=false"]);
    kubectl(["-n", SYSTEM, "rollout", "status", "deploy", "--timeout=180s"], 200_000);
    const stepNow = (await status(name)).progress?.step ?? 0;
    await until(name, async () => ((await status(name)).progress?.step ?? 0) > stepNow + 1, {
      timeoutMs: 3 * 60_000,
      message: "status advancing under the new operator",
    });
    const after1 = (await runPods(name)).map((p) => `${p.metadata?.name}/${p.metadata?.uid}`).sort();
    assert.deepEqual(after1, before1, "the new operator must neither duplicate nor orphan the run's pods");
    assert.equal((await status(name)).attempt, 1);

    // 2. A trainer pod deleted: kubelet sends SIGTERM; every rank stops at one step, rank 0 checkpoints it (exit
    //    143), the operator restarts the group (PodDeleted, not counted) from that checkpoint.
    await mark(name, "new operator adopted the run; deleting the rank 1 pod");
    const seen = (await status(name)).progress?.step ?? 0;
    const rank1 = (await runPods(name)).find((p) => p.metadata?.labels?.["mergevq.ai/node-rank"] === "1");
    kubectl(["-n", ns.name, "delete", "pod", rank1?.metadata?.name ?? "", "--wait=false"]);
    const a2 = await until(
      name,
      async () => {
        const pods = (await runPods(name)).filter((p) => p.metadata?.labels?.["mergevq.ai/attempt"] === "2");
        return pods.length === 2 ? pods : undefined;
      },
      { timeoutMs: 3 * 60_000, message: "attempt 2 pods" },
    );
    const sigtermCkpt = envOf(a2[0], "RESUME_FROM");
    assert.ok(sigtermCkpt, "attempt 2 must resume from the SIGTERM checkpoint");
    assert.equal(envOf(a2[1], "RESUME_FROM"), sigtermCkpt);
    const s = stepOf(sigtermCkpt);
    assert.ok(s >= seen && s < 40, `SIGTERM checkpoint at step ${s}, progress was at ${seen}`);
    assert.ok(await createStorage(sigtermCkpt).head(sigtermCkpt), `${sigtermCkpt} must exist`);
    let st = await status(name);
    assert.equal(st.restartCount ?? 0, 0, "a deleted pod is not a counted restart");

    // 3. A trainer container SIGKILLed (what the OOM killer or a crashed runtime does): exit 137, counted
    //    restart of the group from the last checkpoint.
    await until(
      name,
      async () =>
        (await runPods(name)).filter((p) => p.metadata?.labels?.["mergevq.ai/attempt"] === "2" && running(p)).length ===
          2 && ((await status(name)).progress?.step ?? 0) >= s + 2,
      { timeoutMs: 5 * 60_000, message: "attempt 2 training past its resume step" },
    );
    await mark(name, `attempt 2 past step ${s + 2}; SIGKILL of rank 0's trainer`);
    const victim = (await runPods(name)).find(
      (p) => p.metadata?.labels?.["mergevq.ai/attempt"] === "2" && p.metadata?.labels?.["mergevq.ai/node-rank"] === "0",
    );
    // The killer runs inside the container it kills: once the trainer is gone, tini exits and the runtime stops
    // the container, so the exec session itself may be killed before it reports (exit 137). Either exit is fine;
    // the attempt-3 pods and the counted restart below prove the SIGKILL landed.
    kubectl(
      [
        "-n",
        ns.name,
        "exec",
        victim?.metadata?.name ?? "",
        "-c",
        "trainer",
        "--",
        "/usr/local/bin/node",
        "-e",
        `const fs = require("fs");
       for (const d of fs.readdirSync("/proc")) {
         if (!/^[0-9]+$/.test(d) || d === "1" || Number(d) === process.pid) continue;
         try { if (fs.readFileSync("/proc/" + d + "/cmdline", "utf8").includes("cli.js")) process.kill(Number(d), "SIGKILL"); } catch {}
       }`,
      ],
      60_000,
      [0, 137],
    );
    const a3 = await until(
      name,
      async () => {
        const pods = (await runPods(name)).filter((p) => p.metadata?.labels?.["mergevq.ai/attempt"] === "3");
        return pods.length === 2 ? pods : undefined;
      },
      { timeoutMs: 3 * 60_000, message: "attempt 3 pods" },
    );
    await mark(name, "attempt 3 pods");
    assert.equal(envOf(a3[0], "RESUME_FROM"), sigtermCkpt, "the SIGKILL restart resumes from the last checkpoint");
    st = await status(name);
    assert.equal(st.restartCount, 1, "SIGKILL (exit 137) is a counted restart");
    // Rank 1 sees its peer's socket close and exits 75 (a peer failed), often before rank 0's pod reports: the
    // restart is classified by rank 0's own exit, never by the peer's (which once failed the run as permanent).
    const events = (
      await core.listNamespacedEvent({ namespace: ns.name, fieldSelector: `involvedObject.name=${name}` })
    ).items.filter((e) => /restarting the whole group \(attempt 3/.test(e.message ?? ""));
    assert.deepEqual(
      events.map((e) => e.reason),
      ["Signal"],
      events.map((e) => e.message).join("\n"),
    );
    assert.match(events[0].message ?? "", /resilience-node-0-a2 container trainer exited with code 137/);

    const done = await watchRun(kc, ns.name, "TokenizerTraining", name, { timeoutMs: 10 * 60_000, print });
    assert.equal(done.status.phase, "Succeeded", JSON.stringify(done.status.conditions));
    assert.equal(done.status.progress?.step, 40);
    assert.equal(done.status.attempt, 3);
    assert.equal(done.status.restartCount, 1);
    // The trainer image runs the native libtensorflow backend.
    const logs = kubectl(["-n", ns.name, "logs", a3[0].metadata?.name ?? "", "-c", "trainer"]);
    const backend = logs
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { msg?: string; backend?: string; reason?: string })
      .find((l) => l.msg === "tfjs backend selected");
    assert.ok(backend, "no backend line in the trainer log");
    assert.match(JSON.stringify(backend), /tfjs-node .*libtensorflow 2\.18/);
    // …with the fused-op library of hack/tfjs-native/ops loaded into it (built into the image's tfjs-node).
    const native = (backend as { native?: { fusedOps?: { kernels?: string[]; absent?: string } } }).native;
    assert.ok(native?.fusedOps?.kernels?.includes("MergevqGroupNormAct"), JSON.stringify(native?.fusedOps));
    assert.doesNotMatch(logs, /upgrade to Node|NodeDeprecationWarning|no longer support.*Node/i);
  });

  it("skips and counts a corrupt JPEG and a truncated shard, and trains to Succeeded", async () => {
    const dirs = execFileSync(path.join(REPO, "hack/dataset/build.sh"), [], { encoding: "utf8" }).trim().split("\n");
    const root = dirs.find((d) => d.includes("-64-")) ?? "";
    const split = readImageNetSplit(root, "train");
    const samples = split.entries
      .slice(0, 24)
      .map((e, i) => ({ key: String(i).padStart(6, "0"), jpg: readFileSync(e.path), label: e.label }));
    samples[2] = { ...samples[2], jpg: samples[2].jpg.subarray(0, 300) }; // corrupt JPEG
    const a = await packShard(samples.slice(0, 12));
    const b = await packShard(samples.slice(12));
    const cut = b.subarray(0, Math.floor(b.length * 0.5)); // truncated shard
    const sha = (x: Buffer) => createHash("sha256").update(x).digest("hex");
    const s3 = createS3Client(s3SettingsFromEnv());
    const prefix = `bad-${ns.name}`;
    await s3.send(new PutObjectCommand({ Bucket: "mergevq-data", Key: `${prefix}/train-0.tar`, Body: a }));
    await s3.send(new PutObjectCommand({ Bucket: "mergevq-data", Key: `${prefix}/train-1.tar`, Body: cut }));
    const index = {
      format: "mergevq-wds-v1",
      split: "train",
      numSamples: 24,
      wnids: split.wnids,
      names: split.names,
      seed: 0,
      shards: [
        { name: "train-0.tar", count: 12, size: a.length, sha256: sha(a) },
        { name: "train-1.tar", count: 12, size: b.length, sha256: sha(b) },
      ],
    };
    await s3.send(
      new PutObjectCommand({ Bucket: "mergevq-data", Key: `${prefix}/index.json`, Body: JSON.stringify(index) }),
    );
    const tt = tokenizerRun("corrupt", { steps: 6, nodes: 1, interval: 1000 });
    tt.spec.dataset.uri = `s3://mergevq-data/${prefix}`;
    await createRun(kc, ns.name, tt);
    const done = await watchRun(kc, ns.name, "TokenizerTraining", "corrupt", { timeoutMs: 8 * 60_000, print });
    assert.equal(done.status.phase, "Succeeded", JSON.stringify(done.status.conditions));
    const statusUri = `${tt.spec.checkpoint.uri}/status/progress.json`;
    const progress = Progress.parse(JSON.parse((await createStorage(statusUri).get(statusUri)).toString("utf8")));
    assert.ok((progress.dataErrors?.corruptImages ?? 0) >= 1, JSON.stringify(progress.dataErrors));
    assert.ok((progress.dataErrors?.truncatedShards ?? 0) >= 1, JSON.stringify(progress.dataErrors));
  });

  it("rejects an invalid CR naming the field; a missing Secret is Admitted=False with its reason and no pods", async () => {
    const bad = tokenizerRun("bad", { steps: 2, nodes: 1, interval: 1000 });
    bad.spec.model = { ...bad.spec.model, keepTokens: 50 } as typeof bad.spec.model;
    const r = run("kubectl", ["apply", "-f", "-"], { input: JSON.stringify(bad) });
    assert.notEqual(r.status, 0, "an invalid spec must be rejected at admission");
    assert.match(r.stderr, /keepTokens/);

    const noSecret = tokenizerRun("nosecret", { steps: 2, nodes: 1, interval: 1000 });
    noSecret.spec.s3 = {
      ...noSecret.spec.s3,
      secretRef: { ...noSecret.spec.s3?.secretRef, name: "does-not-exist" },
    } as typeof noSecret.spec.s3;
    await createRun(kc, ns.name, noSecret);
    const st = await eventually(
      async () => {
        const s = await status("nosecret");
        const c = s.conditions?.find((x) => x.type === "Admitted");
        return c?.status === "False" ? { s, c } : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 1000, message: "Admitted=False" },
    );
    assert.equal(st.c.reason, "SecretNotFound");
    assert.match(st.c.message ?? "", /does-not-exist/);
    assert.equal(st.s.phase, "Waiting");
    assert.equal((await runPods("nosecret")).length, 0);
  });

  it("schedules the GPU profile onto the worker that advertises nvidia.com/gpu, with the GPU request and env", async (t) => {
    // The trainer-gpu image when hack/kind-e2e.sh built and loaded it onto that worker (default), else the CPU
    // trainer image: scheduling, resources and env are the operator's either way.
    const gpuImage = process.env.MERGEVQ_KIND_GPU_IMAGE;
    t.diagnostic(gpuImage ? `GPU-profile pods run ${gpuImage}` : "MERGEVQ_KIND_GPU_IMAGE unset: CPU trainer image");
    const gpuNode = kubectl(["get", "nodes", "-l", "mergevq.ai/pool=gpu", "-o", "jsonpath={.items[0].metadata.name}"]);
    assert.ok(gpuNode, "no worker labelled mergevq.ai/pool=gpu");
    // An extended resource, as a device plugin would advertise it (kind has no GPU; the trainer then runs on CPU).
    kubectl([
      "patch",
      "node",
      gpuNode,
      "--subresource=status",
      "--type=json",
      "-p",
      JSON.stringify([{ op: "add", path: "/status/capacity/nvidia.com~1gpu", value: "1" }]),
    ]);
    await eventually(
      () => kubectl(["get", "node", gpuNode, "-o", "jsonpath={.status.allocatable.nvidia\\.com/gpu}"]) === "1",
      { timeoutMs: 30_000, message: "allocatable nvidia.com/gpu" },
    );
    const tt = tokenizerRun("gpu", { steps: 2, nodes: 1, interval: 1000 });
    tt.spec.resources = { ...tt.spec.resources, accelerator: { profile: "nvidia", perNode: 1 } };
    if (gpuImage) tt.spec.trainer = { ...tt.spec.trainer, image: gpuImage };
    await createRun(kc, ns.name, tt);
    const pod = await eventually(async () => (await runPods("gpu")).find((p) => p.spec?.nodeName), {
      timeoutMs: 60_000,
      message: "gpu pod scheduled",
    });
    assert.equal(pod.spec?.nodeName, gpuNode);
    assert.equal(pod.spec?.containers[0].resources?.limits?.["nvidia.com/gpu"], "1");
    assert.equal(envOf(pod, "NPROC_PER_NODE"), "1");
    assert.equal(envOf(pod, "DIST_BACKEND"), "nccl");
    const done = await watchRun(kc, ns.name, "TokenizerTraining", "gpu", { timeoutMs: 6 * 60_000, print });
    assert.equal(done.status.phase, "Succeeded", JSON.stringify(done.status.conditions));
    if (!gpuImage) return;

    // The CUDA libtensorflow under tfjs-node-gpu trained the run: requested by the image, on its CPU kernels.
    const logs = kubectl(["-n", ns.name, "logs", pod.metadata?.name ?? "", "-c", "trainer"]);
    const line = logs
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { msg?: string; reason?: string })
      .find((l) => l.msg === "tfjs backend selected");
    assert.match(line?.reason ?? "", /requested by TFJS_BACKEND.*tfjs-node .*libtensorflow 2\.18/);
    assert.match(logs, /cuInit|CUDA/, "the CUDA build's device probe is in the log");

    // And the image's own check on that node: no GPU device, T1 forward+backward equal to wasm.
    const check = "gpu-backend-check";
    await core.createNamespacedPod({
      namespace: ns.name,
      body: {
        metadata: { name: check },
        spec: {
          restartPolicy: "Never",
          nodeName: gpuNode,
          securityContext: { runAsNonRoot: true, runAsUser: 65532 },
          containers: [
            {
              name: "check",
              image: gpuImage,
              args: ["backend", "check", "--parity"],
              resources: { limits: { "nvidia.com/gpu": "1" } },
              securityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
              volumeMounts: [{ name: "tmp", mountPath: "/tmp" }],
            },
          ],
          volumes: [{ name: "tmp", emptyDir: {} }],
        },
      },
    });
    const phase = await eventually(
      async () => {
        const p = await core.readNamespacedPod({ name: check, namespace: ns.name });
        return p.status?.phase === "Succeeded" || p.status?.phase === "Failed" ? p.status.phase : undefined;
      },
      { timeoutMs: 4 * 60_000, intervalMs: 1000, message: "backend check pod finished" },
    );
    const out = kubectl(["-n", ns.name, "logs", check]);
    assert.equal(phase, "Succeeded", out.slice(-2000));
    const report = JSON.parse(
      out
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .pop() ?? "{}",
    ) as {
      backend?: string;
      libtensorflow?: string;
      gpuDevice?: boolean;
      parity?: { ok: boolean; maxRel: number; l2Rel: number };
    };
    t.diagnostic(`trainer-gpu backend check: ${JSON.stringify(report)}`);
    assert.equal(report.backend, "tensorflow");
    assert.equal(report.libtensorflow, "2.18.0");
    assert.equal(report.gpuDevice, false, "kind has no GPU: libtensorflow must say it found none");
    assert.equal(report.parity?.ok, true);
  });
});
