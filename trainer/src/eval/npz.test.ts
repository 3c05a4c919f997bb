import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { iterateNpzRows, listNpz, npzArrayHeader, readNpz, verifyNpz, writeNpz } from "./npz.ts";
import { runPython } from "./testing.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "npz-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

interface PyArray {
  dtype: string;
  shape: number[];
  values: number[];
}

describe("npz", () => {
  it("round-trips through the TS writer and reader", async () => {
    const p = path.join(dir, "rt.npz");
    const mu = Float64Array.from({ length: 7 }, (_, i) => i * 0.1 - 0.3);
    const sigma = Float32Array.from({ length: 6 }, (_, i) => i * 1.5);
    const img = Uint8Array.from({ length: 2 * 2 * 3 * 3 }, (_, i) => (i * 37) % 256);
    await writeNpz(p, {
      mu: { shape: [7], data: mu },
      sigma: { shape: [2, 3], data: sigma },
      arr_0: { shape: [2, 2, 3, 3], data: img },
    });
    assert.deepEqual((await listNpz(p)).sort(), ["arr_0", "mu", "sigma"]);
    const z = await readNpz(p);
    assert.equal(z.mu.dtype, "<f8");
    assert.deepEqual(z.mu.shape, [7]);
    assert.deepEqual(Array.from(z.mu.data as Float64Array), Array.from(mu));
    assert.deepEqual(z.sigma.shape, [2, 3]);
    assert.deepEqual(Array.from(z.sigma.data as Float32Array), Array.from(sigma));
    assert.deepEqual(Array.from(z.arr_0.data as Uint8Array), Array.from(img));
    const only = await readNpz(p, ["mu"]);
    assert.deepEqual(Object.keys(only), ["mu"]);
    await assert.rejects(readNpz(p, ["nope"]), /no array "nope"/);
  });

  it("writes files numpy reads", async () => {
    const p = path.join(dir, "forpy.npz");
    const mu = Float64Array.from([1.5, -2.25, 3e-9]);
    const sigma = Float64Array.from([1, 2, 3, 4]);
    await writeNpz(p, { mu: { shape: [3], data: mu }, sigma: { shape: [2, 2], data: sigma } });
    const got = JSON.parse(runPython("fid_reference.py", ["read-npz", p])) as Record<string, PyArray>;
    assert.deepEqual(got.mu, { dtype: "<f8", shape: [3], values: [1.5, -2.25, 3e-9] });
    assert.deepEqual(got.sigma, { dtype: "<f8", shape: [2, 2], values: [1, 2, 3, 4] });
  });

  it("reads np.savez and np.savez_compressed files (zip64 members, deflate)", async () => {
    const base = path.join(dir, "frompy");
    const expected = JSON.parse(runPython("fid_reference.py", ["write-npz", base])) as Record<string, PyArray>;
    for (const file of [`${base}.plain.npz`, `${base}.compressed.npz`]) {
      const z = await readNpz(file);
      assert.deepEqual(Object.keys(z).sort(), Object.keys(expected).sort(), file);
      for (const [k, e] of Object.entries(expected)) {
        assert.deepEqual(z[k].shape, e.shape, `${file}:${k} shape`);
        const values = Array.from(z[k].data as ArrayLike<number | bigint>, (v) => Number(v));
        if (e.dtype === "<f4") {
          for (let i = 0; i < values.length; i++)
            assert.ok(Math.abs(values[i] - e.values[i]) <= 1e-6 * Math.abs(e.values[i]) + 1e-12);
        } else assert.deepEqual(values, e.values, `${file}:${k}`);
      }
      const h = await npzArrayHeader(file, "arr_0");
      assert.deepEqual(h.shape, [3, 4, 6, 3]);
      // Streamed rows in batches of 2 (3 rows → 2 + 1) equal the whole array.
      const parts: number[] = [];
      const sizes: number[] = [];
      for await (const b of iterateNpzRows(file, "arr_0", 2)) {
        sizes.push(b.shape[0]);
        assert.deepEqual(b.shape.slice(1), [4, 6, 3]);
        parts.push(...Array.from(b.data as Uint8Array));
      }
      assert.deepEqual(sizes, [2, 1]);
      assert.deepEqual(parts, expected.arr_0.values);
    }
  });
});

describe("verifyNpz", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "npz-verify-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("accepts an intact file and names the member whose bytes changed or that was cut off", async () => {
    const p = path.join(dir, "a.npz");
    const img = new Uint8Array(4 * 8 * 8 * 3).map((_, i) => (i * 37) % 256);
    await writeNpz(p, {
      arr_0: { shape: [4, 8, 8, 3], data: img },
      labels: { shape: [4], data: Int32Array.of(0, 1, 2, 3) },
    });
    assert.equal(await verifyNpz(p), 2);
    const bytes = readFileSync(p);
    const flipped = Buffer.from(bytes);
    flipped[200] ^= 0xff; // inside arr_0's data
    writeFileSync(path.join(dir, "b.npz"), flipped);
    await assert.rejects(verifyNpz(path.join(dir, "b.npz")), /arr_0\.npy: CRC-32 mismatch/);
    writeFileSync(path.join(dir, "c.npz"), bytes.subarray(0, bytes.length - 40));
    await assert.rejects(verifyNpz(path.join(dir, "c.npz")), /not a zip file|central directory/);
  });
});
