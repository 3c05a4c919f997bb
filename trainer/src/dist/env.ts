// Rendezvous settings from the operator's environment contract (README "Environment contract",
// common/src/contract.ts) plus the local process index from the launcher.
//
// Global rank = NODE_RANK · NPROC_PER_NODE + localRank. The operator never sets RANK/LOCAL_RANK; the local
// process index comes from, in order: the `localRank` option, a `--local-rank N` / `--local-rank=N`
// argument, the env LOCAL_PROCESS_INDEX (set by dist/launch.ts for each child), else 0.
//
// Dist-layer variables (all optional):
//   MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS  rendezvous deadline (default 600, the operator's default)
//   MERGEVQ_DIST_TIMEOUT_SECONDS        peer-silence limit while waiting in a collective (default 60)
//   MERGEVQ_DIST_OP_TIMEOUT_SECONDS     hard limit on one wait even while heartbeats arrive (default 1800)
//   MERGEVQ_DIST_BIND_ADDR              address rank 0's MASTER_PORT listener binds (default: pod IP, else the
//                                       resolved MASTER_ADDR when it is local, else 0.0.0.0)
//   MERGEVQ_POD_IP / POD_IP             this pod's IP (downward API status.podIP): ring listener address
import { z } from "zod";
import { ENV } from "../../../common/src/contract.ts";
import { envInt, parseEnv } from "../../../common/src/env.ts";
import { DistError } from "./transport.ts";

export interface DistEnv {
  masterAddr: string;
  masterPort: number;
  nnodes: number;
  nodeRank: number;
  nprocPerNode: number;
  worldSize: number;
  localRank: number;
  /** Global rank. */
  rank: number;
  rendezvousTimeoutMs: number;
  silenceTimeoutMs: number;
  opTimeoutMs: number;
  bindAddr?: string;
  podIp?: string;
  run?: string;
  attempt?: string;
}

const Schema = z.object({
  MASTER_ADDR: z.string().optional(),
  PET_MASTER_ADDR: z.string().optional(),
  MASTER_PORT: envInt({ min: 1, max: 65535 }).optional(),
  PET_MASTER_PORT: envInt({ min: 1, max: 65535 }).optional(),
  NNODES: envInt({ min: 1 }).optional(),
  PET_NNODES: envInt({ min: 1 }).optional(),
  NODE_RANK: envInt({ min: 0 }).optional(),
  PET_NODE_RANK: envInt({ min: 0 }).optional(),
  NPROC_PER_NODE: envInt({ min: 1 }).optional(),
  PET_NPROC_PER_NODE: envInt({ min: 1 }).optional(),
  WORLD_SIZE: envInt({ min: 1 }).optional(),
  LOCAL_PROCESS_INDEX: envInt({ min: 0 }).optional(),
  MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS: envInt({ min: 1 }).optional(),
  MERGEVQ_DIST_TIMEOUT_SECONDS: envInt({ min: 1 }).optional(),
  MERGEVQ_DIST_OP_TIMEOUT_SECONDS: envInt({ min: 1 }).optional(),
  MERGEVQ_DIST_BIND_ADDR: z.string().optional(),
  MERGEVQ_POD_IP: z.string().optional(),
  POD_IP: z.string().optional(),
  MERGEVQ_RUN: z.string().optional(),
  MERGEVQ_ATTEMPT: z.string().optional(),
});

/** `--local-rank N` or `--local-rank=N` from argv; undefined when absent. */
export function localRankFromArgv(argv: readonly string[]): number | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    let v: string | undefined;
    if (a === "--local-rank" || a === "--local_rank") v = argv[i + 1];
    else if (a.startsWith("--local-rank=") || a.startsWith("--local_rank=")) v = a.slice(a.indexOf("=") + 1);
    else continue;
    if (v === undefined || !/^\d+$/.test(v))
      throw new DistError("CONFIG", `--local-rank: expected a non-negative integer, got "${v ?? ""}"`);
    return Number(v);
  }
  return undefined;
}

/**
 * Resolve the rendezvous settings. Unset rendezvous variables mean a single process (rank 0 of 1).
 * Throws DistError("CONFIG") / EnvError naming the variable on inconsistent values.
 */
export function resolveDistEnv(
  opts: { env?: NodeJS.ProcessEnv; argv?: readonly string[]; localRank?: number } = {},
): DistEnv {
  const env = opts.env ?? process.env;
  const e = parseEnv(Schema, env);
  const nproc = e.NPROC_PER_NODE ?? e.PET_NPROC_PER_NODE ?? 1;
  const nodeRank = e.NODE_RANK ?? e.PET_NODE_RANK ?? 0;
  let nnodes = e.NNODES ?? e.PET_NNODES;
  const world = e.WORLD_SIZE;
  if (nnodes === undefined) {
    if (world !== undefined) {
      if (world % nproc !== 0) {
        throw new DistError("CONFIG", `${ENV.WORLD_SIZE}=${world} is not a multiple of ${ENV.NPROC_PER_NODE}=${nproc}`);
      }
      nnodes = world / nproc;
    } else nnodes = 1;
  }
  const worldSize = world ?? nnodes * nproc;
  if (worldSize !== nnodes * nproc) {
    throw new DistError(
      "CONFIG",
      `${ENV.WORLD_SIZE}=${worldSize} differs from ${ENV.NNODES}=${nnodes} × ${ENV.NPROC_PER_NODE}=${nproc} (process semantics)`,
    );
  }
  if (nodeRank >= nnodes)
    throw new DistError("CONFIG", `${ENV.NODE_RANK}=${nodeRank} must be < ${ENV.NNODES}=${nnodes}`);
  const localRank =
    opts.localRank ?? localRankFromArgv(opts.argv ?? process.argv.slice(2)) ?? e.LOCAL_PROCESS_INDEX ?? 0;
  if (!Number.isInteger(localRank) || localRank < 0 || localRank >= nproc) {
    throw new DistError("CONFIG", `local process index ${localRank} out of range for ${ENV.NPROC_PER_NODE}=${nproc}`);
  }
  const masterAddr = e.MASTER_ADDR ?? e.PET_MASTER_ADDR;
  const masterPort = e.MASTER_PORT ?? e.PET_MASTER_PORT;
  if (worldSize > 1 && (!masterAddr || masterPort === undefined)) {
    throw new DistError(
      "CONFIG",
      `${!masterAddr ? ENV.MASTER_ADDR : ENV.MASTER_PORT} is required but not set (WORLD_SIZE=${worldSize} > 1)`,
    );
  }
  return {
    masterAddr: masterAddr ?? "127.0.0.1",
    masterPort: masterPort ?? 0,
    nnodes,
    nodeRank,
    nprocPerNode: nproc,
    worldSize,
    localRank,
    rank: nodeRank * nproc + localRank,
    rendezvousTimeoutMs: (e.MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS ?? 600) * 1000,
    silenceTimeoutMs: (e.MERGEVQ_DIST_TIMEOUT_SECONDS ?? 60) * 1000,
    opTimeoutMs: (e.MERGEVQ_DIST_OP_TIMEOUT_SECONDS ?? 1800) * 1000,
    bindAddr: e.MERGEVQ_DIST_BIND_ADDR,
    podIp: e.MERGEVQ_POD_IP ?? e.POD_IP,
    run: e.MERGEVQ_RUN,
    attempt: e.MERGEVQ_ATTEMPT,
  };
}
