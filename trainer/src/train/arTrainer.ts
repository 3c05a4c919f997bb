// Stage-II training loop (docs/model.md §5.1–5.3, §5.5): the LlamaGen-style AR generator (trainer/src/ar/gpt.ts) on the
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
// default 0.1, docs/model.md §5.2) turns them off for that check (test/integration/dist-ar-equivalence.test.ts).
// Data parallel exactly like the tokenizer trainer: initial state broadcast from rank 0 (syncFromRank0),
// gradients averaged every optimiser step (bit-identical on all ranks), losses averaged on log steps, only
// rank 0 writes checkpoints (with every rank's data state gathered), progress.json and metrics.json.
import * as tf from "@tensorflow/tfjs";
import type { ARConfig } from "../ar/config.ts";
import type { GPT } from "../ar/gpt.ts";
import { CheckpointError } from "../io/checkpoint.ts";
import { NamedAdamW } from "./adamw.ts";
import type { ARTrainConfig } from "./arConfig.ts";
import type { ARDataSource } from "./arData.ts";
import { type ParamGroup, type StepLosses, TrainingLoop, trainableVariables } from "./loop.ts";
import { arLrAt } from "./lrSchedule.ts";
import { type RunDeps, roundLoss } from "./runReport.ts";

export const AR_CHECKPOINT_KIND = "ar-train";

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

export class ARTrainer extends TrainingLoop {
  readonly model: GPT;
  readonly cfg: ARTrainConfig;
  readonly config: ARConfig;
  readonly adamw: NamedAdamW;
  private readonly vars: Map<string, tf.Variable>;
  protected readonly checkpointKind = AR_CHECKPOINT_KIND;
  protected override readonly windowKeys = ["loss", "loss_pre", "loss_post", "meanK", "gradNorm"];

  constructor(private readonly deps: ARTrainerDeps) {
    super(deps, deps.cfg);
    this.model = deps.model;
    this.cfg = deps.cfg;
    this.config = deps.model.config;
    this.vars = trainableVariables(deps.model.getWeights(), "AR model");
    this.adamw = new NamedAdamW(this.vars, {
      beta1: this.cfg.beta1,
      beta2: this.cfg.beta2,
      eps: this.cfg.eps,
      weightDecay: this.cfg.weightDecay,
    });
  }

  protected paramGroups(): ParamGroup[] {
    return [
      {
        key: "ar",
        vars: this.vars,
        optimizer: this.adamw,
        prefix: "model/",
        optimizerPrefix: "adamw/",
        optimizerMeta: "adamw",
        normName: "gradNorm",
      },
    ];
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
  protected async forwardBackward(a: number): Promise<StepLosses> {
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
      this.accumulate(grads);
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

  protected override progressLosses(l: StepLosses): Record<string, number> {
    return reportedLosses(l);
  }

  /** One image = one sequence of L tokens. */
  protected override rateFields(sequencesPerSecond: number): Record<string, number> {
    return {
      sequencesPerSecond: roundLoss(sequencesPerSecond),
      tokensPerSecond: roundLoss(sequencesPerSecond * this.L),
    };
  }

  /** Train until cfg.steps: progress log lines, progress.json, periodic checkpoints. */
  async run(opts: { onStep?: (step: number, losses: StepLosses) => void | Promise<void> } = {}): Promise<ARRunSummary> {
    const s = await this.runLoop(opts);
    return {
      losses: s.losses,
      sequencesPerSecond: s.samplesPerSecond,
      tokensPerSecond: s.samplesPerSecond * this.L,
      seconds: s.seconds,
    };
  }

  // -------------------------------------------------------------------------------------------------------
  // Checkpoints (the loop stores weights, AdamW moments, step and data state; here: configs and tokenizer)

  protected wrongKind(source: string, kind: string): string {
    return `${source}: not an AR training checkpoint (kind "${kind}", expected "${AR_CHECKPOINT_KIND}")`;
  }

  protected checkpointMeta(): Record<string, unknown> {
    return { arConfig: this.config, tokenizer: this.deps.tokenizer, trainConfig: this.cfg };
  }

  protected checkCompatible(meta: Record<string, unknown>, source: string): void {
    const stored = meta.arConfig as ARConfig | undefined;
    if (!stored || typeof stored !== "object") throw new CheckpointError(`${source}: header has no arConfig`);
    checkTokenizerCompat(stored, this.config, source, this.deps.tokenizer.uri);
    // Not architecture: the init seed and the dropout rates (a training setting, see ARTrainConfig.dropout).
    const { seed: _a, tokenDropout: _c, residDropout: _d, ...storedArch } = stored;
    const { seed: _b, tokenDropout: _e, residDropout: _f, ...currentArch } = this.config;
    this.sameArchitecture(storedArch, currentArch, source);
  }

  protected override restoreMeta(meta: Record<string, unknown>): void {
    const tokenizer = meta.tokenizer as { uri?: string } | undefined;
    if (tokenizer?.uri && tokenizer.uri !== this.deps.tokenizer.uri)
      this.log.warn(
        { checkpointTokenizer: tokenizer.uri, tokenizer: this.deps.tokenizer.uri },
        "resuming with a different tokenizer checkpoint URI than the one this AR checkpoint was trained on",
      );
  }
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
