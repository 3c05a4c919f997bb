// The contract between test suites and whatever cluster they run against (this repo's local cluster or
// kind): suites read ONLY `KUBECONFIG` and the S3 variables below. Nothing here starts a cluster.
import { randomBytes } from "node:crypto";
import * as k8s from "@kubernetes/client-node";

export interface TestEnv {
  kubeconfigPath: string;
  s3: { endpoint: string; region: string; accessKeyId: string; secretAccessKey: string };
}

export const TEST_ENV_VARS = [
  "KUBECONFIG",
  "MERGEVQ_S3_ENDPOINT",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_REGION",
] as const;

/**
 * Read the test contract from the environment. Throws naming the first missing variable and how to get a
 * cluster (`eval "$(hack/cluster-up.sh)"` or `source /tmp/mergevq-cluster/env.sh`).
 */
export function testEnv(env: NodeJS.ProcessEnv = process.env): TestEnv {
  for (const v of TEST_ENV_VARS) {
    if (!env[v]) {
      throw new Error(
        `${v} is not set: integration/e2e suites need a cluster — run \`eval "$(hack/cluster-up.sh)"\` ` +
          `(or \`source \${MERGEVQ_CLUSTER_DIR:-/tmp/mergevq-cluster}/env.sh\`), or point the variables at a kind cluster`,
      );
    }
  }
  return {
    kubeconfigPath: env.KUBECONFIG as string,
    s3: {
      endpoint: env.MERGEVQ_S3_ENDPOINT as string,
      region: env.AWS_REGION as string,
      accessKeyId: env.AWS_ACCESS_KEY_ID as string,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY as string,
    },
  };
}

/** KubeConfig loaded from a path (default: testEnv().kubeconfigPath). */
export function loadKubeConfig(kubeconfigPath = testEnv().kubeconfigPath): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc;
}

/** Poll `fn` until it returns a truthy value (or stops throwing); rethrows the last error on timeout. */
export async function eventually<T>(
  fn: () => Promise<T> | T,
  opts: { timeoutMs?: number; intervalMs?: number; message?: string } = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      last = new Error(`returned ${JSON.stringify(v)}`);
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? last.message : String(last);
      throw new Error(`eventually: ${opts.message ?? "condition"} not met within ${timeoutMs} ms: ${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 250));
  }
}

export interface TestNamespace {
  name: string;
  /** Delete the namespace (does not wait for it to disappear). Idempotent. */
  cleanup(): Promise<void>;
}

/**
 * Create a uniquely named namespace and wait until its `default` ServiceAccount exists (pods created
 * before that are rejected by the ServiceAccount admission plugin). Call `cleanup()` in `after`.
 */
export async function makeNamespace(kc: k8s.KubeConfig, prefix = "t"): Promise<TestNamespace> {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const name = `${prefix}-${randomBytes(4).toString("hex")}`.toLowerCase().slice(0, 63);
  await core.createNamespace({ body: { metadata: { name, labels: { "mergevq.io/test": "true" } } } });
  await eventually(() => core.readNamespacedServiceAccount({ name: "default", namespace: name }), {
    timeoutMs: 30_000,
    message: `ServiceAccount default in ${name}`,
  });
  let done = false;
  return {
    name,
    cleanup: async () => {
      if (done) return;
      done = true;
      await core.deleteNamespace({ name }).catch(() => {});
    },
  };
}
