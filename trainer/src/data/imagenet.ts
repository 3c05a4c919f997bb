// ImageNet folder layout (docs/model.md §7): <root>/<split>/<wnid>/<file>.JPEG with optional meta files
// (filelist.txt, synset_human.txt). Labels = index of the wnid in the sorted list of wnids present.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

export interface ImageEntry {
  /** Relative to the split dir: `<wnid>/<file>`. */
  rel: string;
  path: string;
  wnid: string;
  label: number;
}

export interface ImageNetSplit {
  dir: string;
  wnids: string[];
  /** wnid → human-readable name (from synset_human.txt when present). */
  names: Record<string, string>;
  entries: ImageEntry[];
}

const IMAGE_RE = /\.(jpe?g|JPE?G)$/;
/** The one known-bad ImageNet file (docs/model.md §7). */
const EXCLUDED = new Set(["n06596364_9591.JPEG"]);

/**
 * Read `<root>/<split>` (or `root` itself when it already is a split dir). Uses filelist.txt when present
 * (sorted relative paths), else scans class folders. An optional subset file limits the entries.
 */
export function readImageNetSplit(root: string, split?: string, subsetFile?: string): ImageNetSplit {
  const dir = split ? path.join(root, split) : root;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`ImageNet split dir not found: ${dir}`);
  let rels: string[];
  const filelist = path.join(dir, "filelist.txt");
  if (existsSync(filelist)) {
    rels = readFileSync(filelist, "utf8").split("\n").filter(Boolean);
  } else {
    rels = [];
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      if (!d.isDirectory()) continue;
      for (const f of readdirSync(path.join(dir, d.name))) if (IMAGE_RE.test(f)) rels.push(`${d.name}/${f}`);
    }
  }
  if (subsetFile) {
    const keep = new Set(readFileSync(subsetFile, "utf8").split("\n").filter(Boolean));
    rels = rels.filter((r) => keep.has(r));
  }
  rels = rels.filter((r) => !EXCLUDED.has(path.basename(r))).sort();
  const wnids = [...new Set(rels.map((r) => r.split("/")[0]))].sort();
  const index = new Map(wnids.map((w, i) => [w, i]));
  const names: Record<string, string> = {};
  const human = path.join(dir, "synset_human.txt");
  if (existsSync(human)) {
    for (const line of readFileSync(human, "utf8").split("\n")) {
      const m = /^(\S+)\s+(.*)$/.exec(line);
      if (m) names[m[1]] = m[2];
    }
  }
  const entries = rels.map((rel) => {
    const wnid = rel.split("/")[0];
    return { rel, path: path.join(dir, rel), wnid, label: index.get(wnid) ?? -1 };
  });
  return { dir, wnids, names, entries };
}
