// MinIO on loopback with generated credentials (run unmodified as a separate process; MinIO is AGPL-3.0).
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { CreateBucketCommand, HeadBucketCommand, S3Client } from "@aws-sdk/client-s3";
import { freePorts, type Managed, spawnManaged, stopManaged, tailFile, waitFor } from "./proc.ts";

export interface S3Info {
  /** `http://127.0.0.1:<port>`; use path-style addressing. */
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  buckets: string[];
}

export interface MinioServer {
  s3: S3Info;
  process: Managed;
  stop(): Promise<void>;
}

export interface MinioOptions {
  binDir: string;
  dir: string;
  clusterId: string;
  buckets?: string[];
  region?: string;
  timeoutMs?: number;
}

/** S3 client for the test MinIO (path-style, static credentials). */
export function s3Client(s3: Pick<S3Info, "endpoint" | "region" | "accessKeyId" | "secretAccessKey">): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
}

/** Create buckets that do not exist yet. */
export async function ensureBuckets(client: S3Client, buckets: string[]): Promise<void> {
  for (const Bucket of buckets) {
    try {
      await client.send(new HeadBucketCommand({ Bucket }));
    } catch {
      await client.send(new CreateBucketCommand({ Bucket }));
    }
  }
}

export async function startMinio(opts: MinioOptions): Promise<MinioServer> {
  const dataDir = path.join(opts.dir, "minio-data");
  mkdirSync(dataDir, { recursive: true });
  const [port, consolePort] = await freePorts(2);
  const region = opts.region ?? "us-east-1";
  const accessKeyId = `mvq${randomBytes(6).toString("hex")}`;
  const secretAccessKey = randomBytes(24).toString("base64url");
  const logPath = path.join(opts.dir, "minio.log");
  const proc = spawnManaged(
    "minio",
    path.join(opts.binDir, "minio"),
    ["server", dataDir, "--address", `127.0.0.1:${port}`, "--console-address", `127.0.0.1:${consolePort}`, "--quiet"],
    {
      clusterId: opts.clusterId,
      logPath,
      env: {
        PATH: process.env.PATH,
        HOME: opts.dir,
        MINIO_ROOT_USER: accessKeyId,
        MINIO_ROOT_PASSWORD: secretAccessKey,
        MINIO_REGION: region,
        MINIO_BROWSER: "off",
        MINIO_UPDATE: "off",
        MINIO_CI_CD: "1",
      },
    },
  );
  const endpoint = `http://127.0.0.1:${port}`;
  const stop = () => stopManaged(proc, 5000);
  try {
    await waitFor("MinIO /minio/health/ready", async () => (await fetch(`${endpoint}/minio/health/ready`)).ok, {
      timeoutMs: opts.timeoutMs ?? 60_000,
      intervalMs: 200,
      abort: () => proc.exited,
    });
    const s3: S3Info = { endpoint, region, accessKeyId, secretAccessKey, buckets: opts.buckets ?? [] };
    const client = s3Client(s3);
    await ensureBuckets(client, s3.buckets);
    client.destroy();
    return { s3, process: proc, stop };
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n--- minio.log ---\n${tailFile(logPath)}`);
  }
}
