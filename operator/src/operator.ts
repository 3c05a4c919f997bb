// The operator process: configuration from the environment (Helm sets it), then the Manager. Started by main.ts.
// Environment:
//   WATCH_NAMESPACES            comma-separated namespaces to watch; unset/empty = all namespaces
//   LOG_LEVEL                   fatal|error|warn|info|debug|trace (default info)
//   LEADER_ELECTION             true|false (default true); Lease "mergevq-operator" in LEADER_ELECTION_NAMESPACE
//   LEADER_ELECTION_NAMESPACE   default POD_NAMESPACE, else "default"
//   LEASE_DURATION_SECONDS / RENEW_DEADLINE_SECONDS / RETRY_PERIOD_SECONDS   (15 / 10 / 2)
//   POD_NAME                    leader identity (default <hostname>-<pid>)
//   METRICS_PORT / HEALTH_PORT  Prometheus /metrics and /healthz,/readyz (default 8080 / 8081; 0 = pick free)
//   TRAINER_IMAGE               default trainer image for runs without spec.trainer.image
//   BARRIER_IMAGE               image of the rank>0 TCP barrier init container (needs `node`; default TRAINER_IMAGE)
//   S3_ENDPOINT                 default S3 endpoint for runs without spec.s3.endpoint
//   CLUSTER_DOMAIN              cluster DNS domain for MASTER_ADDR (default cluster.local)
//   ACCELERATOR_PROFILES        JSON map name → {vendor, resourceName, perNode, nodeSelector, tolerations, hccl}
//   CONCURRENCY                 parallel reconciles (default 4)
//   WRITE_CONCURRENCY           pod create/delete calls in flight at once within one reconcile (1-256, default 16)
//   RESYNC_SECONDS              informer resync period (default 300)
//   PROGRESS_POLL_SECONDS       re-read progress.json of running runs this often (default 10)
//   TRAINER_POD_SECURITY_CONTEXT / TRAINER_SECURITY_CONTEXT   JSON pod / container securityContext for trainer pods
//                               (Helm: trainer.podSecurityContext / trainer.securityContext)
// Kubeconfig: in-cluster service account when running in a pod, else KUBECONFIG / ~/.kube/config.
import os from "node:os";
import { KubeConfig } from "@kubernetes/client-node/dist/config.js";
import { z } from "zod";
import { envBool, envInt, parseEnv } from "../../common/src/env.ts";
import { createLogger } from "../../common/src/logger.ts";
import { startHttp } from "./controller/health.ts";
import { Manager } from "./controller/manager.ts";
import { AcceleratorProfiles } from "./reconcile/accelerator.ts";
import { DEFAULT_WRITE_CONCURRENCY } from "./reconcile/reconciler.ts";
import type { OperatorContext } from "./reconcile/run.ts";

export const OperatorEnv = z.object({
  WATCH_NAMESPACES: z.string().optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  LEADER_ELECTION: envBool().default(true),
  LEADER_ELECTION_NAMESPACE: z.string().optional(),
  POD_NAMESPACE: z.string().optional(),
  POD_NAME: z.string().optional(),
  LEASE_DURATION_SECONDS: envInt({ min: 2, max: 600 }).default(15),
  RENEW_DEADLINE_SECONDS: envInt({ min: 1, max: 600 }).default(10),
  RETRY_PERIOD_SECONDS: envInt({ min: 1, max: 60 }).default(2),
  METRICS_PORT: envInt({ min: 0, max: 65535 }).default(8080),
  HEALTH_PORT: envInt({ min: 0, max: 65535 }).default(8081),
  BIND_ADDRESS: z.string().default("0.0.0.0"),
  TRAINER_IMAGE: z.string().default("ghcr.io/mergevq/mergevq-k8s/trainer:latest"),
  BARRIER_IMAGE: z.string().optional(),
  S3_ENDPOINT: z.string().url().optional(),
  CLUSTER_DOMAIN: z.string().default("cluster.local"),
  ACCELERATOR_PROFILES: z
    .string()
    .optional()
    .transform((s, c) => {
      if (!s) return {};
      try {
        return AcceleratorProfiles.parse(JSON.parse(s));
      } catch (err) {
        c.addIssue({
          code: "custom",
          message: `must be a JSON map of accelerator profiles: ${String(err).slice(0, 300)}`,
        });
        return z.NEVER;
      }
    }),
  CONCURRENCY: envInt({ min: 1, max: 64 }).default(4),
  WRITE_CONCURRENCY: envInt({ min: 1, max: 256 }).default(DEFAULT_WRITE_CONCURRENCY),
  RESYNC_SECONDS: envInt({ min: 10, max: 86400 }).default(300),
  PROGRESS_POLL_SECONDS: envInt({ min: 1, max: 3600 }).default(10),
  TRAINER_POD_SECURITY_CONTEXT: jsonObject("a JSON object (a pod securityContext)"),
  TRAINER_SECURITY_CONTEXT: jsonObject("a JSON object (a container securityContext)"),
});

function jsonObject(what: string) {
  return z
    .string()
    .optional()
    .transform((s, c) => {
      if (!s) return undefined;
      try {
        const v: unknown = JSON.parse(s);
        if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
      } catch {
        // reported below
      }
      c.addIssue({ code: "custom", message: `must be ${what}` });
      return z.NEVER;
    });
}
export type OperatorEnv = z.infer<typeof OperatorEnv>;

export function contextFromEnv(env: OperatorEnv): OperatorContext {
  return {
    trainerImage: env.TRAINER_IMAGE,
    barrierImage: env.BARRIER_IMAGE ?? env.TRAINER_IMAGE,
    clusterDomain: env.CLUSTER_DOMAIN,
    s3Endpoint: env.S3_ENDPOINT,
    profiles: env.ACCELERATOR_PROFILES,
    progressPollMs: env.PROGRESS_POLL_SECONDS * 1000,
    trainerPodSecurityContext: env.TRAINER_POD_SECURITY_CONTEXT,
    trainerSecurityContext: env.TRAINER_SECURITY_CONTEXT,
  };
}

export async function main(): Promise<void> {
  const env = parseEnv(OperatorEnv);
  const logger = createLogger({ component: "operator" }, { level: env.LOG_LEVEL });
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const identity = env.POD_NAME ?? `${os.hostname()}-${process.pid}`;
  const namespaces = (env.WATCH_NAMESPACES ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  let exiting = false;
  const manager = new Manager({
    kc,
    ctx: contextFromEnv(env),
    logger,
    namespaces,
    leaderElection: env.LEADER_ELECTION,
    leaseNamespace: env.LEADER_ELECTION_NAMESPACE ?? env.POD_NAMESPACE ?? "default",
    identity,
    concurrency: env.CONCURRENCY,
    writeConcurrency: env.WRITE_CONCURRENCY,
    resyncMs: env.RESYNC_SECONDS * 1000,
    leaseDurationMs: env.LEASE_DURATION_SECONDS * 1000,
    renewDeadlineMs: env.RENEW_DEADLINE_SECONDS * 1000,
    retryPeriodMs: env.RETRY_PERIOD_SECONDS * 1000,
    onLostLeadership: () => {
      if (exiting) return;
      // Like client-go: a replica that lost its Lease must stop acting at once; the pod restarts it.
      logger.fatal({ identity }, "leadership lost: exiting");
      process.exit(1);
    },
  });
  const http = await startHttp({
    healthPort: env.HEALTH_PORT,
    metricsPort: env.METRICS_PORT,
    host: env.BIND_ADDRESS,
    registry: manager.metrics.registry,
    probe: { healthy: () => !exiting, ready: () => manager.isReady() },
  });
  logger.info(
    { identity, healthPort: http.healthPort, metricsPort: http.metricsPort, leaderElection: env.LEADER_ELECTION },
    "operator starting",
  );
  const shutdown = async (signal: string) => {
    if (exiting) return;
    exiting = true;
    logger.info({ signal }, "shutting down");
    const force = setTimeout(() => process.exit(1), 25_000);
    force.unref();
    try {
      await manager.stop();
      await http.close();
    } finally {
      logger.info("stopped");
      process.exit(0);
    }
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  await manager.start();
}
