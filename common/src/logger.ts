// Pino logger factory shared by the operator and the trainer.
// JSON lines on stdout; level from LOG_LEVEL; run/rank bindings; secrets redacted wherever they appear
// in a logged object (env maps, S3 configs, Secret data).
import { type Logger, type LoggerOptions, pino } from "pino";

export type { Logger };

/** Paths whose values never reach a log line. */
export const REDACT_PATHS = [
  "*.AWS_SECRET_ACCESS_KEY",
  "*.AWS_SESSION_TOKEN",
  "*.secretAccessKey",
  "*.sessionToken",
  "*.password",
  "*.token",
  "*.authorization",
  "*.headers.authorization",
  "*.credentials",
  "*.data",
  "AWS_SECRET_ACCESS_KEY",
  "secretAccessKey",
  "credentials",
  "env.AWS_SECRET_ACCESS_KEY",
  "env.AWS_SESSION_TOKEN",
];

export interface LoggerBindings {
  /** Component name: "operator", "trainer", "node-agent", ... */
  component: string;
  /** Run identity (`<namespace>/<name>` of the CR) when known. */
  run?: string;
  /** Global process rank when the process is part of a distributed group. */
  rank?: number;
  [key: string]: unknown;
}

const LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/**
 * Create the process logger. `LOG_LEVEL` (default `info`) selects the level; an unknown level is an
 * error naming the variable rather than a silent fallback.
 */
export function createLogger(
  bindings: LoggerBindings,
  opts: { level?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? "info";
  if (!LEVELS.has(level)) {
    throw new Error(`LOG_LEVEL: invalid log level "${level}" (expected one of ${[...LEVELS].join(", ")})`);
  }
  const options: LoggerOptions = {
    level,
    base: { pid: process.pid, ...bindings },
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}
