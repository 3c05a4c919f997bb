// Test fixtures (unit and integration): fluent run builders after jobset's wrappers.go, pod status helpers,
// a tiny fake trainer that speaks the trainer contract, and an operator process launcher.
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { V1Pod } from "@kubernetes/client-node";
import {
  API_VERSION,
  type ARTraining,
  arTrainingCrd,
  type SamplingJob,
  samplingJobCrd,
  type TokenizerTraining,
  tokenizerTrainingCrd,
} from "../api/v1alpha1/index.ts";
import { resolveAccelerator } from "../reconcile/accelerator.ts";
import { type OperatorContext, parseRun, type RunKind } from "../reconcile/run.ts";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

export const testContext = (over: Partial<OperatorContext> = {}): OperatorContext => ({
  trainerImage: "ghcr.io/mergevq/mergevq-k8s/trainer:test",
  barrierImage: "ghcr.io/mergevq/mergevq-k8s/trainer:test",
  clusterDomain: "cluster.local",
  s3Endpoint: "http://minio.example:9000",
  profiles: {},
  ...over,
});

type Raw = Record<string, unknown>;

function deepSet(obj: Raw, keys: string[], value: unknown): void {
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    if (typeof o[k] !== "object" || o[k] === null) o[k] = {};
    o = o[k] as Raw;
  }
  o[keys[keys.length - 1]] = value;
}

class RunBuilder<T> {
  constructor(protected raw: Raw) {}
  set(p: string, value: unknown): this {
    deepSet(this.raw, p.split("."), value);
    return this;
  }
  namespace(ns: string): this {
    return this.set("metadata.namespace", ns);
  }
  uid(uid: string): this {
    return this.set("metadata.uid", uid);
  }
  nodes(n: number): this {
    return this.set("spec.resources.nodes", n);
  }
  accelerator(a: Raw): this {
    return this.set("spec.resources.accelerator", a);
  }
  suspended(v = true): this {
    return this.set("spec.runPolicy.suspend", v);
  }
  backoffLimit(n: number): this {
    return this.set("spec.runPolicy.backoffLimit", n);
  }
  stallTimeout(s: number): this {
    return this.set("spec.runPolicy.stallTimeoutSeconds", s);
  }
  ttl(s: number): this {
    return this.set("spec.runPolicy.ttlSecondsAfterFinished", s);
  }
  cleanPodPolicy(p: "None" | "Running" | "All"): this {
    return this.set("spec.runPolicy.cleanPodPolicy", p);
  }
  deadline(s: number): this {
    return this.set("spec.runPolicy.activeDeadlineSeconds", s);
  }
  command(cmd: string[], args?: string[]): this {
    this.set("spec.trainer.command", cmd);
    if (args) this.set("spec.trainer.args", args);
    return this;
  }
  image(img: string): this {
    return this.set("spec.trainer.image", img);
  }
  env(vars: Record<string, string>): this {
    return this.set(
      "spec.trainer.env",
      Object.entries(vars).map(([name, value]) => ({ name, value })),
    );
  }
  s3(secret: string, endpoint?: string): this {
    return this.set("spec.s3", { secretRef: { name: secret }, ...(endpoint ? { endpoint } : {}) });
  }
  checkpointUri(uri: string): this {
    return this.set("spec.checkpoint.uri", uri);
  }
  status(s: Raw): this {
    this.raw.status = s;
    return this;
  }
  /** The raw object (what a user would apply). */
  raw_(): Raw {
    return structuredClone(this.raw);
  }
  /** Parsed with the API schema (defaults applied). */
  obj(): T {
    const p = parseRun(this.raw.kind as RunKind, this.raw);
    if (!p.ok) throw new Error(`fixture invalid: ${p.message}`);
    return p.run as T;
  }
}

const meta = (name: string) => ({
  name,
  namespace: "ns",
  uid: `uid-${name}`,
  generation: 1,
  creationTimestamp: "2026-01-01T00:00:00Z",
});

export function makeTokenizerTraining(name: string) {
  return new RunBuilder<TokenizerTraining>({
    apiVersion: API_VERSION,
    kind: tokenizerTrainingCrd.kind,
    metadata: meta(name),
    spec: {
      model: { preset: "T0" },
      dataset: { uri: "s3://data/imagenet" },
      training: { steps: 10 },
      checkpoint: { uri: `s3://ckpt/${name}` },
      s3: { secretRef: { name: "s3-creds" } },
    },
  });
}

export function makeARTraining(name: string, tokenizer = "tok") {
  return new RunBuilder<ARTraining>({
    apiVersion: API_VERSION,
    kind: arTrainingCrd.kind,
    metadata: meta(name),
    spec: {
      tokenizerRef: { name: tokenizer },
      model: { size: "tiny" },
      dataset: { uri: "s3://data/imagenet" },
      training: { steps: 10 },
      checkpoint: { uri: `s3://ckpt/${name}` },
      s3: { secretRef: { name: "s3-creds" } },
    },
  });
}

export function makeSamplingJob(name: string, model = "ar", shards = 2) {
  return new RunBuilder<SamplingJob>({
    apiVersion: API_VERSION,
    kind: samplingJobCrd.kind,
    metadata: meta(name),
    spec: {
      modelRef: { name: model },
      sampling: { numSamples: 8, shards },
      checkpoint: { uri: `s3://ckpt/${name}` },
      s3: { secretRef: { name: "s3-creds" } },
    },
  });
}

/** The resolved CPU accelerator profile of a 2-node run (what planTraining receives from observe). */
export function cpuAccelerator() {
  const r = resolveAccelerator({ vendor: "cpu" }, {}, 2);
  if (!r.ok) throw new Error(`cpu accelerator profile: ${r.message}`);
  return r.value;
}

/** Pod status helpers (what the kubelet would write). */
export function withPhase(
  pod: V1Pod,
  phase: "Pending" | "Running" | "Succeeded" | "Failed",
  opts: {
    exitCode?: number;
    reason?: string;
    message?: string;
    podReason?: string;
    disruption?: boolean;
    finishedAt?: string;
    barrierExit?: number;
    created?: string;
  } = {},
): V1Pod {
  const p = structuredClone(pod);
  p.metadata!.creationTimestamp = (opts.created ?? "2026-01-01T00:00:00Z") as unknown as Date;
  const terminated =
    phase === "Succeeded" || phase === "Failed"
      ? {
          exitCode: opts.exitCode ?? (phase === "Succeeded" ? 0 : 1),
          reason: opts.reason ?? (phase === "Succeeded" ? "Completed" : "Error"),
          message: opts.message,
          finishedAt: (opts.finishedAt ?? "2026-01-01T00:10:00Z") as unknown as Date,
        }
      : undefined;
  p.status = {
    phase,
    ...(opts.podReason ? { reason: opts.podReason } : {}),
    conditions: opts.disruption ? [{ type: "DisruptionTarget", status: "True", reason: "PreemptionByScheduler" }] : [],
    containerStatuses: [
      {
        name: "trainer",
        image: "x",
        imageID: "",
        ready: phase === "Running",
        restartCount: 0,
        state: terminated
          ? { terminated }
          : phase === "Running"
            ? { running: {} }
            : { waiting: { reason: "ContainerCreating" } },
      },
    ],
    ...(opts.barrierExit !== undefined
      ? {
          initContainerStatuses: [
            {
              name: "rendezvous-barrier",
              image: "x",
              imageID: "",
              ready: false,
              restartCount: 0,
              state: { terminated: { exitCode: opts.barrierExit, reason: "Error" } },
            },
          ],
        }
      : {}),
  };
  return p;
}

/**
 * A fake trainer for integration tests: a CommonJS `node -e` script that follows common/src/contract.ts.
 * Rank 0 listens on MASTER_ADDR:MASTER_PORT and waits until every other rank joined (like a TCPStore;
 * the barrier of ranks > 0 connects first), writes progress.json
 * every step and, at the end, metrics.json plus the termination message. Every rank writes the env it saw to
 * <status>/env-rank<r>-a<attempt>.json. Behaviour comes from env (spec.trainer.env):
 *   FAKE_STEPS (default 4), FAKE_STEP_MS (300), FAKE_FAIL="rank:attempt:step:code" (exit with code),
 *   FAKE_STALL_AT_STEP (stop reporting and hang; only in attempt FAKE_STALL_ATTEMPT when set),
 *   FAKE_RFID (final rFID, default 1.5), FAKE_GFID / FAKE_IS (reduce step). Shards use the shard index as rank.
 * The S3 SDK is resolved from the repository (the pod's cwd is a temp dir).
 */
export function fakeTrainerScript(repoRoot = REPO_ROOT): string {
  return `
const net=require('net'),fs=require('fs');
const R=require('module').createRequire(${JSON.stringify(`${repoRoot}/package.json`)});
const {S3Client,PutObjectCommand}=R('@aws-sdk/client-s3');
const e=process.env,rank=Number(e.MERGEVQ_SHARD_INDEX||e.NODE_RANK||0),attempt=Number(e.MERGEVQ_ATTEMPT);
const s3=new S3Client({endpoint:e.AWS_ENDPOINT_URL,region:e.AWS_REGION||'us-east-1',forcePathStyle:true,
  credentials:{accessKeyId:e.AWS_ACCESS_KEY_ID,secretAccessKey:e.AWS_SECRET_ACCESS_KEY}});
const loc=(u)=>{const m=/^s3:\\/\\/([^/]+)\\/?(.*)$/.exec(u);return {Bucket:m[1],Key:m[2]}};
const put=async(name,obj)=>{const l=loc(e.MERGEVQ_STATUS_URI);await s3.send(new PutObjectCommand({Bucket:l.Bucket,Key:l.Key+'/'+name,Body:JSON.stringify(obj)}))};
const sleep=(ms)=>new Promise(r=>setTimeout(r,ms));
(async()=>{
  let srv;
  // Rendezvous like torch's TCPStore: rank 0 listens and waits for every other rank to join.
  if(e.NODE_RANK==='0'&&Number(e.NNODES)>1){let joined=0,all;const ready=new Promise(r=>all=r);
    srv=net.createServer(s=>{s.on('data',d=>{if(String(d).includes('join')&&++joined===Number(e.NNODES)-1)all()});s.on('error',()=>{})});
    await new Promise((r,j)=>{srv.once('error',j);srv.listen(Number(e.MASTER_PORT),e.MASTER_ADDR,r)});await ready;}
  else if(Number(e.NNODES)>1){await new Promise((r,j)=>{const c=net.connect(Number(e.MASTER_PORT),e.MASTER_ADDR,()=>{c.end('join');r()});c.on('error',j)})}
  const envKeys=Object.keys(e).filter(k=>/^(MASTER_|NNODES|NODE_RANK|NPROC|WORLD_SIZE|PET_|GROUP_RANK|RANK|LOCAL_RANK|MERGEVQ_|DATASET_|CHECKPOINT_|RESUME_FROM|AWS_|DIST_|HCCL_)/.test(k));
  await put('env-'+(e.MERGEVQ_STEP==='reduce'?'reduce':'rank'+rank)+'-a'+attempt+'.json',Object.fromEntries(envKeys.map(k=>[k,k==='AWS_SECRET_ACCESS_KEY'?'<set>':e[k]])));
  const total=Number(e.FAKE_STEPS||4),stepMs=Number(e.FAKE_STEP_MS||300);
  const fail=(e.FAKE_FAIL||'').split(',').filter(Boolean).map(f=>f.split(':').map(Number));
  let step=e.RESUME_FROM?Number(e.RESUME_FROM.split('step-').pop()):0;
  if(e.MERGEVQ_STEP==='reduce'){const rep={metrics:{gFID:Number(e.FAKE_GFID||7.5),IS:Number(e.FAKE_IS||42)},notes:['fake reduce']};fs.writeFileSync(e.TERMINATION_MESSAGE_PATH,JSON.stringify(rep));await put('metrics.json',rep);process.exit(0);}
  for(;;){
    for(const [r,a,s,c] of fail){if(r===rank&&a===attempt&&s===step){console.error('fake failure code '+c);process.exit(c)}}
    if(step>=total)break;
    if(Number(e.FAKE_STALL_AT_STEP||-1)===step&&(!e.FAKE_STALL_ATTEMPT||Number(e.FAKE_STALL_ATTEMPT)===attempt)){console.error('stalling at step '+step);await sleep(1e9)}
    await sleep(stepMs);step++;
    if(rank===0&&!e.MERGEVQ_SHARD_INDEX){await put('progress.json',{attempt,step,totalSteps:total,imagesPerSecond:10,etaSeconds:(total-step)*stepMs/1000,losses:{loss:1/step},lastCheckpoint:e.CHECKPOINT_DIR+'/step-'+step,updatedAt:new Date().toISOString()})}
  }
  if(rank===0||e.MERGEVQ_SHARD_INDEX){const rep={metrics:{rFID:Number(e.FAKE_RFID||1.5)},artifacts:{checkpointUri:e.CHECKPOINT_DIR+'/final'},step:total,notes:['fake trainer']};
    fs.writeFileSync(e.TERMINATION_MESSAGE_PATH,JSON.stringify(rep));await put('metrics.json',rep)}
  if(srv)srv.close();
  process.exit(0);
})().catch(err=>{console.error(err);process.exit(2)});
`;
}

export interface OperatorProcess {
  child: ChildProcess;
  logs: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Start the operator's real entrypoint as a child process: `operator/src/main.ts` through tsx (tests), or with
 * `entry: "dist"` the compiled `dist/operator/src/main.js` that the image runs (`tsc -p tsconfig.build.json`).
 * `nodeArgs` go before the entry (the image's V8 flags, profiling).
 */
export function startOperator(
  env: Record<string, string>,
  repoRoot = REPO_ROOT,
  opts: { entry?: "source" | "dist"; nodeArgs?: string[] } = {},
): OperatorProcess {
  const entry = {
    dist: [path.join(repoRoot, "dist/operator/src/main.js")],
    source: ["--import", "tsx", path.join(repoRoot, "operator/src/main.ts")],
  }[opts.entry ?? "source"];
  const args = [...(opts.nodeArgs ?? []), ...entry];
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "/tmp",
      HEALTH_PORT: "0",
      METRICS_PORT: "0",
      BIND_ADDRESS: "127.0.0.1",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const keep = (b: Buffer) => {
    out += b.toString();
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return {
    child,
    logs: () => out,
    stop: async (signal: NodeJS.Signals = "SIGTERM") => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
