// Global rank of this process from the operator's rendezvous variables (PyTorch semantics, operator-design
// §3): NODE_RANK (pod index), NPROC_PER_NODE (processes per pod), WORLD_SIZE; the local process index comes
// from the launcher (argument), not from the environment — RANK/LOCAL_RANK are not set by the operator.
import { z } from "zod";
import { envInt, parseEnv } from "../../../common/src/env.ts";

export interface RankInfo {
  rank: number;
  worldSize: number;
  nodeRank: number;
  localIndex: number;
  nprocPerNode: number;
}

const RankEnv = z.object({
  NODE_RANK: envInt({ min: 0 }).optional(),
  NPROC_PER_NODE: envInt({ min: 1 }).optional(),
  WORLD_SIZE: envInt({ min: 1 }).optional(),
});

/** Unset variables mean a single process (rank 0 of 1). */
export function rankFromEnv(localIndex = 0, env: NodeJS.ProcessEnv = process.env): RankInfo {
  const e = parseEnv(RankEnv, env);
  const nodeRank = e.NODE_RANK ?? 0;
  const nprocPerNode = e.NPROC_PER_NODE ?? 1;
  const worldSize = e.WORLD_SIZE ?? nprocPerNode * (nodeRank + 1);
  if (!Number.isInteger(localIndex) || localIndex < 0 || localIndex >= nprocPerNode) {
    throw new Error(`local process index ${localIndex} out of range for NPROC_PER_NODE=${nprocPerNode}`);
  }
  const rank = nodeRank * nprocPerNode + localIndex;
  if (rank >= worldSize) {
    throw new Error(
      `WORLD_SIZE: ${worldSize} is too small for NODE_RANK=${nodeRank}, NPROC_PER_NODE=${nprocPerNode}, local index ${localIndex} (rank ${rank})`,
    );
  }
  return { rank, worldSize, nodeRank, localIndex, nprocPerNode };
}
