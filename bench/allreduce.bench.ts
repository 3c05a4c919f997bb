// All-reduce throughput between 2 local processes (ring reduce-scatter + all-gather over loopback TCP,
// trainer/src/dist) vs raw loopback TCP throughput between 2 processes, measured in the same run.
// Metrics (one JSON line each): allreduce_algbw_<S>MB (buffer bytes / seconds per in-place all-reduce; for
// 2 ranks every rank sends and receives exactly one buffer's worth, so algbw is comparable with link
// throughput), allreduce_copy_algbw_<S>MB (the same returning a new array, as the fused/gradient path does),
// tcp_loopback_<S>MB (one-way bytes/s of a plain socket stream between 2 processes, same message size), and
// allreduce_vs_tcp_<S>MB (in-place / raw). On loopback both directions of the ring share the same CPUs and
// kernel copies, so ~0.5 of one-way raw TCP is the practical ceiling. BENCH_QUICK=1: 1 and 16 MB only.
import { spawn } from "node:child_process";
import net from "node:net";
import {
  freePort,
  loopbackBlock,
  type RankProc,
  rendezvousEnv,
  spawnNode,
  WORKER,
} from "../trainer/src/dist/testing.ts";

const quick = process.env.BENCH_QUICK === "1";
const SIZES = quick ? [1, 16] : [1, 16, 64];
const ITERS = quick ? 3 : 5;
const emit = (metric: string, value: number, unit: string, config: string) =>
  process.stdout.write(
    `${JSON.stringify({ bench: "allreduce", metric, value: Number(value.toPrecision(4)), unit, backend: "n/a", config })}\n`,
  );

/** Raw TCP: a child process writes `iters` messages of `mb` MiB; this process receives; GB/s one way. */
async function rawTcp(mb: number, iters: number): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  const total = (mb << 20) * (iters + 1); // first message = warm-up
  const result = new Promise<number>((resolve, reject) => {
    server.once("connection", (sock) => {
      let got = 0;
      let t0 = 0;
      sock.on("data", (d: Buffer) => {
        got += d.length;
        if (t0 === 0 && got >= mb << 20) t0 = performance.now();
        if (got >= total) {
          const s = (performance.now() - t0) / 1000;
          sock.destroy();
          resolve(((mb << 20) * iters) / s / 1e9);
        }
      });
      sock.on("error", reject);
    });
  });
  const sender = `const s=require("net").connect(${port},"127.0.0.1",async()=>{s.setNoDelay(true);const b=Buffer.alloc(${mb << 20},7);for(let i=0;i<${iters + 1};i++){if(!s.write(b))await new Promise(r=>s.once("drain",r));}s.end();});s.on("error",()=>{});`;
  const child = spawn(process.execPath, ["-e", sender], { stdio: "ignore" });
  const gbps = await result;
  child.kill();
  server.close();
  return gbps;
}

async function allReduce(): Promise<Map<string, number>> {
  const ip = loopbackBlock();
  const port = await freePort(ip(0));
  const procs: RankProc[] = [0, 1].map((r) =>
    spawnNode(
      WORKER,
      ["bench"],
      {
        ...rendezvousEnv({ nnodes: 2, nodeRank: r, masterAddr: ip(0), port, podIp: ip(r) }),
        DIST_BENCH_SIZES_MB: SIZES.join(","),
        DIST_BENCH_ITERS: String(ITERS),
      },
      r,
    ),
  );
  const codes = await Promise.all(procs.map((p) => p.exited));
  if (codes.some((c) => c.code !== 0)) throw new Error(`bench ranks failed: ${procs.map((p) => p.stderr).join("\n")}`);
  const out = new Map<string, number>();
  for (const l of procs[0].stdout.split("\n")) {
    if (!l.includes('"GBps"')) continue;
    const o = JSON.parse(l) as { sizeMB: number; inPlace: boolean; GBps: number };
    out.set(`${o.sizeMB}:${o.inPlace}`, o.GBps);
  }
  return out;
}

const ar = await allReduce();
for (const mb of SIZES) {
  const tcp = await rawTcp(mb, ITERS);
  const a = ar.get(`${mb}:true`);
  const c = ar.get(`${mb}:false`);
  if (a === undefined || c === undefined) throw new Error(`no all-reduce result for ${mb} MB`);
  const cfg = `2 local processes, ${mb} MiB float32, ${ITERS} iters, 4 MiB buckets`;
  emit(`allreduce_algbw_${mb}MB`, a, "GB/s", cfg);
  emit(`allreduce_copy_algbw_${mb}MB`, c, "GB/s", cfg);
  emit(`tcp_loopback_${mb}MB`, tcp, "GB/s", `2 local processes, ${mb} MiB messages, ${ITERS} iters, one way`);
  emit(`allreduce_vs_tcp_${mb}MB`, a / tcp, "ratio", cfg);
  process.stderr.write(
    `${mb} MiB: all-reduce ${a.toFixed(2)} GB/s (copying API ${c.toFixed(2)}), raw TCP ${tcp.toFixed(2)} GB/s (${((100 * a) / tcp).toFixed(0)} %)\n`,
  );
}
