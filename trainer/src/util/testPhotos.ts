// Real photographs for the convergence test. Resolution order:
//   1. $MERGEVQ_TEST_IMAGES (any ImageNet-style or flat folder of JPEG/PNG/WebP photos)
//   2. the data plane's "debphotos10" build (hack/dataset/build.ts): ${MERGEVQ_CACHE:-~/.cache/mergevq}/
//      datasets/debphotos10-64-v1 — square crops of ten photographs from Debian's palapeli-data and
//      lomiri-wallpapers-16.04 packages, train/val crops from disjoint regions of each photo
//   3. a fallback extracted here: the nature photographs of Debian's `mate-backgrounds` package
//      (`apt-get download mate-backgrounds`, unpacked with dpkg-deb), split by file into train/ and val/.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

export function cacheRoot(): string {
  return (
    process.env.MERGEVQ_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "mergevq")
  );
}

export interface PhotoSet {
  dir: string;
  source: string;
}

/** Locate (or, as a last resort, extract from a Debian package) a folder of real photographs. */
export function ensureTestPhotos(): PhotoSet {
  const env = process.env.MERGEVQ_TEST_IMAGES;
  if (env) return { dir: env, source: `MERGEVQ_TEST_IMAGES=${env}` };
  const built = path.join(cacheRoot(), "datasets", "debphotos10-64-v1");
  if (existsSync(path.join(built, "train")) && existsSync(path.join(built, "val"))) {
    return {
      dir: built,
      source: "debphotos10-64-v1 (hack/dataset: Debian palapeli-data + lomiri-wallpapers-16.04 photos)",
    };
  }
  const dir = path.join(cacheRoot(), "test-photos", "mate-nature-v1");
  if (!existsSync(path.join(dir, ".ready"))) {
    const work = mkdtempSync(path.join(os.tmpdir(), "mvq-photos-"));
    execFileSync("apt-get", ["download", "mate-backgrounds"], { cwd: work, stdio: "ignore" });
    const deb = readdirSync(work).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error("apt-get download mate-backgrounds produced no .deb (run apt-get update?)");
    execFileSync("dpkg-deb", ["-x", deb, "x"], { cwd: work });
    const nature = path.join(work, "x/usr/share/backgrounds/mate/nature");
    const files = readdirSync(nature)
      .filter((f) => /\.jpe?g$/i.test(f))
      .sort();
    rmSync(dir, { recursive: true, force: true });
    files.forEach((f, i) => {
      const split = i % 4 === 3 ? "val" : "train";
      mkdirSync(path.join(dir, split, "photos"), { recursive: true });
      copyFileSync(path.join(nature, f), path.join(dir, split, "photos", f));
    });
    writeFileSync(
      path.join(dir, "SOURCE.txt"),
      `Debian package mate-backgrounds, usr/share/backgrounds/mate/nature (${deb})\n`,
    );
    writeFileSync(path.join(dir, ".ready"), "");
    rmSync(work, { recursive: true, force: true });
  }
  return { dir, source: "Debian mate-backgrounds nature photographs (extracted fallback)" };
}
