import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, test } from "node:test";
import {
  CheckpointIntegrityError,
  listCheckpoints,
  loadCheckpoint,
  loadLatest,
  saveCheckpoint,
} from "./checkpointStore.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "mvq-ckpt-"));
after(() => rmSync(dir, { recursive: true, force: true }));

test("round trip (bytes and stream), latest pointer, keepLast retention", async () => {
  const d = path.join(dir, "a");
  const blobs = [randomBytes(1000), randomBytes(70_000), randomBytes(5)];
  await saveCheckpoint(d, 10, blobs[0], { keepLast: 2 });
  await saveCheckpoint(`file://${d}`, 20, Readable.from([blobs[1].subarray(0, 30_000), blobs[1].subarray(30_000)]), {
    keepLast: 2,
  });
  const saved = await saveCheckpoint(d, 30, blobs[2], { keepLast: 2 });
  assert.deepEqual(saved.deleted, [path.join(d, "step-000000010")]);
  assert.deepEqual(
    (await listCheckpoints(d)).map((r) => r.step),
    [20, 30],
  );
  const ck = await loadLatest(d);
  assert.equal(ck?.step, 30);
  assert.deepEqual(ck?.bytes, blobs[2]);
  assert.deepEqual((await loadCheckpoint(path.join(d, "step-000000020")))?.bytes, blobs[1]);
  assert.equal(await loadLatest(path.join(dir, "empty")), undefined);
});

test("a tampered checkpoint is refused with a clear error and the previous one is used", async () => {
  const d = path.join(dir, "b");
  const good = randomBytes(4096);
  await saveCheckpoint(d, 1, good);
  await saveCheckpoint(d, 2, randomBytes(4096));
  const f = path.join(d, "step-000000002", "checkpoint.bin");
  const bytes = readFileSync(f);
  bytes[100] ^= 0xff;
  writeFileSync(f, bytes);
  const rejected: Error[] = [];
  const ck = await loadLatest(d, { onReject: (_u, e) => rejected.push(e) });
  assert.equal(ck?.step, 1);
  assert.deepEqual(ck?.bytes, good);
  assert.equal(rejected.length, 1);
  assert.ok(rejected[0] instanceof CheckpointIntegrityError);
  assert.match(rejected[0].message, /step-000000002 failed its SHA-256 check/);
  // Resuming from the tampered step URI also falls back.
  assert.equal((await loadCheckpoint(path.join(d, "step-000000002")))?.step, 1);
  // With no older checkpoint left, the refusal is thrown.
  rmSync(path.join(d, "step-000000001"), { recursive: true });
  await assert.rejects(loadLatest(d), CheckpointIntegrityError);
});

test("an incomplete step dir (no manifest) newer than latest is ignored and later cleaned up", async () => {
  const d = path.join(dir, "c");
  const a = randomBytes(100);
  await saveCheckpoint(d, 5, a);
  mkdirSync(path.join(d, "step-000000006"), { recursive: true });
  writeFileSync(path.join(d, "step-000000006", "checkpoint.bin"), randomBytes(50)); // killed writer
  const ck = await loadLatest(d);
  assert.equal(ck?.step, 5);
  assert.deepEqual(
    (await listCheckpoints(d)).map((r) => [r.step, r.complete]),
    [
      [5, true],
      [6, false],
    ],
  );
  await saveCheckpoint(d, 7, randomBytes(10), { keepLast: 5 });
  assert.equal(existsSync(path.join(d, "step-000000006", "checkpoint.bin")), false);
  assert.equal((await loadLatest(d))?.step, 7);
});
