// Copy the runtime dependency closure of some packages from one node_modules tree into another, following
// Node's resolution (a package's own node_modules first, then each parent's). Used to give the operator image
// only what the operator imports (no tfjs, ORT, sharp), from the same lockfile-installed tree as the trainer.
//   node hack/images/deps-closure.mjs <from node_modules> <to node_modules> pkg [pkg…]
import { cpSync, existsSync, readFileSync } from "node:fs";
import path from "node:path";

const [from, to, ...roots] = process.argv.slice(2);
if (!from || !to || roots.length === 0) {
  process.stderr.write("usage: deps-closure.mjs <from node_modules> <to node_modules> pkg [pkg…]\n");
  process.exit(2);
}
const base = path.resolve(from);

/** Resolve `name` as required from package dir `dir` (inside `base`). */
function resolve(name, dir) {
  for (let d = dir; d.startsWith(base); d = path.dirname(d)) {
    const cand = path.join(d === base ? base : path.join(d, "node_modules"), name);
    if (existsSync(path.join(cand, "package.json"))) return cand;
    if (d === base) break;
  }
  return undefined;
}

const seen = new Set();
const queue = roots.map((r) => {
  const dir = resolve(r, base);
  if (!dir) throw new Error(`${r} is not installed under ${base}`);
  return dir;
});
while (queue.length) {
  const dir = queue.pop();
  if (seen.has(dir)) continue;
  seen.add(dir);
  const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"));
  const required = Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies });
  const optional = Object.keys({ ...pkg.optionalDependencies });
  const peerOptional = new Set(
    Object.keys(pkg.peerDependenciesMeta ?? {}).filter((k) => pkg.peerDependenciesMeta[k]?.optional),
  );
  for (const name of [...required, ...optional]) {
    const dep = resolve(name, dir);
    if (dep) queue.push(dep);
    else if (!optional.includes(name) && !peerOptional.has(name))
      throw new Error(`${dir}: dependency ${name} not found`);
  }
}
for (const dir of [...seen].sort()) {
  cpSync(dir, path.join(path.resolve(to), path.relative(base, dir)), { recursive: true, dereference: false });
}
process.stdout.write(`${seen.size} packages\n`);
