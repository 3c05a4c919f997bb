// Cross-field rules, each written once and enforced twice: as a CEL `x-kubernetes-validations` entry in the
// generated CRD (admission) and as a zod refinement (reconcile-time validation and unit tests). Keeping the
// pair side by side is what stops the two from drifting; `rules.test.ts` checks each pair on the same cases.
import type { z } from "zod";

export interface Rule<T> {
  /** CEL expression evaluated by the apiserver with `self` bound to the object (and `oldSelf` on update). */
  cel: string;
  /** Message shown by both the apiserver and zod. */
  message: string;
  /** Field path (relative to the object) the message names; becomes `fieldPath` in the CRD. */
  path?: string[];
  /** The same predicate in TypeScript. `undefined` for transition rules (`oldSelf`), which only CEL can check. */
  check?: (v: T) => boolean;
}

export interface CelValidation {
  rule: string;
  message: string;
  fieldPath?: string;
}

/** Attach rules to an object schema: zod refinements + CEL metadata. */
export function withRules<S extends z.ZodType>(schema: S, rules: Rule<z.output<S>>[]): S {
  let out = schema;
  for (const r of rules) {
    if (r.check) {
      const check = r.check;
      out = out.refine((v: z.output<S>) => check(v), { message: r.message, path: r.path ?? [] }) as unknown as S;
    }
  }
  const existing = (out.meta() ?? {}) as Record<string, unknown>;
  const prior = (existing["x-kubernetes-validations"] as CelValidation[] | undefined) ?? [];
  const cel: CelValidation[] = rules.map((r) => ({
    rule: r.cel,
    message: r.message,
    ...(r.path?.length ? { fieldPath: `.${r.path.join(".")}` } : {}),
  }));
  return out.meta({ ...existing, "x-kubernetes-validations": [...prior, ...cel] }) as S;
}

/** Append CEL validations to a schema's metadata without dropping ones already attached. */
export function withCel<S extends z.ZodType>(schema: S, ...validations: CelValidation[]): S {
  const existing = (schema.meta() ?? {}) as Record<string, unknown>;
  const prior = (existing["x-kubernetes-validations"] as CelValidation[] | undefined) ?? [];
  return schema.meta({ ...existing, "x-kubernetes-validations": [...prior, ...validations] }) as S;
}

/** Transition rule: the field may not change once set. */
export function immutable(field: string): CelValidation {
  return { rule: "self == oldSelf", message: `${field} is immutable` };
}

/** Perfect squares up to 64² — token keep counts must be square (the decoder reshapes K tokens to √K×√K). */
export const PERFECT_SQUARES = Array.from({ length: 64 }, (_, i) => (i + 1) * (i + 1));
export const isPerfectSquare = (n: number) => Number.isInteger(Math.sqrt(n)) && n > 0;
