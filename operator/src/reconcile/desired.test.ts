// Desired children: names, labels, owner refs, headless Service, and the exact env contract (operator-design §3).
import assert from "node:assert/strict";
import { test } from "node:test";
import type { V1EnvVar, V1Pod } from "@kubernetes/client-node";
import { ENV, SamplingStep } from "../../../common/src/contract.ts";
import { makeSamplingJob, makeTokenizerTraining, testContext } from "../testing/fixtures.ts";
import { resolveAccelerator } from "./accelerator.ts";
import { desiredNodePods, desiredReducePod, desiredService, desiredShardPod, mergeEnv } from "./desired.ts";
import { BARRIER_CONTAINER, BARRIER_SCRIPT } from "./gang.ts";

const ctx = testContext();
const cpu = () => {
  const r = resolveAccelerator({ vendor: "cpu" }, {}, 2);
  assert.ok(r.ok);
  return r.value;
};
const envOf = (pod: V1Pod) => pod.spec!.containers[0].env!;
const plain = (env: V1EnvVar[]) =>
  Object.fromEntries(env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value]));

test("2-node TokenizerTraining: one pod per rank with stable hostname/subdomain, labels and owner refs", () => {
  const run = makeTokenizerTraining("t").nodes(2).obj();
  const pods = desiredNodePods(run, cpu(), ctx, { attempt: 1 });
  assert.equal(pods.length, 2);
  pods.forEach((p, rank) => {
    assert.equal(p.metadata!.name, `t-node-${rank}-a1`);
    assert.equal(p.spec!.hostname, `t-node-${rank}`);
    assert.equal(p.spec!.subdomain, "t");
    assert.equal(p.spec!.restartPolicy, "Never");
    assert.deepEqual(p.metadata!.labels, {
      "mergevq.ai/run": "t",
      "mergevq.ai/run-uid": "uid-t",
      "mergevq.ai/kind": "TokenizerTraining",
      "app.kubernetes.io/managed-by": "mergevq-operator",
      "mergevq.ai/role": "node",
      "mergevq.ai/attempt": "1",
      "mergevq.ai/node-rank": String(rank),
    });
    assert.deepEqual(p.metadata!.ownerReferences, [
      {
        apiVersion: "mergevq.ai/v1alpha1",
        kind: "TokenizerTraining",
        name: "t",
        uid: "uid-t",
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    assert.deepEqual(p.spec!.containers[0].args, ["train-tokenizer"]);
  });
  // Rank 0: readiness probe on the rendezvous port, no barrier. Rank 1: TCP barrier init container.
  assert.equal(pods[0].spec!.initContainers, undefined);
  assert.equal(pods[0].spec!.containers[0].readinessProbe?.tcpSocket?.port, 29500);
  const init = pods[1].spec!.initContainers!;
  assert.equal(init.length, 1);
  assert.equal(init[0].name, BARRIER_CONTAINER);
  assert.deepEqual(init[0].command, ["node", "-e", BARRIER_SCRIPT]);
  assert.deepEqual(
    init[0].env!.map((e) => e.name),
    ["MASTER_ADDR", "MASTER_PORT", "MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS"],
  );
});

test("exact env contract of rank 1 (order included)", () => {
  const run = makeTokenizerTraining("t").nodes(2).obj();
  const env = envOf(desiredNodePods(run, cpu(), ctx, { attempt: 3, resumeFrom: "s3://ckpt/t/step-40" })[1]);
  const fqdn = "t-node-0.t.ns.svc.cluster.local";
  assert.deepEqual(
    env.map((e) => e.name),
    [
      "MASTER_ADDR",
      "MASTER_PORT",
      "NNODES",
      "NODE_RANK",
      "NPROC_PER_NODE",
      "WORLD_SIZE",
      "PET_MASTER_ADDR",
      "PET_MASTER_PORT",
      "PET_NNODES",
      "PET_NODE_RANK",
      "PET_NPROC_PER_NODE",
      "GROUP_RANK",
      "MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS",
      "MERGEVQ_RUN",
      "MERGEVQ_KIND",
      "MERGEVQ_RUN_UID",
      "MERGEVQ_ATTEMPT",
      "DATASET_URI",
      "DATASET_FORMAT",
      "CHECKPOINT_DIR",
      "CHECKPOINT_INTERVAL",
      "CHECKPOINT_KEEP_LAST",
      "CHECKPOINT_SAVE_ON_SIGTERM",
      "RESUME_FROM",
      "MERGEVQ_STATUS_URI",
      "MERGEVQ_MODEL_CONFIG",
      "MERGEVQ_TRAIN_CONFIG",
      "MERGEVQ_POD_IP",
      "TERMINATION_MESSAGE_PATH",
      "PYTHONUNBUFFERED",
      "AWS_ENDPOINT_URL",
      "AWS_REGION",
      "AWS_S3_FORCE_PATH_STYLE",
      "AWS_ACCESS_KEY_ID",
      "AWS_SECRET_ACCESS_KEY",
      "DIST_BACKEND",
    ],
  );
  const v = plain(env);
  assert.equal(v.MASTER_ADDR, fqdn);
  assert.equal(v.PET_MASTER_ADDR, fqdn);
  assert.equal(v.MASTER_PORT, "29500");
  assert.equal(v.NNODES, "2");
  assert.equal(v.NODE_RANK, "1");
  assert.equal(v.GROUP_RANK, "1");
  assert.equal(v.NPROC_PER_NODE, "1");
  assert.equal(v.WORLD_SIZE, "2");
  assert.equal(v.MERGEVQ_RUN, "ns/t");
  assert.equal(v.MERGEVQ_ATTEMPT, "3");
  assert.equal(v.RESUME_FROM, "s3://ckpt/t/step-40");
  assert.equal(v.CHECKPOINT_DIR, "s3://ckpt/t");
  assert.equal(v.CHECKPOINT_SAVE_ON_SIGTERM, "true", "spec.checkpoint.saveOnSigterm defaults to true");
  assert.equal(v.MERGEVQ_STATUS_URI, "s3://ckpt/t/status");
  assert.equal(v.AWS_ENDPOINT_URL, "http://minio.example:9000");
  assert.equal(JSON.parse(v.MERGEVQ_MODEL_CONFIG!).preset, "T0");
  assert.equal(JSON.parse(v.MERGEVQ_TRAIN_CONFIG!).steps, 10);
  assert.equal(v.RANK, undefined);
  assert.equal(v.LOCAL_RANK, undefined);
  // Credentials by reference only.
  const secret = env.find((e) => e.name === "AWS_SECRET_ACCESS_KEY")!;
  assert.equal(secret.value, undefined);
  assert.deepEqual(secret.valueFrom, { secretKeyRef: { name: "s3-creds", key: "AWS_SECRET_ACCESS_KEY" } });
});

test("first attempt has no RESUME_FROM; compat pytorchjob adds RANK = node rank; LOCAL_RANK never", () => {
  const a = plain(envOf(desiredNodePods(makeTokenizerTraining("t").nodes(3).obj(), cpu(), ctx, { attempt: 1 })[2]));
  assert.equal(a.RESUME_FROM, undefined);
  const run = makeTokenizerTraining("t").nodes(3).set("spec.rendezvous.compat", "pytorchjob").obj();
  const b = plain(envOf(desiredNodePods(run, cpu(), ctx, { attempt: 1 })[2]));
  assert.equal(b.RANK, "2");
  assert.equal(b.LOCAL_RANK, undefined);
});

test("user env cannot override operator-managed variables", () => {
  const run = makeTokenizerTraining("t").nodes(2).env({ MASTER_ADDR: "evil", FOO: "bar" }).obj();
  const env = envOf(desiredNodePods(run, cpu(), ctx, { attempt: 1 })[0]);
  assert.equal(env.filter((e) => e.name === "MASTER_ADDR").length, 1);
  assert.equal(plain(env).MASTER_ADDR, "t-node-0.t.ns.svc.cluster.local");
  assert.equal(plain(env).FOO, "bar");
  assert.deepEqual(mergeEnv([{ name: "A", value: "1" }], [{ name: "A", value: "2" }]), [{ name: "A", value: "2" }]);
});

test("NVIDIA profile: resource limit, NPROC_PER_NODE = perNode, WORLD_SIZE in processes", () => {
  const run = makeTokenizerTraining("g").nodes(4).accelerator({ vendor: "nvidia", perNode: 8 }).obj();
  const r = resolveAccelerator(run.spec.resources.accelerator, {}, 4);
  assert.ok(r.ok);
  const pod = desiredNodePods(run, r.value, ctx, { attempt: 1 })[0];
  assert.deepEqual(pod.spec!.containers[0].resources?.limits, { "nvidia.com/gpu": "8" });
  const v = plain(envOf(pod));
  assert.equal(v.NPROC_PER_NODE, "8");
  assert.equal(v.WORLD_SIZE, "32");
  assert.equal(v.DIST_BACKEND, "nccl");
});

test("Ascend profile: configurable resource, HCCL env, base ports, hccl/rankIndex, selectors/tolerations", () => {
  const profiles = {
    npu: {
      vendor: "ascend" as const,
      resourceName: "huawei.com/npu",
      perNode: 16,
      nodeSelector: { accelerator: "ascend-910b" },
      tolerations: [{ key: "huawei.com/npu", operator: "Exists", effect: "NoSchedule" }],
      hccl: { basePort: 61000 },
    },
  };
  const run = makeTokenizerTraining("a").nodes(12).accelerator({ profile: "npu" }).obj();
  const r = resolveAccelerator(run.spec.resources.accelerator, profiles, 12);
  assert.ok(r.ok);
  const pod = desiredNodePods(run, r.value, ctx, { attempt: 1 })[5];
  const c = pod.spec!.containers[0];
  assert.deepEqual(c.resources?.limits, { "huawei.com/npu": "16" });
  assert.equal(pod.metadata!.annotations!["hccl/rankIndex"], "5");
  assert.deepEqual(pod.spec!.nodeSelector, { accelerator: "ascend-910b" });
  assert.equal(pod.spec!.tolerations?.[0].key, "huawei.com/npu");
  const v = plain(c.env!);
  assert.equal(v.DIST_BACKEND, "hccl");
  assert.equal(v.HCCL_IF_BASE_PORT, "61000");
  assert.equal(v.HCCL_CONNECT_TIMEOUT, "600", "≥ 600 s above 8 nodes");
  assert.equal(v.WORLD_SIZE, String(12 * 16));
  assert.deepEqual(c.env!.find((e) => e.name === "HCCL_IF_IP")?.valueFrom, { fieldRef: { fieldPath: "status.podIP" } });
  const ports = c.ports!.map((p) => p.containerPort);
  assert.ok(ports.includes(29500) && ports.includes(61000) && ports.includes(61031) && !ports.includes(61032));
  // Inline fields override the profile.
  const r2 = resolveAccelerator({ profile: "npu", resourceName: "huawei.com/Ascend910", perNode: 8 }, profiles, 2);
  assert.ok(r2.ok);
  assert.equal(r2.value.resourceName, "huawei.com/Ascend910");
  assert.equal(r2.value.perNode, 8);
  assert.equal(r2.value.hccl?.connectTimeoutSeconds, 120);
});

test("unknown accelerator profile → UnknownAcceleratorProfile naming the known ones", () => {
  const r = resolveAccelerator({ profile: "tpu" }, { big: { vendor: "nvidia" } }, 1);
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.equal(r.reason, "UnknownAcceleratorProfile");
    assert.match(r.message, /"tpu".*big.*cpu/);
  }
});

test("headless Service publishes not-ready addresses and selects the run's node pods", () => {
  const svc = desiredService(makeTokenizerTraining("t").nodes(2).obj());
  assert.equal(svc.metadata!.name, "t");
  assert.equal(svc.spec!.clusterIP, "None");
  assert.equal(svc.spec!.publishNotReadyAddresses, true);
  assert.deepEqual(svc.spec!.selector, { "mergevq.ai/run-uid": "uid-t", "mergevq.ai/role": "node" });
});

test("long run names are truncated to valid DNS labels deterministically", () => {
  const name = "x".repeat(70);
  const run = makeTokenizerTraining(name).nodes(2).obj();
  const pods = desiredNodePods(run, cpu(), ctx, { attempt: 1 });
  for (const p of pods) {
    assert.ok(p.spec!.hostname!.length <= 63 && p.spec!.subdomain!.length <= 63);
    assert.ok(p.metadata!.labels!["mergevq.ai/run"].length <= 63);
  }
  assert.deepEqual(desiredNodePods(run, cpu(), ctx, { attempt: 1 }), pods);
  assert.notEqual(pods[0].spec!.hostname, pods[1].spec!.hostname);
});

test("bring-your-own trainer: command/args run as given with the same env contract", () => {
  const run = makeTokenizerTraining("t")
    .nodes(2)
    .image("pytorch/lightning:2")
    .command(["python", "main.py"], ["fit"])
    .obj();
  const c = desiredNodePods(run, cpu(), ctx, { attempt: 1 })[0].spec!.containers[0];
  assert.equal(c.image, "pytorch/lightning:2");
  assert.deepEqual(c.command, ["python", "main.py"]);
  assert.deepEqual(c.args, ["fit"]);
  assert.equal(plain(c.env!).MASTER_ADDR, "t-node-0.t.ns.svc.cluster.local");
  const noArgs = makeTokenizerTraining("t").command(["python", "x.py"]).obj();
  assert.equal(desiredNodePods(noArgs, cpu(), ctx, { attempt: 1 })[0].spec!.containers[0].args, undefined);
});

test("sampling shard and reduce pods carry shard identity, inputs and distinct status prefixes", () => {
  const run = makeSamplingJob("s", "ar", 4).obj();
  const shard = desiredShardPod(run, cpu(), ctx, 2, {
    attempt: 3,
    modelCheckpoint: "s3://m/final",
    tokenizerCheckpoint: "s3://t/final",
  });
  assert.equal(shard.metadata!.name, "s-shard-2-a3");
  assert.equal(shard.metadata!.labels!["mergevq.ai/shard"], "2");
  const v = plain(envOf(shard));
  assert.equal(v.MERGEVQ_SHARD_INDEX, "2");
  assert.equal(v.MERGEVQ_NUM_SHARDS, "4");
  assert.equal(v.MERGEVQ_MODEL_CHECKPOINT, "s3://m/final");
  assert.equal(v.MERGEVQ_TOKENIZER_CHECKPOINT, "s3://t/final");
  assert.equal(v.MERGEVQ_STATUS_URI, "s3://ckpt/s/status/shards/2");
  assert.deepEqual(shard.spec!.containers[0].args, ["sample"]);
  const reduce = desiredReducePod(run, ctx, { attempt: 1 });
  assert.equal(reduce.metadata!.name, "s-reduce-a1");
  assert.equal(plain(envOf(reduce)).MERGEVQ_STATUS_URI, "s3://ckpt/s/status");
  assert.deepEqual(reduce.spec!.containers[0].args, ["reduce"]);
});

test("MERGEVQ_STEP (contract ENV.STEP): sample on shard pods, reduce on the reduce pod, absent on training pods", () => {
  const run = makeSamplingJob("s", "ar", 2).obj();
  const shard = plain(envOf(desiredShardPod(run, cpu(), ctx, 0, { attempt: 1 })));
  const reduce = plain(envOf(desiredReducePod(run, ctx, { attempt: 1 })));
  assert.equal(ENV.STEP, "MERGEVQ_STEP");
  assert.equal(shard.MERGEVQ_STEP, "sample");
  assert.equal(reduce.MERGEVQ_STEP, "reduce");
  assert.deepEqual(SamplingStep.options, ["sample", "reduce"]);
  const training = desiredNodePods(makeTokenizerTraining("t").nodes(2).obj(), cpu(), ctx, { attempt: 1 });
  for (const p of training) assert.equal(plain(envOf(p)).MERGEVQ_STEP, undefined);
});

test("MERGEVQ_POD_IP comes from the downward API; perceptual weights are passed through", () => {
  const run = makeTokenizerTraining("t").nodes(2).obj();
  run.spec.model.perceptualUri = "s3://models/lpips.bin";
  const env = envOf(desiredNodePods(run, cpu(), ctx, { attempt: 1 })[0]);
  assert.deepEqual(env.find((e) => e.name === "MERGEVQ_POD_IP")?.valueFrom, {
    fieldRef: { fieldPath: "status.podIP" },
  });
  assert.equal(env.find((e) => e.name === "MERGEVQ_PERCEPTUAL_URI")?.value, "s3://models/lpips.bin");
});

test("every trainer pod gets a /tmp scratch emptyDir; the operator's security contexts go on pod, trainer and barrier", () => {
  const hardened = {
    ...ctx,
    trainerPodSecurityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: "RuntimeDefault" } },
    trainerSecurityContext: { readOnlyRootFilesystem: true, allowPrivilegeEscalation: false },
  };
  const nodes = desiredNodePods(makeTokenizerTraining("t").nodes(2).obj(), cpu(), hardened, { attempt: 1 });
  const shard = desiredShardPod(makeSamplingJob("s").obj(), cpu(), hardened, 0, { attempt: 1 });
  const reduce = desiredReducePod(makeSamplingJob("s").obj(), hardened, { attempt: 1 });
  for (const pod of [...nodes, shard, reduce]) {
    assert.deepEqual(pod.spec?.volumes, [{ name: "mergevq-scratch", emptyDir: {} }], pod.metadata?.name);
    assert.deepEqual(pod.spec?.containers[0].volumeMounts, [{ name: "mergevq-scratch", mountPath: "/tmp" }]);
    assert.deepEqual(pod.spec?.securityContext, hardened.trainerPodSecurityContext);
    assert.deepEqual(pod.spec?.containers[0].securityContext, hardened.trainerSecurityContext);
  }
  assert.deepEqual(nodes[1].spec?.initContainers?.[0].securityContext, hardened.trainerSecurityContext);
  // Without operator settings (bring-your-own images that need root) no security context is set.
  const plainPod = desiredNodePods(makeTokenizerTraining("t").nodes(2).obj(), cpu(), ctx, { attempt: 1 })[1];
  assert.equal(plainPod.spec?.securityContext, undefined);
  assert.equal(plainPod.spec?.containers[0].securityContext, undefined);
  assert.equal(plainPod.spec?.initContainers?.[0].securityContext, undefined);
});
