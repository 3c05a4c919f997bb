// Names and labels of the children. Names are deterministic so that a create after a crash is idempotent
// (409 AlreadyExists = already done) and so that pods of different attempts never collide.
import { createHash } from "node:crypto";
import { GROUP } from "../api/v1alpha1/group.ts";

export const FIELD_MANAGER = "mergevq-operator";

export const LABEL = {
  run: `${GROUP}/run`,
  runUid: `${GROUP}/run-uid`,
  kind: `${GROUP}/kind`,
  role: `${GROUP}/role`,
  nodeRank: `${GROUP}/node-rank`,
  attempt: `${GROUP}/attempt`,
  shard: `${GROUP}/shard`,
  managedBy: "app.kubernetes.io/managed-by",
} as const;

export const MANAGED_BY = "mergevq-operator";

export type Role = "node" | "shard" | "reduce";

/** Truncate `base` so that `base + suffix` fits `max` chars, adding a short hash when truncating. */
export function fitName(base: string, suffix: string, max = 63): string {
  if (base.length + suffix.length <= max) return base + suffix;
  const h = createHash("sha256").update(base).digest("hex").slice(0, 6);
  const keep = max - suffix.length - h.length - 1;
  return `${base.slice(0, keep).replace(/-+$/, "")}-${h}${suffix}`;
}

/** Headless Service name = pod subdomain (a DNS label, ≤ 63 chars). */
export function serviceName(run: string): string {
  return fitName(run, "", 63);
}

/** Stable hostname of a node rank (DNS label): `<run>-node-<rank>`. Identical across attempts. */
export function hostname(run: string, rank: number): string {
  return fitName(run, `-node-${rank}`, 63);
}

/** Pod name of a node rank in an attempt: `<run>-node-<rank>-a<attempt>`. */
export function nodePodName(run: string, rank: number, attempt: number): string {
  return fitName(run, `-node-${rank}-a${attempt}`, 253);
}

export function shardPodName(run: string, shard: number, attempt: number): string {
  return fitName(run, `-shard-${shard}-a${attempt}`, 253);
}

export function reducePodName(run: string, attempt: number): string {
  return fitName(run, `-reduce-a${attempt}`, 253);
}

/** Label selector for everything the operator manages. */
export const MANAGED_SELECTOR = `${LABEL.managedBy}=${MANAGED_BY}`;
