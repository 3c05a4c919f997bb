// cleanPodPolicy: which pods to delete once a run is terminal (default Running: free the accelerators of
// still-running ranks at once, keep finished pods for their logs; kubeflow/trainer#1982, #1579).
import type { V1Pod } from "@kubernetes/client-node";
import { isTerminal } from "./failurePolicy.ts";

export type CleanPodPolicy = "None" | "Running" | "All";

export function podsToClean(pods: readonly V1Pod[], policy: CleanPodPolicy): V1Pod[] {
  const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
  switch (policy) {
    case "All":
      return live;
    case "Running":
      return live.filter((p) => !isTerminal(p));
    default:
      return [];
  }
}
