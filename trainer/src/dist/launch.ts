// Per-pod launcher: spawns NPROC_PER_NODE local processes (one per accelerator) of the same command, each
// with LOCAL_PROCESS_INDEX=i (→ global rank NODE_RANK·NPROC_PER_NODE + i, see env.ts) and its device made
// visible through CUDA_VISIBLE_DEVICES (NVIDIA) or ASCEND_RT_VISIBLE_DEVICES (Ascend: DIST_BACKEND=hccl or
// ASCEND_VISIBLE_DEVICES present). When the variable already lists devices ("4,5,6,7"), child i gets the
// i-th entry; otherwise it gets "i". If any child fails (non-zero exit or signal), the others get SIGTERM
// (SIGKILL after a grace period) and the launcher exits with the first failure's code (128+signo for a
// signal). SIGTERM/SIGINT to the launcher are forwarded to the children.
//
// CLI:  tsx trainer/src/dist/launch.ts [--nproc N] [--device-env VAR[,VAR]] [--append-local-rank] -- cmd args…
//   --nproc            defaults to NPROC_PER_NODE (1 when unset; then the command runs once, unchanged env
//                      apart from LOCAL_PROCESS_INDEX=0)
//   --append-local-rank  also pass `--local-rank=i` to each child
import { type ChildProcess, spawn } from "node:child_process";
import os from "node:os";
import { pathToFileURL } from "node:url";

export interface LaunchOptions {
  command: string;
  args: readonly string[];
  /** Processes to start (default NPROC_PER_NODE, else 1). */
  nproc?: number;
  env?: NodeJS.ProcessEnv;
  /** Visibility variables to set per child (default: see header). */
  deviceEnv?: readonly string[];
  appendLocalRank?: boolean;
  /** SIGTERM → SIGKILL grace for the surviving children after a failure (default 10 s). */
  killGraceMs?: number;
  /** Diagnostics (default: stderr). */
  report?: (line: string) => void;
}

/** Device visibility variables to set for this environment. */
export function deviceEnvFor(env: NodeJS.ProcessEnv): string[] {
  if (env.DIST_BACKEND === "hccl" || env.ASCEND_VISIBLE_DEVICES !== undefined) return ["ASCEND_RT_VISIBLE_DEVICES"];
  return ["CUDA_VISIBLE_DEVICES"];
}

/** Environment of local child `i` of `nproc`. */
export function childEnv(
  env: NodeJS.ProcessEnv,
  i: number,
  nproc: number,
  deviceEnv: readonly string[],
): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env, LOCAL_PROCESS_INDEX: String(i) };
  if (nproc > 1) {
    for (const v of deviceEnv) {
      const listed = (env[v] ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      if (listed.length > 0 && listed.length < nproc) {
        throw new Error(`${v}="${env[v]}" lists ${listed.length} device(s) but NPROC_PER_NODE=${nproc}`);
      }
      out[v] = listed.length ? listed[i] : String(i);
    }
  }
  return out;
}

const exitCodeOf = (code: number | null, signal: NodeJS.Signals | null) =>
  code ?? (signal ? 128 + (os.constants.signals[signal] ?? 0) : 1);

/** Run the children; resolves with the launcher's exit code. */
export function launch(opts: LaunchOptions): Promise<number> {
  const env = opts.env ?? process.env;
  const nproc = opts.nproc ?? (env.NPROC_PER_NODE ? Number(env.NPROC_PER_NODE) : 1);
  if (!Number.isInteger(nproc) || nproc < 1)
    throw new Error(`NPROC_PER_NODE: expected an integer ≥ 1, got "${env.NPROC_PER_NODE}"`);
  const deviceEnv = opts.deviceEnv ?? deviceEnvFor(env);
  const report = opts.report ?? ((l: string) => process.stderr.write(`${l}\n`));
  const grace = opts.killGraceMs ?? 10_000;
  const children: ChildProcess[] = [];
  let firstFailure: { i: number; code: number } | undefined;
  let alive = nproc;
  return new Promise<number>((resolve) => {
    const stopOthers = () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
      setTimeout(() => {
        for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      }, grace).unref();
    };
    const forward = (sig: NodeJS.Signals) => () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(sig);
    };
    const onTerm = forward("SIGTERM");
    const onInt = forward("SIGINT");
    process.on("SIGTERM", onTerm);
    process.on("SIGINT", onInt);
    for (let i = 0; i < nproc; i++) {
      const args = opts.appendLocalRank ? [...opts.args, `--local-rank=${i}`] : [...opts.args];
      const child = spawn(opts.command, args, { env: childEnv(env, i, nproc, deviceEnv), stdio: "inherit" });
      children.push(child);
      const done = (code: number) => {
        alive--;
        if (code !== 0 && !firstFailure) {
          firstFailure = { i, code };
          report(
            `launch: local process ${i} (pid ${child.pid}) failed with exit code ${code}; stopping the other ${alive} process(es)`,
          );
          stopOthers();
        }
        if (alive === 0) {
          process.removeListener("SIGTERM", onTerm);
          process.removeListener("SIGINT", onInt);
          resolve(firstFailure?.code ?? 0);
        }
      };
      child.on("error", (e) => {
        report(`launch: cannot start local process ${i}: ${e.message}`);
        if (child.exitCode === null) done(127);
      });
      child.on("exit", (code, signal) => done(exitCodeOf(code, signal)));
    }
  });
}

function parseCli(argv: string[]): LaunchOptions {
  const sep = argv.indexOf("--");
  const flags = sep >= 0 ? argv.slice(0, sep) : [];
  const cmd = sep >= 0 ? argv.slice(sep + 1) : argv;
  if (cmd.length === 0)
    throw new Error("usage: launch.ts [--nproc N] [--device-env VAR[,VAR]] [--append-local-rank] -- cmd args…");
  const opts: LaunchOptions = { command: cmd[0], args: cmd.slice(1) };
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i];
    if (f === "--nproc") opts.nproc = Number(flags[++i]);
    else if (f === "--device-env") opts.deviceEnv = (flags[++i] ?? "").split(",").filter(Boolean);
    else if (f === "--append-local-rank") opts.appendLocalRank = true;
    else throw new Error(`launch.ts: unknown flag ${f}`);
  }
  return opts;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    const code = await launch(parseCli(process.argv.slice(2)));
    process.exit(code);
  } catch (e) {
    process.stderr.write(`launch: ${(e as Error).message}\n`);
    process.exit(2);
  }
}
