// Object storage: one interface (Storage) over `file:///path` (or a plain path) and `s3://bucket/key`, used for
// everything the trainer reads and writes — checkpoints, progress/metrics documents, tar shards, generated
// models, sample shards. Local writes go to a temp file renamed into place, so readers never see partial files.
// S3 (io/s3.ts: AWS SDK with retries, multipart uploads, resumable reads) is loaded only when a run uses it:
// `storageFor` serves s3:// once `useS3()` (io/s3.ts) has registered it, which the commands do at start-up
// when any of their URIs is s3://.
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import { toLocalPath, uriScheme } from "./uri.ts";

export interface ObjectInfo {
  uri: string;
  size: number;
}

export interface PutResult {
  size: number;
  sha256: string;
}

/** The one storage interface of the trainer: checkpoints, status documents, shards, models, samples. */
export interface Storage {
  put(uri: string, bytes: Uint8Array | string): Promise<void>;
  get(uri: string): Promise<Buffer>;
  /** Streaming upload (S3: multipart for large bodies); returns size and SHA-256 of what was sent. */
  putStream(uri: string, body: Readable | AsyncIterable<Uint8Array>): Promise<PutResult>;
  /** Streaming download; S3 resumes with Range requests after a mid-body reset. */
  getStream(uri: string): Readable;
  /** Size, or undefined when the object does not exist. */
  head(uri: string): Promise<ObjectInfo | undefined>;
  /** True when the object exists. */
  exists(uri: string): Promise<boolean>;
  /** Every object under a prefix (recursive), sorted by URI. */
  list(prefixUri: string): Promise<ObjectInfo[]>;
  delete(uris: string[]): Promise<void>;
}

/** SHA-256 + byte count of whatever flows through. */
export class HashingTransform extends Transform {
  readonly hash = createHash("sha256");
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null, d?: Buffer) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

export const toReadable = (body: Readable | AsyncIterable<Uint8Array>) =>
  body instanceof Readable ? body : Readable.from(body);

// --- file:// -----------------------------------------------------------------------------------------------

async function walk(dir: string): Promise<string[]> {
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT" || (e as NodeJS.ErrnoException).code === "ENOTDIR") return [];
    throw e;
  }
  const out: string[] = [];
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.isFile() && !e.name.includes(".partial-")) out.push(p);
  }
  return out;
}

/** Local filesystem; every write goes to a temp file renamed into place, so readers never see partial files. */
export class FileStorage implements Storage {
  private p(uri: string): string {
    if (uriScheme(uri) !== "file") throw new Error(`FileStorage cannot handle ${uri}`);
    // Keep a trailing slash: list() treats "dir/" as a directory and "dir/step-" as a name prefix.
    return toLocalPath(uri) + (uri.endsWith("/") ? "/" : "");
  }
  async put(uri: string, bytes: Uint8Array | string): Promise<void> {
    const p = this.p(uri);
    await mkdir(path.dirname(p), { recursive: true });
    const tmp = `${p}.partial-${process.pid}-${Date.now()}`;
    await writeFile(tmp, bytes);
    await rename(tmp, p);
  }
  async get(uri: string): Promise<Buffer> {
    return readFile(this.p(uri));
  }
  async putStream(uri: string, body: Readable | AsyncIterable<Uint8Array>): Promise<PutResult> {
    const p = this.p(uri);
    await mkdir(path.dirname(p), { recursive: true });
    const tmp = `${p}.partial-${process.pid}-${Date.now()}`;
    const h = new HashingTransform();
    try {
      await pipeline(toReadable(body), h, createWriteStream(tmp));
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    await rename(tmp, p);
    return { size: h.bytes, sha256: h.hash.digest("hex") };
  }
  getStream(uri: string): Readable {
    return createReadStream(this.p(uri));
  }
  async head(uri: string): Promise<ObjectInfo | undefined> {
    const p = this.p(uri);
    if (!existsSync(p)) return undefined;
    const s = await stat(p);
    return s.isFile() ? { uri, size: s.size } : undefined;
  }
  async exists(uri: string): Promise<boolean> {
    return (await this.head(uri)) !== undefined;
  }
  async list(prefixUri: string): Promise<ObjectInfo[]> {
    // S3 semantics: a key prefix, not necessarily a directory ("…/step-" lists "…/step-000000001/…").
    const base = this.p(prefixUri);
    const isDir = base.endsWith("/") || (existsSync(base) && (await stat(base)).isDirectory());
    const files = (
      isDir ? await walk(base) : (await walk(path.dirname(base))).filter((f) => f.startsWith(base))
    ).sort();
    return Promise.all(files.map(async (f) => ({ uri: pathToFileURL(f).href, size: (await stat(f)).size })));
  }
  async delete(uris: string[]): Promise<void> {
    for (const u of uris) await rm(this.p(u), { force: true });
  }
}

/**
 * Dispatches each call on the URI's scheme. The S3 side is created on first use by `s3Factory` (io/s3.ts), so
 * code that only touches local files never loads the AWS SDK.
 */
export class AnyStorage implements Storage {
  private s3?: Storage;
  private readonly file = new FileStorage();
  constructor(private readonly s3Factory: () => Storage = noS3) {}
  private pick(uri: string): Storage {
    if (uriScheme(uri) === "file") return this.file;
    this.s3 ??= this.s3Factory();
    return this.s3;
  }
  put(uri: string, bytes: Uint8Array | string) {
    return this.pick(uri).put(uri, bytes);
  }
  get(uri: string) {
    return this.pick(uri).get(uri);
  }
  putStream(uri: string, body: Readable | AsyncIterable<Uint8Array>) {
    return this.pick(uri).putStream(uri, body);
  }
  getStream(uri: string) {
    return this.pick(uri).getStream(uri);
  }
  head(uri: string) {
    return this.pick(uri).head(uri);
  }
  exists(uri: string) {
    return this.pick(uri).exists(uri);
  }
  list(prefixUri: string) {
    return this.pick(prefixUri).list(prefixUri);
  }
  delete(uris: string[]) {
    const file = uris.filter((u) => uriScheme(u) === "file");
    const s3 = uris.filter((u) => uriScheme(u) === "s3");
    return Promise.all([
      file.length ? this.file.delete(file) : undefined,
      s3.length ? this.pick(s3[0]).delete(s3) : undefined,
    ]).then(() => undefined);
  }
}

const noS3 = (): Storage => {
  throw new Error("s3:// storage is not loaded in this process (io/s3.ts useS3() registers it)");
};

let defaultS3: () => Storage = noS3;
let shared: AnyStorage | undefined;

/** Make `storageFor` serve s3:// through `factory` (called by io/s3.ts useS3). */
export function setDefaultS3(factory: () => Storage): void {
  defaultS3 = factory;
  shared = undefined;
}

/** The process-wide storage; it accepts URIs of either scheme, so one instance serves a whole run. */
export function storageFor(uri: string): Storage {
  const scheme = uriScheme(uri);
  if (scheme !== "file" && scheme !== "s3")
    throw new Error(`unsupported URI "${uri}" (expected s3://, file:// or a path)`);
  shared ??= new AnyStorage(() => defaultS3());
  return shared;
}
