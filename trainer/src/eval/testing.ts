// Helpers shared by the evaluation tests and benchmark: the hack/inception venv (numpy/scipy/onnx) and the
// generated RANDOM-weight Inception model. Not used at run time.
import { execFileSync } from "node:child_process";
import { type Dirent, existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import sharp from "sharp";
import { cacheDir } from "./inception.ts";

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const HACK_DIR = path.join(REPO_ROOT, "hack", "inception");

/**
 * Run hack/inception/setup.sh (idempotent: creates the venv and the random model only when missing or
 * stale) and return the model path.
 */
export function ensureRandomInception(): string {
  const out = execFileSync("bash", [path.join(HACK_DIR, "setup.sh")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 10 * 60_000,
  });
  const model = out.trim().split("\n").pop() ?? "";
  if (!existsSync(model)) throw new Error(`hack/inception/setup.sh did not produce a model (printed "${model}")`);
  return model;
}

/** The venv's python (after `ensureRandomInception()` or `hack/inception/setup.sh`). */
export function venvPython(): string {
  const py = path.join(cacheDir(), "venv", "bin", "python");
  if (!existsSync(py)) ensureRandomInception();
  return py;
}

/** Run a hack/inception script with the venv python; returns stdout. */
export function runPython(script: string, args: string[]): string {
  return execFileSync(venvPython(), [path.join(HACK_DIR, script), ...args], {
    encoding: "utf8",
    cwd: HACK_DIR,
    maxBuffer: 64 << 20,
    timeout: 5 * 60_000,
  });
}

/** Deterministic PRNG (mulberry32) and Gaussian samples for tests. */
export function rng(seed: number): { uniform: () => number; normal: () => number } {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = (): number => {
    const u = Math.max(uniform(), 1e-300);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
  };
  return { uniform, normal };
}

// ---------------------------------------------------------------------------------------------------------
// Real JPEGs found on the machine for the evaluation integration tests, decoded like the eval pipeline
// (shorter side → 256, centre crop 256, RGB uint8 NHWC). If fewer than needed are found (minimal CI images),
// the rest are synthetic JPEGs encoded here with sharp; `synthetic` says how many.

const ROOTS = [
  "/usr/share",
  "/usr/local/go/src/image/testdata",
  "/usr/lib/google-cloud-sdk",
  "/usr/lib/python3",
  "/opt",
];

function findJpegs(limit: number): string[] {
  const out: string[] = [];
  const walk = (dir: string, depth: number): void => {
    if (out.length >= limit || depth > 9) return;
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (out.length >= limit) return;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.isFile() && /\.jpe?g$/i.test(e.name) && !/truncated/.test(e.name)) {
        try {
          if (statSync(p).size > 2048) out.push(p);
        } catch {
          /* unreadable: skip */
        }
      }
    }
  };
  for (const r of ROOTS) walk(r, 0);
  return out;
}

export interface TestImages {
  data: Uint8Array;
  n: number;
  size: number;
  sources: string[];
  synthetic: number;
}

export async function loadTestImages(n: number, size = 256): Promise<TestImages> {
  const per = size * size * 3;
  const data = new Uint8Array(n * per);
  const sources: string[] = [];
  const seen = new Set<string>();
  for (const file of findJpegs(4 * n)) {
    if (sources.length >= n) break;
    try {
      const raw = await sharp(file)
        .rotate()
        .resize(size, size, { fit: "cover" })
        .removeAlpha()
        .toColourspace("srgb")
        .raw()
        .toBuffer();
      if (raw.length !== per) continue;
      const key = raw.subarray(0, 4096).toString("base64");
      if (seen.has(key)) continue;
      seen.add(key);
      data.set(raw, sources.length * per);
      sources.push(file);
    } catch {
      /* not decodable: skip */
    }
  }
  let synthetic = 0;
  while (sources.length < n) {
    const k = sources.length;
    const px = Buffer.alloc(per);
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++)
        for (let c = 0; c < 3; c++)
          px[(y * size + x) * 3 + c] = (Math.sin((x * (k + 1)) / 17 + c) * 60 + (y * (c + 2 + k)) / 3) & 255;
    const jpeg = await sharp(px, { raw: { width: size, height: size, channels: 3 } })
      .jpeg({ quality: 85 })
      .toBuffer();
    data.set(await sharp(jpeg).raw().toBuffer(), k * per);
    sources.push(`synthetic-jpeg-${k}`);
    synthetic++;
  }
  return { data, n, size, sources, synthetic };
}

/** A "reconstruction": box-blurred image plus deterministic noise, as float in [-1,1]. */
export function degrade(img: TestImages, strength: number): Float32Array {
  const { size, n } = img;
  const out = new Float32Array(img.data.length);
  let seed = 12345;
  for (let b = 0; b < n; b++) {
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) {
          let acc = 0;
          let cnt = 0;
          for (let dy = -2; dy <= 2; dy++)
            for (let dx = -2; dx <= 2; dx++) {
              const yy = Math.min(size - 1, Math.max(0, y + dy));
              const xx = Math.min(size - 1, Math.max(0, x + dx));
              acc += img.data[((b * size + yy) * size + xx) * 3 + c];
              cnt++;
            }
          seed = (seed * 1103515245 + 12345) % 2147483648;
          const noise = (seed / 2147483648 - 0.5) * strength;
          const i = ((b * size + y) * size + x) * 3 + c;
          const v = (1 - strength) * (img.data[i] / 255) + strength * (acc / cnt / 255) + noise;
          out[i] = v * 2 - 1;
        }
      }
    }
  }
  return out;
}
