// Data-plane tools: pack an ImageNet-layout folder into tar shards, and the streamed checkpoint store
// (io/checkpointStore.ts: step dirs with manifests, latest.json as the commit point). Results are one JSON line on
// stdout; progress on stderr. S3 settings come from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY.
import { createReadStream, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { readImageNetSplit } from "../data/imagenet.ts";
import { packImageNet } from "../data/shards.ts";
import { listCheckpoints, loadCheckpoint, saveCheckpoint } from "../io/checkpointStore.ts";
import { createStorage } from "../io/s3.ts";
import { CliError, type CliResult } from "./common.ts";

export const DATA_USAGE = {
  pack: `usage: mergevq-trainer data pack <imagenet-root> <dest-uri> [--split train|val] [--samples-per-shard 256] [--seed 0]
Pack <imagenet-root>/<split>/<wnid>/*.JPEG into shuffled tar shards plus index.json under <dest-uri>.`,
  "ckpt-save": `usage: mergevq-trainer data ckpt-save <dir-uri> <step> <file|-> [--keep-last N]
Stream a file (or stdin) into <dir-uri>/step-<step>/ with a manifest, then commit it in latest.json.`,
  "ckpt-load": `usage: mergevq-trainer data ckpt-load <uri> [--out FILE]
Load and verify (SHA-256) the newest complete checkpoint under <uri>; --out writes its bytes.`,
  "ckpt-list": `usage: mergevq-trainer data ckpt-list <dir-uri>
List the complete checkpoints under <dir-uri>.`,
} as const;

function intArg(name: string, v: string | undefined, def: number, min = 0): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new CliError(`--${name}: expected an integer >= ${min}, got "${v}"`);
  return n;
}

function parseDataArgs(args: string[]) {
  return parseArgs({
    args,
    allowPositionals: true,
    strict: true,
    options: {
      split: { type: "string", default: "train" },
      "samples-per-shard": { type: "string" },
      seed: { type: "string" },
      "keep-last": { type: "string" },
      out: { type: "string" },
    },
  });
}

/** `data <pack|ckpt-save|ckpt-load|ckpt-list> …` */
export async function dataMain(argv: string[]): Promise<CliResult> {
  const cmd = argv[1];
  const usage = DATA_USAGE[cmd as keyof typeof DATA_USAGE] ?? "";
  let parsed: ReturnType<typeof parseDataArgs>;
  try {
    parsed = parseDataArgs(argv.slice(2));
  } catch (e) {
    throw new CliError(`${(e as Error).message}\n${usage}`);
  }
  const { positionals: rest, values } = parsed;
  const done = (output: unknown): CliResult => ({ report: { metrics: {} }, output });
  switch (cmd) {
    case "pack": {
      const [root, dest] = rest;
      if (!root || !dest) throw new CliError(`missing arguments\n${usage}`);
      const split = readImageNetSplit(root, values.split);
      const t0 = Date.now();
      const index = await packImageNet(split, dest, createStorage(dest), {
        split: values.split ?? "train",
        samplesPerShard: intArg("samples-per-shard", values["samples-per-shard"], 256, 1),
        seed: intArg("seed", values.seed, 0),
        onShard: (s) => process.stderr.write(`[pack] ${s.name}: ${s.count} samples, ${s.size} bytes\n`),
      });
      return done({
        dest,
        shards: index.shards.length,
        samples: index.numSamples,
        classes: index.wnids.length,
        seconds: (Date.now() - t0) / 1000,
      });
    }
    case "ckpt-save": {
      const [dir, step, file] = rest;
      if (!dir || step === undefined || !file) throw new CliError(`missing arguments\n${usage}`);
      const body = file === "-" ? process.stdin : createReadStream(file);
      const res = await saveCheckpoint(dir, intArg("step", step, 0), body, {
        keepLast: intArg("keep-last", values["keep-last"], 0),
      });
      return done(res);
    }
    case "ckpt-load": {
      const [uri] = rest;
      if (!uri) throw new CliError(`missing arguments\n${usage}`);
      const ck = await loadCheckpoint(uri, {
        onReject: (u, e) => process.stderr.write(`[ckpt] refused ${u}: ${e.message}\n`),
      });
      if (!ck) throw new Error(`no checkpoint under ${uri}`);
      if (values.out) writeFileSync(values.out, ck.bytes);
      return done({
        step: ck.step,
        uri: ck.uri,
        size: ck.bytes.length,
        sha256: ck.manifest.sha256,
        rejected: ck.rejected,
      });
    }
    case "ckpt-list": {
      const [dir] = rest;
      if (!dir) throw new CliError(`missing arguments\n${usage}`);
      return done(await listCheckpoints(dir));
    }
    default:
      throw new CliError(`unknown command "data ${cmd ?? ""}"`);
  }
}
