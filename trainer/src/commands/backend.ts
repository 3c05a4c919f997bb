// `mergevq-trainer backend check [--parity] [--backend B]`: which tfjs backend starts here, whether it sees a GPU,
// and (with --parity) whether one tokenizer train step on it matches the wasm reference (backend/check.ts).
import { backendCheck } from "../train/backendParity.ts";
import { CliError, type CliResult, parseFlags } from "./common.ts";

export const BACKEND_USAGE = {
  check: `usage: mergevq-trainer backend check [--parity] [--backend tensorflow-gpu|tensorflow|wasm|cpu]
Start the backend (default: TFJS_BACKEND, else the fastest available) and report what started and whether a GPU
is visible. --parity also runs one T1 train step on it and on wasm and compares loss and gradients; exit 1 when
they differ beyond tolerance.`,
} as const;

/** `backend check …`: the report, or a thrown error (after printing it) when parity fails. */
export async function backendMain(argv: string[]): Promise<CliResult> {
  const [, command, ...rest] = argv;
  if (command !== "check") throw new CliError(`unknown command "backend ${command ?? ""}"`);
  const values = parseFlags(rest, { parity: { type: "boolean" }, backend: { type: "string" } }, BACKEND_USAGE.check);
  const report = await backendCheck({ requested: values.backend, parity: Boolean(values.parity) });
  if (!report.ok) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    throw new Error(`backend check failed: ${report.parity?.problems.join("; ")}`);
  }
  return { report: { metrics: {} }, output: report };
}
