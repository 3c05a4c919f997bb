// `make demo`: fresh clone → trained tokenizer with rFID, then a Stage II AR model (MergeAR) on its codes and a
// sharded SamplingJob with gFID/IS, all in `kubectl get`. Steps print elapsed time on stderr.
// Assumes `make setup` ran (the Makefile does that first). Leaves the cluster up for exploration.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import * as k8s from "@kubernetes/client-node";
import {
  createRun,
  deleteRun,
  demoEnv,
  download,
  ensureReferenceStats,
  ensureS3Secret,
  installOperator,
  loadExample,
  prepareData,
  REPO,
  resetRunOutputs,
  say,
  watchRun,
} from "./flow.ts";

function loadEnvSh(file: string): void {
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /^export ([A-Z_0-9]+)='(.*)'$/.exec(line);
    if (m) process.env[m[1]] = m[2].replaceAll("'\\''", "'");
  }
}

async function main(): Promise<void> {
  const clusterDir = process.env.MERGEVQ_CLUSTER_DIR || "/tmp/mergevq-cluster";
  say(`starting the local control plane, node agent and MinIO (state ${clusterDir})`);
  execFileSync(path.join(REPO, "hack/cluster-up.sh"), [], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, MERGEVQ_CLUSTER_DIR: clusterDir },
  });
  loadEnvSh(path.join(clusterDir, "env.sh"));
  const env = demoEnv();

  say("installing the CRDs and the operator with Helm (charts/mergevq-operator)");
  installOperator(env);

  say("building the real-photo dataset and uploading tar shards to MinIO");
  const dataset = await prepareData({ size: 64 });

  const kc = new k8s.KubeConfig();
  kc.loadFromFile(env.kubeconfig);
  await ensureS3Secret(kc, "default");
  const tt = loadExample("tokenizer-training-demo.yaml");
  tt.spec.dataset.uri = dataset;
  const ar = loadExample("artraining-demo.yaml");
  ar.spec.dataset.uri = dataset;
  const sj = loadExample("samplingjob-demo.yaml");
  const reference = sj.spec.evaluation.referenceStatsUri ?? `${dataset}/val-stats.npz`;
  sj.spec.evaluation.referenceStatsUri = reference;

  say("computing Inception statistics of the held-out photos (the SamplingJob's gFID reference)");
  await ensureReferenceStats(`${dataset}/val`, reference, 64);

  // Re-running the demo starts from a clean slate: old runs and their outputs are removed first.
  const runs = [
    ["TokenizerTraining", tt.metadata.name ?? "demo", tt.spec.checkpoint.uri],
    ["ARTraining", ar.metadata.name ?? "demo-ar", ar.spec.checkpoint.uri],
    ["SamplingJob", sj.metadata.name ?? "demo-samples", sj.spec.checkpoint.uri],
  ] as const;
  for (const [kind, name] of [...runs].reverse()) await deleteRun(kc, "default", kind, name);
  for (const [, name, uri] of runs) await resetRunOutputs(kc, "default", name, uri);
  say(
    `applying examples/tokenizer-training-demo.yaml (${tt.spec.resources.nodes} nodes, preset ${tt.spec.model.preset}, ${tt.spec.training.steps} steps), ` +
      `examples/artraining-demo.yaml (tiny AR, MergeAR ${ar.spec.model.mergeAR.enabled ? "on" : "off"}, ${ar.spec.training.steps} steps; waits for ${tt.metadata.name}) ` +
      `and examples/samplingjob-demo.yaml (${sj.spec.sampling.numSamples} samples in ${sj.spec.sampling.shards} shards; waits for ${ar.metadata.name})`,
  );
  await createRun(kc, "default", tt);
  await createRun(kc, "default", ar);
  await createRun(kc, "default", sj);

  const { status } = await watchRun(kc, "default", "TokenizerTraining", tt.metadata.name ?? "demo", {
    timeoutMs: 60 * 60_000,
  });
  if (status.phase !== "Succeeded") {
    throw new Error(`the demo run ended ${status.phase}: ${JSON.stringify(status.conditions, null, 2)}`);
  }
  console.log(`\nTokenizerTraining/${tt.metadata.name} Succeeded`);
  const metrics = Object.entries(status.metrics ?? {});
  const rfid = metrics.filter(([k]) => k.startsWith("rFID"));
  const random = rfid.some(([k]) => k.includes("[random-inception]"));
  console.log(
    `  rFID (${random ? "Inception weights RANDOMLY generated: NOT a real FID" : "Inception weights from evaluation.inceptionUri"}):`,
  );
  for (const [k, v] of rfid) console.log(`    ${k.padEnd(34)} ${v}`);
  for (const [k, v] of metrics.filter(([k]) => /^(l1|codebookUsage)@/.test(k))) console.log(`    ${k.padEnd(34)} ${v}`);
  console.log(`  notes:       ${status.metricsNote ?? ""}`);
  console.log(`  checkpoint:  ${status.artifacts?.checkpointUri}`);
  const grid = status.artifacts?.imageUris?.[0];
  if (grid) {
    const file = await download(grid, path.join(clusterDir, "demo", "reconstruction.png"));
    console.log(`  reconstruction grid (originals above reconstructions): ${file}`);
  }

  say(`Stage II: ARTraining/${ar.metadata.name} trains on the frozen tokenizer's codes`);
  const arDone = await watchRun(kc, "default", "ARTraining", ar.metadata.name ?? "demo-ar", { timeoutMs: 30 * 60_000 });
  if (arDone.status.phase !== "Succeeded") {
    throw new Error(`ARTraining ended ${arDone.status.phase}: ${JSON.stringify(arDone.status.conditions, null, 2)}`);
  }
  console.log(`\nARTraining/${ar.metadata.name} Succeeded`);
  for (const [k, v] of Object.entries(arDone.status.metrics ?? {})) console.log(`    ${k.padEnd(34)} ${v}`);
  console.log(`  checkpoint:  ${arDone.status.artifacts?.checkpointUri}`);

  say(`SamplingJob/${sj.metadata.name}: ${sj.spec.sampling.shards} sampling shards, then the gFID/IS reduce step`);
  const sjDone = await watchRun(kc, "default", "SamplingJob", sj.metadata.name ?? "demo-samples", {
    timeoutMs: 30 * 60_000,
  });
  if (sjDone.status.phase !== "Succeeded") {
    throw new Error(`SamplingJob ended ${sjDone.status.phase}: ${JSON.stringify(sjDone.status.conditions, null, 2)}`);
  }
  console.log(`\nSamplingJob/${sj.metadata.name} Succeeded (reference: ${reference})`);
  for (const [k, v] of Object.entries(sjDone.status.metrics ?? {})) console.log(`    ${k.padEnd(34)} ${v}`);
  console.log(`  notes:       ${sjDone.status.metricsNote ?? ""}`);
  const samples = sjDone.status.artifacts?.imageUris?.[0];
  if (samples) {
    const file = await download(samples, path.join(clusterDir, "demo", "samples.png"));
    console.log(`  sample grid: ${file}`);
  }
  console.log(
    `\n${execFileSync(path.join(env.binDir, "kubectl"), ["get", "tokenizertrainings,artrainings,samplingjobs", "-A", "-o", "wide"], { encoding: "utf8" })}`,
  );
  console.log("The cluster is still up. Explore it with:");
  console.log(`  export KUBECONFIG=${env.kubeconfig}`);
  console.log(`  ${path.join(env.binDir, "kubectl")} get tt,art,sj -A`);
  console.log("Stop it with: make demo-down");
}

main().catch((e) => {
  console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
