// Accelerator profiles (operator-design §4). A run names a profile configured in the operator (Helm value
// acceleratorProfiles → env ACCELERATOR_PROFILES) and/or sets vendor fields inline; inline fields win.
// NPROC_PER_NODE always comes from `perNode` (never from a substring test on the resource name, the
// Trainer v2 `numGPU()` bug), or from `processesPerNode` for CPU runs.
import type { V1EnvVar, V1Toleration } from "@kubernetes/client-node";
import { z } from "zod";

export const Vendor = z.enum(["cpu", "nvidia", "ascend"]);
export type Vendor = z.infer<typeof Vendor>;

export const AcceleratorProfile = z.object({
  vendor: Vendor,
  resourceName: z.string().optional(),
  perNode: z.number().int().min(0).optional(),
  nodeSelector: z.record(z.string(), z.string()).optional(),
  tolerations: z.array(z.record(z.string(), z.unknown())).optional(),
  /** Ascend only: HCCL settings. */
  hccl: z
    .object({
      basePort: z.number().int().min(1024).max(65500).optional(),
      connectTimeoutSeconds: z.number().int().min(120).max(7200).optional(),
      socketIfname: z.string().optional(),
    })
    .optional(),
});
export type AcceleratorProfile = z.infer<typeof AcceleratorProfile>;
export const AcceleratorProfiles = z.record(z.string(), AcceleratorProfile);
export type AcceleratorProfiles = z.infer<typeof AcceleratorProfiles>;

/** Profiles available without any configuration. */
export const BUILTIN_PROFILES: AcceleratorProfiles = {
  cpu: { vendor: "cpu" },
  nvidia: { vendor: "nvidia", resourceName: "nvidia.com/gpu", perNode: 1 },
  ascend: { vendor: "ascend", resourceName: "huawei.com/Ascend910", perNode: 1 },
};

export const DEFAULT_RESOURCE: Record<Vendor, string | undefined> = {
  cpu: undefined,
  nvidia: "nvidia.com/gpu",
  ascend: "huawei.com/Ascend910",
};

/** Number of HCCL ports opened from HCCL_IF_BASE_PORT (newer CANN uses 32, older 16). */
export const HCCL_PORT_COUNT = 32;
export const HCCL_DEFAULT_BASE_PORT = 60000;

export interface AcceleratorSpec {
  profile?: string;
  vendor?: Vendor;
  resourceName?: string;
  perNode?: number;
  nodeSelector?: Record<string, string>;
  tolerations?: Array<Record<string, unknown>>;
}

export interface ResolvedAccelerator {
  vendor: Vendor;
  resourceName?: string;
  /** Accelerators per pod (0 for cpu). */
  perNode: number;
  nodeSelector: Record<string, string>;
  tolerations: V1Toleration[];
  hccl?: { basePort: number; connectTimeoutSeconds: number; socketIfname?: string };
}

export type ResolveResult = { ok: true; value: ResolvedAccelerator } | { ok: false; reason: string; message: string };

/** Merge a run's accelerator spec over the named profile. Unknown profile → a reason for the condition. */
export function resolveAccelerator(
  spec: AcceleratorSpec | undefined,
  profiles: AcceleratorProfiles,
  nodes: number,
): ResolveResult {
  const s = spec ?? { vendor: "cpu" as const };
  let base: AcceleratorProfile | undefined;
  if (s.profile) {
    base = profiles[s.profile] ?? BUILTIN_PROFILES[s.profile];
    if (!base) {
      const known = [...new Set([...Object.keys(BUILTIN_PROFILES), ...Object.keys(profiles)])].sort();
      return {
        ok: false,
        reason: "UnknownAcceleratorProfile",
        message: `accelerator profile "${s.profile}" is not configured in the operator (known: ${known.join(", ")})`,
      };
    }
  }
  const vendor = s.vendor ?? base?.vendor ?? "cpu";
  const sameVendor = base?.vendor === vendor;
  const resourceName =
    vendor === "cpu"
      ? undefined
      : (s.resourceName ?? (sameVendor ? base?.resourceName : undefined) ?? DEFAULT_RESOURCE[vendor]);
  const perNode = vendor === "cpu" ? 0 : (s.perNode ?? (sameVendor ? base?.perNode : undefined) ?? 1);
  const nodeSelector = { ...(base?.nodeSelector ?? {}), ...(s.nodeSelector ?? {}) };
  const tolerations = [...(base?.tolerations ?? []), ...(s.tolerations ?? [])] as V1Toleration[];
  const out: ResolvedAccelerator = { vendor, resourceName, perNode, nodeSelector, tolerations };
  if (vendor === "ascend") {
    out.hccl = {
      basePort: base?.hccl?.basePort ?? HCCL_DEFAULT_BASE_PORT,
      // CANN default is 120 s; large groups need longer to connect (design §4: ≥ 600 s above 8 nodes).
      connectTimeoutSeconds: base?.hccl?.connectTimeoutSeconds ?? (nodes > 8 ? 600 : 120),
      socketIfname: base?.hccl?.socketIfname,
    };
  }
  return { ok: true, value: out };
}

/** Processes per pod: accelerators per node, or processesPerNode (default 1) for CPU runs. */
export function nprocPerNode(acc: ResolvedAccelerator, processesPerNode?: number): number {
  return acc.vendor === "cpu" ? (processesPerNode ?? 1) : Math.max(1, acc.perNode);
}

/** Vendor env for the trainer container (Ascend: HCCL_*, DIST_BACKEND). */
export function acceleratorEnv(acc: ResolvedAccelerator): V1EnvVar[] {
  switch (acc.vendor) {
    case "nvidia":
      return [{ name: "DIST_BACKEND", value: "nccl" }];
    case "ascend": {
      const h = acc.hccl!;
      const env: V1EnvVar[] = [
        { name: "DIST_BACKEND", value: "hccl" },
        { name: "HCCL_CONNECT_TIMEOUT", value: String(h.connectTimeoutSeconds) },
        { name: "HCCL_IF_BASE_PORT", value: String(h.basePort) },
      ];
      if (h.socketIfname) env.push({ name: "HCCL_SOCKET_IFNAME", value: h.socketIfname });
      else env.push({ name: "HCCL_IF_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } });
      return env;
    }
    default:
      return [{ name: "DIST_BACKEND", value: "gloo" }];
  }
}

/** Extra container ports (Ascend: the HCCL port range). */
export function acceleratorPorts(acc: ResolvedAccelerator): { name?: string; containerPort: number }[] {
  if (acc.vendor !== "ascend") return [];
  const base = acc.hccl!.basePort;
  return Array.from({ length: HCCL_PORT_COUNT }, (_, i) => ({ containerPort: base + i }));
}

/** Pod annotations (Ascend: hccl/rankIndex, compatible with Volcano hcclrank / MindCluster). */
export function acceleratorAnnotations(acc: ResolvedAccelerator, nodeRank: number): Record<string, string> {
  return acc.vendor === "ascend" ? { "hccl/rankIndex": String(nodeRank) } : {};
}

/** Resource limits for the accelerator (requests default to limits for extended resources). */
export function acceleratorLimits(acc: ResolvedAccelerator): Record<string, string> {
  return acc.resourceName && acc.perNode > 0 ? { [acc.resourceName]: String(acc.perNode) } : {};
}
