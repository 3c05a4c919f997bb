// The real-photo dataset builder (hack/dataset): byte-identical across builds, counts and class balance as
// documented in hack/dataset/README.md, docs/model.md §7 meta files. Needs the pinned Debian packages
// (hack/dataset/build.sh installs or unpacks them); the builder fails loudly when they are missing.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import sharp from "sharp";
import {
  buildDataset,
  DEFAULT_TRAIN_PER_CLASS,
  DEFAULT_VAL_PER_CLASS,
  SOURCES,
  validateDataset,
} from "../../hack/dataset/build.ts";
import { readImageNetSplit } from "../../trainer/src/data/imagenet.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
const tmp = mkdtempSync(path.join(os.tmpdir(), "mvq-dataset-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

function tree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.set(path.relative(dir, p), createHash("sha256").update(readFileSync(p)).digest("hex"));
    }
  };
  walk(dir);
  return out;
}

const full = {
  sourceRoot: "/",
  classes: SOURCES.length,
  trainPerClass: DEFAULT_TRAIN_PER_CLASS,
  valPerClass: DEFAULT_VAL_PER_CLASS,
  log: () => {},
};

test("the full 64² dataset is byte-identical across two builds, with the documented counts", async () => {
  const a = await buildDataset({ ...full, size: 64, out: path.join(tmp, "a") });
  const b = await buildDataset({ ...full, size: 64, out: path.join(tmp, "b") });
  assert.equal(a.skipped || b.skipped, false);
  const ta = tree(a.dir);
  const tb = tree(b.dir);
  assert.equal(ta.size, tb.size);
  assert.deepEqual([...ta.entries()].sort(), [...tb.entries()].sort());
  assert.ok(validateDataset(a.dir, true));

  // Counts and balance: 10 classes × 300 train / 50 val, labels 0..9 in sorted-wnid order.
  const train = readImageNetSplit(a.dir, "train");
  const val = readImageNetSplit(a.dir, "val");
  assert.deepEqual(train.wnids, SOURCES.map((s) => s.wnid).sort());
  for (const [split, n] of [
    [train, DEFAULT_TRAIN_PER_CLASS],
    [val, DEFAULT_VAL_PER_CLASS],
  ] as const) {
    const per = new Map<number, number>();
    for (const e of split.entries) per.set(e.label, (per.get(e.label) ?? 0) + 1);
    assert.deepEqual(
      [...per.keys()].sort((x, y) => x - y),
      [...Array(10).keys()],
    );
    assert.ok(
      [...per.values()].every((c) => c === n),
      JSON.stringify([...per]),
    );
  }
  // docs/model.md §7 meta files.
  const filelist = readFileSync(path.join(a.dir, "train/filelist.txt"), "utf8").trim().split("\n");
  assert.equal(filelist.length, 3000);
  assert.deepEqual(filelist, [...filelist].sort());
  assert.equal(statSync(path.join(a.dir, "val/.ready")).isFile(), true);
  assert.match(readFileSync(path.join(a.dir, "train/synset_human.txt"), "utf8"), /^n99000001 castle$/m);
  assert.match(readFileSync(path.join(a.dir, "train/imagenet_idx_to_synset.yaml"), "utf8"), /^9: n99000010$/m);
  assert.match(readFileSync(path.join(a.dir, "val/validation_synset.txt"), "utf8"), /^n99000003_7\.JPEG n99000003$/m);
  const sources = JSON.parse(readFileSync(path.join(a.dir, "SOURCES.json"), "utf8"));
  assert.deepEqual(
    sources.packages.map((p: { name: string; version: string }) => `${p.name}=${p.version}`),
    ["palapeli-data=4:22.12.3-1", "lomiri-wallpapers-16.04=20.04.0-2"],
  );
  assert.match(readFileSync(path.join(a.dir, "LICENSES"), "utf8"), /CC-BY-4\.0/);
  const meta = await sharp(path.join(a.dir, "train/n99000005/n99000005_1.JPEG")).metadata();
  assert.deepEqual([meta.width, meta.height, meta.format, meta.channels], [64, 64, "jpeg", 3]);

  // The README documents exactly these numbers.
  const readme = readFileSync(path.join(ROOT, "hack/dataset/README.md"), "utf8");
  assert.match(
    readme,
    new RegExp(
      `\\|\\s*train\\s*\\|\\s*10\\s*\\|\\s*${DEFAULT_TRAIN_PER_CLASS}\\s*\\|\\s*${10 * DEFAULT_TRAIN_PER_CLASS}\\s*\\|`,
    ),
  );
  assert.match(
    readme,
    new RegExp(
      `\\|\\s*val\\s*\\|\\s*10\\s*\\|\\s*${DEFAULT_VAL_PER_CLASS}\\s*\\|\\s*${10 * DEFAULT_VAL_PER_CLASS}\\s*\\|`,
    ),
  );
  for (const s of SOURCES) assert.ok(readme.includes(s.wnid) && readme.includes(path.basename(s.file)), s.wnid);
});

test("the 256² variant is deterministic too, and a valid build is skipped", async () => {
  const o = { ...full, size: 256, classes: 3, trainPerClass: 6, valPerClass: 2 };
  const a = await buildDataset({ ...o, out: path.join(tmp, "c") });
  const b = await buildDataset({ ...o, out: path.join(tmp, "d") });
  assert.deepEqual([...tree(a.dir).entries()].sort(), [...tree(b.dir).entries()].sort());
  const meta = await sharp(path.join(a.dir, "val/n99000002/n99000002_2.JPEG")).metadata();
  assert.deepEqual([meta.width, meta.height], [256, 256]);
  assert.equal((await buildDataset({ ...o, out: a.dir })).skipped, true);
  rmSync(path.join(a.dir, "train/n99000001/n99000001_3.JPEG"));
  assert.equal(validateDataset(a.dir), false);
  assert.equal((await buildDataset({ ...o, out: a.dir })).skipped, false);
});
