// Locate kubectl/helm for suites: $MERGEVQ_KUBECTL / $MERGEVQ_HELM, else the pinned toolchain's bin dir,
// else PATH (kind hosts). Suites still talk to the cluster only through KUBECONFIG.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

function toolchainBin(): string | undefined {
  try {
    return execFileSync(path.join(REPO, "hack/toolchain.sh"), ["--bin-dir"], { encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}

export function tool(name: "kubectl" | "helm"): string {
  const override = process.env[`MERGEVQ_${name.toUpperCase()}`];
  if (override) return override;
  const bin = toolchainBin();
  if (bin && existsSync(path.join(bin, name))) return path.join(bin, name);
  return name;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Run kubectl/helm with the suite's KUBECONFIG; never throws (callers assert on status/output). */
export function run(
  name: "kubectl" | "helm",
  args: string[],
  opts: { input?: string; timeoutMs?: number } = {},
): RunResult {
  const r = spawnSync(tool(name), args, {
    encoding: "utf8",
    input: opts.input,
    timeout: opts.timeoutMs ?? 60_000,
    env: process.env,
  });
  return {
    status: r.status ?? -1,
    stdout: r.stdout ?? "",
    stderr: (r.stderr ?? "") + (r.error ? String(r.error) : ""),
  };
}
