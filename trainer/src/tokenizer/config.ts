// MergeVQ Stage-I tokenizer configuration (docs/model.md §1 config matrix, §2.8 parameter checksum, §10 tiny
// configs). Schema first (zod), type derived; presets are registrations that only set the fields that
// differ from the schema defaults (timm `@register_model` / LlamaGen `GPT_B` style). Derived quantities
// (grid, L, K, r schedules, candidate set and cycle, parameter counts) are computed once in `resolveConfig`.
import type { z } from "zod";
import { countParams } from "../nn/params.ts";
import { type ArchConfig, ConfigObject, type TokenizerArch, TokenizerTrainConfig, tokenizerArch } from "./arch.ts";
import { type Candidate, candidateTable, cycleCounts } from "./candidates.ts";
import { paramShapes } from "./paramShapes.ts";
import { mergeSchedule, tokensAfterBlocks } from "./tome.ts";

export { type ArchConfig, type TokenizerArch, TokenizerTrainConfig, tokenizerArch };

export const TokenizerConfig = ConfigObject.superRefine((c, ctx) => {
  const a = tokenizerArch(c);
  const issue = (path: string, message: string) => ctx.addIssue({ code: "custom", path: [path], message });
  if ((c.variant === "R") !== (c.encoder === "vit"))
    issue("encoder", `variant ${c.variant} needs encoder "${c.variant === "R" ? "vit" : "cnn"}"`);
  if (c.resolution % a.downsample !== 0)
    issue("resolution", `${c.resolution} not divisible by the encoder stride ${a.downsample}`);
  // Pitfall 20: GroupNorm(32) everywhere in the CNN.
  for (const w of a.widths) if (w % 32 !== 0) issue("chMult", `CNN width ${w} is not a multiple of 32 (GroupNorm 32)`);
  if (a.encDim % c.heads !== 0) issue("heads", `encoder width ${a.encDim} not divisible by ${c.heads} heads`);
  if (a.decDim % a.decHeads !== 0)
    issue("decoderHeads", `decoder width ${a.decDim} not divisible by ${a.decHeads} heads`);
  if (c.mergeNum >= a.L) issue("mergeNum", `merge_num ${c.mergeNum} must be < L = ${a.L}`);
  // Pitfall 4: K must be a perfect square and the schedule must not hit the 50% cap (checked per candidate).
  const Ks = [a.L - c.mergeNum];
  if (c.candDistribution) {
    try {
      Ks.push(...candidateTable(a.L, c.mergeNum, c.numAttBlocks, c.candDistribution).map((x) => x.K));
    } catch (e) {
      issue("candDistribution", (e as Error).message);
      return;
    }
  }
  for (const K of Ks) {
    if (K < 1 || !Number.isInteger(Math.sqrt(K))) {
      issue("mergeNum", `K = ${K} is not a positive perfect square`);
      continue;
    }
    const sched = mergeSchedule(a.L - K, c.numAttBlocks);
    const final = tokensAfterBlocks(a.L, sched.r).at(-1);
    if (final !== K)
      issue("mergeNum", `schedule [${sched.r}] for K = ${K} hits the per-layer cap (ends at ${final} tokens)`);
  }
});
export type TokenizerConfig = z.infer<typeof TokenizerConfig>;
export type TokenizerConfigInput = z.input<typeof TokenizerConfig>;

export interface TokenizerDerived extends TokenizerArch {
  /** Nominal keep-count K = L − mergeNum, its side √K, r̄ and per-block r list. */
  K: number;
  side: number;
  rBar: number;
  r: number[];
  tokensAfterBlocks: number[];
  /** Training keep-count candidates (just the nominal K when candDistribution is null). */
  candidates: Candidate[];
  /** K → micro-batches per 100 using it. */
  cycle: Record<number, number>;
  paramCounts: { encoder: number; clsHead: number; decoder: number; total: number };
}

export type ResolvedTokenizerConfig = TokenizerConfig & { derived: TokenizerDerived };

/** Presets: only the fields that differ from the schema defaults (docs/model.md §1 table and §10). */
export const PRESETS = {
  GR_d32: { name: "GR_d32", ch: 32, chMult: [2, 2, 4, 8, 12], heads: 8 },
  GR_d64: { name: "GR_d64" },
  GR_d96: { name: "GR_d96", ch: 96, heads: 12, train: { gradClip: 5 } },
  G_d32: {
    name: "G_d32",
    variant: "G",
    ch: 32,
    chMult: [2, 4, 8, 12],
    mergeNum: 768,
    candDistribution: "gaussian-8",
    distHead: "mlp2",
    train: { epochs: 100, lrDropEpochs: [90, 100], batchSize: 8, lossWeights: { cls: 0.1 } },
  },
  G_d64: {
    name: "G_d64",
    variant: "G",
    chMult: [1, 2, 4, 8],
    mergeNum: 768,
    candDistribution: "gaussian-9",
    distHead: "mlp2",
    train: { epochs: 100, lrDropEpochs: [90, 100], batchSize: 8, lossWeights: { cls: 0.1 } },
  },
  R_vitb_d64: {
    name: "R_vitb_d64",
    variant: "R",
    encoder: "vit",
    heads: 12,
    decoderHeads: 8,
    mergeNum: 192,
    train: { epochs: 270, lrDropEpochs: [220, 250], gradClip: 5 },
  },
  /** §10 T0 "GR-tiny": 32², 8×8 grid, L 64 → K 36, 4 blocks, 10-bit LFQ, 10-way CLS head. */
  T0: {
    name: "T0",
    resolution: 32,
    ch: 32,
    chMult: [1, 1, 2],
    numResBlocks: 1,
    heads: 4,
    numAttBlocks: 4,
    numDecBlocks: 4,
    mergeNum: 28,
    candDistribution: "gaussian-4",
    zChannels: 10,
    numClasses: 10,
    clsViewSize: 28,
    train: { batchSize: 8, epochs: 50, lrDropEpochs: [], lr: 2e-4 },
  },
  /** §10 T1 "GR-small": 64², 3 downsamples → 8×8, 2 ResBlocks/level. */
  T1: {
    name: "T1",
    resolution: 64,
    ch: 32,
    chMult: [1, 1, 2, 2],
    numResBlocks: 2,
    heads: 4,
    numAttBlocks: 4,
    numDecBlocks: 4,
    mergeNum: 28,
    candDistribution: "gaussian-4",
    zChannels: 10,
    numClasses: 10,
    clsViewSize: 56,
    train: { batchSize: 8, epochs: 50, lrDropEpochs: [], lr: 2e-4 },
  },
  /** §10 T2 "G-tiny": 32² with /2 → 16×16, L 256 → K 64 (large merges per layer). */
  T2: {
    name: "T2",
    variant: "G",
    resolution: 32,
    ch: 32,
    chMult: [1, 2],
    numResBlocks: 1,
    heads: 4,
    numAttBlocks: 4,
    numDecBlocks: 4,
    mergeNum: 192,
    candDistribution: "gaussian-4",
    zChannels: 10,
    distHead: "mlp2",
    numClasses: 10,
    clsViewSize: 28,
    train: { batchSize: 8, epochs: 50, lrDropEpochs: [], lr: 2e-4, lossWeights: { cls: 0.1 } },
  },
} satisfies Record<string, TokenizerConfigInput>;

export type PresetName = keyof typeof PRESETS;
export const isPresetName = (s: string): s is PresetName => Object.hasOwn(PRESETS, s);

function deepMerge(base: Record<string, unknown>, over: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const b = out[k];
    const isObj = (x: unknown): x is Record<string, unknown> =>
      typeof x === "object" && x !== null && !Array.isArray(x);
    out[k] = isObj(b) && isObj(v) ? deepMerge(b, v) : v;
  }
  return out;
}

/** Derived values of a parsed config (computed once). */
export function deriveTokenizer(config: TokenizerConfig): TokenizerDerived {
  const arch = tokenizerArch(config);
  const K = arch.L - config.mergeNum;
  const sched = mergeSchedule(config.mergeNum, config.numAttBlocks);
  const candidates = config.candDistribution
    ? candidateTable(arch.L, config.mergeNum, config.numAttBlocks, config.candDistribution)
    : [{ K, side: Math.sqrt(K), mergeNum: config.mergeNum, rBar: sched.rBar, r: sched.r, weight: 1, cumulative: 1 }];
  const specs = paramShapes({ ...config, derived: arch });
  const count = (g: string) => countParams(specs.filter((s) => s.group === g));
  const paramCounts = { encoder: count("encoder"), clsHead: count("clsHead"), decoder: count("decoder"), total: 0 };
  paramCounts.total = paramCounts.encoder + paramCounts.clsHead + paramCounts.decoder;
  return {
    ...arch,
    K,
    side: Math.sqrt(K),
    rBar: sched.rBar,
    r: sched.r,
    tokensAfterBlocks: tokensAfterBlocks(arch.L, sched.r),
    candidates,
    cycle: Object.fromEntries(cycleCounts(candidates)),
    paramCounts,
  };
}

/**
 * Resolve a preset name, or a partial config (optionally `{ preset: "T0", ...overrides }`), into a
 * validated config with its derived values. Throws a ZodError naming the offending fields.
 */
export function resolveConfig(
  nameOrPartial: string | (TokenizerConfigInput & { preset?: string }),
): ResolvedTokenizerConfig {
  let input: Record<string, unknown>;
  if (typeof nameOrPartial === "string") {
    if (!isPresetName(nameOrPartial)) {
      throw new Error(
        `unknown tokenizer preset "${nameOrPartial}" (expected one of ${Object.keys(PRESETS).join(", ")})`,
      );
    }
    input = PRESETS[nameOrPartial];
  } else {
    const { preset, ...rest } = nameOrPartial;
    if (preset !== undefined && !isPresetName(preset)) {
      throw new Error(`unknown tokenizer preset "${preset}" (expected one of ${Object.keys(PRESETS).join(", ")})`);
    }
    input = preset ? deepMerge(PRESETS[preset], rest) : rest;
  }
  const config = TokenizerConfig.parse(input);
  return { ...config, derived: deriveTokenizer(config) };
}
