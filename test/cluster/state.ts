// State of the background cluster started by up.ts (shared with down.ts).
import { readFileSync } from "node:fs";
import path from "node:path";

export const stateDir = () => process.env.MERGEVQ_CLUSTER_DIR || "/tmp/mergevq-cluster";

export interface ClusterState {
  pid: number;
  id: string;
  kubeconfigPath: string;
  s3Endpoint: string;
  nodeAgentUrl?: string;
  startMs: number;
}

export function readState(dir = stateDir()): ClusterState | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, "state.json"), "utf8")) as ClusterState;
  } catch {
    return undefined;
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
