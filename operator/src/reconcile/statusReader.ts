// Reads the trainer's status documents (progress.json, metrics.json under MERGEVQ_STATUS_URI) with the run's
// own S3 credentials, taken from the referenced Secret at read time (never logged, never stored in status).
// file:// prefixes are read from the operator's filesystem (single-host setups and tests).
// Reads are throttled per URI so a busy reconcile loop does not hammer the object store. The S3 client library is
// loaded on the first s3:// read (about 35 MiB of an idle operator's memory otherwise, for clusters whose runs
// never use S3 as well).
import { readFile } from "node:fs/promises";
import type { S3Client } from "@aws-sdk/client-s3";
import type { ZodType } from "zod";

type S3Module = typeof import("@aws-sdk/client-s3");
let s3Module: Promise<S3Module> | undefined;
const loadS3 = (): Promise<S3Module> => {
  s3Module ??= import("@aws-sdk/client-s3");
  return s3Module;
};

export interface S3Credentials {
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
  accessKeyId: string;
  secretAccessKey: string;
}

export function parseS3Uri(uri: string): { bucket: string; key: string } | undefined {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri);
  return m ? { bucket: m[1], key: m[2] } : undefined;
}

interface CacheEntry {
  at: number;
  value: unknown;
}

export class StatusReader {
  private readonly clients = new Map<string, S3Client>();
  private readonly cache = new Map<string, CacheEntry>();

  constructor(private readonly opts: { minIntervalMs?: number; now?: () => number } = {}) {}

  private async client(c: S3Credentials): Promise<{ client: S3Client; s3: S3Module }> {
    const s3 = await loadS3();
    const id = `${c.endpoint}|${c.region}|${c.forcePathStyle}|${c.accessKeyId}|${c.secretAccessKey.length}:${hash(c.secretAccessKey)}`;
    let cl = this.clients.get(id);
    if (!cl) {
      cl = new s3.S3Client({
        endpoint: c.endpoint,
        region: c.region,
        forcePathStyle: c.forcePathStyle,
        credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
        maxAttempts: 2,
      });
      this.clients.set(id, cl);
    }
    return { client: cl, s3 };
  }

  /** Raw text of `<prefix>/<file>`; undefined when absent. Throws on other errors. */
  async readText(uri: string, creds: S3Credentials | undefined): Promise<string | undefined> {
    if (uri.startsWith("file://") || uri.startsWith("/")) {
      const p = uri.startsWith("file://") ? new URL(uri).pathname : uri;
      try {
        return await readFile(p, "utf8");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
      }
    }
    const loc = parseS3Uri(uri);
    if (!loc) throw new Error(`unsupported status URI ${uri}`);
    if (!creds) throw new Error(`no S3 credentials for ${uri}`);
    try {
      const { client, s3 } = await this.client(creds);
      const res = await client.send(new s3.GetObjectCommand({ Bucket: loc.bucket, Key: loc.key }));
      return await res.Body?.transformToString("utf8");
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === "NoSuchKey" || e.name === "NotFound" || e.$metadata?.httpStatusCode === 404) return undefined;
      throw err;
    }
  }

  /**
   * Parsed JSON document at `uri`, or undefined (absent, unparsable or invalid: a trainer bug must not wedge
   * the operator). Cached for `minIntervalMs` (default 3 s) unless `fresh`.
   */
  async readJson<T>(
    uri: string,
    schema: ZodType<T>,
    creds: S3Credentials | undefined,
    fresh = false,
  ): Promise<T | undefined> {
    const now = (this.opts.now ?? Date.now)();
    const hit = this.cache.get(uri);
    if (!fresh && hit && now - hit.at < (this.opts.minIntervalMs ?? 3000)) return hit.value as T | undefined;
    let value: T | undefined;
    const text = await this.readText(uri, creds);
    if (text !== undefined) {
      try {
        const r = schema.safeParse(JSON.parse(text));
        value = r.success ? r.data : undefined;
      } catch {
        value = undefined;
      }
    }
    this.cache.set(uri, { at: now, value });
    if (this.cache.size > 10_000) this.cache.delete(this.cache.keys().next().value!);
    return value;
  }

  forget(prefix: string): void {
    for (const k of this.cache.keys()) if (k.startsWith(prefix)) this.cache.delete(k);
  }
}

function hash(s: string): string {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
  return (h >>> 0).toString(36);
}
