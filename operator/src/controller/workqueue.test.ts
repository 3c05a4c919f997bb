// Work queue semantics (controller-runtime contract): dedupe, one in-flight per key, re-queue of keys added
// while in flight, per-key exponential backoff, requeueAfter, TerminalError, graceful shutdown.
import assert from "node:assert/strict";
import { test } from "node:test";
import { TerminalError, WorkQueue } from "./workqueue.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("identical keys queued while waiting are reconciled once", async () => {
  const q = new WorkQueue({ concurrency: 2 });
  const seen: string[] = [];
  for (let i = 0; i < 5; i++) q.add("a");
  q.add("b");
  assert.equal(q.length, 2);
  q.start(async (k) => {
    seen.push(k);
  });
  await sleep(30);
  await q.shutdown();
  assert.deepEqual(seen.sort(), ["a", "b"]);
});

test("one reconcile in flight per key; a key added while in flight runs again afterwards", async () => {
  const q = new WorkQueue({ concurrency: 4 });
  let inFlight = 0;
  let maxInFlight = 0;
  let runs = 0;
  q.start(async () => {
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    runs++;
    await sleep(20);
    inFlight--;
  });
  q.add("k");
  await sleep(5);
  assert.equal(q.isInFlight("k"), true);
  q.add("k");
  q.add("k");
  await sleep(80);
  await q.shutdown();
  assert.equal(maxInFlight, 1);
  assert.equal(runs, 2, "dirty key re-queued exactly once");
});

test("errors re-queue with per-key exponential backoff; success forgets it", async () => {
  const q = new WorkQueue({ baseDelayMs: 10, maxDelayMs: 1000, concurrency: 1 });
  const times: number[] = [];
  let failures = 3;
  q.start(async () => {
    times.push(Date.now());
    if (failures-- > 0) throw new Error("boom");
  });
  q.add("k");
  await sleep(250);
  assert.equal(times.length, 4);
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  assert.ok(gaps[0] >= 9 && gaps[1] >= 19 && gaps[2] >= 39, `gaps ${gaps}`);
  assert.ok(gaps[2] > gaps[0], "backoff grows");
  assert.equal(q.numRequeues("k"), 0, "forgotten after success");
  await q.shutdown();
  assert.equal(q.addRateLimited("x"), 10);
  assert.equal(q.addRateLimited("x"), 20);
  assert.equal(q.addRateLimited("y"), 10, "per key");
});

test("requeueAfter schedules a delayed run; the earliest pending delay wins", async () => {
  const q = new WorkQueue({ concurrency: 1 });
  const times: number[] = [];
  const t0 = Date.now();
  q.start(async () => {
    times.push(Date.now() - t0);
    return times.length === 1 ? { requeueAfterMs: 60 } : undefined;
  });
  q.add("k");
  await sleep(120);
  assert.equal(times.length, 2);
  assert.ok(times[1] >= 55, `second run at ${times[1]}`);
  q.addAfter("z", 500);
  q.addAfter("z", 10);
  await sleep(40);
  assert.equal(times.length, 3, "earlier delay replaced the later one");
  await q.shutdown();
});

test("TerminalError is not retried; outcomes are reported", async () => {
  const outcomes: string[] = [];
  const q = new WorkQueue({ baseDelayMs: 5, onResult: (_k, o) => outcomes.push(o) });
  let runs = 0;
  q.start(async () => {
    runs++;
    throw new TerminalError("invalid spec");
  });
  q.add("k");
  await sleep(60);
  await q.shutdown();
  assert.equal(runs, 1);
  assert.deepEqual(outcomes, ["terminal"]);
});

test("shutdown waits for in-flight reconciles and drops pending keys", async () => {
  const q = new WorkQueue({ concurrency: 1 });
  let finished = false;
  q.start(async () => {
    await sleep(40);
    finished = true;
  });
  q.add("a");
  q.add("b");
  await sleep(5);
  await q.shutdown();
  assert.equal(finished, true);
  q.add("c");
  assert.equal(q.length, 0, "no keys accepted after shutdown");
});

test("a burst of 5,000 new keys does not starve high-lane keys, nor they the burst; promotion dedupes", async () => {
  const q = new WorkQueue({ concurrency: 1 });
  for (let i = 0; i < 5000; i++) q.add(`new-${i}`);
  q.add("new-4999", "high"); // promoted: served early, and only once
  assert.equal(q.length, 5000);
  const order: string[] = [];
  let added = false;
  q.start(async (k) => {
    order.push(k);
    if (!added && order.length === 10) {
      added = true;
      // Status updates of running runs arrive while the burst is queued.
      for (let i = 0; i < 12; i++) q.add(`running-${i}`, "high");
    }
  });
  const deadline = Date.now() + 10_000;
  while (order.length < 5012 && Date.now() < deadline) await sleep(10);
  await q.shutdown();
  assert.equal(order.length, 5012);
  assert.equal(new Set(order).size, 5012, "every key once");
  assert.equal(order[0], "new-4999", "the promoted key goes first");
  const lastRunning = order.indexOf("running-11");
  // 12 high keys interleaved HIGH_BURST:1 with the burst: all done within 12 + 12/4 + 1 picks of their arrival.
  assert.ok(lastRunning > 0 && lastRunning <= 10 + 12 + 3 + 1, `running-11 at position ${lastRunning}`);
  // …and the burst kept moving meanwhile (no strict priority).
  const newBetween = order.slice(10, lastRunning).filter((k) => k.startsWith("new-")).length;
  assert.ok(newBetween >= 2, `${newBetween} new keys served while the high lane drained`);
});
