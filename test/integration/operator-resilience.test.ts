// Resilience against the real local cluster: the operator SIGKILLed 10 times mid-run leaves no duplicate or
// orphan pods and the run (including a whole-group restart) still finishes; two replicas never both reconcile
// (Lease leader election), leadership moves on graceful shutdown; /healthz, /readyz and /metrics are served.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import type { V1Pod } from "@kubernetes/client-node";
import type { OperatorProcess } from "../../operator/src/testing/fixtures.ts";
import { eventually, Harness } from "../../operator/src/testing/itest.ts";

const h = new Harness();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(() => h.setup("op-res"));
after(() => h.teardown());

function ports(op: OperatorProcess): { health: number; metrics: number } | undefined {
  const line = op
    .logs()
    .split("\n")
    .find((l) => l.includes('"operator starting"'));
  if (!line) return undefined;
  const j = JSON.parse(line) as { healthPort: number; metricsPort: number };
  return { health: j.healthPort, metrics: j.metricsPort };
}

test("operator SIGKILLed 10 times during a run: no duplicate or orphan pods, the run finishes", async () => {
  // Rank 1 fails once (143) so the kills also hit the whole-group restart path.
  const raw = h.fakeTT("chaos", { FAKE_STEPS: "16", FAKE_STEP_MS: "350", FAKE_FAIL: "1:1:4:143" }).raw_();
  await h.create("TokenizerTraining", raw);
  const uid = (await h.get("TokenizerTraining", "chaos"))!.metadata.uid as string;
  const violations: string[] = [];
  let monitoring = true;
  const monitor = (async () => {
    while (monitoring) {
      const pods: V1Pod[] = await h.pods("chaos").catch(() => []);
      const live = pods.filter((p) => !["Succeeded", "Failed"].includes(p.status?.phase ?? ""));
      const attempts = new Set(live.map((p) => p.metadata!.labels!["mergevq.ai/attempt"]));
      // Whole-group restart ordering: never live pods of two attempts at once (a new attempt waits for the old).
      const creating = new Set(
        live.filter((p) => !p.metadata!.deletionTimestamp).map((p) => p.metadata!.labels!["mergevq.ai/attempt"]),
      );
      if (creating.size > 1) violations.push(`live pods of attempts ${[...attempts]}`);
      const perRank = new Map<string, number>();
      for (const p of live.filter((x) => !x.metadata!.deletionTimestamp)) {
        const r = p.metadata!.labels!["mergevq.ai/node-rank"];
        perRank.set(r, (perRank.get(r) ?? 0) + 1);
      }
      for (const [r, n] of perRank) if (n > 1) violations.push(`rank ${r} has ${n} live pods`);
      if (pods.length > 4) violations.push(`${pods.length} pods exist`);
      for (const p of pods)
        if (p.metadata!.ownerReferences?.[0]?.uid !== uid) violations.push(`orphan ${p.metadata!.name}`);
      await sleep(150);
    }
  })();
  let kills = 0;
  for (let i = 0; i < 10; i++) {
    const op = h.startOperator({ LEADER_ELECTION: "false" });
    // Let it get into its reconcile loop (caches sync ≈1-2 s after start), then kill it without warning.
    await sleep(1200 + Math.floor(Math.random() * 900));
    op.child.kill("SIGKILL");
    await new Promise((r) => op.child.once("exit", r));
    kills++;
  }
  assert.equal(kills, 10);
  h.startOperator({ LEADER_ELECTION: "false" });
  const done = await h.waitPhase("TokenizerTraining", "chaos", "Succeeded", 90_000);
  monitoring = false;
  await monitor;
  assert.deepEqual(violations, []);
  assert.equal(done.status.attempt, 2);
  assert.equal(done.status.restartCount, 1);
  const pods = await h.pods("chaos");
  assert.deepEqual(pods.map((p) => p.metadata!.name).sort(), ["chaos-node-0-a2", "chaos-node-1-a2"]);
  await h.operators.at(-1)!.stop();
});

test("two replicas: exactly one leads and reconciles; graceful shutdown hands over; health and metrics are served", async () => {
  const a = h.startOperator({ POD_NAME: "replica-a" });
  const b = h.startOperator({ POD_NAME: "replica-b" });
  const leaderLog = (op: OperatorProcess) => op.logs().includes('"became leader"');
  await eventually(() => leaderLog(a) || leaderLog(b), { timeoutMs: 20_000, message: "a leader" });
  await sleep(3000); // several retry periods: the standby must still not lead
  assert.notEqual(leaderLog(a), leaderLog(b), "exactly one replica leads");
  const [leader, standby] = leaderLog(a) ? [a, b] : [b, a];

  // Health/metrics on both; leader gauge differs.
  const lp = await eventually(() => ports(leader));
  const sp = await eventually(() => ports(standby));
  assert.equal((await fetch(`http://127.0.0.1:${lp.health}/healthz`)).status, 200);
  await eventually(async () => (await fetch(`http://127.0.0.1:${lp.health}/readyz`)).status === 200, {
    message: "leader ready",
  });
  assert.equal((await fetch(`http://127.0.0.1:${sp.health}/healthz`)).status, 200);
  const lm = await (await fetch(`http://127.0.0.1:${lp.metrics}/metrics`)).text();
  const sm = await (await fetch(`http://127.0.0.1:${sp.metrics}/metrics`)).text();
  assert.match(lm, /^mergevq_operator_leader 1$/m);
  assert.match(sm, /^mergevq_operator_leader 0$/m);

  await h.create("TokenizerTraining", h.fakeTT("ha1", { FAKE_STEPS: "2" }, 1).raw_());
  await h.waitPhase("TokenizerTraining", "ha1", "Succeeded", 60_000);
  assert.match(leader.logs(), /"run":"[^"]+\/ha1".*"creating pods"/);
  assert.doesNotMatch(standby.logs(), /"creating pods"|"status written"|"msg":"run admitted"/, "standby reconciled");
  const lm2 = await (await fetch(`http://127.0.0.1:${lp.metrics}/metrics`)).text();
  assert.match(lm2, /mergevq_operator_reconciles_total\{kind="TokenizerTraining",result="(success|requeue)"\} [1-9]/);
  assert.match(lm2, /mergevq_operator_reconcile_duration_seconds_bucket/);
  assert.match(lm2, /mergevq_operator_runs\{kind="TokenizerTraining",phase="Succeeded"\} [1-9]/);

  // Graceful shutdown releases the Lease: the standby takes over well before the lease would expire by itself.
  const t0 = Date.now();
  assert.equal(await leader.stop("SIGTERM"), 0);
  assert.match(leader.logs(), /"released leadership"/);
  await eventually(() => leaderLog(standby), { timeoutMs: 15_000, message: "standby takes over" });
  const handover = Date.now() - t0;
  await h.create("TokenizerTraining", h.fakeTT("ha2", { FAKE_STEPS: "2" }, 1).raw_());
  await h.waitPhase("TokenizerTraining", "ha2", "Succeeded", 60_000);
  assert.match(standby.logs(), /"run":"[^"]+\/ha2".*"creating pods"/);
  assert.ok(handover < 15_000, `handover took ${handover} ms`);
});
