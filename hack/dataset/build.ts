// Builds "debphotos10": a small REAL-photo dataset in the ImageNet folder layout (docs/model.md §7) from ten
// photographs shipped in Debian packages (palapeli-data, lomiri-wallpapers-16.04). One class = one source
// photograph; every sample is a square crop of it, resized with sharp and JPEG-encoded with fixed settings.
// Crop boxes come from a seeded PRNG, so every build writes the same bytes (same sharp/libvips version).
//
//   npx tsx hack/dataset/build.ts [--size 64|256]... [--out DIR] [--source-root /] [--force]
//          [--classes N] [--train-per-class N] [--val-per-class N] [--verify]
//
// Default output: ${MERGEVQ_CACHE:-~/.cache/mergevq}/datasets/debphotos10-<size>-v1/ (printed on stdout, one
// line per size). An existing complete and valid build is kept. The shell wrapper `build.sh` installs (or
// downloads and unpacks) the pinned packages first.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { mulberry32 } from "../../trainer/src/data/random.ts";

export const DATASET_NAME = "debphotos10";
/** Bump when crop sampling, encoder settings or the source list change. */
export const DATASET_VERSION = "v1";
export const DEFAULT_TRAIN_PER_CLASS = 300;
export const DEFAULT_VAL_PER_CLASS = 50;
/** Fraction of the photo (along its longer side, at the far end) reserved for validation crops. */
const VAL_FRACTION = 0.25;
/** Crop side as a fraction of the region's shorter side. */
const MIN_SCALE = 0.35;
const SEED = 20250401;
/** Fixed JPEG encoder settings: part of the dataset's identity. */
export const JPEG_OPTIONS = {
  quality: 90,
  chromaSubsampling: "4:2:0",
  progressive: false,
  optimiseCoding: true,
  mozjpeg: false,
  trellisQuantisation: false,
  overshootDeringing: false,
  optimiseScans: false,
} as const;

export interface DebPackage {
  name: string;
  version: string;
  /** Path of the Debian copyright file inside the package. */
  copyright: string;
}

export const PACKAGES: DebPackage[] = [
  { name: "palapeli-data", version: "4:22.12.3-1", copyright: "usr/share/doc/palapeli-data/copyright" },
  {
    name: "lomiri-wallpapers-16.04",
    version: "20.04.0-2",
    copyright: "usr/share/doc/lomiri-wallpapers-16.04/copyright",
  },
];

export interface SourcePhoto {
  wnid: string;
  name: string;
  pkg: string;
  file: string;
  sha256: string;
  author: string;
  license: string;
  origin: string;
}

/** Ten photographs, one class each; wnid-like ids in a range ImageNet does not use (n99…). */
export const SOURCES: SourcePhoto[] = [
  {
    wnid: "n99000001",
    name: "castle",
    pkg: "palapeli-data",
    file: "usr/share/palapeli/collection/castle-maintenon.jpg",
    sha256: "f4a6bf48b97d97715413f9ebd2d8744bd46df0e492bc8326e2513d51084f2612",
    author: "Eric Pouhier",
    license: "GFDL (per palapeli .desktop; package: GPL-2+)",
    origin: "http://commons.wikimedia.org/wiki/Image:EPO_2432_wiki.jpg",
  },
  {
    wnid: "n99000002",
    name: "suspension bridge",
    pkg: "palapeli-data",
    file: "usr/share/palapeli/collection/cincinnati-bridge.jpg",
    sha256: "09772d09318b34a5c5edd58ee86ff462bcd2907006f31cc8e0704310f8e9ab60",
    author: "Derek Jensen",
    license: "Public Domain",
    origin: "http://commons.wikimedia.org/wiki/Image:Cincinnati-roebling-suspension-bridge.jpg",
  },
  {
    wnid: "n99000003",
    name: "citrus fruits",
    pkg: "palapeli-data",
    file: "usr/share/palapeli/collection/citrus-fruits.jpg",
    sha256: "0cbd7154a14789803167c86705130d0358875198231269df168ea26224e70848",
    author: "US Department of Agriculture",
    license: "Public Domain",
    origin: "http://commons.wikimedia.org/wiki/Image:Citrus_fruits.jpg",
  },
  {
    wnid: "n99000004",
    name: "honey bee",
    pkg: "palapeli-data",
    file: "usr/share/palapeli/collection/european-honey-bee.jpg",
    sha256: "9d54ae706bddd899c91b2b801d9ca4556a5a9a399b4043f9d539df62a8cb7f27",
    author: "John Severns",
    license: "Public Domain",
    origin: "http://commons.wikimedia.org/wiki/Image:European_honey_bee_extracts_nectar.jpg",
  },
  {
    wnid: "n99000005",
    name: "chameleon",
    pkg: "palapeli-data",
    file: "usr/share/palapeli/collection/panther-chameleon-female.jpg",
    sha256: "adb9e2834a8a3db40ca3817452b956ada527085e5aa2bd604c465651a3834ae4",
    author: "B. Navez and others",
    license: "GFDL (per palapeli .desktop; package: GPL-2+)",
    origin: "http://commons.wikimedia.org/wiki/Image:FurciferPardalisFemale.JPG",
  },
  {
    wnid: "n99000006",
    name: "fig",
    pkg: "lomiri-wallpapers-16.04",
    file: "usr/share/backgrounds/Picture_0B_by_freespace.jpg",
    sha256: "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad",
    author: 'Trevor "Freespace"',
    license: "CC-BY-4.0",
    origin: "https://gitlab.com/ubports/development/core/lomiri-wallpapers",
  },
  {
    wnid: "n99000007",
    name: "paint brushes",
    pkg: "lomiri-wallpapers-16.04",
    file: "usr/share/backgrounds/Picture_1A_by_freespace.jpg",
    sha256: "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b",
    author: 'Trevor "Freespace"',
    license: "CC-BY-4.0",
    origin: "https://gitlab.com/ubports/development/core/lomiri-wallpapers",
  },
  {
    wnid: "n99000008",
    name: "dogs",
    pkg: "lomiri-wallpapers-16.04",
    file: "usr/share/backgrounds/friends_by_Aitzol_Berasategi.jpg",
    sha256: "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d",
    author: "Aitzol Berasategi",
    license: "CC-BY-4.0",
    origin: "https://gitlab.com/ubports/development/core/lomiri-wallpapers",
  },
  {
    wnid: "n99000009",
    name: "forest stream",
    pkg: "lomiri-wallpapers-16.04",
    file: "usr/share/backgrounds/life_by_Aitzol_Berasategi.jpg",
    sha256: "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05",
    author: "Aitzol Berasategi",
    license: "CC-BY-4.0",
    origin: "https://gitlab.com/ubports/development/core/lomiri-wallpapers",
  },
  {
    wnid: "n99000010",
    name: "mountains",
    pkg: "lomiri-wallpapers-16.04",
    file: "usr/share/backgrounds/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    sha256: "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a",
    author: "Aitzol Berasategi",
    license: "CC-BY-4.0",
    origin: "https://gitlab.com/ubports/development/core/lomiri-wallpapers",
  },
];

export interface BuildOptions {
  size: number;
  out: string;
  sourceRoot: string;
  classes: number;
  trainPerClass: number;
  valPerClass: number;
  force?: boolean;
  verify?: boolean;
  log?: (msg: string) => void;
}

export interface BuildResult {
  dir: string;
  skipped: boolean;
  counts: { train: Record<string, number>; val: Record<string, number> };
}

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

export function defaultCacheDir(): string {
  return (
    process.env.MERGEVQ_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "mergevq")
  );
}

export function defaultOutDir(size: number): string {
  return path.join(defaultCacheDir(), "datasets", `${DATASET_NAME}-${size}-${DATASET_VERSION}`);
}

interface Box {
  left: number;
  top: number;
  side: number;
}

/**
 * Crop boxes for one class and split. The photo is cut along its longer side: the first 75 % yields
 * training crops, the last 25 % validation crops, so train and val never share pixels.
 */
export function cropBoxes(width: number, height: number, classIndex: number, split: "train" | "val", n: number): Box[] {
  const landscape = width >= height;
  const long = landscape ? width : height;
  const cut = Math.floor(long * (1 - VAL_FRACTION));
  const [r0, r1] = split === "train" ? [0, cut] : [cut, long];
  const regionLong = r1 - r0;
  const regionShort = landscape ? height : width;
  const maxSide = Math.min(regionLong, regionShort);
  const minSide = Math.max(16, Math.floor(maxSide * MIN_SCALE));
  const rnd = mulberry32(SEED + classIndex * 1000 + (split === "train" ? 0 : 500));
  const boxes: Box[] = [];
  for (let i = 0; i < n; i++) {
    const side = minSide + Math.floor(rnd() * (maxSide - minSide + 1));
    const a = r0 + Math.floor(rnd() * (regionLong - side + 1));
    const b = Math.floor(rnd() * (regionShort - side + 1));
    boxes.push(landscape ? { left: a, top: b, side } : { left: b, top: a, side });
  }
  return boxes;
}

function readDataset(dir: string): { files: Record<string, string> } | undefined {
  const m = path.join(dir, "MANIFEST.json");
  if (!existsSync(path.join(dir, ".complete")) || !existsSync(m)) return undefined;
  try {
    return JSON.parse(readFileSync(m, "utf8")) as { files: Record<string, string> };
  } catch {
    return undefined;
  }
}

/** A build is valid when it is complete and every listed file exists (with `deep`: and hashes match). */
export function validateDataset(dir: string, deep = false): boolean {
  const man = readDataset(dir);
  if (!man) return false;
  for (const [rel, hash] of Object.entries(man.files)) {
    const p = path.join(dir, rel);
    if (!existsSync(p)) return false;
    if (deep && sha256(readFileSync(p)) !== hash) return false;
  }
  return true;
}

function licensesText(sourceRoot: string, used: SourcePhoto[]): string {
  const lines = [
    `${DATASET_NAME} ${DATASET_VERSION}: crops of photographs shipped in Debian bookworm packages.`,
    "Each class is derived from ONE photograph; the crops are derivative works under that photo's licence.",
    "Attribution per photograph is in SOURCES.json. Debian copyright files of the packages follow verbatim.",
    "",
  ];
  for (const pkg of PACKAGES.filter((p) => used.some((s) => s.pkg === p.name))) {
    lines.push(`===== ${pkg.name} ${pkg.version}: /${pkg.copyright} =====`);
    lines.push(readFileSync(path.join(sourceRoot, pkg.copyright), "utf8"));
  }
  return lines.join("\n");
}

export async function buildDataset(opts: BuildOptions): Promise<BuildResult> {
  const log = opts.log ?? ((m: string) => process.stderr.write(`[dataset] ${m}\n`));
  const used = SOURCES.slice(0, opts.classes);
  const expected = (n: number) => Object.fromEntries(used.map((s) => [s.wnid, n]));
  const counts = { train: expected(opts.trainPerClass), val: expected(opts.valPerClass) };
  if (!opts.force && validateDataset(opts.out, opts.verify)) {
    log(`present and valid: ${opts.out}`);
    return { dir: opts.out, skipped: true, counts };
  }
  // Sources: verify that the pinned package versions are the ones installed (bytes, not names).
  const inputs: Buffer[] = [];
  for (const s of used) {
    const p = path.join(opts.sourceRoot, s.file);
    if (!existsSync(p)) {
      throw new Error(
        `source photo missing: ${p} (install ${s.pkg} ${PACKAGES.find((x) => x.name === s.pkg)?.version}; run hack/dataset/build.sh)`,
      );
    }
    const buf = readFileSync(p);
    const h = sha256(buf);
    if (h !== s.sha256) {
      throw new Error(
        `source photo ${p} has SHA-256 ${h}, expected ${s.sha256} (package version drift: the build would not be reproducible)`,
      );
    }
    inputs.push(buf);
  }
  const tmp = `${opts.out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  sharp.cache(false);
  const files: Record<string, string> = {};
  const write = (rel: string, data: Buffer | string) => {
    const p = path.join(tmp, rel);
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, data);
    files[rel] = sha256(data);
  };
  const perSplit: Record<"train" | "val", string[]> = { train: [], val: [] };
  for (let ci = 0; ci < used.length; ci++) {
    const s = used[ci];
    // Decode once to raw RGB (EXIF orientation applied), then crop from memory.
    const { data, info } = await sharp(inputs[ci])
      .rotate()
      .removeAlpha()
      .toColourspace("srgb")
      .raw()
      .toBuffer({ resolveWithObject: true });
    for (const split of ["train", "val"] as const) {
      const n = split === "train" ? opts.trainPerClass : opts.valPerClass;
      const boxes = cropBoxes(info.width, info.height, ci, split, n);
      const jobs = boxes.map(async (b, i) => {
        const jpg = await sharp(data, { raw: { width: info.width, height: info.height, channels: 3 } })
          .extract({ left: b.left, top: b.top, width: b.side, height: b.side })
          .resize(opts.size, opts.size, { kernel: "lanczos3" })
          .jpeg(JPEG_OPTIONS)
          .toBuffer();
        const rel = `${split}/${s.wnid}/${s.wnid}_${i + 1}.JPEG`;
        return { rel, jpg };
      });
      for (const { rel, jpg } of await Promise.all(jobs)) {
        write(rel, jpg);
        perSplit[split].push(rel.slice(split.length + 1));
      }
    }
    log(`class ${s.wnid} (${s.name}): ${opts.trainPerClass} train + ${opts.valPerClass} val crops at ${opts.size}²`);
  }
  // docs/model.md §7 meta files, per split folder.
  const synsetHuman = `${used.map((s) => `${s.wnid} ${s.name}`).join("\n")}\n`;
  const idxYaml = `${used.map((s, i) => `${i}: ${s.wnid}`).join("\n")}\n`;
  for (const split of ["train", "val"] as const) {
    write(`${split}/filelist.txt`, `${[...perSplit[split]].sort().join("\n")}\n`);
    write(`${split}/synset_human.txt`, synsetHuman);
    write(`${split}/imagenet_idx_to_synset.yaml`, idxYaml);
    write(`${split}/.ready`, "");
  }
  write(
    "val/validation_synset.txt",
    `${[...perSplit.val]
      .sort()
      .map((rel) => `${path.basename(rel)} ${rel.split("/")[0]}`)
      .join("\n")}\n`,
  );
  const sources = {
    dataset: DATASET_NAME,
    version: DATASET_VERSION,
    size: opts.size,
    encoder: { library: `sharp ${sharp.versions.sharp} / libvips ${sharp.versions.vips}`, jpeg: JPEG_OPTIONS },
    resizeKernel: "lanczos3",
    seed: SEED,
    valFraction: VAL_FRACTION,
    packages: PACKAGES.filter((p) => used.some((s) => s.pkg === p.name)),
    classes: used.map((s, i) => ({ index: i, ...s, train: opts.trainPerClass, val: opts.valPerClass })),
  };
  write("SOURCES.json", `${JSON.stringify(sources, null, 2)}\n`);
  write("LICENSES", licensesText(opts.sourceRoot, used));
  const sorted = Object.fromEntries(Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1)));
  writeFileSync(
    path.join(tmp, "MANIFEST.json"),
    `${JSON.stringify({ name: DATASET_NAME, version: DATASET_VERSION, size: opts.size, counts, files: sorted }, null, 1)}\n`,
  );
  writeFileSync(path.join(tmp, ".complete"), "");
  rmSync(opts.out, { recursive: true, force: true });
  mkdirSync(path.dirname(opts.out), { recursive: true });
  renameSync(tmp, opts.out);
  return { dir: opts.out, skipped: false, counts };
}

async function main() {
  const { values } = parseArgs({
    options: {
      size: { type: "string", multiple: true },
      out: { type: "string" },
      "source-root": { type: "string", default: "/" },
      classes: { type: "string", default: String(SOURCES.length) },
      "train-per-class": { type: "string", default: String(DEFAULT_TRAIN_PER_CLASS) },
      "val-per-class": { type: "string", default: String(DEFAULT_VAL_PER_CLASS) },
      force: { type: "boolean", default: false },
      verify: { type: "boolean", default: false },
    },
  });
  const sizes = (values.size ?? ["64", "256"]).map(Number);
  if (values.out && sizes.length > 1) throw new Error("--out needs exactly one --size");
  const int = (name: string, v: string, min: number, max: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`--${name}: expected an integer in [${min}, ${max}], got ${v}`);
    return n;
  };
  for (const size of sizes) {
    int("size", String(size), 8, 1024);
    const t0 = Date.now();
    const res = await buildDataset({
      size,
      out: path.resolve(values.out ?? defaultOutDir(size)),
      sourceRoot: values["source-root"] ?? "/",
      classes: int("classes", values.classes ?? "10", 1, SOURCES.length),
      trainPerClass: int("train-per-class", values["train-per-class"] ?? "", 1, 100000),
      valPerClass: int("val-per-class", values["val-per-class"] ?? "", 1, 100000),
      force: values.force,
      verify: values.verify,
    });
    if (!res.skipped)
      process.stderr.write(`[dataset] built ${res.dir} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    if (statSync(res.dir).isDirectory()) process.stdout.write(`${res.dir}\n`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((e) => {
    process.stderr.write(`build: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
