// The `make demo` flow as functions, so the e2e suite runs exactly the same steps with smaller step counts.
//   cluster (already up; KUBECONFIG + S3 env) → CRDs + operator via Helm → dataset shards on S3 → S3 Secret →
//   Inception reference statistics of the held-out photos → TokenizerTraining, ARTraining (tokenizerRef) and
//   SamplingJob (modelRef) applied together, chained by reference → watch each → final status, reconstruction
//   and sample grids downloaded from S3.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { CreateBucketCommand, HeadBucketCommand } from "@aws-sdk/client-s3";
import * as k8s from "@kubernetes/client-node";
import { parse } from "yaml";
import type { ARTraining, SamplingJob, TokenizerTraining } from "../../operator/src/api/v1alpha1/index.ts";
import { readImageNetSplit } from "../../trainer/src/data/imagenet.ts";
import { packImageNet, readShardIndex } from "../../trainer/src/data/shards.ts";
import { defaultRandomModelPath } from "../../trainer/src/eval/inception.ts";
import { createS3Client, createStorage, s3SettingsFromEnv } from "../../trainer/src/io/s3.ts";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const GROUP = "mergevq.ai";
const VERSION = "v1alpha1";

export interface DemoEnv {
  kubeconfig: string;
  /** S3 as this process reaches it. */
  s3Endpoint: string;
  /** S3 as pods reach it (kind: the in-cluster Service; the local cluster: the same loopback address). */
  s3EndpointInCluster: string;
  /** Extra `helm --set` values (kind: the locally built images), from MERGEVQ_HELM_SET (comma-separated). */
  helmSet: string[];
  binDir: string;
}

export function demoEnv(): DemoEnv {
  const need = (v: string) => {
    const x = process.env[v];
    if (!x) throw new Error(`${v} is not set (start the cluster with hack/cluster-up.sh and source its env.sh)`);
    return x;
  };
  return {
    kubeconfig: need("KUBECONFIG"),
    s3Endpoint: need("MERGEVQ_S3_ENDPOINT"),
    s3EndpointInCluster: process.env.MERGEVQ_S3_ENDPOINT_IN_CLUSTER || need("MERGEVQ_S3_ENDPOINT"),
    helmSet: (process.env.MERGEVQ_HELM_SET ?? "")
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean),
    binDir: execFileSync(path.join(REPO, "hack/toolchain.sh"), ["--bin-dir"], { encoding: "utf8" }).trim(),
  };
}

const t0 = Date.now();
export function say(msg: string): void {
  process.stderr.write(`[demo ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}\n`);
}

/** Install (or upgrade) the operator chart; the operator pod runs under the node agent with the chart's RBAC. */
export function installOperator(
  env: DemoEnv,
  opts: { namespace?: string; release?: string; set?: string[] } = {},
): void {
  const ns = opts.namespace ?? "mergevq-system";
  try {
    execFileSync(
      path.join(env.binDir, "helm"),
      [
        "upgrade",
        "--install",
        opts.release ?? "mergevq",
        path.join(REPO, "charts/mergevq-operator"),
        "--namespace",
        ns,
        "--create-namespace",
        "--set",
        `s3.endpoint=${env.s3EndpointInCluster}`,
        "--set",
        "logLevel=info",
        ...[...env.helmSet, ...(opts.set ?? [])].flatMap((v) => ["--set", v]),
        "--wait",
        "--timeout",
        "4m",
      ],
      { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, KUBECONFIG: env.kubeconfig } },
    );
  } catch (e) {
    // Say why: the operator pod's state and its last log lines.
    const kubectl = (args: string[]) => {
      try {
        return execFileSync(path.join(env.binDir, "kubectl"), ["-n", ns, ...args], {
          encoding: "utf8",
          env: { ...process.env, KUBECONFIG: env.kubeconfig },
        });
      } catch (err) {
        return String(err);
      }
    };
    const why = [
      kubectl(["get", "pods", "-o", "wide"]),
      kubectl(["describe", "pods"]).slice(-3000),
      kubectl(["logs", "-l", `app.kubernetes.io/instance=${opts.release ?? "mergevq"}`, "--previous", "--tail=40"]),
    ];
    throw new Error(`helm install of the operator failed: ${(e as Error).message}\n${why.join("\n")}`);
  }
}

async function ensureBucket(name: string): Promise<void> {
  const s3 = createS3Client(s3SettingsFromEnv());
  try {
    await s3.send(new HeadBucketCommand({ Bucket: name }));
  } catch {
    await s3.send(new CreateBucketCommand({ Bucket: name }));
  }
}

/**
 * Build the real-photo dataset (cached) and pack it into tar shards on S3: the train split at `dest`, the
 * held-out val split at `dest/val` (where the trainer looks for evaluation shards). Each is skipped if present.
 */
export async function prepareData(opts: { size?: number; dest?: string } = {}): Promise<string> {
  const size = opts.size ?? 64;
  const dest = opts.dest ?? `s3://mergevq-data/photos${size}/shards`;
  const dirs = execFileSync(path.join(REPO, "hack/dataset/build.sh"), [], { encoding: "utf8" }).trim().split("\n");
  const root = dirs.find((d) => d.includes(`-${size}-`));
  if (!root) throw new Error(`hack/dataset/build.sh built no ${size}px variant (got ${dirs.join(", ")})`);
  await ensureBucket("mergevq-data");
  await ensureBucket("mergevq-runs");
  for (const [split, uri] of [
    ["train", dest],
    ["val", `${dest}/val`],
  ] as const) {
    const storage = createStorage(uri);
    const existing = await readShardIndex(uri, storage).catch(() => undefined);
    if (existing) {
      say(`${split} shards already on S3: ${uri} (${existing.numSamples} images, ${existing.shards.length} shards)`);
      continue;
    }
    const index = await packImageNet(readImageNetSplit(root, split), uri, storage, {
      split,
      samplesPerShard: 256,
      seed: 0,
    });
    say(`packed ${index.numSamples} ${split} photos from ${root} into ${index.shards.length} shards at ${uri}`);
  }
  return dest;
}

/**
 * Publish this machine's generated random-weight Inception ONNX (hack/inception/setup.sh) on S3 and return its
 * URI, for runs whose pods do not share this machine's cache (kind: the trainer image carries no Inception).
 * Metrics computed with it stay labelled `[random-inception]` (the label comes from the model's metadata).
 */
export async function publishRandomInception(uri = "s3://mergevq-data/models/fid-inception-random-seed0.onnx") {
  const storage = createStorage(uri);
  if (!(await storage.head(uri))) await storage.put(uri, readFileSync(defaultRandomModelPath()));
  return uri;
}

/** The S3 credentials Secret the example runs reference. */
export async function ensureS3Secret(kc: k8s.KubeConfig, namespace: string, name = "mergevq-s3"): Promise<void> {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const body: k8s.V1Secret = {
    metadata: { name, namespace },
    stringData: {
      AWS_ACCESS_KEY_ID: process.env.AWS_ACCESS_KEY_ID ?? "",
      AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY ?? "",
    },
  };
  await core.deleteNamespacedSecret({ name, namespace }).catch(() => undefined);
  await core.createNamespacedSecret({ namespace, body });
}

export function loadExample(file: "tokenizer-training-demo.yaml"): TokenizerTraining;
export function loadExample(file: "artraining-demo.yaml"): ARTraining;
export function loadExample(file: "samplingjob-demo.yaml"): SamplingJob;
export function loadExample(file: string): TokenizerTraining | ARTraining | SamplingJob {
  return parse(readFileSync(path.join(REPO, "examples", file), "utf8"));
}

/**
 * Inception statistics (mu, sigma) of the held-out photos at `size`² — the gFID reference of the demo's
 * SamplingJob — computed by the trainer CLI (`eval reference-stats`) with the same Inception the reduce pod uses
 * (the generated random-weight network unless MERGEVQ_INCEPTION_URI is set; the stats file records which).
 * Skipped when the object already exists.
 */
export async function ensureReferenceStats(
  valShards: string,
  out: string,
  size: number,
  inceptionUri?: string,
): Promise<void> {
  if (await createStorage(out).head(out)) {
    say(`reference statistics already on S3: ${out}`);
    return;
  }
  execFileSync(
    process.execPath,
    [
      "--import",
      "tsx",
      path.join(REPO, "trainer/src/cli.ts"),
      "eval",
      "reference-stats",
      "--data",
      valShards,
      "--data-format",
      "tar-shards",
      "--out",
      out,
      "--size",
      String(size),
      ...(inceptionUri ? ["--inception", inceptionUri] : []),
    ],
    { stdio: ["ignore", "ignore", "inherit"], cwd: REPO, env: { ...process.env, LOG_LEVEL: "warn" } },
  );
  say(`reference statistics of the held-out photos written to ${out}`);
}

/** Delete a run object (if present) and wait until it is gone. */
export async function deleteRun(kc: k8s.KubeConfig, namespace: string, kind: string, name: string): Promise<void> {
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const plural = `${kind.toLowerCase()}s`;
  await custom
    .deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural, name })
    .catch(() => undefined);
  for (let i = 0; i < 60; i++) {
    const gone = await custom
      .getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural, name })
      .then(() => false)
      .catch(() => true);
    if (gone) return;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** (Re)create a run object: an existing one with the same name is deleted first. */
export async function createRun(
  kc: k8s.KubeConfig,
  namespace: string,
  run: { kind: string; metadata: { name?: string } },
): Promise<void> {
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const plural = `${run.kind.toLowerCase()}s`;
  await deleteRun(kc, namespace, run.kind, run.metadata.name ?? "demo");
  await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural, body: run });
}

type Status = NonNullable<TokenizerTraining["status"]>;

/**
 * Give a re-created run a clean slate: wait until the pods of an earlier run with the same name are gone
 * and delete everything under its checkpoint URI (checkpoints, status/progress.json, artifacts) — otherwise
 * the operator would read the old progress.json (and its lastCheckpoint) for the new run.
 */
export async function resetRunOutputs(
  kc: k8s.KubeConfig,
  namespace: string,
  name: string,
  checkpointUri: string,
): Promise<void> {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const selector = `mergevq.ai/run=${name}`;
  for (let i = 0; i < 120; i++) {
    const pods = await core.listNamespacedPod({ namespace, labelSelector: selector });
    if (pods.items.length === 0) break;
    if (i === 0) say(`waiting for ${pods.items.length} pod(s) of an earlier ${name} run to go away`);
    for (const p of pods.items)
      await core
        .deleteNamespacedPod({ name: p.metadata?.name ?? "", namespace, gracePeriodSeconds: 0 })
        .catch(() => undefined);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const dir = `${checkpointUri.replace(/\/+$/, "")}/`;
  const storage = createStorage(dir);
  const old = (await storage.list(dir)).map((o) => o.uri);
  if (old.length) {
    say(`deleting ${old.length} object(s) of an earlier run under ${dir}`);
    await storage.delete(old);
  }
}

/** Poll the run, printing a `kubectl get tt -w`-style line on every change, until Succeeded/Failed or timeout. */
export async function watchRun(
  kc: k8s.KubeConfig,
  namespace: string,
  kind: string,
  name: string,
  opts: { timeoutMs: number; print?: (line: string) => void },
): Promise<{ status: Status; object: Record<string, unknown> }> {
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const plural = `${kind.toLowerCase()}s`;
  const deadline = Date.now() + opts.timeoutMs;
  let last = "";
  for (;;) {
    const obj = (await custom.getNamespacedCustomObject({
      group: GROUP,
      version: VERSION,
      namespace,
      plural,
      name,
    })) as {
      status?: Status;
    };
    const s = obj.status ?? {};
    const p = s.progress ?? {};
    const line = [
      `phase=${s.phase ?? "-"}`,
      `attempt=${s.attempt ?? "-"}`,
      `step=${p.step ?? "-"}/${p.totalSteps ?? "-"}`,
      `${kind === "ARTraining" ? "seq/s" : "img/s"}=${p.imagesPerSecond?.toFixed(2) ?? "-"}`,
      `eta=${p.etaSeconds !== undefined ? `${Math.round(p.etaSeconds)}s` : "-"}`,
      ...["rFID", "loss", "gFID", "IS"].flatMap((k) => {
        const v = s.metrics?.[k];
        return v === undefined ? [] : [`${k}=${v.toFixed(3)}`];
      }),
    ].join("  ");
    if (line !== last) {
      (opts.print ?? say)(`${kind}/${name}  ${line}`);
      last = line;
    }
    if (s.phase === "Succeeded" || s.phase === "Failed") return { status: s, object: obj as Record<string, unknown> };
    if (Date.now() > deadline)
      throw new Error(`${kind}/${name} not finished after ${opts.timeoutMs / 1000} s (last: ${line})`);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

/** Download an artifact (s3:// or file://) to a local file and return its path. */
export async function download(uri: string, dest: string): Promise<string> {
  const bytes = await createStorage(uri).get(uri);
  mkdirSync(path.dirname(dest), { recursive: true });
  writeFileSync(dest, bytes);
  return dest;
}
