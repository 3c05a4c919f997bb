import os from "node:os";
import path from "node:path";

/** Cache root shared with hack/ scripts: $MERGEVQ_CACHE, else $XDG_CACHE_HOME/mergevq, else ~/.cache/mergevq. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.MERGEVQ_CACHE) return path.resolve(env.MERGEVQ_CACHE);
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "mergevq");
}
