// `hack/cluster-up.sh`: start the local test cluster in the background and print its env exports.
//
//   node --import tsx test/cluster/up.ts          start (or reuse) → prints `export KUBECONFIG=…` etc. on stdout
//   node --import tsx test/cluster/up.ts --serve  (internal) the supervisor process that owns the cluster
//
// State dir: $MERGEVQ_CLUSTER_DIR (default /tmp/mergevq-cluster) with env.sh, state.json, up.log and run/.
import { spawn } from "node:child_process";
import { mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startCluster } from "./cluster.ts";
import { sleep, tailFile } from "./proc.ts";
import { alive, type ClusterState, readState, stateDir } from "./state.ts";

const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

async function serve(dir: string): Promise<void> {
  const cluster = await startCluster({
    dir,
    keepDir: true,
    applyCrds: "warn",
    log: (m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`),
  });
  const env = cluster.env();
  writeFileSync(
    path.join(dir, "env.sh"),
    `${Object.entries(env)
      .map(([k, v]) => `export ${k}=${q(v)}`)
      .join("\n")}\nexport MERGEVQ_NODE_AGENT_URL=${q(cluster.nodeAgentUrl ?? "")}\n`,
    { mode: 0o600 },
  );
  const state: ClusterState = {
    pid: process.pid,
    id: cluster.id,
    kubeconfigPath: cluster.kubeconfigPath,
    s3Endpoint: cluster.s3.endpoint,
    nodeAgentUrl: cluster.nodeAgentUrl,
    startMs: cluster.startMs,
  };
  writeFileSync(path.join(dir, "state.json"), JSON.stringify(state, null, 2));
  // cluster.ts stops everything on SIGTERM/SIGINT and exits; keep the event loop alive until then.
  setInterval(() => {}, 1 << 30);
}

async function launch(dir: string): Promise<void> {
  const existing = readState(dir);
  if (existing && alive(existing.pid)) {
    process.stderr.write(`cluster already running (pid ${existing.pid}, state ${dir})\n`);
  } else {
    mkdirSync(dir, { recursive: true });
    for (const f of ["state.json", "env.sh"]) {
      try {
        writeFileSync(path.join(dir, f), "");
      } catch {
        /* ignore */
      }
    }
    const logFile = path.join(dir, "up.log");
    const out = openSync(logFile, "w");
    const t0 = Date.now();
    const child = spawn(
      process.execPath,
      ["--no-warnings", "--import", "tsx", fileURLToPath(import.meta.url), "--serve"],
      {
        detached: true,
        stdio: ["ignore", out, out],
        env: { ...process.env, MERGEVQ_CLUSTER_DIR: dir },
      },
    );
    child.unref();
    let exited: string | undefined;
    child.on("exit", (c, s) => {
      exited = s ? `killed by ${s}` : `exited with code ${c}`;
    });
    for (;;) {
      const st = readState(dir);
      if (st?.pid) break;
      if (exited) throw new Error(`cluster supervisor ${exited}\n--- ${logFile} ---\n${tailFile(logFile, 40)}`);
      if (Date.now() - t0 > 180_000) throw new Error(`cluster not ready after 180 s; see ${logFile}`);
      await sleep(250);
    }
    process.stderr.write(
      `cluster up in ${((Date.now() - t0) / 1000).toFixed(1)} s (state ${dir}, stop with hack/cluster-down.sh)\n`,
    );
  }
  const st = readState(dir);
  process.stdout.write(readFileSync(path.join(dir, "env.sh"), "utf8"));
  process.stderr.write(`S3 endpoint: ${st?.s3Endpoint}\n`);
}

const dir = stateDir();
const run = process.argv.includes("--serve") ? serve(dir) : launch(dir);
run.catch((e) => {
  process.stderr.write(`cluster-up: ${(e as Error).message}\n`);
  process.exit(1);
});
