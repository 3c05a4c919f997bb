#!/usr/bin/env -S node --import tsx
// mergevq-trainer: the trainer's one entry point (the images run its compiled form, dist/trainer/src/cli.js).
// The command tree, help and dispatch live in commands/index.ts; each job in commands/<job>.ts. On success the
// command's final report (or its JSON output) is printed as one line on stdout. Exit codes: 0 success or help,
// 2 usage error (unknown command/flag, bad value: the message names it), 143 stopped by SIGTERM after a
// checkpoint, 75 the process group failed because another rank did (the operator then classifies that rank's
// exit instead), 1 any other failure.
import { realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { EXIT_CODE } from "../../common/src/contract.ts";
import { CliError, type CliResult, UsageRequested } from "./commands/common.ts";
import { main } from "./commands/index.ts";
import { isPeerFailure } from "./dist/transport.ts";
import { TerminatedBySignal } from "./train/stopSignal.ts";

export { CliError, type CliResult, main };

/** The process exit code for an error that ended a command (the contract's EXIT_CODE; see the header). */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CliError) return EXIT_CODE.USAGE;
  if (e instanceof TerminatedBySignal) return e.exitCode;
  if (isPeerFailure(e)) return EXIT_CODE.PEER_FAILED;
  return EXIT_CODE.FAILED;
}

// Run when executed (also through a symlink such as node_modules/.bin/mergevq-trainer), not when imported.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result.output ?? result.report)}\n`);
      process.exit(0);
    },
    (e: Error) => {
      if (e instanceof UsageRequested) {
        process.stdout.write(`${e.usage}\n`);
        process.exit(0);
      }
      process.stderr.write(`error: ${e.message}\n`);
      process.exit(exitCodeOf(e));
    },
  );
}
