// Test/bench helper: spawn N rank processes of testWorker.ts (real `node --import tsx` children) with the
// operator's rendezvous env on loopback, each pod on its own 127.x.y.N address.
import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), "testWorker.ts");
export const LAUNCHER = path.join(path.dirname(fileURLToPath(import.meta.url)), "launch.ts");

export async function freePort(host = "127.0.0.1"): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A random 127.A.B.0 block so concurrent runs never share pod addresses. */
export function loopbackBlock(): (i: number) => string {
  const a = 100 + Math.floor(Math.random() * 100);
  const b = Math.floor(Math.random() * 250);
  return (i) => `127.${a}.${b}.${10 + i}`;
}

export interface RankProc {
  rank: number;
  child: ChildProcess;
  stdout: string;
  stderr: string;
  /** Resolves with the exit code (128+signo for signals) and the time it exited (Date.now()). */
  exited: Promise<{ code: number; at: number }>;
  /** Resolves with the first stdout JSON line matching `pred`. */
  line(pred: (o: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
}

export function rendezvousEnv(opts: {
  nnodes: number;
  nodeRank: number;
  nproc?: number;
  masterAddr: string;
  port: number;
  podIp?: string;
}): NodeJS.ProcessEnv {
  const nproc = opts.nproc ?? 1;
  return {
    MASTER_ADDR: opts.masterAddr,
    MASTER_PORT: String(opts.port),
    NNODES: String(opts.nnodes),
    NODE_RANK: String(opts.nodeRank),
    NPROC_PER_NODE: String(nproc),
    WORLD_SIZE: String(opts.nnodes * nproc),
    ...(opts.podIp ? { MERGEVQ_POD_IP: opts.podIp } : {}),
  };
}

/** Spawn `node --import tsx <script> ...args` with `env` added to this process's env. */
export function spawnNode(script: string, args: string[], env: NodeJS.ProcessEnv, rank = -1): RankProc {
  const child = spawn(process.execPath, ["--import", "tsx", script, ...args], {
    env: { ...process.env, LOG_LEVEL: "silent", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const p: RankProc = {
    rank,
    child,
    stdout: "",
    stderr: "",
    exited: new Promise((resolve) => {
      child.on("exit", (code, signal) =>
        resolve({ code: code ?? (signal ? 128 + (signal === "SIGKILL" ? 9 : 15) : 1), at: Date.now() }),
      );
    }),
    line: (pred) =>
      new Promise((resolve, reject) => {
        const check = () => {
          for (const l of p.stdout.split("\n")) {
            if (!l.startsWith("{")) continue;
            try {
              const o = JSON.parse(l) as Record<string, unknown>;
              if (pred(o)) {
                child.stdout?.off("data", check);
                resolve(o);
                return;
              }
            } catch {
              // partial line
            }
          }
        };
        child.stdout?.on("data", check);
        child.on("exit", () =>
          reject(new Error(`rank ${rank} exited before the expected line; stderr: ${p.stderr.slice(-2000)}`)),
        );
        check();
      }),
  };
  child.stdout?.on("data", (d: Buffer) => {
    p.stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    p.stderr += d.toString();
  });
  return p;
}

/** Spawn `world` single-process pods running testWorker `mode`, pod i on its own loopback IP. */
export async function spawnRanks(
  mode: string,
  world: number,
  opts: { env?: (rank: number) => NodeJS.ProcessEnv; ranks?: number[] } = {},
): Promise<RankProc[]> {
  const ip = loopbackBlock();
  const port = await freePort(ip(0));
  return (opts.ranks ?? Array.from({ length: world }, (_, r) => r)).map((r) =>
    spawnNode(
      WORKER,
      [mode],
      {
        ...rendezvousEnv({ nnodes: world, nodeRank: r, masterAddr: ip(0), port, podIp: ip(r) }),
        ...(opts.env?.(r) ?? {}),
      },
      r,
    ),
  );
}

/** Kill whatever is still running (test cleanup). */
export function killAll(procs: RankProc[]): void {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
}

/** Deterministic float32 test data for (seed, n), shared with the tests. */
export function testData(seed: number, n: number): Float32Array {
  const a = new Float32Array(n);
  let s = (seed * 2654435761 + 7) >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 8;
  }
  return a;
}
