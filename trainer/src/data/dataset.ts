// Which reader a dataset URI needs: tar shards (s3://, or a folder holding index.json, or DATASET_FORMAT
// tar-shards) or a class-folder tree; and where a sharded training set's held-out shards live.

import { storageFor } from "../io/storage.ts";
import { joinUri, uriScheme } from "../io/uri.ts";

/** True when `data` should be read as tar shards. */
export async function isShardDataset(data: string, format?: string): Promise<boolean> {
  if (format === "tar-shards") return true;
  if (format === "folder") return false;
  if (uriScheme(data) === "s3") return true;
  return storageFor(joinUri(data, "index.json")).exists(joinUri(data, "index.json"));
}

/** Where the held-out shards of a train-shard dataset live (see the header); undefined when none exist. */
export async function valShardsFor(uri: string): Promise<string | undefined> {
  const base = uri.replace(/\/index\.json$/, "").replace(/\/+$/, "");
  const candidates = [joinUri(base, "val")];
  if (/\/train$/.test(base)) candidates.push(`${base.replace(/\/train$/, "")}/val`);
  for (const c of candidates) if (await storageFor(joinUri(c, "index.json")).exists(joinUri(c, "index.json"))) return c;
  return undefined;
}
