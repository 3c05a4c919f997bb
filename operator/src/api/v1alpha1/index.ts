// mergevq.ai/v1alpha1: the API. zod schemas are the single source of truth; crds/*.yaml and these types are
// generated/derived from them (`make crds`; `make test` fails on drift).
export * from "./artraining.ts";
export * from "./common.ts";
export * from "./group.ts";
export * from "./samplingjob.ts";
export * from "./tokenizertraining.ts";

import { arTrainingCrd } from "./artraining.ts";
import { samplingJobCrd } from "./samplingjob.ts";
import { tokenizerTrainingCrd } from "./tokenizertraining.ts";

export const CRDS = [tokenizerTrainingCrd, arTrainingCrd, samplingJobCrd] as const;
export type CrdDef = (typeof CRDS)[number];
export type RunKind = CrdDef["kind"];

/** Kind → its CRD definition (kind, plural, singular, shortNames, schema): the lookup every API call uses. */
export const KINDS = Object.fromEntries(CRDS.map((d) => [d.kind, d])) as {
  readonly [D in CrdDef as D["kind"]]: D;
};

/** Whether a string names one of the kinds (owner references, work-queue keys). */
export function isRunKind(kind: string): kind is RunKind {
  return Object.hasOwn(KINDS, kind);
}
