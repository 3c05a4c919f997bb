// Storage URIs: `s3://bucket/key`, `file:///abs/path`, or a plain (absolute or relative) local path.
import path from "node:path";
import { fileURLToPath } from "node:url";

export type ParsedUri = { scheme: "s3"; bucket: string; key: string } | { scheme: "file"; path: string };

/** Scheme of a URI; a plain path is "file". */
export function uriScheme(uri: string): string {
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(uri);
  return m ? m[1].toLowerCase() : "file";
}

/** Parse `s3://bucket/key`, `file:///abs/path` or `/abs/path` (strict: a relative path is an error). */
export function parseUri(uri: string): ParsedUri {
  if (uri.startsWith("s3://")) {
    const rest = uri.slice(5);
    const slash = rest.indexOf("/");
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new Error(`invalid S3 bucket in URI "${uri}"`);
    return { scheme: "s3", bucket, key: slash < 0 ? "" : rest.slice(slash + 1) };
  }
  if (uri.startsWith("file://")) return { scheme: "file", path: fileURLToPath(uri) };
  if (uri.startsWith("/")) return { scheme: "file", path: uri };
  throw new Error(`unsupported URI "${uri}" (expected s3://bucket/key, file:///path or an absolute path)`);
}

/** Join a prefix (s3://b/p, file:///p or a local path) and relative keys with exactly one slash between them. */
export function joinUri(base: string, ...parts: string[]): string {
  if (uriScheme(base) === "file" && !base.startsWith("file://")) return path.join(base, ...parts);
  let out = base.replace(/\/+$/, "");
  for (const p of parts) out += `/${p.replace(/^\/+/, "")}`;
  return out;
}

/** The local path of a file:// URI or plain path (relative paths resolved against the cwd). */
export function toLocalPath(uri: string): string {
  return uri.startsWith("file://") ? fileURLToPath(uri) : path.resolve(uri);
}
