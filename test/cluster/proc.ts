// Process plumbing shared by the test-cluster harness: free loopback ports, child processes in their own
// process groups tagged with a per-cluster marker env var, a watchdog that reaps everything when the owner
// dies (even by SIGKILL), and readiness polling.
//
// Every process the harness starts (etcd, control plane, MinIO, node agent and the pods the agent runs)
// carries `MERGEVQ_CLUSTER_ID=<id>` in its initial environment. `/proc/<pid>/environ` is immutable after
// exec, so scanning it finds every descendant we started, regardless of process groups or PID reuse.
import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, readdirSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";

export const MARKER_VAR = "MERGEVQ_CLUSTER_ID";

/** Reserve a free TCP port on 127.0.0.1 (bind to 0, read, close). */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Distinct free ports (a port returned twice by the kernel is retried). */
export async function freePorts(n: number, host = "127.0.0.1"): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await freePort(host));
  return [...out];
}

/** True when something accepts TCP connections on host:port. */
export function portOpen(port: number, host = "127.0.0.1", timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value; throws with the last error after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  opts: { timeoutMs?: number; intervalMs?: number; abort?: () => string | undefined } = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let last: unknown;
  for (;;) {
    const why = opts.abort?.();
    if (why) throw new Error(`${what}: ${why}`);
    try {
      const v = await fn();
      if (v) return v as T;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${opts.timeoutMs ?? 30_000} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`,
      );
    }
    await sleep(opts.intervalMs ?? 200);
  }
}

export interface Managed {
  name: string;
  child: ChildProcess;
  logPath: string;
  /** Exit description once the process has exited. */
  exited?: string;
}

/**
 * Spawn a long-running component in its own process group (detached → setsid), stdout+stderr appended to
 * `logPath`, tagged with the cluster marker.
 */
export function spawnManaged(
  name: string,
  cmd: string,
  args: string[],
  opts: { clusterId: string; logPath: string; env?: NodeJS.ProcessEnv; cwd?: string },
): Managed {
  const out = createWriteStream(opts.logPath, { flags: "a" });
  const child = spawn(cmd, args, {
    cwd: opts.cwd,
    env: { ...(opts.env ?? process.env), [MARKER_VAR]: opts.clusterId },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.pipe(out, { end: false });
  child.stderr?.pipe(out, { end: false });
  const m: Managed = { name, child, logPath: opts.logPath };
  child.on("exit", (code, sig) => {
    m.exited = sig ? `killed by ${sig}` : `exited with code ${code}`;
  });
  child.on("error", (e) => {
    m.exited = `failed to start: ${e.message}`;
  });
  return m;
}

/** Last `n` lines of a log file, for error messages. */
export function tailFile(path: string, n = 30): string {
  try {
    return readFileSync(path, "utf8").split("\n").slice(-n).join("\n");
  } catch {
    return "";
  }
}

function signalGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      /* already gone */
    }
  }
}

/** SIGTERM the component's process group; SIGKILL after `graceMs`. Resolves when it has exited. */
export async function stopManaged(m: Managed, graceMs = 5000): Promise<void> {
  const pid = m.child.pid;
  if (!pid) return;
  if (m.child.exitCode !== null || m.child.signalCode !== null) {
    signalGroup(pid, "SIGKILL"); // leftover group members
    return;
  }
  const exited = new Promise<void>((r) => m.child.once("exit", () => r()));
  signalGroup(pid, "SIGTERM");
  const timer = setTimeout(() => signalGroup(pid, "SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
  signalGroup(pid, "SIGKILL");
}

/** PIDs of live processes whose initial environment carries `MERGEVQ_CLUSTER_ID=<id>`. */
export function markedPids(clusterId: string): number[] {
  const needle = Buffer.from(`${MARKER_VAR}=${clusterId}\0`);
  const out: number[] = [];
  for (const ent of readdirSync("/proc")) {
    if (!/^\d+$/.test(ent)) continue;
    const pid = Number(ent);
    if (pid === process.pid) continue;
    try {
      const env = readFileSync(`/proc/${ent}/environ`);
      if (env.includes(needle)) {
        // Zombies keep their environ readable but are already dead.
        const stat = readFileSync(`/proc/${ent}/stat`, "utf8");
        const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
        if (state !== "Z") out.push(pid);
      }
    } catch {
      /* raced with exit or not ours */
    }
  }
  return out;
}

/** Synchronously SIGKILL every marked process (last-resort cleanup, safe inside an 'exit' handler). */
export function killMarked(clusterId: string): number {
  const pids = markedPids(clusterId);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  return pids.length;
}

/**
 * Start a detached shell watchdog: when `ownerPid` disappears (crash, SIGKILL, test-runner timeout) it
 * SIGTERMs, then SIGKILLs, every process carrying the marker and removes `dir`. Exits by itself once the
 * owner is gone. Returns the watchdog's pid (stop it with `process.kill(pid)` after a clean shutdown).
 */
export function startReaper(clusterId: string, ownerPid: number, dir: string): number | undefined {
  const script = [
    `while kill -0 ${ownerPid} 2>/dev/null; do sleep 1; done`,
    `pids() { grep -l -a -F "${MARKER_VAR}=${clusterId}" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3; }`,
    `for p in $(pids); do kill -TERM "$p" 2>/dev/null; done`,
    "sleep 2",
    `for p in $(pids); do kill -KILL "$p" 2>/dev/null; done`,
    `rm -rf '${dir.replaceAll("'", "")}'`,
  ].join("\n");
  const env = { ...process.env };
  delete env[MARKER_VAR];
  const child = spawn("/bin/sh", ["-c", script], { detached: true, stdio: "ignore", env });
  child.unref();
  return child.pid;
}

/** Remove a directory tree, ignoring errors. */
export function removeDir(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}
