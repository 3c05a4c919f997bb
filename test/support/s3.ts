// S3 for integration tests and benchmarks: the cluster harness's S3 when it exported MERGEVQ_S3_ENDPOINT and
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (AWS_REGION, default us-east-1), else a MinIO started from the
// toolchain cache (hack/toolchain.sh --bin-dir; test/cluster/minio.ts) on loopback. Path-style addressing.
import { execFileSync } from "node:child_process";
import path from "node:path";
import { type MinioServer, startMinio } from "../cluster/minio.ts";

const REPO_ROOT = path.resolve(import.meta.dirname, "../..");

export interface S3Endpoint {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}

export interface TestS3 {
  s3: S3Endpoint;
  /** The MinIO this call started (undefined when the harness's S3 is used). */
  minio?: MinioServer;
}

/**
 * The harness's S3, or a fresh MinIO with its data and log under `dir` (`clusterId` names it; `onStart` is
 * called just before it starts). Stop a started MinIO with `minio.stop()`.
 */
export async function testS3(o: { dir: string; clusterId: string; onStart?: () => void }): Promise<TestS3> {
  const env = process.env;
  if (env.MERGEVQ_S3_ENDPOINT && env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    return {
      s3: {
        endpoint: env.MERGEVQ_S3_ENDPOINT,
        region: env.AWS_REGION ?? "us-east-1",
        accessKeyId: env.AWS_ACCESS_KEY_ID,
        secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      },
    };
  }
  const binDir = execFileSync(path.join(REPO_ROOT, "hack/toolchain.sh"), ["--bin-dir"], { encoding: "utf8" }).trim();
  o.onStart?.();
  const minio = await startMinio({ binDir, dir: o.dir, clusterId: o.clusterId });
  return { s3: minio.s3, minio };
}
