import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { Rng } from "../util/rng.ts";
import {
  assertSameArchitecture,
  type Checkpoint,
  decodeCheckpoint,
  encodeCheckpoint,
  latestCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
} from "./checkpoint.ts";

function sample(seed: number): Checkpoint {
  const r = new Rng(seed);
  const a = r.normalArray(37);
  a[3] = Number.NaN; // raw bytes, even NaN payloads, survive
  a[4] = -0;
  return {
    kind: "test",
    meta: { step: seed, rng: r.getState(), nested: { list: [1, 2, 3] } },
    tensors: new Map([
      ["g/w", { shape: [37], dtype: "float32" as const, data: a }],
      ["g/m", { shape: [2, 3], dtype: "float32" as const, data: r.uniformArray(6, -1, 1) }],
      ["idx", { shape: [2], dtype: "int32" as const, data: Int32Array.of(-5, 7) }],
    ]),
  };
}

test("checkpoint encode/decode is byte-exact", () => {
  const c = sample(1);
  const d = decodeCheckpoint(encodeCheckpoint(c));
  assert.equal(d.kind, "test");
  assert.deepEqual(d.meta, JSON.parse(JSON.stringify(c.meta)));
  for (const [n, t] of c.tensors) {
    const u = d.tensors.get(n);
    assert.ok(u, n);
    assert.deepEqual(u.shape, t.shape);
    assert.equal(u.dtype, t.dtype);
    assert.deepEqual(
      Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength),
      Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    );
  }
});

test("corruption is detected by the SHA-256", () => {
  const bytes = encodeCheckpoint(sample(2));
  const bad = bytes.slice();
  bad[bad.length - 40] ^= 1;
  assert.throws(() => decodeCheckpoint(bad, "x.ckpt"), /x\.ckpt: SHA-256 mismatch/);
  assert.throws(() => decodeCheckpoint(bytes.slice(0, bytes.length - 5), "y.ckpt"), /SHA-256 mismatch|bad magic/);
  assert.throws(() => decodeCheckpoint(new Uint8Array(100), "z"), /bad magic/);
});

test("save writes latest.json, prunes to keepLast, load resolves a directory", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "mvq-ckpt-"));
  for (const s of [1, 2, 3, 4]) await saveCheckpoint(dir, s, sample(s), { keepLast: 2 });
  const files = (await readdir(dir)).sort();
  assert.deepEqual(files, ["latest.json", "step-000000003.ckpt", "step-000000004.ckpt"]);
  assert.equal(await latestCheckpoint(dir), path.join(dir, "step-000000004.ckpt"));
  const viaDir = await loadCheckpoint(pathToFileURL(dir).href.replace(/\/$/, ""));
  assert.equal(viaDir.meta.step, 4);
  const file = path.join(dir, "step-000000003.ckpt");
  const raw = await readFile(file);
  raw[20] ^= 0xff;
  await writeFile(file, raw);
  await assert.rejects(loadCheckpoint(file), /SHA-256 mismatch/);
});

test("architecture mismatch names the differing fields", () => {
  const a = { model: { ch: 32, chMult: [1, 1, 2], zChannels: 10 }, discriminator: { ndf: 16, nLayers: 2 } };
  assertSameArchitecture(a, structuredClone(a), "c.ckpt");
  const b = { model: { ch: 64, chMult: [1, 1, 2], zChannels: 10 }, discriminator: { ndf: 16, nLayers: 3 } };
  assert.throws(
    () => assertSameArchitecture(a, b, "c.ckpt"),
    /c\.ckpt: checkpoint architecture differs .* 2 field\(s\): discriminator\.nLayers: checkpoint=2 current=3; model\.ch: checkpoint=32 current=64/,
  );
});
