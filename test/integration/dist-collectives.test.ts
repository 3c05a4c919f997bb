// Collectives and failure semantics across real processes on loopback: all-reduce equals the exact mean
// computed here and is byte-identical on every rank; broadcast; scalar reduction; killing one rank in the
// middle of all-reduces makes the others exit 75, the contract's "a peer failed" (measured, must be < 30 s); a
// frozen (SIGSTOPped) rank is detected by the silence timeout.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { EXIT_CODE } from "../../common/src/contract.ts";
import { killAll, type RankProc, spawnRanks, testData } from "../../trainer/src/dist/testing.ts";

const all: RankProc[] = [];
const dir = mkdtempSync(path.join(os.tmpdir(), "dist-coll-"));
after(() => {
  killAll(all);
  rmSync(dir, { recursive: true, force: true });
});
const f32 = (file: string) => {
  const b = readFileSync(path.join(dir, file));
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
};

describe("dist collectives (real processes)", () => {
  it("3 ranks: all-reduce mean = exact mean (≤ 3 float32 roundings), identical bytes; broadcast; scalars", async () => {
    const n = 100_003;
    const ps = await spawnRanks("collectives", 3, {
      env: () => ({ DIST_TEST_OUT: dir, DIST_TEST_N: String(n), DIST_TEST_BUCKET: "65536" }),
    });
    all.push(...ps);
    for (const p of ps) assert.equal((await p.exited).code, 0, p.stderr);
    const inputs = [0, 1, 2].map((r) => testData(r, n));
    const outs = [0, 1, 2].map((r) => f32(`allreduce-rank${r}.bin`));
    for (let i = 0; i < n; i++) {
      const exact = (inputs[0][i] + inputs[1][i] + inputs[2][i]) / 3; // float64
      const bound = 3 * 2 ** -24 * (Math.abs(inputs[0][i]) + Math.abs(inputs[1][i]) + Math.abs(inputs[2][i]));
      const err = Math.abs(outs[0][i] - exact);
      assert.ok(err <= bound, `element ${i}: ${outs[0][i]} vs exact ${exact}`);
    }
    const raw = [0, 1, 2].map((r) => readFileSync(path.join(dir, `allreduce-rank${r}.bin`)));
    assert.ok(raw[0].equals(raw[1]) && raw[0].equals(raw[2]), "every rank must end with identical bytes");
    const expectBcast = Buffer.concat([testData(1000, 70_000), testData(1001, 3)].map((a) => Buffer.from(a.buffer)));
    for (let r = 0; r < 3; r++)
      assert.ok(readFileSync(path.join(dir, `broadcast-rank${r}.bin`)).equals(expectBcast), `broadcast rank ${r}`);
    for (const p of ps) assert.deepEqual((await p.line((o) => Array.isArray(o.scalars))).scalars, [3, 3]);
  });

  it("killing one rank mid-all-reduce makes the others exit 75 (a peer failed) within 30 s", async () => {
    const ps = await spawnRanks("loop", 3, { env: () => ({ DIST_TEST_N: String(4 << 20) }) }); // 16 MB buffers
    all.push(...ps);
    await Promise.all(ps.map((p) => p.line((o) => o.looping === true)));
    const t0 = Date.now();
    ps[1].child.kill("SIGKILL");
    const survivors = await Promise.all([ps[0].exited, ps[2].exited]);
    const secs = survivors.map((s) => (s.at - t0) / 1000);
    process.stderr.write(`kill → survivors exited after ${secs.map((s) => s.toFixed(2)).join(" s, ")} s\n`);
    for (const [i, s] of survivors.entries()) {
      assert.equal(s.code, EXIT_CODE.PEER_FAILED, `rank ${i === 0 ? 0 : 2}: a peer's death is not its own failure`);
      assert.ok(secs[i] < 30, `rank exited after ${secs[i]} s`);
    }
    for (const p of [ps[0], ps[2]]) {
      const err = JSON.parse(p.stderr.trim().split("\n").pop() as string) as { error: string; code: string };
      assert.match(err.code, /PEER_LOST|ABORTED/, err.error);
    }
  });

  it("a frozen rank (SIGSTOP) is detected by the silence timeout (MERGEVQ_DIST_TIMEOUT_SECONDS=3)", async () => {
    const ps = await spawnRanks("loop", 2, {
      env: () => ({ DIST_TEST_N: "65536", MERGEVQ_DIST_TIMEOUT_SECONDS: "3" }),
    });
    all.push(...ps);
    await Promise.all(ps.map((p) => p.line((o) => o.looping === true)));
    const t0 = Date.now();
    ps[1].child.kill("SIGSTOP");
    const s = await ps[0].exited;
    ps[1].child.kill("SIGKILL");
    const secs = (s.at - t0) / 1000;
    assert.equal(s.code, EXIT_CODE.PEER_FAILED, "a frozen peer is a peer failure");
    assert.ok(secs >= 2.5 && secs < 15, `exited after ${secs} s`);
    const err = JSON.parse(ps[0].stderr.trim().split("\n").pop() as string) as { error: string; code: string };
    assert.equal(err.code, "TIMEOUT", err.error);
    assert.match(err.error, /no bytes \(not even heartbeats\) from rank 1/);
  });
});
