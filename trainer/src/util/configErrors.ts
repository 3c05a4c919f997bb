// Config errors as every parser of the trainer reports them: one line naming each offending field, prefixed by
// where the input came from (a flag, file or environment variable).
import type { z } from "zod";

export interface DescribeOptions {
  /**
   * How unknown keys of a strict object read: "suffix" (default) appends them to zod's message
   * (`weights: Unrecognized key: "gan" (unknown field(s): gan)`); "inline" names them qualified by their path
   * (`evaluation: unknown field(s): evaluation.numimages`), the form the CRD-shaped inputs use.
   */
  unknownKeys?: "suffix" | "inline";
  /** Field names to show instead of the schema's (the CRD's names for the trainer's fields). */
  rename?: Readonly<Record<string, string>>;
}

export function describeZodError(source: string, e: z.ZodError, o: DescribeOptions = {}): string {
  const parts = e.issues.map((i) => {
    const path = i.path.join(".") || "<root>";
    const field = o.rename?.[path] ?? path;
    if (i.code !== "unrecognized_keys") return `${field}: ${i.message}`;
    if (o.unknownKeys === "inline") {
      const keys = i.keys.map((k) => (path === "<root>" ? k : `${path}.${k}`)).join(", ");
      return `${path === "<root>" ? "" : `${field}: `}unknown field(s): ${keys}`;
    }
    return `${field}: ${i.message} (unknown field(s): ${i.keys.join(", ")})`;
  });
  return `${source}: ${parts.join("; ")}`;
}

/**
 * Keys of `input` (recursively through plain objects) that the resolved config does not have — the typos a
 * stripping (non-strict) schema would drop silently. `allow`: top-level keys that are not config fields.
 */
export function unknownKeys(
  input: Record<string, unknown>,
  resolved: Record<string, unknown>,
  allow: readonly string[] = [],
  prefix = "",
): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(input)) {
    if (!prefix && allow.includes(k)) continue;
    const name = prefix ? `${prefix}.${k}` : k;
    if (!Object.hasOwn(resolved, k)) out.push(name);
    else if (v && typeof v === "object" && !Array.isArray(v) && resolved[k] && typeof resolved[k] === "object") {
      out.push(...unknownKeys(v as Record<string, unknown>, resolved[k] as Record<string, unknown>, [], name));
    }
  }
  return out;
}
