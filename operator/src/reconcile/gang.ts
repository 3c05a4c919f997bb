// Gang start (operator-design §5): all pods of an attempt are created in one pass; ranks > 0 get an init
// container that waits for a TCP connect to MASTER_ADDR:MASTER_PORT (never a DNS loop: DNS can resolve before
// the port listens, kubeflow/pytorch-operator#333) and fails after the rendezvous timeout. The barrier is a
// `node -e` one-liner: it runs in the trainer image (Node 20) and, unchanged, as a host process under the
// test node agent. Optional PodGroup for Volcano / scheduler-plugins.
import type { KubernetesObject, V1Container, V1EnvVar, V1OwnerReference } from "@kubernetes/client-node";
import { ENV } from "../../../common/src/contract.ts";

export const BARRIER_CONTAINER = "rendezvous-barrier";
/** Exit code of the barrier on timeout (classified as RendezvousTimeout). */
export const BARRIER_TIMEOUT_EXIT = 3;

/** The barrier script; reads MASTER_ADDR, MASTER_PORT and the timeout from env. */
export const BARRIER_SCRIPT = [
  'const net=require("net");',
  "const h=process.env.MASTER_ADDR,p=Number(process.env.MASTER_PORT);",
  `const t=Number(process.env.${ENV.RENDEZVOUS_TIMEOUT_SECONDS}||600)*1000,end=Date.now()+t;`,
  "const fs=require('fs');",
  "const once=()=>{const s=net.connect({host:h,port:p});s.setTimeout(2000);",
  "const retry=(e)=>{s.destroy();if(Date.now()>end){const m='RendezvousTimeout: '+h+':'+p+' not reachable after '+t/1000+'s';",
  "console.error(m);try{fs.writeFileSync(process.env.TERMINATION_MESSAGE_PATH||'/dev/termination-log',m)}catch{}",
  `process.exit(${BARRIER_TIMEOUT_EXIT})}setTimeout(once,1000)};`,
  "s.on('connect',()=>{console.log('rendezvous: '+h+':'+p+' reachable');s.destroy();process.exit(0)});",
  "s.on('error',retry);s.on('timeout',retry)};once();",
].join("");

export function barrierContainer(image: string, env: V1EnvVar[], imagePullPolicy?: string): V1Container {
  const keep = new Set([ENV.MASTER_ADDR, ENV.MASTER_PORT, ENV.RENDEZVOUS_TIMEOUT_SECONDS]);
  return {
    name: BARRIER_CONTAINER,
    image,
    imagePullPolicy,
    command: ["node", "-e", BARRIER_SCRIPT],
    env: env.filter((e) => keep.has(e.name as never)),
    resources: { requests: { cpu: "10m", memory: "32Mi" }, limits: { memory: "128Mi" } },
  };
}

export type GangScheduler = "none" | "volcano" | "scheduler-plugins";

/** Scheduler name and pod labels/annotations that attach a pod to its PodGroup. */
export function gangPodFields(
  scheduler: GangScheduler,
  groupName: string,
): { schedulerName?: string; labels: Record<string, string>; annotations: Record<string, string> } {
  switch (scheduler) {
    case "volcano":
      return {
        schedulerName: "volcano",
        labels: {},
        annotations: { "scheduling.k8s.io/group-name": groupName },
      };
    case "scheduler-plugins":
      return { labels: { "scheduling.x-k8s.io/pod-group": groupName }, annotations: {} };
    default:
      return { labels: {}, annotations: {} };
  }
}

/** PodGroup for the gang scheduler (minMember = number of pods), or undefined for `none`. */
export function desiredPodGroup(opts: {
  scheduler: GangScheduler;
  name: string;
  namespace: string;
  minMember: number;
  queue?: string;
  priorityClassName?: string;
  timeoutSeconds: number;
  labels: Record<string, string>;
  ownerReferences: V1OwnerReference[];
}): (KubernetesObject & { spec: Record<string, unknown> }) | undefined {
  const metadata = {
    name: opts.name,
    namespace: opts.namespace,
    labels: opts.labels,
    ownerReferences: opts.ownerReferences,
  };
  if (opts.scheduler === "volcano") {
    return {
      apiVersion: "scheduling.volcano.sh/v1beta1",
      kind: "PodGroup",
      metadata,
      spec: {
        minMember: opts.minMember,
        ...(opts.queue ? { queue: opts.queue } : {}),
        ...(opts.priorityClassName ? { priorityClassName: opts.priorityClassName } : {}),
      },
    };
  }
  if (opts.scheduler === "scheduler-plugins") {
    return {
      apiVersion: "scheduling.x-k8s.io/v1alpha1",
      kind: "PodGroup",
      metadata,
      spec: { minMember: opts.minMember, scheduleTimeoutSeconds: opts.timeoutSeconds },
    };
  }
  return undefined;
}
