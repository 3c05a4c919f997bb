// mergevq.ai/v1alpha1: the API. zod schemas are the single source of truth; crds/*.yaml and these types are
// generated/derived from them (`make crds`; `make test` fails on drift).
export * from "./artraining.ts";
export * from "./common.ts";
export * from "./samplingjob.ts";
export * from "./tokenizertraining.ts";

import { arTrainingCrd } from "./artraining.ts";
import { samplingJobCrd } from "./samplingjob.ts";
import { tokenizerTrainingCrd } from "./tokenizertraining.ts";

export const CRDS = [tokenizerTrainingCrd, arTrainingCrd, samplingJobCrd] as const;
export type RunKind = (typeof CRDS)[number]["kind"];
