// Rendezvous across real processes on loopback (each "pod" on its own 127.x.y.N address, as under the test
// node agent): 2 and 3 ranks, 2 pods × 2 local processes through dist/launch.ts, membership mismatch, and
// the rendezvous timeout when rank 0 never comes.
import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import {
  freePort,
  killAll,
  LAUNCHER,
  loopbackBlock,
  type RankProc,
  rendezvousEnv,
  spawnNode,
  spawnRanks,
  WORKER,
} from "../../trainer/src/dist/testing.ts";

const all: RankProc[] = [];
after(() => killAll(all));
const track = (ps: RankProc[]) => {
  all.push(...ps);
  return ps;
};

describe("dist rendezvous (real processes)", () => {
  for (const world of [2, 3]) {
    it(`${world} ranks meet, get distinct global ranks and exit 0`, async () => {
      const ps = track(await spawnRanks("rendezvous", world));
      const ready = await Promise.all(ps.map((p) => p.line((o) => o.ready === true)));
      assert.deepEqual(
        ready.map((o) => [o.rank, o.worldSize]),
        ps.map((_, r) => [r, world]),
      );
      // Direct ring links: rank r's next neighbour is rank r+1's own pod address (not rank 0's).
      const ipOf = (o: Record<string, unknown>, k: string) => String(o[k]).split(":")[0];
      for (let r = 0; r < world; r++) {
        assert.equal(ipOf(ready[r], "next"), ipOf(ready[(r + 1) % world], "podIp"));
      }
      for (const p of ps) assert.equal((await p.exited).code, 0, p.stderr);
    });
  }

  it("2 pods × NPROC_PER_NODE=2 via launch.ts: global rank = NODE_RANK·2 + local index, one device each", async () => {
    const ip = loopbackBlock();
    const port = await freePort(ip(0));
    const pods = track(
      [0, 1].map((node) =>
        spawnNode(LAUNCHER, ["--", process.execPath, "--import", "tsx", WORKER, "rendezvous"], {
          ...rendezvousEnv({ nnodes: 2, nodeRank: node, nproc: 2, masterAddr: ip(0), port, podIp: ip(node) }),
          CUDA_VISIBLE_DEVICES: node === 0 ? "0,1" : "6,7",
        }),
      ),
    );
    const codes = await Promise.all(pods.map((p) => p.exited));
    assert.deepEqual(
      codes.map((c) => c.code),
      [0, 0],
      pods.map((p) => p.stderr).join("\n"),
    );
    const lines = pods.flatMap((p) =>
      p.stdout
        .split("\n")
        .filter((l) => l.includes('"ready"'))
        .map((l) => JSON.parse(l) as { rank: number; localRank: number; worldSize: number; cuda: string }),
    );
    lines.sort((a, b) => a.rank - b.rank);
    assert.deepEqual(
      lines.map((l) => [l.rank, l.localRank, l.worldSize, l.cuda]),
      [
        [0, 0, 4, "0"],
        [1, 1, 4, "1"],
        [2, 0, 4, "6"],
        [3, 1, 4, "7"],
      ],
    );
  });

  it("launch.ts exits non-zero and stops the sibling when one local process fails", async () => {
    const t0 = Date.now();
    const p = track([
      spawnNode(
        LAUNCHER,
        [
          "--",
          process.execPath,
          "-e",
          "process.env.LOCAL_PROCESS_INDEX === '1' ? process.exit(3) : setTimeout(() => {}, 60000)",
        ],
        {
          NPROC_PER_NODE: "2",
        },
      ),
    ])[0];
    const { code } = await p.exited;
    assert.equal(code, 3, p.stderr);
    assert.match(p.stderr, /local process 1 .* failed with exit code 3/);
    assert.ok(Date.now() - t0 < 20_000, "the sleeping sibling must have been stopped");
  });

  it("config hash mismatch: all 3 ranks exit non-zero naming the differing rank and field", async () => {
    const ps = track(
      await spawnRanks("rendezvous", 3, { env: (r) => ({ DIST_TEST_HASH: r === 1 ? "cfg-B" : "cfg-A" }) }),
    );
    for (const p of ps) {
      const { code } = await p.exited;
      assert.equal(code, 1, `rank ${p.rank}: ${p.stdout}`);
      const err = JSON.parse(p.stderr.trim().split("\n").pop() as string) as { error: string; code: string };
      assert.equal(err.code, "MEMBERSHIP_MISMATCH", err.error);
      assert.match(err.error, /rank 1 .*config hash "cfg-B" ≠ rank 0's "cfg-A"/);
    }
  });

  it("rendezvous timeout: rank 1 without rank 0 exits non-zero after MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS", async () => {
    const t0 = Date.now();
    const [p] = track(
      await spawnRanks("rendezvous", 2, { ranks: [1], env: () => ({ MERGEVQ_RENDEZVOUS_TIMEOUT_SECONDS: "2" }) }),
    );
    const { code, at } = await p.exited;
    const s = (at - t0) / 1000;
    assert.equal(code, 1);
    const err = JSON.parse(p.stderr.trim().split("\n").pop() as string) as { error: string; code: string };
    assert.equal(err.code, "RENDEZVOUS_TIMEOUT");
    assert.match(err.error, /rank 1: rendezvous timed out after 2 s: could not connect to rank 0/);
    assert.ok(s >= 2 && s < 15, `exited after ${s} s`);
  });
});
