// The command line as a user tries it: every command and sub-command answers --help and -h with its own usage
// (exit 0); missing or unknown commands and unknown flags are usage errors (exit 2) that say what was wrong.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { test } from "node:test";
import { CliError, UsageRequested } from "./common.ts";
import { COMMANDS, resolveCommand } from "./index.ts";

/** Every runnable command path, e.g. ["tokenizer", "train"], ["sample"]. */
function leafPaths(): string[][] {
  const out: string[][] = [];
  for (const [name, c] of Object.entries(COMMANDS)) {
    if ("commands" in c) for (const sub of Object.keys(c.commands)) out.push([name, sub]);
    else out.push([name]);
  }
  return out;
}

async function usageOf(argv: string[]): Promise<string> {
  try {
    await resolveCommand(argv);
  } catch (e) {
    if (e instanceof UsageRequested) return e.usage;
    throw e;
  }
  assert.fail(`${argv.join(" ")}: no usage shown`);
}

test("every command answers --help and -h with its own usage, wherever the flag stands", async () => {
  const leaves = leafPaths();
  assert.ok(leaves.length >= 14, `${leaves.length} commands`);
  for (const p of leaves) {
    const words = p.join(" ");
    for (const flag of ["--help", "-h"]) {
      const usage = await usageOf([...p, flag]);
      assert.ok(usage.startsWith("usage: "), `${words} ${flag}: ${usage.slice(0, 60)}`);
      assert.ok(usage.includes(`mergevq-trainer ${words}`), `${words} ${flag}: usage names the command`);
    }
    // After other flags too (a user adding -h to a command line they were building).
    assert.equal(await usageOf([...p, "--out", "/tmp/x", "-h"]), await usageOf([...p, "--help"]));
  }
});

test("groups answer --help and -h with their sub-commands; the top level lists every command", async () => {
  for (const [name, c] of Object.entries(COMMANDS)) {
    if (!("commands" in c)) continue;
    for (const flag of ["--help", "-h"]) {
      const usage = await usageOf([name, flag]);
      for (const sub of Object.keys(c.commands)) assert.ok(usage.includes(`${name} ${sub}`), `${name} ${flag}: ${sub}`);
    }
  }
  for (const flag of ["--help", "-h", "help"]) {
    const usage = await usageOf([flag]);
    for (const p of leafPaths()) assert.ok(usage.includes(p.join(" ")), `top usage lists ${p.join(" ")}`);
  }
});

test("missing and unknown commands are usage errors naming what was wrong", async () => {
  const cases: [string[], RegExp][] = [
    [[], /missing command/],
    [["tokenizer"], /missing sub-command for "tokenizer"/],
    [["tokenizer", "bogus"], /unknown command "tokenizer bogus"/],
    [["bogus"], /unknown command "bogus"/],
    [["constructor"], /unknown command "constructor"/],
  ];
  for (const [argv, re] of cases)
    await assert.rejects(resolveCommand(argv), (e: Error) => e instanceof CliError && re.test(e.message));
});

test("as a process: help exits 0 on stdout, usage errors exit 2 on stderr", () => {
  const cli = path.join(import.meta.dirname, "..", "cli.ts");
  const run = (...args: string[]) =>
    spawnSync(process.execPath, ["--import", "tsx", cli, ...args], { encoding: "utf8" });
  for (const args of [
    ["tokenizer", "train", "--help"],
    ["tokenizer", "train", "-h"],
    ["tokenizer", "--help"],
  ]) {
    const r = run(...args);
    assert.equal(r.status, 0, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stdout, /^usage: mergevq-trainer tokenizer/);
  }
  const unknownFlag = run("tokenizer", "train", "--bogus");
  assert.equal(unknownFlag.status, 2);
  assert.match(unknownFlag.stderr, /Unknown option '--bogus'/);
  assert.match(unknownFlag.stderr, /usage: mergevq-trainer tokenizer train/);
  const group = run("tokenizer");
  assert.equal(group.status, 2);
  assert.match(group.stderr, /missing sub-command/);
});
