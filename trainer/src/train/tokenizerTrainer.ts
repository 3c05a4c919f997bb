// Stage-I training loop (spec §4.1–4.3, pitfalls 10–13):
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
import type { Logger } from "../../../common/src/logger.ts";
import { allReduceLosses, averageGradients, broadcastVariables } from "../dist/ddp.ts";
import type { ProcessGroup } from "../dist/processGroup.ts";
import { klAlignmentLoss, type OnnxTeacher } from "../losses/alignment.ts";
import { adoptWeight, hingeDLoss, LeCamEma, nonSaturatingGLoss, type PatchGanDiscriminator } from "../losses/gan.ts";
import type { PerceptualLoss } from "../losses/perceptual.ts";
import { l1Loss, l1PerSample } from "../losses/reconstruction.ts";
import type { Candidate } from "../tokenizer/candidates.ts";
import { candidateForBatch } from "../tokenizer/candidates.ts";
import { globalNorm, NamedAdam, NamedEma } from "./adam.ts";
import { assertSameArchitecture, type Checkpoint, CheckpointError, loadCheckpoint } from "./checkpoint.ts";
import { lrAt, type TrainConfig } from "./config.ts";
import { type BatchSource, type DataSourceState, disposeBatch, type TrainBatch } from "./localFolder.ts";
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

export class NonFiniteLossError extends Error {
  constructor(
    readonly step: number,
    readonly details: Record<string, number>,
    readonly lastCheckpoint: string | undefined,
  ) {
    super(
      `non-finite loss/gradient at step ${step}: ${JSON.stringify(details)}; training stopped without applying ` +
        `this update; last good checkpoint: ${lastCheckpoint ?? "none"}`,
    );
    this.name = "NonFiniteLossError";
  }
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

export interface StepLosses {
  [name: string]: number;
}

const isVar = (t: tf.Tensor): t is tf.Variable => t instanceof tf.Variable;

export class TokenizerTrainer {
  readonly model: TrainableTokenizer;
  readonly disc: PatchGanDiscriminator;
  readonly cfg: TrainConfig;
  readonly info: ModelTrainingInfo;
  /** Optimiser steps done. */
  step = 0;
  /** Micro-batches done (drives the K cycle). */
  microStep = 0;
  readonly lecam: LeCamEma;
  private readonly genVars: Map<string, tf.Variable>;
  private readonly discVars: Map<string, tf.Variable>;
  private readonly adamG: NamedAdam;
  private readonly adamD: NamedAdam;
  private readonly ema: NamedEma;
  private accG = new Map<string, tf.Tensor>();
  private accD = new Map<string, tf.Tensor>();
  private readonly log: Logger;
  private readonly rank: number;
  /** progress.json / metrics.json / checkpoint bookkeeping (rank 0 writes). */
  private readonly report: RunReport;
  private pg: ProcessGroup | undefined;
  /** Losses averaged over ranks at the last log step (what progress.json reports). */
  private lastReduced: StepLosses | undefined;

  constructor(private readonly deps: TrainerDeps) {
    this.model = deps.model;
    this.disc = deps.disc;
    this.cfg = deps.cfg;
    this.info = deps.info;
    this.log = deps.log;
    this.rank = deps.rank ?? 0;
    this.pg = deps.pg && deps.pg.worldSize > 1 ? deps.pg : undefined;
    this.genVars = new Map();
    for (const [name, t] of deps.model.getWeights()) {
      if (isVar(t) && t.trainable) this.genVars.set(name, t);
    }
    if (this.genVars.size === 0) throw new Error("model exposes no trainable variables through getWeights()");
    this.discVars = new Map([...deps.disc.getWeights()].map(([n, t]) => [n, t as tf.Variable]));
    const adamOpts = { beta1: this.cfg.beta1, beta2: this.cfg.beta2, eps: this.cfg.eps };
    this.adamG = new NamedAdam(this.genVars, adamOpts);
    this.adamD = new NamedAdam(this.discVars, adamOpts);
    this.ema = new NamedEma(new Map([...this.genVars, ...this.discVars]), this.cfg.emaDecay);
    this.lecam = new LeCamEma(0, 0, 0.999);
    this.report = new RunReport(deps, this.cfg);
  }

  /** URI of the newest checkpoint written (rank 0) or resumed from. */
  get lastCheckpoint(): string | undefined {
    return this.report.lastCheckpoint;
  }

  get stepsPerEpoch(): number {
    return Math.max(1, Math.floor(this.deps.data.epochSize / (this.cfg.batchSize * this.cfg.accum)));
  }

  get lr(): number {
    return lrAt(this.cfg, this.step, this.stepsPerEpoch);
  }

  /** K for the current micro-batch: deterministic cycle over the micro-batch counter. */
  currentCandidate(): Candidate {
    return candidateForBatch(this.info.candidates, this.microStep);
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
    this.accumulate(this.accG, this.genVars, grads);
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
    this.accumulate(this.accD, this.discVars, grads);
    return readScalars(parts);
  }

  private accumulate(
    acc: Map<string, tf.Tensor>,
    vars: Map<string, tf.Variable>,
    grads: Record<string, tf.Tensor | null>,
  ): void {
    for (const [name, v] of vars) {
      const g = grads[v.name];
      if (!g) continue;
      const prev = acc.get(name);
      if (prev) {
        acc.set(name, tf.add(prev, g));
        prev.dispose();
        g.dispose();
      } else {
        acc.set(name, g);
      }
    }
  }

  /**
   * Average the accumulated grads over ranks (process group), clip (optional) and apply them with Adam;
   * NaN/Inf guard on the gradient norm (identical on every rank after averaging, so all ranks stop together).
   */
  private async applyUpdates(losses: StepLosses): Promise<{ gradNormG: number; gradNormD: number }> {
    if (this.pg) {
      const accG = this.accG;
      const accD = this.accD;
      this.accG = new Map();
      this.accD = new Map();
      this.accG = await averageGradients(this.pg, accG, { disposeInputs: true, key: "grads/G" });
      this.accD = await averageGradients(this.pg, accD, { disposeInputs: true, key: "grads/D" });
    }
    const gradNormG = globalNorm(this.accG.values());
    const gradNormD = globalNorm(this.accD.values());
    if (!Number.isFinite(gradNormG) || !Number.isFinite(gradNormD)) {
      this.dropAccumulated();
      throw new NonFiniteLossError(this.step, { ...losses, gradNormG, gradNormD }, this.lastCheckpoint);
    }
    const lr = this.lr;
    const clip = (acc: Map<string, tf.Tensor>, norm: number) => {
      if (this.cfg.gradClip === null || norm <= this.cfg.gradClip) return acc;
      const f = this.cfg.gradClip / (norm + 1e-6);
      return new Map([...acc].map(([n, g]) => [n, tf.mul(g, f)]));
    };
    const g = clip(this.accG, gradNormG);
    const d = clip(this.accD, gradNormD);
    this.adamG.step(g, lr);
    this.adamD.step(d, lr);
    if (g !== this.accG) for (const t of g.values()) t.dispose();
    if (d !== this.accD) for (const t of d.values()) t.dispose();
    this.dropAccumulated();
    return { gradNormG, gradNormD };
  }

  private dropAccumulated(): void {
    for (const t of [...this.accG.values(), ...this.accD.values()]) t.dispose();
    this.accG = new Map();
    this.accD = new Map();
  }

  /**
   * One optimiser step = `accum` micro-batches. Throws NonFiniteLossError (no update applied) when a loss
   * or the gradient norm is NaN/Inf.
   */
  async trainStep(): Promise<StepLosses> {
    const sums: StepLosses = {};
    for (let a = 0; a < this.cfg.accum; a++) {
      const cand = this.currentCandidate();
      const batch = await this.deps.data.next(this.cfg.batchSize);
      try {
        const g = await this.generatorStep(batch, cand.K);
        g.indices.dispose();
        let dl: StepLosses;
        try {
          dl = await this.discriminatorStep(batch, g.recon);
        } finally {
          g.recon.dispose();
        }
        const all = { ...g.losses, ...dl };
        const bad = nonFiniteLosses(all);
        if (Object.keys(bad).length) {
          this.dropAccumulated();
          const err = new NonFiniteLossError(this.step, bad, this.lastCheckpoint);
          // Tell the other ranks (they would otherwise wait for this rank's gradients until the timeout).
          this.pg?.abort(err.message);
          throw err;
        }
        for (const [k, v] of Object.entries(all)) sums[k] = (sums[k] ?? 0) + v / this.cfg.accum;
        sums.K = cand.K;
      } finally {
        disposeBatch(batch);
      }
      this.ema.update();
      this.microStep++;
    }
    const norms = await this.applyUpdates(sums);
    this.step++;
    return { ...sums, ...norms, lr: this.lr };
  }

  /** Train until `cfg.steps`, with progress lines, progress.json and periodic checkpoints. */
  async run(opts: { onStep?: (step: number, losses: StepLosses) => void | Promise<void> } = {}): Promise<StepLosses> {
    const total = this.cfg.steps;
    const t0 = performance.now();
    const startStep = this.step;
    let last: StepLosses = {};
    const imagesPerStep = this.cfg.batchSize * this.cfg.accum * (this.deps.worldSize ?? 1);
    stopSignal.enterLoop();
    try {
      while (this.step < total) {
        last = await this.trainStep();
        const elapsed = (performance.now() - t0) / 1000;
        const done = this.step - startStep;
        const imagesPerSecond = (done * imagesPerStep) / elapsed;
        const etaSeconds = ((total - this.step) * elapsed) / done;
        if (this.step % this.cfg.logEvery === 0 || this.step === total) {
          // Same condition on every rank (step-based), so every rank joins the reduction.
          if (this.pg) last = await allReduceLosses(this.pg, last);
          this.lastReduced = last;
          this.log.info(
            {
              step: this.step,
              totalSteps: total,
              worldSize: this.deps.worldSize ?? 1,
              losses: roundLosses(last),
              imagesPerSecond: roundLoss(imagesPerSecond),
              etaSeconds: roundLoss(etaSeconds),
            },
            "train progress",
          );
        }
        const progress = { step: this.step, totalSteps: total, imagesPerSecond, etaSeconds };
        await this.report.stepBoundary({ ...progress, losses: this.lastReduced ?? last }, this.pg, () =>
          this.saveCheckpoint(),
        );
        await opts.onStep?.(this.step, last);
      }
    } finally {
      stopSignal.leaveLoop();
    }
    if (this.report.finalCheckpointDue(this.step)) await this.saveCheckpoint();
    await this.report.writeProgress({ step: this.step, totalSteps: total, losses: this.lastReduced ?? last }, true);
    return this.lastReduced ?? last;
  }

  /** Write metrics.json (rank 0) under the status prefix. */
  async writeMetrics(report: {
    metrics: Record<string, number>;
    notes?: string[];
    imageUris?: string[];
  }): Promise<void> {
    await this.report.writeMetrics(this.step, report);
  }

  // ---------------------------------------------------------------------------------------------
  // Checkpoints

  toCheckpoint(dataByRank?: DataSourceState[]): Checkpoint {
    if (this.accG.size || this.accD.size)
      throw new CheckpointError("cannot checkpoint in the middle of an accumulation window");
    const tensors = checkpointTensors(this.tensorGroups());
    return {
      kind: "tokenizer-train",
      meta: {
        step: this.step,
        microStep: this.microStep,
        adamG: { t: this.adamG.t },
        adamD: { t: this.adamD.t },
        lecam: this.lecam.getState(),
        data: this.deps.data.getState(),
        dataByRank,
        architecture: this.architecture(),
        modelConfig: this.info.config,
        trainConfig: this.cfg,
        backend: this.deps.backend,
        rank: this.rank,
        worldSize: this.deps.worldSize ?? 1,
      },
      tensors,
    };
  }

  /** Every variable a checkpoint holds (and rank 0 broadcasts), by checkpoint prefix. */
  private tensorGroups(): VariableGroups {
    return [
      ["g/", this.genVars],
      ["d/", this.discVars],
      ["ema/", this.ema.shadow],
      ["adam_g/m/", this.adamG.m],
      ["adam_g/v/", this.adamG.v],
      ["adam_d/m/", this.adamD.m],
      ["adam_d/v/", this.adamD.v],
    ];
  }

  /** Architecture = model architecture + discriminator shape (must match to resume). */
  architecture(): unknown {
    return { model: this.info.architecture, discriminator: this.disc.config };
  }

  loadFromCheckpoint(ckpt: Checkpoint, source: string): void {
    if (ckpt.kind !== "tokenizer-train")
      throw new CheckpointError(`${source}: not a tokenizer training checkpoint (${ckpt.kind})`);
    assertSameArchitecture(ckpt.meta.architecture, this.architecture(), source);
    assignCheckpointTensors(ckpt, source, this.tensorGroups());
    const meta = ckpt.meta as {
      step: number;
      microStep: number;
      adamG: { t: number };
      adamD: { t: number };
      lecam: { emaReal: number; emaFake: number };
      data: DataSourceState;
      dataByRank?: DataSourceState[];
      worldSize?: number;
    };
    this.step = meta.step;
    this.report.lastCheckpointStep = meta.step;
    this.microStep = meta.microStep;
    this.adamG.t = meta.adamG.t;
    this.adamD.t = meta.adamD.t;
    this.lecam.setState(meta.lecam);
    this.deps.data.setState(meta.dataByRank?.[this.rank] ?? meta.data);
  }

  /** Write a checkpoint (rank 0). With a process group EVERY rank must call it (the data states are gathered). */
  async saveCheckpoint(): Promise<string | undefined> {
    return this.report.saveCheckpoint(this.step, this.pg, (dataByRank) => this.toCheckpoint(dataByRank));
  }

  /** Attach the process group after construction (the rendezvous needs the resumed step). */
  attachProcessGroup(pg: ProcessGroup | undefined): void {
    this.pg = pg && pg.worldSize > 1 ? pg : undefined;
  }

  /**
   * Make every rank hold rank 0's state: weights (G, D), EMA shadows, both Adams' moments (broadcast), and
   * the scalar state (step, micro-step, Adam step counts, LeCam EMAs). Call on every rank after building
   * (and after resuming) and before the first step. No-op without a process group.
   */
  async syncFromRank0(): Promise<void> {
    if (!this.pg) return;
    const all = new Map<string, tf.Variable>();
    for (const [prefix, m] of this.tensorGroups()) for (const [n, v] of m) all.set(`${prefix}${n}`, v);
    await broadcastVariables(this.pg, all, { key: "initial-state" });
    const root = await scalarsFromRank0(this.pg, this.rank, {
      step: this.step,
      microStep: this.microStep,
      tG: this.adamG.t,
      tD: this.adamD.t,
      lecam: this.lecam.getState(),
    });
    this.microStep = root.microStep;
    this.adamG.t = root.tG;
    this.adamD.t = root.tD;
    this.lecam.setState(root.lecam);
    this.log.info({ tensors: all.size, step: this.step }, "initial state broadcast from rank 0");
  }

  async resume(uri: string): Promise<void> {
    const ckpt = await loadCheckpoint(uri);
    this.loadFromCheckpoint(ckpt, uri);
    this.report.resumed(uri, this.step);
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

  dispose(): void {
    this.dropAccumulated();
    this.adamG.dispose();
    this.adamD.dispose();
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
