// In-process groups on loopback (each rank is an async task in this process): rendezvous, collectives,
// membership checks and failure propagation. Real-process versions live in test/integration/dist-*.test.ts.
import assert from "node:assert/strict";
import net from "node:net";
import { describe, it } from "node:test";
import { configHash, DistError, initProcessGroup, type ProcessGroup } from "./processGroup.ts";

export async function freePort(host = "127.0.0.1"): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function envFor(rank: number, world: number, port: number, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    MASTER_ADDR: "127.0.0.1",
    MASTER_PORT: String(port),
    NNODES: String(world),
    NODE_RANK: String(rank),
    NPROC_PER_NODE: "1",
    WORLD_SIZE: String(world),
    ...extra,
  };
}

async function group(
  world: number,
  opts: { hash?: (r: number) => string; step?: (r: number) => number; bucketBytes?: number } = {},
) {
  const port = await freePort();
  return Promise.allSettled(
    Array.from({ length: world }, (_, r) =>
      initProcessGroup({
        env: envFor(r, world, port),
        argv: [],
        configHash: opts.hash?.(r) ?? "h",
        step: opts.step?.(r) ?? 0,
        timeoutMs: 10_000,
        exitOnFailure: false,
        handleSignals: false,
        bucketBytes: opts.bucketBytes,
      }),
    ),
  );
}

const ok = (rs: PromiseSettledResult<ProcessGroup>[]) =>
  rs.map((r) => {
    if (r.status === "rejected") throw r.reason;
    return r.value;
  });

/** Deterministic pseudo-random floats per rank. */
function data(rank: number, n: number): Float32Array {
  const a = new Float32Array(n);
  let s = (rank + 1) * 2654435761;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * 10;
  }
  return a;
}

describe("ProcessGroup (in-process ranks)", () => {
  it("all-reduce mean over 3 ranks: exact mean within float32 rounding, identical bytes, spans buckets", async () => {
    const pgs = ok(await group(3, { bucketBytes: 4096 }));
    const n = 10_007; // not a multiple of the world size or the bucket
    const inputs = pgs.map((_, r) => data(r, n));
    const outs = await Promise.all(pgs.map((pg, r) => pg.allReduceMean(inputs[r])));
    for (let i = 0; i < n; i++) {
      const exact = (inputs[0][i] + inputs[1][i] + inputs[2][i]) / 3; // float64 reference
      assert.ok(Math.abs(outs[0][i] - exact) <= 1e-6 * Math.max(1, Math.abs(exact)), `element ${i}`);
    }
    const bytes = outs.map((o) => Buffer.from(o.buffer));
    assert.ok(bytes[0].equals(bytes[1]) && bytes[0].equals(bytes[2]), "ranks must hold identical bytes");
    assert.deepEqual(inputs[0], data(0, n), "input must not be modified");
    // Same inputs again → same bytes (deterministic summation order).
    const again = await Promise.all(pgs.map((pg, r) => pg.allReduceMean(inputs[r])));
    assert.ok(Buffer.from(again[1].buffer).equals(bytes[1]));
    await Promise.all(pgs.map((pg) => pg.close()));
  });

  it("fused all-reduce of many arrays (incl. promises and empty arrays), broadcast, scalars, bytes", async () => {
    const pgs = ok(await group(2, { bucketBytes: 1000 }));
    const sizes = [3, 0, 700, 1, 257];
    const per = pgs.map((_, r) => sizes.map((s, k) => data(r * 10 + k, s)));
    const outs = await Promise.all(
      pgs.map((pg, r) =>
        pg.allReduceMeanFused(sizes.map((size, k) => ({ size, data: k % 2 ? Promise.resolve(per[r][k]) : per[r][k] }))),
      ),
    );
    for (let k = 0; k < sizes.length; k++) {
      assert.equal(outs[0][k].length, sizes[k]);
      for (let i = 0; i < sizes[k]; i++) {
        assert.equal(outs[0][k][i], Math.fround((per[0][k][i] + per[1][k][i]) / 2));
      }
      assert.ok(Buffer.from(outs[0][k].buffer).equals(Buffer.from(outs[1][k].buffer)));
    }
    const root = 1;
    const arrs = pgs.map((_, r) => [data(r === root ? 99 : r, 300_000), data(r === root ? 98 : r + 5, 5)]);
    await Promise.all(pgs.map((pg, r) => pg.broadcast(arrs[r], root)));
    assert.deepEqual(arrs[0][0], data(99, 300_000));
    assert.deepEqual(arrs[0][1], data(98, 5));
    const sc = await Promise.all(pgs.map((pg, r) => pg.allReduceScalars([r + 1, 10 * r], "mean")));
    assert.deepEqual(sc, [
      [1.5, 5],
      [1.5, 5],
    ]);
    const payload = new Uint8Array(3_000_000).map((_, i) => i % 251);
    const got = await Promise.all(pgs.map((pg, r) => pg.broadcastBytes(r === 0 ? payload : null, 0)));
    assert.deepEqual(got[1], payload);
    await Promise.all(pgs.map((pg) => pg.barrier()));
    await Promise.all(pgs.map((pg) => pg.close()));
  });

  it("config hash mismatch: every rank gets MEMBERSHIP_MISMATCH naming the differing field", async () => {
    const rs = await group(3, { hash: (r) => (r === 2 ? configHash({ lr: 2 }) : configHash({ lr: 1 })) });
    for (const r of rs) {
      assert.equal(r.status, "rejected");
      const e = (r as PromiseRejectedResult).reason as DistError;
      assert.equal(e.code, "MEMBERSHIP_MISMATCH", e.message);
      assert.match(e.message, /rank 2 .*config hash/);
    }
  });

  it("starting step mismatch is named", async () => {
    const rs = await group(2, { step: (r) => (r === 1 ? 5 : 0) });
    for (const r of rs) {
      assert.equal(r.status, "rejected");
      assert.match(((r as PromiseRejectedResult).reason as Error).message, /starting step 5 ≠ rank 0's 0/);
    }
  });

  it("a rank that leaves makes the other's collective fail fast", async () => {
    const pgs = ok(await group(2));
    pgs[1].abort("simulated failure");
    const t0 = Date.now();
    await assert.rejects(
      pgs[0].allReduceMean(new Float32Array(10)),
      (e: DistError) => e instanceof DistError && /simulated failure/.test(e.message),
    );
    assert.ok(Date.now() - t0 < 2000);
  });

  it("world size 1 needs no network", async () => {
    const pg = await initProcessGroup({ env: {}, argv: [], configHash: "x", step: 0 });
    assert.equal(pg.worldSize, 1);
    assert.ok(pg.isMain);
    const x = Float32Array.from([1, 2, 3]);
    assert.deepEqual(await pg.allReduceMean(x), x);
    assert.deepEqual(await pg.allReduceScalars([4]), [4]);
  });
});
