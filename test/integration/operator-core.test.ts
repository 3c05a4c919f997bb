// Operator core flows against the real local control plane + node agent + MinIO (test/cluster):
// 2-node TokenizerTraining end to end with the exact env contract, whole-group restart with RESUME_FROM,
// backoffLimit, fail-fast exit codes, and reconcile-time validation (missing Secret) with recovery.
// Reads only KUBECONFIG and the S3 variables (testEnv()). The operator runs as its real entrypoint process.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { GetObjectCommand, S3Client } from "@aws-sdk/client-s3";
import * as k8s from "@kubernetes/client-node";
import {
  fakeTrainerScript,
  makeTokenizerTraining,
  type OperatorProcess,
  startOperator,
} from "../../operator/src/testing/fixtures.ts";
import { eventually, loadKubeConfig, makeNamespace, type TestNamespace, testEnv } from "../cluster/testenv.ts";

const env = testEnv();
const kc = loadKubeConfig();
const core = kc.makeApiClient(k8s.CoreV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
const s3 = new S3Client({
  endpoint: env.s3.endpoint,
  region: env.s3.region,
  forcePathStyle: true,
  credentials: { accessKeyId: env.s3.accessKeyId, secretAccessKey: env.s3.secretAccessKey },
});
const BUCKET = "mergevq";
let ns: TestNamespace;
let op: OperatorProcess;

// biome-ignore lint/suspicious/noExplicitAny: raw custom objects read in assertions
type Obj = Record<string, any>;

async function getTT(name: string): Promise<Obj> {
  return (await custom.getNamespacedCustomObject({
    group: "mergevq.ai",
    version: "v1alpha1",
    namespace: ns.name,
    plural: "tokenizertrainings",
    name,
  })) as Obj;
}

async function createTT(raw: Record<string, unknown>): Promise<void> {
  await custom.createNamespacedCustomObject({
    group: "mergevq.ai",
    version: "v1alpha1",
    namespace: ns.name,
    plural: "tokenizertrainings",
    body: raw,
  });
}

async function podsOf(run: string): Promise<k8s.V1Pod[]> {
  const l = await core.listNamespacedPod({ namespace: ns.name, labelSelector: `mergevq.ai/run=${run}` });
  return l.items;
}

async function readS3Json(key: string): Promise<Obj | undefined> {
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    return JSON.parse(await r.Body!.transformToString());
  } catch {
    return undefined;
  }
}

function fakeRun(name: string, vars: Record<string, string> = {}) {
  return makeTokenizerTraining(name)
    .namespace(ns.name)
    .nodes(2)
    .checkpointUri(`s3://${BUCKET}/${ns.name}/${name}`)
    .set("spec.dataset.uri", `s3://${BUCKET}/dataset`)
    .s3("s3-creds", env.s3.endpoint)
    .image("docker.io/library/node:20")
    .command(["node", "-e", fakeTrainerScript()])
    .env({ FAKE_STEPS: "4", FAKE_STEP_MS: "250", ...vars })
    .set("spec.rendezvous.timeoutSeconds", 60);
}

/** Poll status.phase in the background and record every distinct value seen. */
function recordPhases(name: string): { phases: string[]; stop: () => void } {
  const phases: string[] = [];
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        const p = (await getTT(name)).status?.phase;
        if (p && phases[phases.length - 1] !== p) phases.push(p);
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return { phases, stop: () => (stopped = true) };
}

before(async () => {
  ns = await makeNamespace(kc, "op-core");
  await core.createNamespacedSecret({
    namespace: ns.name,
    body: {
      metadata: { name: "s3-creds" },
      stringData: { AWS_ACCESS_KEY_ID: env.s3.accessKeyId, AWS_SECRET_ACCESS_KEY: env.s3.secretAccessKey },
    },
  });
  op = startOperator({
    KUBECONFIG: env.kubeconfigPath,
    WATCH_NAMESPACES: ns.name,
    LEADER_ELECTION: "true",
    LEADER_ELECTION_NAMESPACE: ns.name,
    LEASE_DURATION_SECONDS: "4",
    RENEW_DEADLINE_SECONDS: "3",
    RETRY_PERIOD_SECONDS: "1",
    LOG_LEVEL: "info",
    S3_ENDPOINT: env.s3.endpoint,
    BARRIER_IMAGE: "docker.io/library/node:20",
  });
});

after(async () => {
  const code = await op?.stop();
  const errors = (op?.logs() ?? "").split("\n").filter((l) => /"level":"(error|fatal)"/.test(l));
  if (code !== 0 || errors.length)
    process.stderr.write(`operator exit ${code}; error lines:\n${errors.slice(-20).join("\n")}\n`);
  if (process.env.OPERATOR_LOG) (await import("node:fs")).writeFileSync(process.env.OPERATOR_LOG, op?.logs() ?? "");
  s3.destroy();
  await ns?.cleanup();
});

test("2-node TokenizerTraining: headless Service, 2 pods with the exact env contract, Pending→Running→Succeeded with metrics", async () => {
  const rec = recordPhases("tt-ok");
  try {
    await checkOk();
  } finally {
    rec.stop();
  }
  async function checkOk() {
    await createTT(fakeRun("tt-ok", { FAKE_RFID: "1.25" }).raw_());
    const tt = await eventually(() => getTT("tt-ok").then((o) => (o.metadata?.uid ? o : undefined)));
    const uid = tt.metadata.uid as string;

    const svc = await eventually(() => core.readNamespacedService({ namespace: ns.name, name: "tt-ok" }), {
      message: "headless service",
    });
    assert.equal(svc.spec?.clusterIP, "None");
    assert.equal(svc.spec?.publishNotReadyAddresses, true);
    assert.equal(svc.metadata?.ownerReferences?.[0]?.uid, uid);

    const pods = await eventually(
      async () => {
        const p = await podsOf("tt-ok");
        return p.length === 2 ? p : undefined;
      },
      { message: "2 pods" },
    );
    const byRank = new Map(pods.map((p) => [p.metadata!.labels!["mergevq.ai/node-rank"], p]));
    const fqdn = `tt-ok-node-0.tt-ok.${ns.name}.svc.cluster.local`;
    for (const rank of ["0", "1"]) {
      const p = byRank.get(rank)!;
      assert.equal(p.metadata!.name, `tt-ok-node-${rank}-a1`);
      assert.equal(p.spec!.hostname, `tt-ok-node-${rank}`);
      assert.equal(p.spec!.subdomain, "tt-ok");
      assert.equal(p.spec!.restartPolicy, "Never");
      assert.equal(p.metadata!.labels!["mergevq.ai/attempt"], "1");
      assert.equal(p.metadata!.labels!["mergevq.ai/run-uid"], uid);
      assert.equal(p.metadata!.ownerReferences![0].uid, uid);
      assert.equal(p.metadata!.ownerReferences![0].controller, true);
      const e = new Map(p.spec!.containers[0].env!.map((v) => [v.name, v]));
      assert.equal(e.get("MASTER_ADDR")?.value, fqdn);
      assert.equal(e.get("PET_MASTER_ADDR")?.value, fqdn);
      assert.equal(e.get("MASTER_PORT")?.value, "29500");
      assert.equal(e.get("NNODES")?.value, "2");
      assert.equal(e.get("NODE_RANK")?.value, rank);
      assert.equal(e.get("PET_NODE_RANK")?.value, rank);
      assert.equal(e.get("NPROC_PER_NODE")?.value, "1");
      assert.equal(e.get("WORLD_SIZE")?.value, "2");
      assert.equal(e.has("RANK"), false, "RANK must not be set by default");
      assert.equal(e.has("LOCAL_RANK"), false);
      assert.equal(e.get("MERGEVQ_RUN")?.value, `${ns.name}/tt-ok`);
      assert.equal(e.get("MERGEVQ_STATUS_URI")?.value, `s3://${BUCKET}/${ns.name}/tt-ok/status`);
      assert.equal(e.get("CHECKPOINT_DIR")?.value, `s3://${BUCKET}/${ns.name}/tt-ok`);
      assert.equal(e.has("RESUME_FROM"), false);
      // Credentials only by reference.
      const ref = e.get("AWS_SECRET_ACCESS_KEY")?.valueFrom?.secretKeyRef;
      assert.deepEqual({ name: ref?.name, key: ref?.key }, { name: "s3-creds", key: "AWS_SECRET_ACCESS_KEY" });
      assert.equal(e.get("AWS_SECRET_ACCESS_KEY")?.value, undefined);
      assert.ok(!JSON.stringify(p).includes(env.s3.secretAccessKey), "secret value inlined into the pod");
      if (rank === "1") assert.equal(p.spec!.initContainers?.[0]?.name, "rendezvous-barrier");
      else assert.equal(p.spec!.initContainers, undefined);
    }

    const done = await eventually(
      async () => {
        const o = await getTT("tt-ok");
        if (o.status?.phase === "Failed") throw new Error(`run failed: ${JSON.stringify(o.status)}`);
        return o.status?.phase === "Succeeded" ? o : undefined;
      },
      { timeoutMs: 90_000, message: "tt-ok Succeeded" },
    );
    assert.equal(done.status.metrics.rFID, 1.25);
    assert.equal(done.status.metricsNote, "fake trainer");
    assert.equal(done.status.artifacts.checkpointUri, `s3://${BUCKET}/${ns.name}/tt-ok/final`);
    assert.equal(done.status.attempt, 1);
    assert.equal(done.status.restartCount, 0);
    assert.equal(done.status.progress.step, 4);
    assert.ok(done.status.completionTime);
    assert.equal(done.status.observedGeneration, 1);
    const cond = new Map((done.status.conditions as Obj[]).map((c) => [c.type, c]));
    assert.equal(cond.get("Succeeded")?.status, "True");
    assert.equal(cond.get("Admitted")?.status, "True");
    // The recorder is a watch: let it see the final phase (the poll above may have been first).
    await eventually(() => rec.phases.includes("Succeeded"), { timeoutMs: 10_000, message: "recorder saw Succeeded" });
    // The phases seen in order (Pending may be brief, but Running and Succeeded must follow it).
    const idx = (p: string) => rec.phases.indexOf(p);
    assert.ok(idx("Running") >= 0 && idx("Succeeded") > idx("Running"), `phases: ${rec.phases.join(" → ")}`);
    assert.ok(idx("Pending") === -1 || idx("Pending") < idx("Running"), `phases: ${rec.phases.join(" → ")}`);
    // What the ranks actually saw at runtime (after the node agent resolved secretKeyRef and DNS).
    const seen1 = await readS3Json(`${ns.name}/tt-ok/status/env-rank1-a1.json`);
    assert.equal(seen1?.NODE_RANK, "1");
    assert.equal(seen1?.AWS_SECRET_ACCESS_KEY, "<set>");
    assert.equal(seen1?.AWS_ACCESS_KEY_ID, env.s3.accessKeyId);
    // Events were emitted for the transitions.
    const evs = await core.listNamespacedEvent({ namespace: ns.name, fieldSelector: `involvedObject.name=tt-ok` });
    const reasons = new Set(evs.items.map((e) => e.reason));
    for (const r of ["Admitted", "PodsCreated", "Completed", "MetricsReported"])
      assert.ok(reasons.has(r), `event ${r} in ${[...reasons]}`);
  }
});

test("a rank exiting with a signal code restarts the whole group as attempt 2 with RESUME_FROM", async () => {
  // Rank 1 dies with 143 (SIGTERM class) before step 3 of attempt 1 (rank 0 has reported checkpoints by then).
  await createTT(fakeRun("tt-restart", { FAKE_FAIL: "1:1:3:143" }).raw_());
  const done = await eventually(
    async () => {
      const o = await getTT("tt-restart");
      if (o.status?.phase === "Failed") throw new Error(`run failed: ${JSON.stringify(o.status)}`);
      return o.status?.phase === "Succeeded" ? o : undefined;
    },
    { timeoutMs: 120_000, message: "tt-restart Succeeded" },
  );
  assert.equal(done.status.attempt, 2);
  assert.equal(done.status.restartCount, 1);
  const evs = await core.listNamespacedEvent({ namespace: ns.name, fieldSelector: "involvedObject.name=tt-restart" });
  const signal = evs.items.find((e) => e.reason === "Signal");
  assert.ok(signal, `Signal event in ${evs.items.map((e) => e.reason)}`);
  assert.match(signal.message ?? "", /attempt 2/);
  const seen = await readS3Json(`${ns.name}/tt-restart/status/env-rank0-a2.json`);
  assert.ok(seen, "attempt 2 ran");
  assert.equal(seen.MERGEVQ_ATTEMPT, "2");
  assert.match(seen.RESUME_FROM ?? "", new RegExp(`^s3://${BUCKET}/${ns.name}/tt-restart/step-\\d+$`));
  // No pod of attempt 1 survives; attempt-2 pods are exactly one per rank.
  const pods = await podsOf("tt-restart");
  assert.ok(
    pods.every((p) => p.metadata!.labels!["mergevq.ai/attempt"] === "2"),
    "only attempt-2 pods remain",
  );
  assert.ok(pods.length <= 2);
});

test("exceeding backoffLimit ends Failed with reason BackoffLimitExceeded", async () => {
  await createTT(fakeRun("tt-backoff", { FAKE_FAIL: "0:1:0:137,0:2:0:137" }).backoffLimit(1).raw_());
  const failed = await eventually(
    async () => {
      const o = await getTT("tt-backoff");
      return o.status?.phase === "Failed" ? o : undefined;
    },
    { timeoutMs: 120_000, message: "tt-backoff Failed" },
  );
  const f = (failed.status.conditions as Obj[]).find((c) => c.type === "Failed");
  assert.equal(f?.reason, "BackoffLimitExceeded");
  assert.equal(failed.status.attempt, 2);
  assert.equal(failed.status.restartCount, 1);
  await eventually(
    async () => (await podsOf("tt-backoff")).every((p) => ["Succeeded", "Failed"].includes(p.status?.phase ?? "")),
    {
      message: "no running pods after failure",
    },
  );
});

test("exit code 1 fails fast with reason ExitCode and no restart", async () => {
  await createTT(fakeRun("tt-exit1", { FAKE_FAIL: "1:1:1:1" }).raw_());
  const failed = await eventually(
    async () => {
      const o = await getTT("tt-exit1");
      return o.status?.phase === "Failed" ? o : undefined;
    },
    { timeoutMs: 90_000, message: "tt-exit1 Failed" },
  );
  const f = (failed.status.conditions as Obj[]).find((c) => c.type === "Failed");
  assert.equal(f?.reason, "ExitCode");
  assert.match(f?.message, /code 1/);
  assert.equal(failed.status.attempt, 1);
  assert.equal(failed.status.restartCount ?? 0, 0);
});

test("missing Secret → Admitted=False SecretNotFound and no pods; creating the Secret recovers", async () => {
  await createTT(fakeRun("tt-nosecret").s3("late-creds", env.s3.endpoint).raw_());
  const waiting = await eventually(
    async () => {
      const o = await getTT("tt-nosecret");
      const c = (o.status?.conditions as Obj[] | undefined)?.find((x) => x.type === "Admitted");
      return c?.reason === "SecretNotFound" ? o : undefined;
    },
    { message: "SecretNotFound condition" },
  );
  assert.equal(waiting.status.phase, "Waiting");
  assert.match((waiting.status.conditions as Obj[]).find((x) => x.type === "Admitted")!.message, /late-creds/);
  assert.equal((await podsOf("tt-nosecret")).length, 0);
  await core.createNamespacedSecret({
    namespace: ns.name,
    body: {
      metadata: { name: "late-creds" },
      stringData: { AWS_ACCESS_KEY_ID: env.s3.accessKeyId, AWS_SECRET_ACCESS_KEY: env.s3.secretAccessKey },
    },
  });
  await eventually(
    async () => {
      const o = await getTT("tt-nosecret");
      return o.status?.phase === "Succeeded" ? o : undefined;
    },
    { timeoutMs: 90_000, message: "tt-nosecret Succeeded after Secret created" },
  );
});
