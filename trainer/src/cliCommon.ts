// Pieces shared by the trainer's command-line entry points (trainer/src/cli.ts dispatches; the tokenizer,
// AR and sampling commands live in cli.ts, ar/cli.ts, sample/cli.ts): the usage-error class (exit code 2),
// the result type and small flag/JSON parsers whose errors name the flag or variable.
import type { FinalReport } from "../../common/src/contract.ts";
import type { Logger } from "../../common/src/logger.ts";

export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

export interface CliResult {
  report: FinalReport;
}

/** `--name` as a non-negative integer ≥ min (undefined when absent). */
export function intFlag(name: string, v: string | undefined, min = 0): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new CliError(`--${name}: expected an integer ≥ ${min}, got "${v}"`);
  return Number(v);
}

/** `--name` as a finite number in [min, max] (undefined when absent). */
export function numberFlag(name: string, v: string | undefined, min = -Infinity, max = Infinity): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x) || x < min || x > max)
    throw new CliError(`--${name}: expected a number in [${min}, ${max}], got "${v}"`);
  return x;
}

/** Parse a JSON object; errors name `what` (a flag, file or environment variable). */
export function parseJson(what: string, text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v as Record<string, unknown>;
  } catch (e) {
    throw new CliError(`${what}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Stage II and sampling commands, loaded on demand (dynamic imports live here and not in cli.ts: tsx's lexer
 * cannot parse a dynamic import in a file that starts with a shebang). Undefined when argv is none of them.
 *   train-ar | ar …                          → ar/cli.ts arMain
 *   sample | reduce | eval reference-stats   → sample/cli.ts samplingCli
 */
export async function dispatchStage2(argv: string[], log?: Logger): Promise<CliResult | undefined> {
  if (argv[0] === "train-ar" || argv[0] === "ar") return (await import("./ar/cli.ts")).arMain(argv, log);
  if (argv[0] === "sample" || argv[0] === "reduce" || (argv[0] === "eval" && argv[1] === "reference-stats"))
    return (await import("./sample/cli.ts")).samplingCli(argv, log);
  return undefined;
}
