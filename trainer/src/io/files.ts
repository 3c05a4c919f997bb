// Minimal object storage used by the trainer for checkpoints, progress.json and metrics.json.
// file:// URIs and plain absolute/relative paths are implemented here. s3:// is a HOOK: the data-plane
// implementation (trainer/src/data/**) registers itself with `registerStorageScheme("s3", factory)`; until
// it does, an s3:// URI fails with an error saying so.
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export interface Storage {
  /** Write the whole object (atomically for file://: temp file + rename). */
  put(uri: string, bytes: Uint8Array): Promise<void>;
  /** Read the whole object; rejects with an error whose `code` is "ENOENT" when it does not exist. */
  get(uri: string): Promise<Uint8Array>;
  /** True when the object exists. */
  exists(uri: string): Promise<boolean>;
  /** Object URIs directly under a prefix (non-recursive for file://), sorted. */
  list(prefix: string): Promise<string[]>;
  /** Delete an object (no error when missing). */
  delete(uri: string): Promise<void>;
}

export type StorageFactory = () => Storage;
const schemes = new Map<string, StorageFactory>();

/** Plug-in point for other URI schemes (the S3 implementation registers "s3"). */
export function registerStorageScheme(scheme: string, factory: StorageFactory): void {
  schemes.set(scheme, factory);
}

export function uriScheme(uri: string): string {
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(uri);
  return m ? m[1].toLowerCase() : "file";
}

/** Join a prefix URI (s3://b/p, file:///p or a path) and a relative key. */
export function joinUri(prefix: string, key: string): string {
  if (uriScheme(prefix) === "file" && !prefix.startsWith("file://")) return path.join(prefix, key);
  return `${prefix.replace(/\/+$/, "")}/${key.replace(/^\/+/, "")}`;
}

export function toLocalPath(uri: string): string {
  return uri.startsWith("file://") ? fileURLToPath(uri) : path.resolve(uri);
}

export class FileStorage implements Storage {
  async put(uri: string, bytes: Uint8Array): Promise<void> {
    const p = toLocalPath(uri);
    await mkdir(path.dirname(p), { recursive: true });
    const tmp = `${p}.tmp-${process.pid}-${Date.now()}`;
    await writeFile(tmp, bytes);
    await rename(tmp, p);
  }
  async get(uri: string): Promise<Uint8Array> {
    return new Uint8Array(await readFile(toLocalPath(uri)));
  }
  async exists(uri: string): Promise<boolean> {
    try {
      await stat(toLocalPath(uri));
      return true;
    } catch {
      return false;
    }
  }
  async list(prefix: string): Promise<string[]> {
    const dir = toLocalPath(prefix);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return [];
    }
    const asUri = prefix.startsWith("file://");
    return names
      .filter((n) => !n.includes(".tmp-"))
      .sort()
      .map((n) => (asUri ? pathToFileURL(path.join(dir, n)).href : path.join(prefix, n)));
  }
  async delete(uri: string): Promise<void> {
    await rm(toLocalPath(uri), { force: true });
  }
}

const fileStorage = new FileStorage();

/** Storage for a URI's scheme. */
export function storageFor(uri: string): Storage {
  const scheme = uriScheme(uri);
  if (scheme === "file") return fileStorage;
  const f = schemes.get(scheme);
  if (!f) {
    throw new Error(
      `no storage registered for "${scheme}://" (URI ${uri}); the S3 implementation in trainer/src/data registers ` +
        `itself via registerStorageScheme("s3", …)`,
    );
  }
  return f();
}

/**
 * Hook: route s3:// through the data plane's storage (trainer/src/data/storage.ts, AWS SDK with retries)
 * via a dynamic import, so importing this module never loads the SDK. Called by the CLI at start-up.
 */
export async function registerS3FromDataPlane(): Promise<void> {
  const mod = await import("./storage.ts");
  let impl: ReturnType<typeof mod.createStorage> | undefined;
  const s3 = () => {
    impl ??= mod.createStorage("s3://bucket/");
    return impl;
  };
  registerStorageScheme("s3", () => ({
    put: (uri, bytes) => s3().put(uri, bytes),
    get: async (uri) => new Uint8Array(await s3().get(uri)),
    exists: async (uri) => (await s3().head(uri)) !== undefined,
    // Same semantics as FileStorage.list: objects directly under the "directory" `prefix/` (S3 lists every key
    // starting with the string, so "…/demo" would also match "…/demo-2/…").
    list: async (prefix) => {
      const dir = `${prefix.replace(/\/+$/, "")}/`;
      return (await s3().list(dir)).map((o) => o.uri).filter((u) => !u.slice(dir.length).includes("/"));
    },
    delete: (uri) => s3().delete([uri]),
  }));
}
