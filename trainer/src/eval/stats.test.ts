import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { writeNpz } from "./npz.ts";
import { batchStats, FeatureStats, frechetDistance, type GaussianStats, loadStats, saveStats } from "./stats.ts";
import { rng, runPython } from "./testing.ts";

const dir = mkdtempSync(path.join(os.tmpdir(), "stats-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** n samples of d-dim features x = offset + z·L with a random mixing L (rank ≤ rank), like pool features. */
function features(
  n: number,
  d: number,
  seed: number,
  opts: { rank?: number; offset?: number; scale?: number } = {},
): Float64Array {
  const r = rng(seed);
  const rank = opts.rank ?? d;
  const mix = Float64Array.from({ length: rank * d }, () => r.normal() / Math.sqrt(rank));
  const x = new Float64Array(n * d);
  const z = new Float64Array(rank);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < rank; k++) z[k] = r.normal();
    for (let j = 0; j < d; j++) {
      let v = opts.offset ?? 0;
      for (let k = 0; k < rank; k++) v += z[k] * mix[k * d + j];
      x[i * d + j] = v * (opts.scale ?? 1);
    }
  }
  return x;
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m / scale;
}

async function scipyFid(a: GaussianStats, b: GaussianStats, tag: string): Promise<{ fid: number; fid_eigh: number }> {
  const p = path.join(dir, `${tag}.npz`);
  const d = a.dim;
  await writeNpz(p, {
    mu1: { shape: [d], data: a.mu },
    sigma1: { shape: [d, d], data: a.sigma },
    mu2: { shape: [d], data: b.mu },
    sigma2: { shape: [d, d], data: b.sigma },
  });
  return JSON.parse(runPython("fid_reference.py", ["fid", p])) as { fid: number; fid_eigh: number };
}

describe("FeatureStats", () => {
  it("streaming statistics equal batch statistics (uneven batches, large offset)", () => {
    const n = 203;
    const d = 24;
    const x = features(n, d, 1, { offset: 1e3 });
    const ref = batchStats(x, n, d);
    const s = new FeatureStats(d);
    let i = 0;
    for (const b of [1, 7, 64, 100, 31]) {
      s.update(x.subarray(i * d, (i + b) * d), b);
      i += b;
    }
    assert.equal(i, n);
    const got = s.finalize();
    assert.equal(got.count, n);
    assert.ok(maxRelDiff(got.mu, ref.mu) < 1e-13);
    assert.ok(maxRelDiff(got.sigma, ref.sigma) < 1e-10, `sigma ${maxRelDiff(got.sigma, ref.sigma)}`);
    // numpy's np.cov agrees as well (independent implementation).
  });

  it("matches numpy mean/np.cov on the same features", async () => {
    const n = 50;
    const d = 8;
    const x = features(n, d, 2);
    const s = new FeatureStats(d);
    s.update(x.subarray(0, 13 * d), 13);
    s.update(x.subarray(13 * d), n - 13);
    const p = path.join(dir, "feat.npz");
    await writeNpz(p, { x: { shape: [n, d], data: x } });
    runPython("fid_reference.py", ["stats", p]);
    const np = await loadStats(p.replace(".npz", ".stats.npz"));
    const got = s.finalize();
    assert.ok(maxRelDiff(got.mu, np.mu) < 1e-13);
    assert.ok(maxRelDiff(got.sigma, np.sigma) < 1e-12);
  });

  it("merges accumulators (per-rank statistics) exactly", () => {
    const d = 10;
    const x = features(90, d, 3, { offset: -5 });
    const a = new FeatureStats(d);
    const b = new FeatureStats(d);
    a.update(x.subarray(0, 40 * d), 40);
    b.update(x.subarray(40 * d), 50);
    a.merge(b);
    const ref = batchStats(x, 90, d);
    assert.ok(maxRelDiff(a.finalize().sigma, ref.sigma) < 1e-12);
    assert.ok(maxRelDiff(a.finalize().mu, ref.mu) < 1e-13);
  });

  it("rejects bad input", () => {
    const s = new FeatureStats(3);
    assert.throws(() => s.update([1, 2], 1), /not n×3/);
    assert.throws(() => s.update([1, Number.NaN, 2], 1), /non-finite/);
    s.update([1, 2, 3], 1);
    assert.throws(() => s.covariance(), /≥2 samples/);
  });
});

describe("frechetDistance", () => {
  const cases: { name: string; d: number; n1: number; n2: number; rank1?: number; rank2?: number; scale?: number }[] = [
    { name: "random full-rank d=64", d: 64, n1: 400, n2: 300 },
    { name: "random d=256 (N < d: singular covariances)", d: 256, n1: 200, n2: 150 },
    { name: "near-singular (rank 5 + 1e-9 noise) d=48", d: 48, n1: 300, n2: 300, rank1: 5, rank2: 7 },
    { name: "pool-like scale d=128", d: 128, n1: 500, n2: 500, scale: 0.3 },
  ];
  for (const c of cases) {
    it(`matches scipy sqrtm float64 reference to 1e-6 relative: ${c.name}`, async () => {
      let x1 = features(c.n1, c.d, 10 + c.d, { rank: c.rank1, scale: c.scale });
      let x2 = features(c.n2, c.d, 20 + c.d, { rank: c.rank2, offset: 0.1, scale: c.scale });
      if (c.rank1) {
        const r = rng(99);
        x1 = x1.map((v) => v + 1e-9 * r.normal());
        x2 = x2.map((v) => v + 1e-9 * r.normal());
      }
      const a = batchStats(x1, c.n1, c.d);
      const b = batchStats(x2, c.n2, c.d);
      const ref = await scipyFid(a, b, c.name.replace(/\W+/g, "_"));
      // Streaming statistics keep their samples when N ≤ d: then FID takes the N×N routes.
      const sa = new FeatureStats(c.d);
      sa.update(x1, c.n1);
      const sb = new FeatureStats(c.d);
      sb.update(x2, c.n2);
      const fa = sa.finalize();
      const fb = sb.finalize();
      assert.equal(fa.centred !== undefined, c.n1 <= c.d);
      const routes: [string, number][] = [
        ["d×d eigen", frechetDistance(a, b).fid],
        ["streaming", frechetDistance(fa, fb).fid],
        ["samples×cov", frechetDistance(fa, b).fid],
        ["cov×samples", frechetDistance(a, fb).fid],
      ];
      for (const [route, ours] of routes) {
        const rel = Math.abs(ours - ref.fid) / Math.abs(ref.fid);
        const relEigh = Math.abs(ours - ref.fid_eigh) / Math.abs(ref.fid_eigh);
        assert.ok(rel <= 1e-6, `${route}: ours ${ours} scipy ${ref.fid} rel ${rel}`);
        assert.ok(relEigh <= 1e-7, `${route}: ours ${ours} numpy-eigh ${ref.fid_eigh} rel ${relEigh}`);
      }
    });
  }

  it("FID of a set with itself is ≤ 1e-6 (full-rank and singular, every route)", () => {
    for (const [n, d] of [
      [300, 64],
      [40, 128],
    ]) {
      const x = features(n, d, n, { offset: 3 });
      const s = batchStats(x, n, d);
      const st = new FeatureStats(d);
      st.update(x, n);
      const f = st.finalize();
      for (const [a, b] of [
        [s, s],
        [f, f],
        [f, s],
      ]) {
        const r = frechetDistance(a, b);
        assert.ok(r.fid <= 1e-6, `n=${n} d=${d}: ${r.fid}`);
      }
    }
  });

  it("grows with a mean shift by exactly ‖Δμ‖²", () => {
    const d = 16;
    const s = batchStats(features(100, d, 5), 100, d);
    const shifted = { ...s, mu: s.mu.map((v) => v + 0.5) };
    const r = frechetDistance(s, shifted);
    assert.ok(Math.abs(r.fid - d * 0.25) < 1e-9, String(r.fid));
  });

  it("saves and loads statistics with the weights tag; pytorch-fid style files have none", async () => {
    const d = 6;
    const s = batchStats(features(20, d, 8), 20, d);
    const p = path.join(dir, "ref.npz");
    await saveStats(p, s, "random");
    const back = await loadStats(p);
    assert.equal(back.weights, "random");
    assert.deepEqual(Array.from(back.mu), Array.from(s.mu));
    assert.deepEqual(Array.from(back.sigma), Array.from(s.sigma));
    const plain = path.join(dir, "plain.npz");
    await saveStats(plain, s);
    assert.equal((await loadStats(plain)).weights, undefined);
    const noStats = path.join(dir, "images.npz");
    await writeNpz(noStats, { arr_0: { shape: [1, 2, 2, 3], data: new Uint8Array(12) } });
    await assert.rejects(loadStats(noStats), /not a statistics npz/);
  });
});
