// The command tree of `mergevq-trainer` and its dispatcher. One entry per command; each job's code lives in its
// own file (commands/tokenizer.ts, ar.ts, sample.ts, backend.ts, data.ts) and is loaded only when that command
// runs, so `--help` and the light commands start fast and the sampling pods never load the training code.
//
//   mergevq-trainer                       usage, exit 2          mergevq-trainer --help | -h | help   usage, exit 0
//   mergevq-trainer <group>               "missing sub-command"  mergevq-trainer <group> --help       group usage, exit 0
//   mergevq-trainer <command> --help|-h   the command's usage, exit 0 (wherever the flag stands among its flags)
//   unknown command or flag               the error and the relevant usage on stderr, exit 2
import type { Logger } from "../../../common/src/logger.ts";
import { CliError, type CliResult, UsageRequested } from "./common.ts";

/** A runnable command. `run` gets the whole argv (command words included). */
interface Leaf {
  summary: string;
  usage: () => Promise<string>;
  run: (argv: string[], log?: Logger) => Promise<CliResult>;
}

/** A word that only groups sub-commands (`tokenizer`, `ar`, `eval`, `backend`, `data`). */
interface Group {
  summary: string;
  commands: Record<string, Leaf>;
  /** The error for an unknown sub-command, when it differs from `unknown command "<group> <sub>"`. */
  unknown?: (sub: string) => string;
}

const tokenizer = () => import("./tokenizer.ts");
const ar = () => import("./ar.ts");
const sample = () => import("./sample.ts");
const backend = () => import("./backend.ts");
const data = () => import("./data.ts");

const tokenizerLeaf = (sub: "train" | "eval" | "reconstruct", summary: string): Leaf => ({
  summary,
  usage: async () => (await tokenizer()).TOKENIZER_USAGE[sub],
  run: async (argv, log) => (await tokenizer()).tokenizerMain(argv, log),
});

const dataLeaf = (sub: "pack" | "ckpt-save" | "ckpt-load" | "ckpt-list", summary: string): Leaf => ({
  summary,
  usage: async () => (await data()).DATA_USAGE[sub],
  run: async (argv) => (await data()).dataMain(argv),
});

export const COMMANDS: Record<string, Leaf | Group> = {
  tokenizer: {
    summary: "Stage I: train, evaluate or visualise the MergeVQ tokenizer",
    commands: {
      train: tokenizerLeaf("train", "train the tokenizer, then rFID / L1 / codebook usage on held-out images"),
      eval: tokenizerLeaf("eval", "held-out L1, LPIPS and codebook usage of a checkpoint at each K"),
      reconstruct: tokenizerLeaf("reconstruct", "grid of originals and reconstructions of a checkpoint"),
    },
  },
  "train-tokenizer": {
    summary: "`tokenizer train` from the operator's env contract (TokenizerTraining pods)",
    usage: async () => (await tokenizer()).TOKENIZER_USAGE["train-tokenizer"],
    run: async (argv, log) => (await tokenizer()).tokenizerMain(argv, log),
  },
  ar: {
    summary: "Stage II: the autoregressive generator on a frozen tokenizer's codes",
    commands: {
      train: {
        summary: "train the AR model (optionally MergeAR)",
        usage: async () => (await ar()).AR_USAGE,
        run: async (argv, log) => (await ar()).arMain(argv, log),
      },
    },
  },
  "train-ar": {
    summary: "`ar train` from the operator's env contract (ARTraining pods)",
    usage: async () => (await ar()).AR_USAGE,
    run: async (argv, log) => (await ar()).arMain(argv, log),
  },
  sample: {
    summary: "one SamplingJob shard: generate and decode images",
    usage: async () => (await sample()).SAMPLING_USAGE.sample,
    run: async (argv, log) => (await sample()).samplingCli(argv, log),
  },
  reduce: {
    summary: "SamplingJob reduce: gFID / IS over every shard",
    usage: async () => (await sample()).SAMPLING_USAGE.reduce,
    run: async (argv, log) => (await sample()).samplingCli(argv, log),
  },
  eval: {
    summary: "evaluation tools",
    commands: {
      "reference-stats": {
        summary: "Inception statistics of real images (the gFID reference)",
        usage: async () => (await sample()).SAMPLING_USAGE["reference-stats"],
        run: async (argv, log) => (await sample()).samplingCli(argv, log),
      },
    },
  },
  backend: {
    summary: "tfjs backend diagnostics",
    unknown: (sub) => `unknown command: backend ${sub}`,
    commands: {
      check: {
        summary: "which backend starts, whether it sees a GPU, parity with wasm (--parity)",
        usage: async () => (await backend()).BACKEND_USAGE.check,
        run: async (argv) => (await backend()).backendMain(argv),
      },
    },
  },
  data: {
    summary: "data-plane tools: tar shards and the streamed checkpoint store",
    commands: {
      pack: dataLeaf("pack", "pack an ImageNet-layout folder into tar shards"),
      "ckpt-save": dataLeaf("ckpt-save", "stream a file into a checkpoint directory"),
      "ckpt-load": dataLeaf("ckpt-load", "load and verify the newest complete checkpoint"),
      "ckpt-list": dataLeaf("ckpt-list", "list the complete checkpoints"),
    },
  },
};

const isGroup = (c: Leaf | Group): c is Group => "commands" in c;
const HELP_FLAGS = new Set(["--help", "-h"]);

function table(rows: [string, string][]): string {
  const w = Math.max(...rows.map(([n]) => n.length));
  return rows.map(([n, s]) => `  ${n.padEnd(w)}  ${s}`).join("\n");
}

/** Top-level usage: every command path with its summary. */
export function topUsage(): string {
  const rows: [string, string][] = [];
  for (const [name, c] of Object.entries(COMMANDS)) {
    if (isGroup(c)) for (const [sub, leaf] of Object.entries(c.commands)) rows.push([`${name} ${sub}`, leaf.summary]);
    else rows.push([name, c.summary]);
  }
  return `usage: mergevq-trainer <command> [flags]   (mergevq-trainer <command> --help for its flags)\n${table(rows)}`;
}

function groupUsage(name: string, g: Group): string {
  const rows = Object.entries(g.commands).map(([sub, leaf]): [string, string] => [`${name} ${sub}`, leaf.summary]);
  return `usage: mergevq-trainer ${name} <${Object.keys(g.commands).join("|")}> [flags]\n${g.summary}\n${table(rows)}`;
}

/** The command `argv` names, or the usage/error to show instead. */
export async function resolveCommand(argv: string[]): Promise<Leaf> {
  const [first, second] = argv;
  if (first === undefined) throw new CliError(`missing command\n${topUsage()}`);
  if (HELP_FLAGS.has(first) || first === "help") throw new UsageRequested(topUsage());
  const entry = Object.hasOwn(COMMANDS, first) ? COMMANDS[first] : undefined;
  if (!entry) throw new CliError(`unknown command "${first}"\n${topUsage()}`);
  let leaf: Leaf;
  let flags: string[];
  if (isGroup(entry)) {
    if (second === undefined) throw new CliError(`missing sub-command for "${first}"\n${groupUsage(first, entry)}`);
    if (HELP_FLAGS.has(second)) throw new UsageRequested(groupUsage(first, entry));
    const sub = Object.hasOwn(entry.commands, second) ? entry.commands[second] : undefined;
    if (!sub) {
      const what = entry.unknown?.(second) ?? `unknown command "${first} ${second}"`;
      throw new CliError(`${what}\n${groupUsage(first, entry)}`);
    }
    leaf = sub;
    flags = argv.slice(2);
  } else {
    leaf = entry;
    flags = argv.slice(1);
  }
  if (flags.some((a) => HELP_FLAGS.has(a))) throw new UsageRequested(await leaf.usage());
  return leaf;
}

/** Run the command `argv` names (the CLI's in-process entry; tests call it directly). */
export async function main(argv: string[], log?: Logger): Promise<CliResult> {
  const leaf = await resolveCommand(argv);
  return leaf.run(argv, log);
}
