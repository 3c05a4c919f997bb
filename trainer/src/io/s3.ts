// S3 for io/storage.ts: @aws-sdk/client-s3 with our own retry strategy (exponential backoff with full jitter, no
// retry quota, on 5xx / throttling / connection errors), streaming multipart uploads through @aws-sdk/lib-storage,
// and streaming reads that survive a connection reset mid-body by resuming with a `Range` request pinned to the
// object's ETag. Importing this module loads the AWS SDK; io/storage.ts does not.
import type { Agent } from "node:http";
import { Readable } from "node:stream";
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import type { RetryErrorInfo, RetryStrategyV2, RetryToken } from "@smithy/types";
import {
  AnyStorage,
  HashingTransform,
  type ObjectInfo,
  type PutResult,
  type Storage,
  setDefaultS3,
  toReadable,
} from "./storage.ts";
import { parseUri } from "./uri.ts";

// ---------------------------------------------------------------------------------------------------------
// Counters shared by everything that talks to storage (exported to progress/metrics).

export interface StorageCounters {
  /** SDK-level retries (5xx, throttling, connection errors) of any request. */
  requestRetries: number;
  /** Mid-body resumes of streaming reads (Range requests). */
  streamResumes: number;
}

export const storageCounters: StorageCounters = { requestRetries: 0, streamResumes: 0 };

// ---------------------------------------------------------------------------------------------------------
// Retry strategy

export interface RetryOptions {
  /** Total attempts per request, first included. */
  maxAttempts: number;
  /** Base delay (ms) of the exponential backoff. */
  baseDelayMs: number;
  /** Cap (ms) of one backoff delay. */
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryOptions = { maxAttempts: 10, baseDelayMs: 50, maxDelayMs: 5000 };

/** Full-jitter exponential backoff: uniform in [0, min(cap, base·2^attempt)]. */
export function backoffDelay(
  attempt: number,
  o: Pick<RetryOptions, "baseDelayMs" | "maxDelayMs">,
  rnd = Math.random,
): number {
  return Math.floor(rnd() * Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** attempt));
}

class Token implements RetryToken {
  constructor(
    private readonly count: number,
    private readonly delay: number,
  ) {}
  getRetryCount(): number {
    return this.count;
  }
  getRetryDelay(): number {
    return this.delay;
  }
}

/**
 * SDK retry strategy: retries TRANSIENT (connection reset/timeout), THROTTLING and SERVER_ERROR up to
 * `maxAttempts` with full-jitter backoff. Unlike the SDK's standard mode it has no shared retry quota, so a
 * burst of injected faults cannot switch retries off for the rest of a long training run.
 */
export class JitterRetryStrategy implements RetryStrategyV2 {
  readonly mode = "standard";
  constructor(private readonly opts: RetryOptions = DEFAULT_RETRY) {}
  async acquireInitialRetryToken(_scope: string): Promise<RetryToken> {
    return new Token(0, 0);
  }
  async refreshRetryTokenForRetry(token: RetryToken, info: RetryErrorInfo): Promise<RetryToken> {
    const n = token.getRetryCount() + 1;
    if (info.errorType === "CLIENT_ERROR" || n >= this.opts.maxAttempts) throw new Error("retries exhausted");
    storageCounters.requestRetries++;
    let delay = backoffDelay(n, this.opts);
    if (info.retryAfterHint)
      delay = Math.max(delay, Math.min(this.opts.maxDelayMs, info.retryAfterHint.getTime() - Date.now()));
    return new Token(n, delay);
  }
  recordSuccess(_token: RetryToken): void {}
}

// ---------------------------------------------------------------------------------------------------------
// S3 client factory

export interface S3Settings {
  endpoint?: string;
  region: string;
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  forcePathStyle: boolean;
  retry: RetryOptions;
  /** Socket idle timeout (ms): a stalled connection fails and is retried instead of hanging. */
  requestTimeoutMs: number;
}

/**
 * Settings from the environment: AWS_ENDPOINT_URL (falls back to MERGEVQ_S3_ENDPOINT, the test harness
 * variable), AWS_REGION (default us-east-1), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
 * (else the SDK's default provider chain), AWS_S3_FORCE_PATH_STYLE (default true when an endpoint is set:
 * MinIO), AWS_MAX_ATTEMPTS (default 10).
 */
export function s3SettingsFromEnv(env: NodeJS.ProcessEnv = process.env): S3Settings {
  const endpoint = env.AWS_ENDPOINT_URL || env.MERGEVQ_S3_ENDPOINT || undefined;
  if (endpoint && !/^https?:\/\/[^/]+/.test(endpoint)) {
    throw new Error(`AWS_ENDPOINT_URL: must be an http(s) URL, got "${endpoint}"`);
  }
  const maxAttempts = env.AWS_MAX_ATTEMPTS ? Number(env.AWS_MAX_ATTEMPTS) : DEFAULT_RETRY.maxAttempts;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1)
    throw new Error(`AWS_MAX_ATTEMPTS: must be a positive integer`);
  const ps = env.AWS_S3_FORCE_PATH_STYLE;
  return {
    endpoint,
    region: env.AWS_REGION || env.AWS_DEFAULT_REGION || "us-east-1",
    accessKeyId: env.AWS_ACCESS_KEY_ID || undefined,
    secretAccessKey: env.AWS_SECRET_ACCESS_KEY || undefined,
    sessionToken: env.AWS_SESSION_TOKEN || undefined,
    forcePathStyle: ps === undefined || ps === "" ? Boolean(endpoint) : ps === "true" || ps === "1",
    retry: { ...DEFAULT_RETRY, maxAttempts },
    requestTimeoutMs: 30_000,
  };
}

export function createS3Client(
  settings: S3Settings = s3SettingsFromEnv(),
  extra: { httpAgent?: Agent } = {},
): S3Client {
  const cfg: S3ClientConfig = {
    region: settings.region,
    forcePathStyle: settings.forcePathStyle,
    retryStrategy: new JitterRetryStrategy(settings.retry),
    requestHandler: {
      connectionTimeout: 10_000,
      requestTimeout: settings.requestTimeoutMs,
      httpAgent: extra.httpAgent,
    },
    // Checksums on every PUT/GET are the SDK default since 3.729; MinIO supports them, keep them.
  };
  if (settings.endpoint) cfg.endpoint = settings.endpoint;
  if (settings.accessKeyId && settings.secretAccessKey) {
    cfg.credentials = {
      accessKeyId: settings.accessKeyId,
      secretAccessKey: settings.secretAccessKey,
      sessionToken: settings.sessionToken,
    };
  }
  return new S3Client(cfg);
}

// --- s3:// -------------------------------------------------------------------------------------------------

export interface ResumeOptions {
  /** Resumes allowed per object after mid-body failures (the GET itself is retried by the SDK). */
  maxResumes: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err?.name === "NotFound" || err?.name === "NoSuchKey" || err?.$metadata?.httpStatusCode === 404;
}

/**
 * Stream an S3 object; when the body fails mid-way (reset, truncated response) continue from the last byte
 * received with `Range: bytes=<offset>-` and `If-Match: <etag>` so the bytes stay those of one version.
 */
export async function* resumableObjectBody(
  client: S3Client,
  Bucket: string,
  Key: string,
  opts: ResumeOptions = { maxResumes: 20, baseDelayMs: 50, maxDelayMs: 2000 },
): AsyncGenerator<Buffer> {
  let offset = 0;
  let etag: string | undefined;
  let total: number | undefined;
  let failures = 0;
  for (;;) {
    const res = await client.send(
      new GetObjectCommand({ Bucket, Key, Range: offset > 0 ? `bytes=${offset}-` : undefined, IfMatch: etag }),
    );
    etag ??= res.ETag;
    if (total === undefined) total = res.ContentLength ?? 0;
    const body = res.Body as Readable | undefined;
    if (!body) throw new Error(`s3://${Bucket}/${Key}: GetObject returned no body`);
    try {
      for await (const chunk of body) {
        const b = chunk as Buffer;
        offset += b.length;
        failures = 0;
        yield b;
      }
      if (offset < total) throw new Error(`body ended at byte ${offset} of ${total}`);
      return;
    } catch (e) {
      body.destroy();
      if (++failures > opts.maxResumes) {
        throw new Error(
          `s3://${Bucket}/${Key}: read failed at byte ${offset} after ${opts.maxResumes} resumes: ${(e as Error).message}`,
        );
      }
      storageCounters.streamResumes++;
      await new Promise((r) => setTimeout(r, backoffDelay(failures, opts)));
    }
  }
}

export class S3Storage implements Storage {
  constructor(
    readonly client: S3Client = createS3Client(),
    /** Multipart part size for `putStream` (S3 minimum 5 MiB). */
    readonly partSize = 8 * 1024 * 1024,
  ) {}
  private loc(uri: string): { Bucket: string; Key: string } {
    const u = parseUri(uri);
    if (u.scheme !== "s3") throw new Error(`S3Storage cannot handle ${uri}`);
    return { Bucket: u.bucket, Key: u.key };
  }
  async put(uri: string, bytes: Uint8Array | string): Promise<void> {
    await this.client.send(
      new PutObjectCommand({ ...this.loc(uri), Body: typeof bytes === "string" ? Buffer.from(bytes) : bytes }),
    );
  }
  async get(uri: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of this.getStream(uri)) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }
  async putStream(uri: string, body: Readable | AsyncIterable<Uint8Array>): Promise<PutResult> {
    const h = new HashingTransform();
    const src = toReadable(body);
    src.on("error", (e) => h.destroy(e));
    const upload = new Upload({
      client: this.client,
      params: { ...this.loc(uri), Body: src.pipe(h) },
      partSize: this.partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    await upload.done();
    return { size: h.bytes, sha256: h.hash.digest("hex") };
  }
  getStream(uri: string): Readable {
    const { Bucket, Key } = this.loc(uri);
    return Readable.from(resumableObjectBody(this.client, Bucket, Key), { objectMode: false });
  }
  async head(uri: string): Promise<ObjectInfo | undefined> {
    try {
      const r = await this.client.send(new HeadObjectCommand(this.loc(uri)));
      return { uri, size: r.ContentLength ?? 0 };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }
  async exists(uri: string): Promise<boolean> {
    return (await this.head(uri)) !== undefined;
  }
  async list(prefixUri: string): Promise<ObjectInfo[]> {
    const { Bucket, Key } = this.loc(prefixUri);
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const r = await this.client.send(new ListObjectsV2Command({ Bucket, Prefix: Key, ContinuationToken: token }));
      for (const o of r.Contents ?? []) if (o.Key) out.push({ uri: `s3://${Bucket}/${o.Key}`, size: o.Size ?? 0 });
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return out.sort((a, b) => (a.uri < b.uri ? -1 : a.uri > b.uri ? 1 : 0));
  }
  async delete(uris: string[]): Promise<void> {
    const byBucket = new Map<string, string[]>();
    for (const u of uris) {
      const { Bucket, Key } = this.loc(u);
      byBucket.set(Bucket, [...(byBucket.get(Bucket) ?? []), Key]);
    }
    for (const [Bucket, keys] of byBucket) {
      for (let i = 0; i < keys.length; i += 1000) {
        const r = await this.client.send(
          new DeleteObjectsCommand({
            Bucket,
            Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })), Quiet: true },
          }),
        );
        if (r.Errors?.length)
          throw new Error(`delete failed for ${r.Errors.map((e) => `s3://${Bucket}/${e.Key}: ${e.Code}`).join(", ")}`);
      }
    }
  }
}

/**
 * Storage for `uri`'s scheme (s3:// → S3 configured from the environment, file:// or /path → local). The
 * returned object accepts URIs of either scheme, so one instance serves a whole run.
 */
export function createStorage(uri: string, opts: { s3?: S3Settings; client?: S3Client } = {}): Storage {
  parseUri(uri); // validate
  return new AnyStorage(() => new S3Storage(opts.client ?? createS3Client(opts.s3 ?? s3SettingsFromEnv())));
}

/** Register S3 (configured from the environment, client created on first use) as `storageFor`'s s3:// side. */
export function useS3(): void {
  let s3: S3Storage | undefined;
  setDefaultS3(() => {
    s3 ??= new S3Storage(createS3Client(s3SettingsFromEnv()));
    return s3;
  });
}
