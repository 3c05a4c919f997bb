// Stage-II data: MergeAR expansion on a real tokenizer encode of real photographs (T0 tokenizer, its seeded
// initial weights; the photos come from trainer/src/util/testPhotos.ts), label dropout, candidate choice.
import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { createLogger } from "../../../common/src/logger.ts";
import { selectBackend } from "../backend/select.ts";
import { LocalFolderSource } from "../data/localFolder.ts";
import { MergeVQTokenizer } from "../tokenizer/mergevq.ts";
import { ensureTestPhotos } from "../util/testPhotos.ts";
import {
  ARDataSource,
  chooseCandidates,
  dropLabels,
  expandMerged,
  globalSampleIndex,
  sampleUniform,
  sampleUniforms,
  tokenizeImages,
} from "./arData.ts";

const log = createLogger({ component: "ar-data-test" }, { level: "warn" });
let tokenizer: MergeVQTokenizer;
let photos = "";

before(async () => {
  await selectBackend({ log });
  tokenizer = new MergeVQTokenizer("T0");
  photos = ensureTestPhotos().dir;
});

async function photoBatch(
  n: number,
  seed = 3,
): Promise<{ image: tf.Tensor4D; labels: Int32Array; src: LocalFolderSource }> {
  const src = await LocalFolderSource.open({ root: photos, split: "train", size: 32, augment: true, seed });
  const b = await src.next(n);
  return { image: b.image, labels: b.labels, src };
}

test("expandMerged: hand example (groups P1,P1,P3,P3,P5,P5,P5,P8,P8 of the MergeAR figure)", () => {
  // 9 raster positions, 4 kept tokens (groups 0..3) with codes 10, 11, 12, 13.
  const groups = [0, 0, 1, 1, 2, 2, 2, 3, 3];
  const r = expandMerged([10, 11, 12, 13], groups, 1, 4, 9);
  assert.deepEqual([...r.indices], [10, 10, 11, 11, 12, 12, 12, 13, 13]);
  assert.deepEqual([...r.dup], [0, 1, 0, 1, 0, 1, 1, 0, 1]);
  // Non-contiguous groups: a group's first raster position is not a duplicate wherever it is.
  const r2 = expandMerged([5, 6], [1, 0, 1, 0], 1, 2, 4);
  assert.deepEqual([...r2.indices], [6, 5, 6, 5]);
  assert.deepEqual([...r2.dup], [0, 0, 1, 1]);
  assert.throws(() => expandMerged([1], [1], 1, 1, 1), /outside/);
});

test("tokenizeImages on real photos: per-sample K, expanded codes = kept[groups], dup = not-first of group", async () => {
  const { L, candidates } = tokenizer.config.derived;
  assert.equal(L, 64);
  assert.deepEqual(
    candidates.map((c) => c.K),
    [25, 36, 49, 64],
  );
  const { image } = await photoBatch(6);
  const ids = [0, 1, 2, 3, 1, 0];
  const t = tokenizeImages(tokenizer, image, ids);
  assert.deepEqual(t.K, [25, 36, 49, 64, 36, 25]);
  let merged = 0;
  for (let b = 0; b < 6; b++) {
    const K = candidates[ids[b]].K;
    // Reference: encode this photo alone at its K.
    const one = tf.tidy(() => tf.slice(image, [b, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D);
    const e = tokenizer.encode(one, K, { training: false });
    const kept = e.indices.dataSync();
    const groups = e.groups.dataSync();
    const S = e.source.arraySync() as number[][][]; // [1, K, L]
    const seq = t.indices.subarray(b * L, (b + 1) * L);
    const dup = t.dup.subarray(b * L, (b + 1) * L);
    const firstSeen = new Set<number>();
    for (let j = 0; j < L; j++) {
      assert.equal(S[0][groups[j]][j], 1, "groups agree with the source matrix");
      assert.equal(seq[j], kept[groups[j]], `sample ${b} position ${j}: expanded code`);
      assert.equal(dup[j], firstSeen.has(groups[j]) ? 1 : 0, `sample ${b} position ${j}: dup flag`);
      firstSeen.add(groups[j]);
    }
    // Exactly K non-duplicate positions (one per kept token); L − K duplicates.
    assert.equal(
      dup.reduce((a, x) => a + x, 0),
      L - K,
    );
    if (K === L) {
      // No merging: the raster sequence is the tokenizer's own index order, no duplicates.
      assert.deepEqual([...seq], [...kept]);
    } else {
      // Merged tokens really repeat codes on the raster grid.
      merged++;
      assert.ok(new Set(groups).size === K);
    }
    for (const x of seq) assert.ok(x >= 0 && x < 1024);
    tf.dispose([one, ...Object.values(e).filter((v): v is tf.Tensor => v instanceof tf.Tensor)]);
    tf.dispose(Object.values(e.losses));
  }
  assert.equal(merged, 5);
  image.dispose();
});

test("without MergeAR: K = L for every sample, no duplicates, codes = encode(K = L)", async () => {
  const { image } = await photoBatch(3, 7);
  const t = tokenizeImages(tokenizer, image, null);
  assert.deepEqual(t.K, [64, 64, 64]);
  assert.equal(
    t.dup.reduce((a, x) => a + x, 0),
    0,
  );
  const ref = tf.tidy(() => tokenizer.encode(image, 64, { training: false }).indices.dataSync());
  assert.deepEqual([...t.indices], [...ref]);
  image.dispose();
});

test("label dropout and the K draw: one seeded uniform per (seed, global sample index), with their probabilities", () => {
  const labels = Array.from({ length: 20000 }, (_, i) => i % 10);
  const idx = labels.map((_, i) => 100 + i);
  const d = dropLabels(labels, 10, 0.1, sampleUniforms("label-dropout", 0, idx));
  const frac = d.filter((x) => x === 10).length / d.length;
  assert.ok(Math.abs(frac - 0.1) < 0.01, `dropped fraction ${frac}`);
  for (let i = 0; i < d.length; i++) assert.ok(d[i] === 10 || d[i] === labels[i]);
  assert.deepEqual(d, dropLabels(labels, 10, 0.1, sampleUniforms("label-dropout", 0, idx)));
  // Other sample indices, another seed or another purpose: other draws.
  const shifted = idx.map((g) => g + 1);
  assert.notDeepEqual(d, dropLabels(labels, 10, 0.1, sampleUniforms("label-dropout", 0, shifted)));
  assert.notDeepEqual(d, dropLabels(labels, 10, 0.1, sampleUniforms("label-dropout", 1, idx)));
  assert.notDeepEqual(d, dropLabels(labels, 10, 0.1, sampleUniforms("mergear-k", 0, idx)));
  // A sample's draw depends on its index only, not on which other samples share its batch.
  assert.equal(sampleUniforms("label-dropout", 0, [7, 3, 5])[1], sampleUniform("label-dropout", 0, 3));
  assert.equal(dropLabels(labels, 10, 0, sampleUniforms("x", 0, idx)).filter((x) => x === 10).length, 0);
  assert.throws(() => dropLabels([1, 2], 10, 0.1, [0.5]), /1 uniforms for 2 labels/);
  const cands = tokenizer.config.derived.candidates;
  const ids = chooseCandidates(cands, sampleUniforms("mergear-k", 1, idx));
  assert.equal(ids.length, idx.length);
  cands.forEach((c, i) => {
    const f = ids.filter((x) => x === i).length / ids.length;
    assert.ok(Math.abs(f - c.weight) < 0.015, `candidate K=${c.K}: frequency ${f} vs weight ${c.weight}`);
  });
  // Global sample index: rank r's sample j of micro-batch m ↔ position (m·B + j)·W + r of the global stream,
  // which is 1 rank × batch W·B's sample W·j + r of micro-batch m.
  assert.equal(globalSampleIndex(3, 4, 2, 1, 2), globalSampleIndex(3, 8, 5, 0, 1));
  assert.equal(globalSampleIndex(0, 4, 0, 0, 1), 0);
  const seen = new Set<number>();
  for (let m = 0; m < 3; m++)
    for (let r = 0; r < 3; r++) for (let j = 0; j < 5; j++) seen.add(globalSampleIndex(m, 5, j, r, 3));
  assert.equal(seen.size, 45, "unique per (micro-batch, rank, sample)");
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    Array.from({ length: 45 }, (_, i) => i),
  );
});

test("2 ranks × batch b == 1 rank × batch 2b, sample by sample (images, labels, K, dup, dropout; across an epoch)", async () => {
  // Centre crops (augment off) so that the pixels do not depend on a per-process crop RNG; the rank split is the
  // local-folder source's own strided split of one order. 16 images, 2b = 8: micro-batch 2 starts epoch 2.
  const open = async (rank: number, worldSize: number) =>
    new ARDataSource({
      images: await LocalFolderSource.open({
        root: photos,
        split: "train",
        size: 32,
        augment: false,
        rank,
        worldSize,
        limit: 16,
      }),
      tokenizer,
      mergeAR: true,
      numClasses: 10,
      classDropout: 0.5,
      seed: 4,
      rank,
      worldSize,
    });
  const one = await open(0, 1);
  const ranks = [await open(0, 2), await open(1, 2)];
  const b = 4;
  const L = 64;
  let dropped = 0;
  const Ks = new Set<number>();
  for (const m of [0, 1, 2]) {
    const ref = await one.next(2 * b, m);
    const parts = [await ranks[0].next(b, m), await ranks[1].next(b, m)];
    const rl = ref.batch.labels.dataSync();
    const rt = ref.batch.mergeTokens?.dataSync() as Int32Array;
    const ri = ref.batch.indices.dataSync();
    const rd = ref.batch.dup?.dataSync() as Float32Array;
    for (let r = 0; r < 2; r++) {
      const p = parts[r];
      const pl = p.batch.labels.dataSync();
      const pt = p.batch.mergeTokens?.dataSync() as Int32Array;
      const pi = p.batch.indices.dataSync();
      const pd = p.batch.dup?.dataSync() as Float32Array;
      for (let j = 0; j < b; j++) {
        const k = 2 * j + r; // the same sample in the 1-rank batch
        const at = `micro ${m}, rank ${r}, sample ${j}`;
        assert.equal(p.labels[j], ref.labels[k], `${at}: raw label`);
        assert.equal(pl[j], rl[k], `${at}: label after dropout`);
        assert.equal(pt[j], rt[k], `${at}: K candidate`);
        assert.equal(p.K[j], ref.K[k], `${at}: K`);
        assert.deepEqual(pi.subarray(j * L, (j + 1) * L), ri.subarray(k * L, (k + 1) * L), `${at}: codes`);
        assert.deepEqual(pd.subarray(j * L, (j + 1) * L), rd.subarray(k * L, (k + 1) * L), `${at}: dup mask`);
      }
    }
    for (let k = 0; k < 2 * b; k++) {
      if (rl[k] === 10) dropped++;
      Ks.add(ref.K[k]);
    }
    for (const x of [ref, ...parts]) x.dispose();
  }
  assert.ok(dropped > 0 && dropped < 24, `label dropout exercised (${dropped}/24 dropped)`);
  assert.ok(Ks.size >= 2, `several K drawn: ${[...Ks]}`);
});

test("ARDataSource: same (seed, micro-batch, data state) → same batch; labels dropped to the null class", async () => {
  const open = async () =>
    new ARDataSource({
      images: await LocalFolderSource.open({ root: photos, split: "train", size: 32, augment: true, seed: 11 }),
      tokenizer,
      mergeAR: true,
      numClasses: 10,
      classDropout: 0.5,
      seed: 4,
      rank: 0,
    });
  const a = await open();
  const b = await open();
  const x = await a.next(4, 17);
  const y = await b.next(4, 17);
  assert.deepEqual(x.batch.indices.dataSync(), y.batch.indices.dataSync());
  assert.deepEqual(x.batch.labels.dataSync(), y.batch.labels.dataSync());
  assert.deepEqual(x.batch.mergeTokens?.dataSync(), y.batch.mergeTokens?.dataSync());
  assert.deepEqual(x.batch.dup?.dataSync(), y.batch.dup?.dataSync());
  assert.deepEqual(x.batch.indices.shape, [4, 64]);
  const lab = x.batch.labels.dataSync();
  for (let i = 0; i < 4; i++) assert.ok(lab[i] === 10 || lab[i] === x.labels[i]);
  // The data state restores the image stream.
  const state = a.getState();
  const x2 = await a.next(4, 18);
  b.setState(state);
  const y2 = await b.next(4, 18);
  assert.deepEqual(x2.batch.indices.dataSync(), y2.batch.indices.dataSync());
  const bad = new ARDataSource({ ...a.opts, numClasses: 2, classDropout: 0 });
  await assert.rejects(() => bad.next(8, 0), /model\.numClasses = 2/);
  for (const s of [x, y, x2, y2]) s.dispose();
});
