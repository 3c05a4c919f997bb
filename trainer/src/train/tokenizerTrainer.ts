// Stage-I training loop (docs/model.md §4.1–4.3, pitfalls 10–13):
//   per micro-batch: choose K (deterministic 100-batch cycle) → generatorStep (L1 + LPIPS + 0.1·NS-GAN +
//   0.1·entropy + 0.25·commitment + w_cls·KL alignment; grads of G only) → discriminatorStep on the same,
//   detached x̂ (hinge + 0.01·LeCam; grads of D only — the upstream G→D leak is not reproduced) → EMA of
//   all trainable parameters (G and D) → every `accum` micro-batches: clip (optional), Adam(0.5, 0.9)
//   step on G and on D, step += 1.
// Checkpoints are written only at optimiser-step boundaries, so resume is bit-identical on the same
// backend (the checkpoint holds weights, EMA, both Adams, step, RNG + data-order state and LeCam EMAs).
//
// Data parallel (deps.pg with WORLD_SIZE > 1, trainer/src/dist): every rank runs the same loop on its own
// micro-batches; right before the Adam updates the accumulated G and D gradients are averaged over ranks
// (averageGradients: bit-identical on every rank), so every rank applies the same update and the weights,
// Adam moments and EMA shadows stay identical (they are broadcast from rank 0 once at start, syncFromRank0).
// The LeCam EMAs are updated with the mean D logits over ALL ranks (an extra no-grad D forward plus a scalar
// all-reduce per micro-batch), so they too are identical and equal the single-process value for the global
// batch. Not reduced (per-rank, as in upstream DDP): the LFQ codebook-entropy term (entropy of the mean code
// distribution) and the PatchGAN discriminator's BatchNorm statistics are computed over each rank's
// micro-batch, so these two are not the same function of the global batch as on one process (no SyncBN). Loss values are averaged over ranks for logging
// (allReduceLosses, on log steps); a local NaN/Inf aborts the group (pg.abort) before throwing, so the other
// ranks fail fast instead of waiting. Only rank 0 writes checkpoints, progress.json and metrics.json; at
// checkpoint steps every rank's data-order state is gathered into rank 0's checkpoint (`dataByRank`).
import * as tf from "@tensorflow/tfjs";
import { type BatchSource, disposeBatch, type TrainBatch } from "../data/localFolder.ts";
import { CheckpointError } from "../io/checkpoint.ts";
import { klAlignmentLoss, type OnnxTeacher } from "../losses/alignment.ts";
import { adoptWeight, hingeDLoss, LeCamEma, nonSaturatingGLoss, type PatchGanDiscriminator } from "../losses/gan.ts";
import type { PerceptualLoss } from "../losses/perceptual.ts";
import { l1Loss, l1PerSample } from "../losses/reconstruction.ts";
import type { Candidate } from "../tokenizer/candidates.ts";
import { candidateForBatch } from "../tokenizer/candidates.ts";
import { NamedAdam, NamedEma } from "./adam.ts";
import { lrAt, type TrainConfig } from "./config.ts";
import {
  type LoopSummary,
  NonFiniteLossError,
  type ParamGroup,
  type StepLosses,
  TrainingLoop,
  trainableVariables,
} from "./loop.ts";
import type { RunDeps, VariableGroups } from "./runReport.ts";

export { NonFiniteLossError, type StepLosses };

/** What the trainer needs from the tokenizer (MergeVQTokenizer satisfies it structurally). */
export interface TrainableTokenizer {
  forward(
    x: tf.Tensor4D,
    opts: { K: number; clsView?: tf.Tensor4D; training?: boolean },
  ): {
    recon: tf.Tensor4D;
    losses: { entropy: tf.Scalar; commitment: tf.Scalar };
    cls?: tf.Tensor2D | null;
    indices: tf.Tensor;
  };
  getWeights(): Map<string, tf.Tensor>;
  setWeights(w: Map<string, tf.Tensor>): void;
}

/** Static facts about the model config the loop needs. */
export interface ModelTrainingInfo {
  /** JSON compared against a checkpoint's stored architecture (must match exactly to resume). */
  architecture: unknown;
  /** Full resolved model config (stored in checkpoints; informational). */
  config: unknown;
  imageSize: number;
  /** Side of the teacher/student (CLS) views; 0 = no alignment pass. */
  clsViewSize: number;
  codebookBits: number;
  candidates: readonly Candidate[];
  nominalK: number;
  clsWeight: number;
}

export interface TrainerDeps extends RunDeps {
  model: TrainableTokenizer;
  info: ModelTrainingInfo;
  disc: PatchGanDiscriminator;
  perceptual: PerceptualLoss | null;
  teacher: OnnxTeacher | null;
  data: BatchSource;
  cfg: TrainConfig;
}

export class TokenizerTrainer extends TrainingLoop {
  readonly model: TrainableTokenizer;
  readonly disc: PatchGanDiscriminator;
  readonly cfg: TrainConfig;
  readonly info: ModelTrainingInfo;
  /** Micro-batches done (drives the K cycle). */
  microStep = 0;
  readonly lecam: LeCamEma;
  private readonly genVars: Map<string, tf.Variable>;
  private readonly discVars: Map<string, tf.Variable>;
  private readonly adamG: NamedAdam;
  private readonly adamD: NamedAdam;
  private readonly ema: NamedEma;
  protected readonly checkpointKind = "tokenizer-train";

  constructor(private readonly deps: TrainerDeps) {
    super(deps, deps.cfg);
    this.model = deps.model;
    this.disc = deps.disc;
    this.cfg = deps.cfg;
    this.info = deps.info;
    this.genVars = trainableVariables(deps.model.getWeights(), "model");
    this.discVars = new Map([...deps.disc.getWeights()].map(([n, t]) => [n, t as tf.Variable]));
    const adamOpts = { beta1: this.cfg.beta1, beta2: this.cfg.beta2, eps: this.cfg.eps };
    this.adamG = new NamedAdam(this.genVars, adamOpts);
    this.adamD = new NamedAdam(this.discVars, adamOpts);
    this.ema = new NamedEma(new Map([...this.genVars, ...this.discVars]), this.cfg.emaDecay);
    this.lecam = new LeCamEma(0, 0, 0.999);
  }

  /** Generator (G, checkpointed as g/ and adam_g/) and discriminator (D: d/, adam_d/), each with its Adam. */
  protected paramGroups(): ParamGroup[] {
    const group = (key: "G" | "D", vars: Map<string, tf.Variable>, optimizer: NamedAdam): ParamGroup => {
      const k = key.toLowerCase();
      return {
        key,
        vars,
        optimizer,
        prefix: `${k}/`,
        optimizerPrefix: `adam_${k}/`,
        optimizerMeta: `adam${key}`,
        normName: `gradNorm${key}`,
      };
    };
    return [group("G", this.genVars, this.adamG), group("D", this.discVars, this.adamD)];
  }

  get stepsPerEpoch(): number {
    return Math.max(1, Math.floor(this.deps.data.epochSize / (this.cfg.batchSize * this.cfg.accum)));
  }

  lrAt(step = this.step): number {
    return lrAt(this.cfg, step, this.stepsPerEpoch);
  }

  /** lr of the next optimiser step. */
  get lr(): number {
    return this.lrAt();
  }

  /**
   * K for a micro-batch: the deterministic 100-batch cycle indexed, as in the reference, by the batch's index
   * within its epoch (so the cycle restarts every epoch); sources that do not say fall back to the micro-step.
   */
  candidateFor(batch: TrainBatch): Candidate {
    return candidateForBatch(this.info.candidates, batch.indexInEpoch ?? this.microStep);
  }

  /**
   * Whether the GAN is on at this step: a positive generator GAN weight, from discStart on (adopt_weight). When
   * it is off, the discriminator's forward, backward and Adam step are skipped (they would change nothing the
   * generator sees).
   */
  discriminatorActive(): boolean {
    return adoptWeight(this.cfg.weights.generator, this.step, this.cfg.discStart) > 0;
  }

  private clsWeight(): number {
    return this.cfg.weights.cls ?? this.info.clsWeight;
  }

  /**
   * Generator step: forward, total G loss / accum, gradients w.r.t. G variables only (accumulated).
   * Returns the loss parts and the (kept) reconstruction for the discriminator step; the caller disposes it.
   */
  async generatorStep(
    batch: TrainBatch,
    K: number,
  ): Promise<{ losses: StepLosses; recon: tf.Tensor4D; indices: tf.Tensor }> {
    const w = this.cfg.weights;
    const useCls = this.clsWeight() > 0 && this.deps.teacher !== null && batch.teacherView && batch.studentView;
    const teacherFeat = useCls
      ? await (this.deps.teacher as OnnxTeacher).features(batch.teacherView as tf.Tensor4D)
      : null;
    const ganW = adoptWeight(w.generator, this.step, this.cfg.discStart);
    let recon: tf.Tensor4D | undefined;
    let indices: tf.Tensor | undefined;
    const parts: Record<string, tf.Scalar> = {};
    const { value, grads } = tf.variableGrads(() => {
      const out = this.model.forward(batch.image, {
        K,
        clsView: useCls ? (batch.studentView as tf.Tensor4D) : undefined,
      });
      recon = tf.keep(out.recon);
      indices = tf.keep(out.indices);
      const rec = l1Loss(batch.image, out.recon);
      let total: tf.Tensor = tf.mul(w.reconstruction, rec);
      parts.rec = tf.keep(rec);
      if (this.deps.perceptual && w.perceptual > 0) {
        const p = this.deps.perceptual.loss(batch.image, out.recon);
        parts.perceptual = tf.keep(p);
        total = tf.add(total, tf.mul(w.perceptual, p));
      }
      if (ganW > 0) {
        const g = nonSaturatingGLoss(this.disc.apply(out.recon));
        parts.gen = tf.keep(g);
        total = tf.add(total, tf.mul(ganW, g));
      }
      parts.entropy = tf.keep(out.losses.entropy);
      parts.commit = tf.keep(out.losses.commitment);
      total = tf.add(total, tf.add(tf.mul(w.entropy, out.losses.entropy), tf.mul(w.commitment, out.losses.commitment)));
      if (teacherFeat && out.cls) {
        const c = klAlignmentLoss(teacherFeat, out.cls);
        parts.cls = tf.keep(c);
        total = tf.add(total, tf.mul(this.clsWeight(), c));
      }
      parts.total = tf.keep(total as tf.Scalar);
      return tf.div(total, this.cfg.accum) as tf.Scalar;
    }, [...this.genVars.values()]);
    value.dispose();
    teacherFeat?.dispose();
    this.accumulate(grads);
    const losses = readScalars(parts);
    return { losses, recon: recon as tf.Tensor4D, indices: indices as tf.Tensor };
  }

  /**
   * Discriminator step on the same x̂ (detached): hinge + λ·LeCam, EMAs updated first; grads of D only.
   * With a process group the LeCam EMAs take the mean logits over all ranks (extra no-grad D forward).
   */
  async discriminatorStep(batch: TrainBatch, recon: tf.Tensor4D): Promise<StepLosses> {
    const parts: Record<string, tf.Scalar> = {};
    // x̂ comes from the finished G tape: inside this tape it is a constant, so D's loss cannot reach G.
    const fake = recon;
    if (this.pg) {
      const local = tf.tidy(() =>
        tf.stack([tf.mean(this.disc.apply(batch.image)), tf.mean(this.disc.apply(fake))]).dataSync(),
      );
      const [mr, mf] = await this.pg.allReduceScalars([local[0], local[1]], "mean");
      this.lecam.update(mr, mf);
    }
    const { value, grads } = tf.variableGrads(() => {
      const lr = this.disc.apply(batch.image);
      const lf = this.disc.apply(fake);
      if (!this.pg) {
        const means = tf.stack([tf.mean(lr), tf.mean(lf)]).dataSync();
        this.lecam.update(means[0], means[1]);
      }
      const hinge = hingeDLoss(lr, lf);
      const reg = this.lecam.regulariser(lr, lf);
      parts.d_hinge = tf.keep(hinge);
      parts.d_lecam = tf.keep(reg);
      parts.logits_real = tf.keep(tf.mean(lr) as tf.Scalar);
      parts.logits_fake = tf.keep(tf.mean(lf) as tf.Scalar);
      const total = tf.add(hinge, tf.mul(this.cfg.weights.lecam, reg));
      return tf.div(total, this.cfg.accum) as tf.Scalar;
    }, [...this.discVars.values()]);
    value.dispose();
    this.accumulate(grads);
    return readScalars(parts);
  }

  /** One micro-batch: G step, then D step on the same (detached) reconstruction; gradients accumulated. */
  protected async forwardBackward(): Promise<StepLosses> {
    const batch = await this.deps.data.next(this.cfg.batchSize);
    try {
      const cand = this.candidateFor(batch);
      const g = await this.generatorStep(batch, cand.K);
      g.indices.dispose();
      try {
        const d = this.discriminatorActive() ? await this.discriminatorStep(batch, g.recon) : {};
        return { ...g.losses, ...d, K: cand.K };
      } finally {
        g.recon.dispose();
      }
    } finally {
      disposeBatch(batch);
    }
  }

  /**
   * EMA of every trainable parameter after each micro-batch, once that micro-batch's optimiser steps (if it
   * ends the accumulation window) are applied — the reference order (docs/model.md §4.3); the K cycle advances.
   */
  protected override afterMicroStep(): void {
    this.ema.update();
    this.microStep++;
  }

  /** Train until `cfg.steps`, with progress lines, progress.json and periodic checkpoints. */
  async run(opts: { onStep?: (step: number, losses: StepLosses) => void | Promise<void> } = {}): Promise<StepLosses> {
    const summary: LoopSummary = await this.runLoop(opts);
    return summary.losses;
  }

  // ---------------------------------------------------------------------------------------------
  // Checkpoints (the loop stores G, D, both Adams, step and data state; here: EMA, micro-step, LeCam, configs)

  protected wrongKind(source: string, kind: string): string {
    return `${source}: not a tokenizer training checkpoint (${kind})`;
  }

  protected checkpointMeta(): Record<string, unknown> {
    return {
      microStep: this.microStep,
      lecam: this.lecam.getState(),
      architecture: this.architecture(),
      modelConfig: this.info.config,
      trainConfig: this.cfg,
    };
  }

  protected checkCompatible(meta: Record<string, unknown>, source: string): void {
    this.sameArchitecture(meta.architecture, this.architecture(), source);
    if (typeof meta.microStep !== "number" || !meta.lecam)
      throw new CheckpointError(`${source}: header lacks microStep / lecam`);
  }

  protected override restoreMeta(meta: Record<string, unknown>): void {
    this.microStep = meta.microStep as number;
    this.lecam.setState(meta.lecam as { emaReal: number; emaFake: number });
  }

  protected override extraVariables(): VariableGroups {
    return [["ema/", this.ema.shadow]];
  }

  protected override scalarState(): Record<string, unknown> {
    return { microStep: this.microStep, lecam: this.lecam.getState() };
  }

  protected override setScalarState(s: Record<string, unknown>): void {
    this.microStep = s.microStep as number;
    this.lecam.setState(s.lecam as { emaReal: number; emaFake: number });
  }

  /** Architecture = model architecture + discriminator shape (must match to resume). */
  architecture(): unknown {
    return { model: this.info.architecture, discriminator: this.disc.config };
  }

  // ---------------------------------------------------------------------------------------------
  // Evaluation (EMA weights)

  /** Run `fn` with the EMA weights swapped into the model and discriminator, then restore. */
  async withEmaWeights<T>(fn: () => Promise<T>): Promise<T> {
    const backup = new Map([...this.genVars].map(([n, v]) => [n, v.clone()]));
    const ema = new Map<string, tf.Tensor>(
      [...this.genVars.keys()].map((n) => [n, this.ema.shadow.get(n) as tf.Tensor]),
    );
    this.model.setWeights(new Map([...this.model.getWeights()].map(([n, t]) => [n, ema.get(n) ?? t])));
    try {
      return await fn();
    } finally {
      this.model.setWeights(new Map([...this.model.getWeights()].map(([n, t]) => [n, backup.get(n) ?? t])));
      for (const t of backup.values()) t.dispose();
    }
  }

  /**
   * Held-out reconstruction: mean L1 (and LPIPS when available) and codebook usage (fraction of the
   * 2^bits codes used at least once) at a fixed K. `ema` selects EMA (default) or raw weights.
   */
  async evaluate(
    source: BatchSource,
    opts: { images: number; K?: number; batchSize?: number; ema?: boolean },
  ): Promise<{ l1: number; perceptual?: number; codebookUsage: number; images: number; K: number }> {
    const K = opts.K ?? this.cfg.evalK ?? this.info.nominalK;
    const bs = opts.batchSize ?? this.cfg.batchSize;
    const run = async () => {
      const used = new Uint8Array(2 ** this.info.codebookBits);
      let l1 = 0;
      let lp = 0;
      let n = 0;
      while (n < opts.images) {
        const b = Math.min(bs, opts.images - n);
        const batch = await source.next(b);
        try {
          let l1s: ArrayLike<number> = [];
          let lps: ArrayLike<number> | null = null;
          let idx: ArrayLike<number> = [];
          tf.tidy(() => {
            const out = this.model.forward(batch.image, { K, training: false });
            const rec = tf.clipByValue(out.recon, -1, 1) as tf.Tensor4D;
            l1s = l1PerSample(batch.image, rec).dataSync();
            lps = this.deps.perceptual ? this.deps.perceptual.distance(batch.image, rec).dataSync() : null;
            idx = out.indices.dataSync();
          });
          for (let i = 0; i < l1s.length; i++) l1 += l1s[i];
          if (lps) for (let i = 0; i < (lps as ArrayLike<number>).length; i++) lp += (lps as ArrayLike<number>)[i];
          for (let i = 0; i < idx.length; i++) used[idx[i]] = 1;
        } finally {
          disposeBatch(batch);
        }
        n += b;
      }
      const usage = used.reduce((a, b) => a + b, 0) / used.length;
      return { l1: l1 / n, perceptual: this.deps.perceptual ? lp / n : undefined, codebookUsage: usage, images: n, K };
    };
    return opts.ema === false ? run() : this.withEmaWeights(run);
  }

  override dispose(): void {
    super.dispose();
    this.ema.dispose();
  }
}

function readScalars(parts: Record<string, tf.Scalar>): StepLosses {
  const out: StepLosses = {};
  for (const [k, t] of Object.entries(parts)) {
    out[k] = t.dataSync()[0];
    t.dispose();
  }
  return out;
}
