// Environment parsing with zod: every failure names the exact variable and what was wrong with it.
import { z } from "zod";

export class EnvError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = "EnvError";
  }
}

/** Integer from a string variable (env values are always strings). */
export const envInt = (opts: { min?: number; max?: number } = {}) =>
  z
    .string()
    .regex(/^-?\d+$/, "must be an integer")
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(opts.min ?? Number.MIN_SAFE_INTEGER)
        .max(opts.max ?? Number.MAX_SAFE_INTEGER),
    );

/** Boolean from "true"/"false"/"1"/"0". */
export const envBool = () =>
  z
    .enum(["true", "false", "1", "0"], { message: 'must be one of "true", "false", "1", "0"' })
    .transform((v) => v === "true" || v === "1");

/** `s3://bucket/prefix`, `file:///abs/path` or an absolute path. */
export const envUri = () =>
  z
    .string()
    .regex(
      /^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.*|\/.*)$/,
      "must be s3://bucket/prefix, file:///path or an absolute path",
    );

/**
 * Parse `env` against a zod object whose keys are variable names. Throws an `EnvError` naming the first
 * offending variable (all problems are listed in the message).
 */
export function parseEnv<S extends z.ZodObject>(schema: S, env: NodeJS.ProcessEnv = process.env): z.infer<S> {
  const input: Record<string, string | undefined> = {};
  for (const key of Object.keys(schema.shape)) {
    const v = env[key];
    input[key] = v === "" ? undefined : v;
  }
  const res = schema.safeParse(input);
  if (res.success) return res.data;
  const problems = res.error.issues.map((i) => {
    const name = String(i.path[0] ?? "?");
    const msg = i.code === "invalid_type" && input[name] === undefined ? "is required but not set" : i.message;
    return { name, msg };
  });
  const first = problems[0];
  const err = new EnvError(first.name, problems.map((p) => `${p.name} ${p.msg}`).join("; "));
  throw err;
}
