// Stage-II training loop (spec §5.1–5.3, §5.5): the LlamaGen-style AR generator (trainer/src/ar/gpt.ts) on the
// codes of a frozen tokenizer (frozenTokenizer.ts, EMA weights, eval mode), tokenised on the fly (arData.ts).
//
// Per optimiser step: `accum` micro-batches, each → GPT.loss (CE(pre) + CE(post) over all B·L positions,
// label / token / residual dropout with explicit per-micro-batch seeds) → gradients accumulated (÷ accum) →
// [WORLD_SIZE > 1: averaged over ranks, trainer/src/dist] → NaN/Inf guard → global-norm clip (gradClip) →
// AdamW (β 0.9/0.95, decoupled wd, 1-D tensors exempt; adamw.ts) with lrSchedule.ts's lr for that step.
// Checkpoints (kind "ar-train") only at optimiser-step boundaries:
//   tensors "model/<name>", "adamw/m/<name>", "adamw/v/<name>";
//   meta {step, arConfig, tokenizer {uri, step, weights}, trainConfig, data, dataByRank, adamw {t}, backend,
//         rank, worldSize}.
// Every random decision is a function of (seed, global sample index) (K choice, label dropout: arData.ts), of
// (seed, rank, global micro-batch index) (the model's dropout masks) or of checkpointed state (image order), so
// N steps straight and N/2 + checkpoint + resume + N/2 give identical weights and losses.
// Data-parallel equivalence: W ranks × batch B and 1 rank × batch W·B read the same samples in the same steps
// with the same per-sample draws (arData.ts), and the loss is a mean over the batch, so they train the same
// weights up to float rounding — EXCEPT for the model's token/residual dropout, whose masks are drawn per
// micro-batch tensor and so depend on the split. Training config `dropout: {token, resid}` (not a CRD field;
// default the spec's 0.1) turns them off for that check (test/integration/dist-ar-equivalence.test.ts).
// Data parallel exactly like the tokenizer trainer: initial state broadcast from rank 0 (syncFromRank0),
// gradients averaged every optimiser step (bit-identical on all ranks), losses averaged on log steps, only
// rank 0 writes checkpoints (with every rank's data state gathered), progress.json and metrics.json.
import * as tf from "@tensorflow/tfjs";
import { z } from "zod";
import type { Logger } from "../../../common/src/logger.ts";
import { type ARConfig, ARConfigError, resolveARConfig } from "../ar/config.ts";
import { GPT } from "../ar/gpt.ts";
import { allReduceLosses, averageGradients, broadcastVariables } from "../dist/ddp.ts";
import type { ProcessGroup } from "../dist/processGroup.ts";
import { AR_ADAMW_DEFAULTS, clipByGlobalNorm, NamedAdamW } from "./adamw.ts";
import { ARDataSource, openImageSource } from "./arData.ts";
import { assertSameArchitecture, type Checkpoint, CheckpointError, loadCheckpoint } from "./checkpoint.ts";
import { type FrozenTokenizer, loadFrozenTokenizer } from "./frozenTokenizer.ts";
import type { BatchSource, DataSourceState } from "./localFolder.ts";
import { arLrAt } from "./lrSchedule.ts";
import {
  assignCheckpointTensors,
  checkpointTensors,
  nonFiniteLosses,
  type RunDeps,
  RunReport,
  roundLoss,
  roundLosses,
  scalarsFromRank0,
  type VariableGroups,
} from "./runReport.ts";
import { stopSignal } from "./stopSignal.ts";
import { NonFiniteLossError, type StepLosses } from "./tokenizerTrainer.ts";

export const AR_CHECKPOINT_KIND = "ar-train";

// ---------------------------------------------------------------------------------------------------------
// Configs

/** The ARTraining CRD's spec.model (MERGEVQ_MODEL_CONFIG), same fields and defaults; strict. */
export const ARModelSpecSchema = z
  .object({
    size: z.enum(["tiny", "B", "L", "XL"]).default("B"),
    numClasses: z.number().int().min(1).max(100_000).default(1000),
    classDropout: z.number().min(0).max(1).default(0.1),
    mergeAR: z
      .object({
        enabled: z.boolean().default(false),
        window: z.number().int().min(0).max(64).default(2),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .refine((m) => !m.mergeAR.enabled || m.mergeAR.window >= 1, {
    message: "must be at least 1 when MergeAR is enabled",
    path: ["mergeAR", "window"],
  });
export type ParsedARModelSpec = z.infer<typeof ARModelSpecSchema>;

/** Trainer-side training config (the CRD's spec.training maps onto it in ar/cli.ts); strict. */
export const ARTrainConfigSchema = z
  .object({
    steps: z.number().int().min(1),
    /** Sequences per rank per micro-batch. */
    batchSize: z.number().int().min(1).default(8),
    /** Micro-batches per optimiser step. */
    accum: z.number().int().min(1).default(1),
    /** Peak AdamW lr. */
    lr: z.number().gt(0).max(1).default(3e-4),
    warmupSteps: z.number().int().min(0).default(0),
    weightDecay: z.number().min(0).max(1).default(0.05),
    /** Global gradient-norm clip (null = none). */
    gradClip: z.number().gt(0).nullable().default(1),
    beta1: z.number().min(0).max(1).default(AR_ADAMW_DEFAULTS.beta1),
    beta2: z.number().min(0).max(1).default(AR_ADAMW_DEFAULTS.beta2),
    eps: z.number().positive().default(AR_ADAMW_DEFAULTS.eps),
    seed: z.number().int().min(0).max(2147483647).default(0),
    logEvery: z.number().int().min(1).default(10),
    /** Optimiser steps between checkpoints (0 = only at the end). */
    checkpointInterval: z.number().int().min(0).default(1000),
    keepLast: z.number().int().min(0).default(3),
    /** Minimum seconds between progress.json writes. */
    progressIntervalSeconds: z.number().min(0).default(5),
    /**
     * NOT an ARTraining CRD field (the operator never sets it; `ar/cli.ts` maps only CRD fields): overrides of
     * the model's dropout rates, which resolveARConfig fixes at the spec's 0.1 (§5.2, LlamaGen token_dropout_p
     * and resid_dropout_p = ffn_dropout_p). An absent rate keeps 0.1. Recorded in the checkpoint's arConfig
     * and trainConfig; not part of the architecture check on resume. Use: { token: 0, resid: 0 } for exact
     * data-parallel equivalence tests (the masks depend on how the batch is split across ranks).
     */
    dropout: z
      .object({
        /** Dropout on the input embeddings (ARConfig.tokenDropout). */
        token: z.number().min(0).lt(1).optional(),
        /** Dropout after the attention output projection and after the FFN (ARConfig.residDropout). */
        resid: z.number().min(0).lt(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((t) => t.warmupSteps <= t.steps, { message: "must not exceed steps", path: ["warmupSteps"] });
export type ARTrainConfig = z.infer<typeof ARTrainConfigSchema>;

export { ARConfigError };

/** zod error → one line naming every offending field. */
export function describeZodError(source: string, e: z.ZodError): string {
  return `${source}: ${e.issues
    .map((i) => {
      const field = i.path.join(".") || "<root>";
      const extra = i.code === "unrecognized_keys" ? ` (unknown field(s): ${i.keys.join(", ")})` : "";
      return `${field}: ${i.message}${extra}`;
    })
    .join("; ")}`;
}

export function parseARModelSpec(input: unknown, source = "model config"): ParsedARModelSpec {
  const r = ARModelSpecSchema.safeParse(input ?? {});
  if (!r.success) throw new ARConfigError(describeZodError(source, r.error));
  return r.data;
}

export function parseARTrainConfig(input: unknown, source = "training config"): ARTrainConfig {
  const r = ARTrainConfigSchema.safeParse(input ?? {});
  if (!r.success) throw new ARConfigError(describeZodError(source, r.error));
  return r.data;
}

// ---------------------------------------------------------------------------------------------------------
// Trainer

export interface ARTrainerDeps extends RunDeps {
  model: GPT;
  data: ARDataSource;
  cfg: ARTrainConfig;
  /** The frozen tokenizer the codes come from (recorded in checkpoints and the report). */
  tokenizer: { uri: string; step: number; weights: string };
}

export interface ARRunSummary {
  /** Losses averaged over the last log window (and over ranks). */
  losses: StepLosses;
  sequencesPerSecond: number;
  tokensPerSecond: number;
  seconds: number;
}

const isVar = (t: tf.Tensor): t is tf.Variable => t instanceof tf.Variable;

export class ARTrainer {
  readonly model: GPT;
  readonly cfg: ARTrainConfig;
  readonly config: ARConfig;
  /** Optimiser steps done. */
  step = 0;
  private readonly vars = new Map<string, tf.Variable>();
  private readonly nameOf = new Map<string, string>();
  readonly adamw: NamedAdamW;
  private acc = new Map<string, tf.Tensor>();
  private readonly log: Logger;
  private readonly rank: number;
  private readonly worldSize: number;
  private pg: ProcessGroup | undefined;
  /** progress.json / metrics.json / checkpoint bookkeeping (rank 0 writes). */
  private readonly report: RunReport;
  private window: { sums: StepLosses; n: number } = { sums: {}, n: 0 };
  private lastReduced: StepLosses | undefined;

  constructor(private readonly deps: ARTrainerDeps) {
    this.model = deps.model;
    this.cfg = deps.cfg;
    this.config = deps.model.config;
    this.log = deps.log;
    this.rank = deps.rank ?? 0;
    this.worldSize = deps.worldSize ?? 1;
    this.pg = deps.pg && deps.pg.worldSize > 1 ? deps.pg : undefined;
    for (const [name, t] of deps.model.getWeights()) {
      if (isVar(t) && t.trainable) {
        this.vars.set(name, t);
        this.nameOf.set(t.name, name);
      }
    }
    if (this.vars.size === 0) throw new Error("AR model exposes no trainable variables through getWeights()");
    this.adamw = new NamedAdamW(this.vars, {
      beta1: this.cfg.beta1,
      beta2: this.cfg.beta2,
      eps: this.cfg.eps,
      weightDecay: this.cfg.weightDecay,
    });
    this.report = new RunReport(deps, this.cfg);
  }

  /** URI of the newest checkpoint written (rank 0) or resumed from. */
  get lastCheckpoint(): string | undefined {
    return this.report.lastCheckpoint;
  }

  /** Sequence length (tokens per sequence). */
  get L(): number {
    return this.config.L;
  }

  /** lr of the optimiser step with 0-based index `step` (default: the next one). */
  lrAt(step = this.step): number {
    return arLrAt({ peak: this.cfg.lr, warmupSteps: this.cfg.warmupSteps, totalSteps: this.cfg.steps }, step);
  }

  /** Global micro-batch index of micro-batch `a` of the current optimiser step (seeds dropout and K). */
  private microIndex(a: number): number {
    return this.step * this.cfg.accum + a;
  }

  /** Forward + backward of one micro-batch; gradients (÷ accum) are accumulated. */
  async microStep(a: number): Promise<StepLosses> {
    const micro = this.microIndex(a);
    const sb = await this.deps.data.next(this.cfg.batchSize, micro);
    const parts: Record<string, tf.Scalar> = {};
    try {
      const seed = dropoutSeed(this.cfg.seed, this.rank, micro);
      const { value, grads } = tf.variableGrads(() => {
        const l = this.model.loss(sb.batch, { training: true, seed });
        parts.loss = tf.keep(l.loss);
        parts.loss_pre = tf.keep(l.pre);
        parts.loss_post = tf.keep(l.post);
        return tf.div(l.loss, this.cfg.accum) as tf.Scalar;
      }, [...this.vars.values()]);
      value.dispose();
      for (const [vname, g] of Object.entries(grads)) {
        const name = this.nameOf.get(vname);
        if (!name) {
          g.dispose();
          continue;
        }
        const prev = this.acc.get(name);
        if (prev) {
          this.acc.set(name, tf.add(prev, g));
          prev.dispose();
          g.dispose();
        } else {
          this.acc.set(name, g);
        }
      }
    } finally {
      sb.dispose();
    }
    const out: StepLosses = {};
    for (const [k, t] of Object.entries(parts)) {
      out[k] = t.dataSync()[0];
      t.dispose();
    }
    out.meanK = sb.K.reduce((x, y) => x + y, 0) / sb.K.length;
    return out;
  }

  /** One optimiser step (`accum` micro-batches). Throws NonFiniteLossError without applying the update. */
  async trainStep(): Promise<StepLosses> {
    const sums: StepLosses = {};
    for (let a = 0; a < this.cfg.accum; a++) {
      const l = await this.microStep(a);
      const bad = nonFiniteLosses(l);
      if (Object.keys(bad).length) {
        this.dropAccumulated();
        const err = new NonFiniteLossError(this.step, bad, this.lastCheckpoint);
        this.pg?.abort(err.message);
        throw err;
      }
      for (const [k, v] of Object.entries(l)) sums[k] = (sums[k] ?? 0) + v / this.cfg.accum;
    }
    if (this.pg) {
      const acc = this.acc;
      this.acc = new Map();
      this.acc = await averageGradients(this.pg, acc, { disposeInputs: true, key: "grads/ar" });
    }
    const lr = this.lrAt();
    const clip = clipByGlobalNorm(this.acc, this.cfg.gradClip);
    if (!Number.isFinite(clip.norm)) {
      this.dropAccumulated();
      throw new NonFiniteLossError(this.step, { ...sums, gradNorm: clip.norm }, this.lastCheckpoint);
    }
    this.adamw.step(clip.grads, lr);
    if (clip.clipped) for (const t of clip.grads.values()) t.dispose();
    this.dropAccumulated();
    this.step++;
    return { ...sums, gradNorm: clip.norm, lr };
  }

  private dropAccumulated(): void {
    for (const t of this.acc.values()) t.dispose();
    this.acc = new Map();
  }

  /** Train until cfg.steps: progress log lines, progress.json, periodic checkpoints. */
  async run(opts: { onStep?: (step: number, losses: StepLosses) => void | Promise<void> } = {}): Promise<ARRunSummary> {
    const total = this.cfg.steps;
    const t0 = performance.now();
    const startStep = this.step;
    const seqPerStep = this.cfg.batchSize * this.cfg.accum * this.worldSize;
    let sequencesPerSecond = 0;
    stopSignal.enterLoop();
    try {
      while (this.step < total) {
        const last = await this.trainStep();
        for (const k of ["loss", "loss_pre", "loss_post", "meanK", "gradNorm"])
          if (k in last) this.window.sums[k] = (this.window.sums[k] ?? 0) + last[k];
        this.window.n++;
        const elapsed = (performance.now() - t0) / 1000;
        const done = this.step - startStep;
        sequencesPerSecond = (done * seqPerStep) / elapsed;
        const etaSeconds = ((total - this.step) * elapsed) / done;
        if (this.step % this.cfg.logEvery === 0 || this.step === total) {
          let mean = Object.fromEntries(Object.entries(this.window.sums).map(([k, v]) => [k, v / this.window.n]));
          // Same (step-based) condition on every rank, so every rank joins the reduction.
          if (this.pg) mean = await allReduceLosses(this.pg, mean);
          this.lastReduced = { ...mean, lr: last.lr };
          this.window = { sums: {}, n: 0 };
          this.log.info(
            {
              step: this.step,
              totalSteps: total,
              worldSize: this.worldSize,
              losses: roundLosses(this.lastReduced),
              sequencesPerSecond: roundLoss(sequencesPerSecond),
              tokensPerSecond: roundLoss(sequencesPerSecond * this.L),
              etaSeconds: roundLoss(etaSeconds),
            },
            "train progress",
          );
        }
        // Progress has no sequences field: imagesPerSecond = sequences (one image = one sequence) per second.
        const losses = reportedLosses(this.lastReduced ?? last);
        await this.report.stepBoundary(
          { step: this.step, totalSteps: total, imagesPerSecond: sequencesPerSecond, etaSeconds, losses },
          this.pg,
          () => this.saveCheckpoint(),
        );
        await opts.onStep?.(this.step, last);
      }
    } finally {
      stopSignal.leaveLoop();
    }
    if (this.report.finalCheckpointDue(this.step)) await this.saveCheckpoint();
    await this.report.writeProgress(
      { step: this.step, totalSteps: total, losses: this.lastReduced && reportedLosses(this.lastReduced) },
      true,
    );
    const seconds = (performance.now() - t0) / 1000;
    return {
      losses: this.lastReduced ?? {},
      sequencesPerSecond,
      tokensPerSecond: sequencesPerSecond * this.L,
      seconds,
    };
  }

  /** Write metrics.json (rank 0) under the status prefix. */
  async writeMetrics(report: { metrics: Record<string, number>; notes?: string[] }): Promise<void> {
    await this.report.writeMetrics(this.step, report);
  }

  // -------------------------------------------------------------------------------------------------------
  // Checkpoints

  toCheckpoint(dataByRank?: DataSourceState[]): Checkpoint {
    if (this.acc.size) throw new CheckpointError("cannot checkpoint in the middle of an accumulation window");
    const tensors = checkpointTensors(this.tensorGroups());
    return {
      kind: AR_CHECKPOINT_KIND,
      meta: {
        step: this.step,
        arConfig: this.config,
        tokenizer: this.deps.tokenizer,
        trainConfig: this.cfg,
        data: this.deps.data.getState(),
        dataByRank,
        adamw: { t: this.adamw.t },
        backend: this.deps.backend,
        rank: this.rank,
        worldSize: this.worldSize,
      },
      tensors,
    };
  }

  /** Every variable a checkpoint holds (and rank 0 broadcasts), by checkpoint prefix. */
  private tensorGroups(): VariableGroups {
    return [
      ["model/", this.vars],
      ["adamw/m/", this.adamw.m],
      ["adamw/v/", this.adamw.v],
    ];
  }

  loadFromCheckpoint(ckpt: Checkpoint, source: string): void {
    if (ckpt.kind !== AR_CHECKPOINT_KIND)
      throw new CheckpointError(`${source}: not an AR training checkpoint (kind "${ckpt.kind}", expected "ar-train")`);
    const stored = ckpt.meta.arConfig as ARConfig | undefined;
    if (!stored || typeof stored !== "object") throw new CheckpointError(`${source}: header has no arConfig`);
    checkTokenizerCompat(stored, this.config, source, this.deps.tokenizer.uri);
    // Not architecture: the init seed and the dropout rates (a training setting, see ARTrainConfig.dropout).
    const { seed: _a, tokenDropout: _c, residDropout: _d, ...storedArch } = stored;
    const { seed: _b, tokenDropout: _e, residDropout: _f, ...currentArch } = this.config;
    assertSameArchitecture(storedArch, currentArch, source);
    assignCheckpointTensors(ckpt, source, this.tensorGroups());
    const meta = ckpt.meta as {
      step?: unknown;
      adamw?: { t?: unknown };
      data?: DataSourceState;
      dataByRank?: DataSourceState[];
      tokenizer?: { uri?: string };
    };
    if (typeof meta.step !== "number" || typeof meta.adamw?.t !== "number" || !meta.data)
      throw new CheckpointError(`${source}: header lacks step / adamw.t / data state`);
    this.step = meta.step;
    this.report.lastCheckpointStep = meta.step;
    this.adamw.t = meta.adamw.t;
    this.deps.data.setState(meta.dataByRank?.[this.rank] ?? meta.data);
    if (meta.tokenizer?.uri && meta.tokenizer.uri !== this.deps.tokenizer.uri)
      this.log.warn(
        { checkpointTokenizer: meta.tokenizer.uri, tokenizer: this.deps.tokenizer.uri },
        "resuming with a different tokenizer checkpoint URI than the one this AR checkpoint was trained on",
      );
  }

  /** Write a checkpoint (rank 0). With a process group EVERY rank must call it (data states are gathered). */
  async saveCheckpoint(): Promise<string | undefined> {
    return this.report.saveCheckpoint(this.step, this.pg, (dataByRank) => this.toCheckpoint(dataByRank));
  }

  async resume(uri: string): Promise<void> {
    this.loadFromCheckpoint(await loadCheckpoint(uri), uri);
    this.report.resumed(uri, this.step);
  }

  attachProcessGroup(pg: ProcessGroup | undefined): void {
    this.pg = pg && pg.worldSize > 1 ? pg : undefined;
  }

  /** Make every rank hold rank 0's weights, AdamW moments and step counts. No-op without a process group. */
  async syncFromRank0(): Promise<void> {
    if (!this.pg) return;
    const all = new Map<string, tf.Variable>();
    for (const [prefix, m] of this.tensorGroups()) for (const [n, v] of m) all.set(`${prefix}${n}`, v);
    await broadcastVariables(this.pg, all, { key: "ar-initial-state" });
    const root = await scalarsFromRank0(this.pg, this.rank, { step: this.step, t: this.adamw.t });
    this.adamw.t = root.t;
    this.log.info({ tensors: all.size, step: this.step }, "initial state broadcast from rank 0");
  }

  dispose(): void {
    this.dropAccumulated();
    this.adamw.dispose();
  }
}

/** The resolved AR config with the training config's dropout overrides (absent rates unchanged). */
export function withDropout(c: ARConfig, d: ARTrainConfig["dropout"]): ARConfig {
  return { ...c, tokenDropout: d?.token ?? c.tokenDropout, residDropout: d?.resid ?? c.residDropout };
}

/**
 * Seed of the model's dropout masks for one micro-batch. Keyed by (seed, rank, micro-batch): tf.dropout draws a
 * mask for the whole [B, T, D] tensor, so masks cannot be made independent of the rank split anyway.
 */
export function dropoutSeed(seed: number, rank: number, micro: number): number {
  let h = 0x811c9dc5;
  for (const v of [seed, rank, micro, 0x5eed]) {
    h = Math.imul(h ^ (v >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ Math.floor(v / 4294967296), 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The AR model must predict exactly the tokenizer's codes: same bits and sequence length. */
export function checkTokenizerCompat(stored: ARConfig, current: ARConfig, source: string, tokenizerUri: string): void {
  const sb = stored.preBits + stored.postBits;
  const cb = current.preBits + current.postBits;
  if (sb !== cb || stored.preBits !== current.preBits)
    throw new CheckpointError(
      `${source}: tokenizer/AR bits mismatch: the AR checkpoint predicts ${sb}-bit codes (pre ${stored.preBits} + post ${stored.postBits}) but the tokenizer ${tokenizerUri} has ${cb} LFQ bits (zChannels; pre ${current.preBits} + post ${current.postBits})`,
    );
  if (stored.L !== current.L)
    throw new CheckpointError(
      `${source}: tokenizer/AR sequence mismatch: the AR checkpoint was trained on L = ${stored.L} tokens but the tokenizer ${tokenizerUri} produces L = ${current.L}`,
    );
}

// ---------------------------------------------------------------------------------------------------------
// Assembly

/** The trainer's run settings (log, rank, worldSize, checkpointDir, statusUri, backend, pg) come from RunDeps. */
export interface BuildAROptions extends RunDeps {
  model: ParsedARModelSpec;
  train: ARTrainConfig;
  /** Tokenizer checkpoint URI (or an already loaded frozen tokenizer). */
  tokenizer: string | FrozenTokenizer;
  /** What the tokenizer URI came from, for error messages (e.g. "MERGEVQ_TOKENIZER_CHECKPOINT"). */
  tokenizerSource?: string;
  data: string;
  dataFormat?: string;
  /** Use at most this many training images (tests; local folders only). */
  dataLimit?: number;
  /** Use this image source instead of opening `data` (tests). */
  images?: BatchSource;
}

export interface BuiltAR {
  trainer: ARTrainer;
  model: GPT;
  arConfig: ARConfig;
  frozen: FrozenTokenizer;
  data: ARDataSource;
  notes: string[];
}

/** Load the frozen tokenizer, resolve the AR config from it, build the GPT, the data and the trainer. */
export async function buildARTrainer(o: BuildAROptions): Promise<BuiltAR> {
  const rank = o.rank ?? 0;
  const worldSize = o.worldSize ?? 1;
  let frozen: FrozenTokenizer;
  if (typeof o.tokenizer === "string") {
    try {
      frozen = await loadFrozenTokenizer(o.tokenizer);
    } catch (e) {
      throw new ARConfigError(
        `${o.tokenizerSource ?? "tokenizer checkpoint"} ${o.tokenizer}: cannot load the tokenizer checkpoint: ${(e as Error).message}`,
      );
    }
  } else {
    frozen = o.tokenizer;
  }
  const tc = frozen.tokenizer.config;
  const arConfig = withDropout(
    resolveARConfig(
      o.model,
      { zChannels: tc.zChannels, L: tc.derived.L, numCandidates: tc.derived.candidates.length },
      o.train.seed,
    ),
    o.train.dropout,
  );
  const model = new GPT(arConfig);
  const notes: string[] = [
    `tokenizer: ${frozen.uri} (step ${frozen.step}, ${frozen.weights === "ema" ? "EMA" : "raw (no EMA in checkpoint)"} weights, ${tc.zChannels} bits, L = ${tc.derived.L})`,
    `AR: size ${arConfig.size}, ${model.paramCount()} params, bits ${arConfig.preBits}/${arConfig.postBits}, MergeAR ${arConfig.mergeAR.enabled ? `on (window ${arConfig.mergeAR.window}, ${arConfig.mergeAR.numMergeTokens} merge tokens)` : "off (K = L)"}`,
    "weight decay: 1-D tensors (RMSNorm weights) exempt (intended upstream behaviour, spec §5.3 decision)",
  ];
  if (o.train.dropout)
    notes.push(
      `dropout overridden by the training config: token ${arConfig.tokenDropout}, residual ${arConfig.residDropout} (spec: 0.1)`,
    );
  if (o.backend) notes.push(`backend: ${o.backend}`);
  let images = o.images;
  let describe: Record<string, unknown> = { source: "injected" };
  if (!images) {
    const opened = await openImageSource({
      data: o.data,
      format: o.dataFormat,
      size: tc.resolution,
      batchSize: o.train.batchSize,
      seed: o.train.seed,
      rank,
      worldSize,
      limit: o.dataLimit,
    });
    images = opened.source;
    describe = opened.describe;
  }
  const data = new ARDataSource({
    images,
    tokenizer: frozen.tokenizer,
    mergeAR: arConfig.mergeAR.enabled,
    numClasses: arConfig.numClasses,
    classDropout: arConfig.classDropout,
    seed: o.train.seed,
    rank,
    worldSize,
  });
  const trainer = new ARTrainer({
    model,
    data,
    cfg: o.train,
    tokenizer: { uri: frozen.uri, step: frozen.step, weights: frozen.weights },
    log: o.log,
    rank,
    worldSize,
    checkpointDir: o.checkpointDir,
    statusUri: o.statusUri,
    backend: o.backend,
    pg: o.pg,
  });
  o.log.info(
    {
      arConfig,
      params: model.paramCount(),
      tokenizer: { uri: frozen.uri, step: frozen.step, weights: frozen.weights },
      ...describe,
      rank,
      worldSize,
      batchSize: o.train.batchSize,
      accum: o.train.accum,
      steps: o.train.steps,
    },
    "AR trainer ready",
  );
  return { trainer, model, arConfig, frozen, data, notes };
}

/**
 * Names of the AR loss terms in reports: `loss` (= pre + post) and `loss/pre`, `loss/post` — the operator keeps
 * progress losses under `loss/<name>` in status.metrics, so the final metrics use the same keys (no duplicates).
 * Diagnostics (gradNorm, lr, meanK) stay out of progress.json: they are not losses.
 */
export function reportedLosses(l: StepLosses): Record<string, number> {
  const out: Record<string, number> = {};
  if (l.loss !== undefined) out.loss = l.loss;
  if (l.loss_pre !== undefined) out["loss/pre"] = l.loss_pre;
  if (l.loss_post !== undefined) out["loss/post"] = l.loss_post;
  return out;
}
