// Data-plane CLI.
//   npx tsx trainer/src/data/cli.ts pack <imagenet-root> <dest-uri> [--split train] [--samples-per-shard 256] [--seed 0]
//   npx tsx trainer/src/data/cli.ts ckpt-save <dir-uri> <step> <file|-> [--keep-last N]
//   npx tsx trainer/src/data/cli.ts ckpt-load <uri> [--out FILE]
//   npx tsx trainer/src/data/cli.ts ckpt-list <dir-uri>
// S3 settings come from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. Results are
// JSON on stdout; progress on stderr.
import { createReadStream, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { listCheckpoints, loadCheckpoint, saveCheckpoint } from "./checkpointStore.ts";
import { readImageNetSplit } from "./imagenet.ts";
import { packImageNet } from "./shards.ts";
import { createStorage } from "./storage.ts";

const USAGE = `usage:
  cli.ts pack <imagenet-root> <dest-uri> [--split train] [--samples-per-shard 256] [--seed 0]
  cli.ts ckpt-save <dir-uri> <step> <file|-> [--keep-last N]
  cli.ts ckpt-load <uri> [--out FILE]
  cli.ts ckpt-list <dir-uri>`;

function intArg(name: string, v: string | undefined, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got "${v}"`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      split: { type: "string", default: "train" },
      "samples-per-shard": { type: "string" },
      seed: { type: "string" },
      "keep-last": { type: "string" },
      out: { type: "string" },
    },
  });
  const [cmd, ...rest] = positionals;
  const out = (x: unknown) => process.stdout.write(`${JSON.stringify(x)}\n`);
  switch (cmd) {
    case "pack": {
      const [root, dest] = rest;
      if (!root || !dest) throw new Error(USAGE);
      const split = readImageNetSplit(root, values.split);
      const t0 = Date.now();
      const index = await packImageNet(split, dest, createStorage(dest), {
        split: values.split ?? "train",
        samplesPerShard: intArg("samples-per-shard", values["samples-per-shard"], 256, 1),
        seed: intArg("seed", values.seed, 0),
        onShard: (s) => process.stderr.write(`[pack] ${s.name}: ${s.count} samples, ${s.size} bytes\n`),
      });
      out({
        dest,
        shards: index.shards.length,
        samples: index.numSamples,
        classes: index.wnids.length,
        seconds: (Date.now() - t0) / 1000,
      });
      return 0;
    }
    case "ckpt-save": {
      const [dir, step, file] = rest;
      if (!dir || step === undefined || !file) throw new Error(USAGE);
      const body = file === "-" ? process.stdin : createReadStream(file);
      const res = await saveCheckpoint(dir, intArg("step", step, 0), body, {
        keepLast: intArg("keep-last", values["keep-last"], 0),
      });
      out(res);
      return 0;
    }
    case "ckpt-load": {
      const [uri] = rest;
      if (!uri) throw new Error(USAGE);
      const ck = await loadCheckpoint(uri, {
        onReject: (u, e) => process.stderr.write(`[ckpt] refused ${u}: ${e.message}\n`),
      });
      if (!ck) throw new Error(`no checkpoint under ${uri}`);
      if (values.out) writeFileSync(values.out, ck.bytes);
      out({ step: ck.step, uri: ck.uri, size: ck.bytes.length, sha256: ck.manifest.sha256, rejected: ck.rejected });
      return 0;
    }
    case "ckpt-list": {
      const [dir] = rest;
      if (!dir) throw new Error(USAGE);
      out(await listCheckpoints(dir));
      return 0;
    }
    default:
      process.stderr.write(`${USAGE}\n`);
      return 2;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e) => {
      process.stderr.write(`data cli: ${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
